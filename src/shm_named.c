/* Named shared memory, like multiprocessing.shared_memory.SharedMemory.
 *
 * The creator registers each segment with the tracker (os/shm_linux.c), so
 * that the name is removed once the creator and everything it forked have
 * exited — normally, by a crash, or by SIGKILL — unless mp_shm_persist()
 * took it off the tracker's list.  Openers do not register: a segment
 * belongs to its creator's tree.  The tracker and mp_shm_unlink remove an
 * object, not a name: each checks that the name still stands for the
 * object it made or mapped (device and inode) before removing it, so a
 * segment made again under the same name by someone else is left alone. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mproc/shm.h"
#include "os/os.h"
#include "os/shm.h"

#define SHM_NAME_MAX 250 /* NAME_MAX less room for the leading '/' */

struct mp_shm {
    char name[SHM_NAME_MAX + 2]; /* "/name" */
    int fd;
    void *data;
    size_t size;
    mp__shm_id id;      /* the object this handle maps */
    bool tracked;       /* this handle registered it with the tracker */
};

/* "name" or "/name" → "/name"; letters, digits and ._- only, as a portable
 * file name.  Returns 0 or -EINVAL. */
static int normalise(const char *name, char out[SHM_NAME_MAX + 2])
{
    if (name == NULL)
        return -EINVAL;
    if (name[0] == '/')
        name++;
    size_t n = strlen(name);
    if (n == 0 || n > SHM_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok)
            return -EINVAL;
    }
    out[0] = '/';
    memcpy(out + 1, name, n + 1);
    return 0;
}

static mp_shm *handle(const char *name, int fd, void *data, size_t size)
{
    mp_shm *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    strcpy(s->name, name);
    s->fd = fd;
    s->data = data;
    s->size = size;
    return s;
}

int mp_shm_create(mp_shm **out, const char *name, size_t size)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    char path[SHM_NAME_MAX + 2];
    int rc = normalise(name, path);
    if (rc < 0)
        return rc;
    if (size == 0 || size > (size_t)INT64_MAX)
        return -EINVAL;
    int fd;
    void *data;
    mp__shm_id id;
    rc = mp__shm_create(path, size, &fd, &data, &id);
    if (rc < 0)
        return rc;
    mp_shm *s = handle(path, fd, data, size);
    if (s != NULL)
        s->id = id;
    if (s == NULL || (rc = mp__shm_track(path, &id, true)) < 0) {
        /* Not trackable: do not leave a segment behind that no one
         * would remove. */
        mp__shm_unlink(path);
        munmap(data, size);
        close(fd);
        free(s);
        return s == NULL ? -ENOMEM : rc;
    }
    s->tracked = true;
    *out = s;
    return 0;
}

int mp_shm_open(mp_shm **out, const char *name)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    char path[SHM_NAME_MAX + 2];
    int rc = normalise(name, path);
    if (rc < 0)
        return rc;
    int fd;
    void *data;
    size_t size;
    rc = mp__shm_open(path, &fd, &data, &size);
    if (rc < 0)
        return rc;
    mp_shm *s = handle(path, fd, data, size);
    if (s == NULL || (rc = mp__shm_id_of(fd, &s->id)) < 0) {
        munmap(data, size);
        close(fd);
        free(s);
        return s == NULL ? -ENOMEM : rc;
    }
    *out = s;
    return 0;
}

void *mp_shm_data(mp_shm *s)
{
    return s != NULL ? s->data : NULL;
}

size_t mp_shm_size(const mp_shm *s)
{
    return s != NULL ? s->size : 0;
}

const char *mp_shm_name(const mp_shm *s)
{
    return s != NULL ? s->name + 1 : NULL;
}

int mp_shm_unlink(mp_shm *s)
{
    if (s == NULL)
        return -EINVAL;
    /* Only the object this handle maps: a name removed and made again by
     * someone else since is theirs (-ENOENT for us). */
    int rc = mp__shm_unlink_if(s->name, &s->id);
    if (s->tracked) {
        mp__shm_track(s->name, &s->id, false);
        s->tracked = false;
    }
    return rc;
}

int mp_shm_persist(mp_shm *s)
{
    if (s == NULL)
        return -EINVAL;
    if (!s->tracked)
        return 0;
    int rc = mp__shm_track(s->name, &s->id, false);
    if (rc == 0)
        s->tracked = false;
    return rc;
}

void mp_shm_free(mp_shm *s)
{
    if (s == NULL)
        return;
    munmap(s->data, s->size);
    close(s->fd);
    free(s);
}
