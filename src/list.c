/* The shared list: an array block {n, cap, item pointers} in the shared
 * heap, the items immutable blocks of their own.
 *
 * Commit points, each one store: append writes the new pointer past the
 * end, then stores n + 1 (growing first, if need be, by building a bigger
 * array beside the old one and swapping the array pointer); pop of the
 * last item stores n - 1; set stores the new item's pointer.  Insert and
 * pop from the middle build a new array and swap it in.  Because n lives
 * in the array block, the pointer swap commits the length and the contents
 * together.  A holder killed at any point leaves a consistent list, the
 * operation done or not; at worst an item or an array leaks.  There is
 * nothing to recompute on MP_EOWNERDEAD. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/dict.h"
#include "mutex_int.h"

#define FIRST_CAP 8

typedef struct {
    uint64_t len;
    uint64_t pad;
    unsigned char bytes[];
} item;

typedef struct {
    _Atomic size_t n;
    size_t cap;
    item *e[];
} array;

struct mp_list {
    mp__mutex m;
    array *_Atomic a;
};

static array *array_new(size_t cap, int *err)
{
    array *a = mp__heap_alloc(sizeof *a + cap * sizeof a->e[0], err);
    if (a != NULL) {
        atomic_init(&a->n, 0);
        a->cap = cap;
    }
    return a;
}

static inline array *arr(mp_list *l) { return atomic_load_explicit(&l->a, memory_order_relaxed); }
static inline size_t len_of(array *a) { return atomic_load_explicit(&a->n, memory_order_relaxed); }

static void lock(mp_list *l) { mp__mutex_lock_forever(&l->m); /* nothing to repair */ }
static void unlock(mp_list *l) { mp__mutex_unlock(&l->m); }

static item *item_new(const void *val, size_t len, int *err)
{
    item *it = mp__heap_alloc(sizeof *it + len, err);
    if (it != NULL) {
        it->len = len;
        if (len > 0)
            memcpy(it->bytes, val, len);
    }
    return it;
}

int mp_list_new(mp_list **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    int err = 0;
    mp_list *l = mp__heap_calloc(sizeof *l, &err);
    if (l == NULL)
        return err;
    array *a = array_new(FIRST_CAP, &err);
    if (a == NULL || (err = mp__mutex_init(&l->m)) < 0) {
        mp__heap_free(a);
        mp__heap_free(l);
        return err;
    }
    atomic_init(&l->a, a);
    *out = l;
    return 0;
}

/* Check the arguments of a store and build its item: NULL with *err set
 * (-EINVAL, MP_ETOOBIG, -ENOMEM) on failure. */
static item *checked_item(mp_list *l, const void *val, size_t len, int *err)
{
    if (l == NULL || (val == NULL && len > 0)) {
        *err = -EINVAL;
        return NULL;
    }
    if (len > MP_DICT_MAX_VALUE) {
        *err = MP_ETOOBIG;
        return NULL;
    }
    return item_new(val, len, err);
}

/* A copy of a's first n pointers with room for cap, minus index skip
 * (SIZE_MAX: none), plus `ins` at index at (SIZE_MAX: none). */
static array *rebuilt(array *a, size_t cap, size_t skip, size_t at, item *ins, int *err)
{
    array *b = array_new(cap, err);
    if (b == NULL)
        return NULL;
    size_t n = len_of(a), k = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == at)
            b->e[k++] = ins;
        if (i < n && i != skip)
            b->e[k++] = a->e[i];
    }
    atomic_store_explicit(&b->n, k, memory_order_relaxed);
    return b;
}

int mp_list_append(mp_list *l, const void *val, size_t len)
{
    int err = 0;
    item *it = checked_item(l, val, len, &err);
    if (it == NULL)
        return err;
    array *old = NULL;
    lock(l);
    array *a = arr(l);
    size_t n = len_of(a);
    if (n == a->cap) {
        array *b = rebuilt(a, a->cap * 2, SIZE_MAX, n, it, &err);
        if (b != NULL) {
            atomic_store_explicit(&l->a, b, memory_order_release); /* commit */
            old = a;
        }
    } else {
        a->e[n] = it;
        atomic_store_explicit(&a->n, n + 1, memory_order_release); /* commit */
    }
    unlock(l);
    if (err < 0) {
        mp__heap_free_any(it);
        return err;
    }
    if (old != NULL)
        mp__heap_free_any(old);
    return 0;
}

