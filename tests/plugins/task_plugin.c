/* A task in a library that only rank 0 loads (with dlopen): naming it works
 * there, finding it on a worker rank cannot (tests/helpers/pool_contract.c).
 * It calls nothing of mproc's, so that it needs no symbol of the program. */
#include <stddef.h>

typedef struct mp_buf mp_buf;

int plugin_task(const void *arg, size_t len, mp_buf *res);

int plugin_task(const void *arg, size_t len, mp_buf *res)
{
    (void)arg, (void)res;
    return len == 0 ? 0 : 1;
}
