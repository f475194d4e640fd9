/* Seed 003, "回调函数": tasks return i stars; the callback runs in the parent
 * process (its pid is the parent's) and prints each result. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int func(const void *arg, size_t len, mp_buf *res)
{
    int i = *(const int *)arg;
    char stars[16];
    printf("子进程%d:%d\n", i, (int)getpid());
    fflush(stdout);
    memset(stars, '*', (size_t)i);
    return mp_buf_append(res, stars, (size_t)i);
}

static void call(const void *res, size_t len, void *ud)
{
    printf("回调 : %d\n", (int)getpid());
    printf("%.*s\n", (int)len, len ? (const char *)res : "");
    fflush(stdout);
}

int main(void)
{
    printf("----> %d\n", (int)getpid());
    fflush(stdout);
    mp_pool *p;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 5});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 10; i++) {
        mp_result *r;
        if (mp_pool_apply_async(p, func, &i, sizeof i, &(mp_task_opts){.callback = call}, &r) == 0)
            mp_result_free(r);
    }
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER); /* returns after the last callback */
    mp_pool_free(p);
    return 0;
}
