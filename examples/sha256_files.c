/* SHA-256 of every file under a directory, on a process pool, as
 * `sha256sum` prints them.  The pool is made first, at start-up, and the
 * file list after it: the names reach the workers as items, copied at the
 * call (a list of pointers would mean nothing in workers forked before it
 * existed).  A bar on stderr shows the progress of long runs; a file that
 * cannot be read fails alone, and mp_iter_info says why (its errno, which
 * the task returns).
 *
 * Usage: sha256_files [DIR]   (default /usr/include) */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <mproc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The task: read the file named by the item, append its digest; its errno
 * on failure. */
static int hash_file(const void *name, size_t len, mp_buf *digest)
{
    char path[PATH_MAX];
    if (len >= sizeof path)
        return ENAMETOOLONG;
    memcpy(path, name, len);
    path[len] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    unsigned char buf[1 << 16];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
    int err = n < 0 ? errno : 0;
    close(fd);
    if (err)
        return err;
    unsigned char out[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, out);
    return mp_buf_append(digest, out, sizeof out);
}

static char **names;
static size_t nnames, cap;

static int collect(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    if (type != FTW_F && type != FTW_SL && type != FTW_SLN)
        return 0;
    if (nnames == cap) {
        cap = cap ? cap * 2 : 1024;
        char **n = realloc(names, cap * sizeof *n);
        if (n == NULL)
            return -1;
        names = n;
    }
    if ((names[nnames] = strdup(path)) == NULL)
        return -1;
    nnames++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/usr/include";
    if (sodium_init() < 0)
        return 2;
    mp_pool *pool;
    int rc = mp_pool_new(&pool, &(mp_pool_opts){.flags = MP_POOL_PROGRESS_BAR});
    if (rc < 0) {
        fprintf(stderr, "sha256_files: mp_pool_new: %s\n", mp_strerror(rc));
        return 2;
    }
    /* The list, made after the pool. */
    if (nftw(dir, collect, 64, FTW_PHYS) != 0) {
        fprintf(stderr, "sha256_files: %s: %s\n", dir, strerror(errno));
        return 2;
    }
    qsort(names, nnames, sizeof *names, by_name);
    mp_item *items = malloc((nnames ? nnames : 1) * sizeof *items);
    for (size_t i = 0; i < nnames; i++)
        items[i] = (mp_item){names[i], strlen(names[i])};
    mp_iter *it;
    rc = mp_pool_imap_items(pool, hash_file, items, nnames, 0, true, &it);
    free(items); /* copied: the pool has its own */
    if (rc < 0) {
        fprintf(stderr, "sha256_files: mp_pool_imap_items: %s\n", mp_strerror(rc));
        return 2;
    }
    size_t failed = 0, i, len;
    const void *digest;
    while ((rc = mp_iter_next_item(it, &digest, &len, &i, MP_FOREVER)) != MP_EDONE) {
        if (rc != 0) {
            mp_task_info why;
            mp_iter_info(it, &why);
            if (why.code == MP_ETASK)
                printf("FAILED %s: %s\n", names[i], strerror(why.task_rc));
            else
                printf("FAILED %s: %s\n", names[i], mp_strerror(why.code));
            failed++;
            continue;
        }
        char hex[2 * crypto_hash_sha256_BYTES + 1];
        sodium_bin2hex(hex, sizeof hex, digest, len);
        printf("%s  %s\n", hex, names[i]);
    }
    mp_iter_free(it);
    mp_pool_free(pool);
    for (size_t k = 0; k < nnames; k++)
        free(names[k]);
    free(names);
    fprintf(stderr, "%zu files, %zu could not be read\n", nnames, failed);
    return failed ? 1 : 0;
}