static int copy_item(const item *it, void *buf, size_t cap, size_t *len, void **out)
{
    if (len != NULL)
        *len = (size_t)it->len;
    if (out != NULL) {
        void *m = malloc(it->len ? (size_t)it->len : 1);
        if (m == NULL)
            return -ENOMEM;
        memcpy(m, it->bytes, (size_t)it->len);
        *out = m;
        return 0;
    }
    if (buf == NULL && cap == 0)
        return 0; /* the caller does not want the bytes */
    if (it->len > cap)
        return MP_ETOOBIG;
    if (it->len > 0)
        memcpy(buf, it->bytes, (size_t)it->len);
    return 0;
}

static int get(mp_list *l, size_t i, void *buf, size_t cap, size_t *len, void **out)
{
    lock(l);
    array *a = arr(l);
    int rc = i >= len_of(a) ? -ERANGE : copy_item(a->e[i], buf, cap, len, out);
    unlock(l);
    return rc;
}

int mp_list_get(mp_list *l, size_t i, void *buf, size_t cap, size_t *len)
{
    if (l == NULL || len == NULL || (buf == NULL && cap > 0))
        return -EINVAL;
    if (buf == NULL) /* cap 0: only the size, unless the item is empty */
        buf = (void *)len;
    return get(l, i, buf, cap, len, NULL);
}

int mp_list_get_alloc(mp_list *l, size_t i, void **val, size_t *len)
{
    if (l == NULL || val == NULL || len == NULL)
        return -EINVAL;
    *val = NULL;
    return get(l, i, NULL, 0, len, val);
}

int mp_list_set(mp_list *l, size_t i, const void *val, size_t len)
{
    int err = 0;
    item *it = checked_item(l, val, len, &err);
    if (it == NULL)
        return err;
    item *old = NULL;
    lock(l);
    array *a = arr(l);
    if (i < len_of(a)) {
        old = a->e[i];
        a->e[i] = it; /* commit: one pointer store */
    }
    unlock(l);
    if (old == NULL) {
        mp__heap_free_any(it);
        return -ERANGE;
    }
    mp__heap_free_any(old);
    return 0;
}

int mp_list_insert(mp_list *l, size_t i, const void *val, size_t len)
{
    int err = 0;
    item *it = checked_item(l, val, len, &err);
    if (it == NULL)
        return err;
    array *old = NULL;
    lock(l);
    array *a = arr(l);
    size_t n = len_of(a);
    if (i > n) {
        err = -ERANGE;
    } else {
        array *b = rebuilt(a, n + 1 > a->cap ? a->cap * 2 : a->cap, SIZE_MAX, i, it, &err);
        if (b != NULL) {
            atomic_store_explicit(&l->a, b, memory_order_release); /* commit */
            old = a;
        }
    }
    unlock(l);
    if (err < 0) {
        mp__heap_free_any(it);
        return err;
    }
    if (old != NULL)
        mp__heap_free_any(old);
    return 0;
}

int mp_list_pop(mp_list *l, size_t i, void *buf, size_t cap, size_t *len)
{
    if (l == NULL || (buf == NULL && cap > 0))
        return -EINVAL;
    item *gone = NULL;
    array *old = NULL;
    int err = 0;
    lock(l);
    array *a = arr(l);
    size_t n = len_of(a);
    if (i >= n) {
        err = -ERANGE;
    } else if ((err = copy_item(a->e[i], buf, cap, len, NULL)) == 0) {
        gone = a->e[i];
        if (i == n - 1) {
            atomic_store_explicit(&a->n, n - 1, memory_order_release); /* commit */
        } else {
            array *b = rebuilt(a, a->cap, i, SIZE_MAX, NULL, &err);
            if (b != NULL) {
                atomic_store_explicit(&l->a, b, memory_order_release); /* commit */
                old = a;
            } else {
                gone = NULL;
            }
        }
    }
    unlock(l);
    if (gone != NULL)
        mp__heap_free_any(gone);
    if (old != NULL)
        mp__heap_free_any(old);
    return err;
}

size_t mp_list_len(mp_list *l)
{
    if (l == NULL)
        return 0;
    lock(l);
    size_t n = len_of(arr(l));
    unlock(l);
    return n;
}

static void free_array(array *a)
{
    size_t n = len_of(a);
    for (size_t i = 0; i < n; i++)
        mp__heap_free_any(a->e[i]);
    mp__heap_free_any(a);
}

int mp_list_clear(mp_list *l)
{
    if (l == NULL)
        return -EINVAL;
    int err = 0;
    array *b = array_new(FIRST_CAP, &err);
    if (b == NULL)
        return err;
    lock(l);
    array *old = arr(l);
    atomic_store_explicit(&l->a, b, memory_order_release); /* commit */
    unlock(l);
    free_array(old);
    return 0;
}

void mp_list_free(mp_list *l)
{
    if (l == NULL || !mp__heap_owned(l))
        return;
    free_array(arr(l));
    mp__heap_free(l);
}
