/* Seed 002, part 5: map and imap on a pool of five.  func upper-cases a
 * name; map returns the whole list, imap hands the results out one by one
 * (in order). */
#include <ctype.h>
#include <mproc.h>
#include <stdio.h>

typedef struct {
    char s[16];
} name;

static int func(const void *in, void *out)
{
    const name *n = in;
    name *u = out;
    printf("start process\n");
    fflush(stdout);
    for (size_t i = 0; i < sizeof n->s; i++)
        u->s[i] = (char)toupper((unsigned char)n->s[i]);
    return 0;
}

int main(void)
{
    name names[2] = {{"kel"}, {"smile"}}, out[2];
    mp_pool *p;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 5});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    rc = mp_pool_map(p, func, names, 2, sizeof(name), out, sizeof(name), 0);
    if (rc < 0) {
        fprintf(stderr, "map: %s\n", mp_strerror(rc));
        return 1;
    }
    printf("['%s', '%s']\n", out[0].s, out[1].s);
    fflush(stdout);

    mp_iter *it;
    rc = mp_pool_imap(p, func, names, 2, sizeof(name), sizeof(name), 0, true, &it);
    if (rc < 0) {
        fprintf(stderr, "imap: %s\n", mp_strerror(rc));
        return 1;
    }
    name i;
    while (mp_iter_next(it, &i, NULL, MP_FOREVER) == 0) {
        printf("%s\n", i.s);
        fflush(stdout);
    }
    mp_iter_free(it);
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    mp_pool_free(p);
    return 0;
}
