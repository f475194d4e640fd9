/* Value and Array: shared memory plus the lock that guards it, like
 * multiprocessing.Value / Array.  The control block (lock, sizes, data
 * pointer) and the data are two heap blocks, so a user's overrun of the
 * data cannot corrupt the lock. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/shm.h"
#include "mproc/sync.h"
#include "sync_int.h"

struct mp_value {
    struct mp_lock lock;
    size_t size;
    void *data;
};

struct mp_array {
    struct mp_lock lock;
    size_t n, elem_size;
    void *data;
};

/* Allocate the control block of `cb_size` bytes (its lock first) and
 * `size` bytes of data, initialised from init or zeroed. */
static int make(void **cb, size_t cb_size, void **data, size_t size, const void *init)
{
    int err = 0;
    *cb = mp__heap_calloc(cb_size, &err);
    if (*cb == NULL)
        return err;
    *data = mp__heap_alloc(size, &err);
    if (*data == NULL) {
        mp__heap_free(*cb);
        return err;
    }
    if (init != NULL)
        memcpy(*data, init, size);
    else
        memset(*data, 0, size);
    int rc = mp__lock_init((struct mp_lock *)*cb);
    if (rc < 0) {
        mp__heap_free(*data);
        mp__heap_free(*cb);
    }
    return rc;
}

int mp_value_new(mp_value **out, size_t size, const void *init)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (size == 0)
        return -EINVAL;
    void *cb, *data;
    int rc = make(&cb, sizeof(mp_value), &data, size, init);
    if (rc < 0)
        return rc;
    mp_value *v = cb;
    v->size = size;
    v->data = data;
    *out = v;
    return 0;
}

void *mp_value_ptr(mp_value *v)
{
    return v != NULL ? v->data : NULL;
}

size_t mp_value_size(const mp_value *v)
{
    return v != NULL ? v->size : 0;
}

mp_lock *mp_value_lock(mp_value *v)
{
    return v != NULL ? &v->lock : NULL;
}

void mp_value_free(mp_value *v)
{
    if (v == NULL)
        return;
    void *data = v->data;
    if (mp__heap_free(v) == 0) /* no-op unless ours */
        mp__heap_free(data);
}

int mp_array_new(mp_array **out, size_t n, size_t elem_size, const void *init)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (n == 0 || elem_size == 0 || n > SIZE_MAX / elem_size)
        return -EINVAL;
    void *cb, *data;
    int rc = make(&cb, sizeof(mp_array), &data, n * elem_size, init);
    if (rc < 0)
        return rc;
    mp_array *a = cb;
    a->n = n;
    a->elem_size = elem_size;
    a->data = data;
    *out = a;
    return 0;
}

void *mp_array_data(mp_array *a)
{
    return a != NULL ? a->data : NULL;
}

size_t mp_array_len(const mp_array *a)
{
    return a != NULL ? a->n : 0;
}

size_t mp_array_elem_size(const mp_array *a)
{
    return a != NULL ? a->elem_size : 0;
}

mp_lock *mp_array_lock(mp_array *a)
{
    return a != NULL ? &a->lock : NULL;
}

void mp_array_free(mp_array *a)
{
    if (a == NULL)
        return;
    void *data = a->data;
    if (mp__heap_free(a) == 0)
        mp__heap_free(data);
}
