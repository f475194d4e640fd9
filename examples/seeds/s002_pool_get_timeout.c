/* Seed 002, part 5: seven tasks on a pool of five, each sleeping two
 * seconds, their results collected with get(timeout=2.1).  The first five
 * run at once; the last two start when workers free up, still within each
 * get's 2.1 s. */
#include <ctype.h>
#include <mproc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int func(const void *arg, size_t len, mp_buf *res)
{
    char up[16] = {0};
    printf("start process\n");
    fflush(stdout);
    sleep(2);
    for (size_t i = 0; i < len && i < sizeof up - 1; i++)
        up[i] = (char)toupper(((const unsigned char *)arg)[i]);
    return mp_buf_append(res, up, strlen(up) + 1);
}

int main(void)
{
    mp_pool *p;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 5});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_result *results[7];
    for (int i = 0; i < 7; i++)
        if ((rc = mp_pool_apply_async(p, func, "kel", 3, NULL, &results[i])) < 0) {
            fprintf(stderr, "apply_async: %s\n", mp_strerror(rc));
            return 1;
        }
    for (int i = 0; i < 7; i++) {
        const void *v;
        rc = mp_result_get(results[i], 2.1, &v, NULL);
        if (rc == 0)
            printf("%s\n", (const char *)v);
        else
            printf("get: %s\n", mp_strerror(rc)); /* Python: TimeoutError */
        fflush(stdout);
        mp_result_free(results[i]);
    }
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    mp_pool_free(p);
    return 0;
}
