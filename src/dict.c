/* The shared dict: open addressing over immutable items.
 *
 * The table is an array of pointers to items {hash, key, value}, each a
 * shared-heap block that never changes once linked.  Linear probing;
 * deleted slots hold a tombstone.  Every change commits with one pointer
 * store: a slot (set, replace, delete) or the table pointer (growth,
 * clear: a new array is filled beside the old one, then swapped in).  Items
 * are built before the lock is taken and replaced ones freed after it is
 * released.  A process killed at any instruction therefore leaves a
 * consistent table; the counters (`count`, `used`), stored after the
 * commit, are recomputed by whoever next gets the lock with
 * MP_EOWNERDEAD.  At worst an item or an array leaks. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/dict.h"
#include "mutex_int.h"

#define FIRST_CAP 16
#define TOMB ((item *)1)

typedef struct {
    uint64_t hash;
    uint32_t klen;
    uint32_t pad;
    uint64_t vlen;
    unsigned char bytes[]; /* key, then value */
} item;

typedef struct {
    size_t cap; /* a power of two */
    size_t pad;
    item *_Atomic slot[];
} table;

struct mp_dict {
    mp__mutex m;
    table *_Atomic t;
    size_t count; /* live items */
    size_t used;  /* live items + tombstones */
};

struct mp_dict_snapshot {
    size_t n, next;
    item **items; /* private malloc'd copies */
};

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ n;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    /* A final mix, so that the low bits used for the slot depend on all. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static table *table_new(size_t cap, int *err)
{
    table *t = mp__heap_calloc(sizeof *t + cap * sizeof t->slot[0], err);
    if (t != NULL)
        t->cap = cap;
    return t;
}

static inline table *tab(mp_dict *d) { return atomic_load_explicit(&d->t, memory_order_relaxed); }
static inline item *slot_get(table *t, size_t i)
{
    return atomic_load_explicit(&t->slot[i], memory_order_relaxed);
}

/* Recompute the counters after a holder died between commit and count. */
static void recount(mp_dict *d)
{
    table *t = tab(d);
    size_t count = 0, used = 0;
    for (size_t i = 0; i < t->cap; i++) {
        item *it = slot_get(t, i);
        used += it != NULL;
        count += it != NULL && it != TOMB;
    }
    d->count = count;
    d->used = used;
}

static void lock(mp_dict *d)
{
    if (mp__mutex_lock_forever(&d->m) == MP_EOWNERDEAD)
        recount(d);
}

static void unlock(mp_dict *d) { mp__mutex_unlock(&d->m); }

static inline const unsigned char *key_of(const item *it) { return it->bytes; }
static inline const unsigned char *val_of(const item *it) { return it->bytes + it->klen; }

/* The slot holding key, or (if absent) -1 and in *free_slot the first
 * tombstone or empty slot of its probe sequence. */
static ptrdiff_t find(table *t, uint64_t h, const void *key, size_t klen, size_t *free_slot)
{
    size_t mask = t->cap - 1, i = (size_t)h & mask;
    bool have_free = false;
    for (size_t n = 0; n < t->cap; n++, i = (i + 1) & mask) {
        item *it = slot_get(t, i);
        if (it == NULL) {
            if (!have_free && free_slot)
                *free_slot = i;
            return -1;
        }
        if (it == TOMB) {
            if (!have_free && free_slot) {
                *free_slot = i;
                have_free = true;
            }
            continue;
        }
        if (it->hash == h && it->klen == klen && memcmp(key_of(it), key, klen) == 0)
            return (ptrdiff_t)i;
    }
    return -1; /* full of tombstones: the caller grows first, so unreachable */
}

/* With the lock: make room for one more item, rebuilding the table when
 * live items and tombstones pass 3/4 of it. */
static int reserve(mp_dict *d)
{
    table *t = tab(d);
    if ((d->used + 1) * 4 <= t->cap * 3)
        return 0;
    size_t cap = t->cap;
    while ((d->count + 1) * 2 > cap)
        cap *= 2;
    int err = 0;
    table *n = table_new(cap, &err);
    if (n == NULL)
        return err;
    for (size_t i = 0; i < t->cap; i++) {
        item *it = slot_get(t, i);
        if (it == NULL || it == TOMB)
            continue;
        size_t j = (size_t)it->hash & (cap - 1);
        while (slot_get(n, j) != NULL)
            j = (j + 1) & (cap - 1);
        atomic_store_explicit(&n->slot[j], it, memory_order_relaxed);
    }
    atomic_store_explicit(&d->t, n, memory_order_release); /* commit */
    d->used = d->count;
    mp__heap_free_any(t);
    return 0;
}

int mp_dict_new(mp_dict **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    int err = 0;
    mp_dict *d = mp__heap_calloc(sizeof *d, &err);
    if (d == NULL)
        return err;
    table *t = table_new(FIRST_CAP, &err);
    if (t == NULL || (err = mp__mutex_init(&d->m)) < 0) {
        mp__heap_free(t);
        mp__heap_free(d);
        return err;
    }
    atomic_init(&d->t, t);
    *out = d;
    return 0;
}

static bool bad_key(mp_dict *d, const void *key, size_t klen)
{
    return d == NULL || (key == NULL && klen > 0);
}

int mp_dict_set(mp_dict *d, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (bad_key(d, key, klen) || (val == NULL && vlen > 0))
        return -EINVAL;
    if (klen > MP_DICT_MAX_KEY || vlen > MP_DICT_MAX_VALUE)
        return MP_ETOOBIG;
    int err = 0;
    item *it = mp__heap_alloc(sizeof *it + klen + vlen, &err);
    if (it == NULL)
        return err;
    it->hash = hash_bytes(key, klen);
    it->klen = (uint32_t)klen;
    it->vlen = vlen;
    if (klen > 0)
        memcpy(it->bytes, key, klen);
    if (vlen > 0)
        memcpy(it->bytes + klen, val, vlen);
    lock(d);
    item *old = NULL;
    size_t free_slot = 0;
    ptrdiff_t at = find(tab(d), it->hash, key, klen, &free_slot);
    if (at >= 0) {
        old = slot_get(tab(d), (size_t)at);
        atomic_store_explicit(&tab(d)->slot[at], it, memory_order_release); /* commit */
    } else if ((err = reserve(d)) == 0) {
        find(tab(d), it->hash, key, klen, &free_slot); /* the table may be new */
        bool reuse = slot_get(tab(d), free_slot) == TOMB;
        atomic_store_explicit(&tab(d)->slot[free_slot], it, memory_order_release); /* commit */
        d->count++;
        d->used += !reuse;
    }
    unlock(d);
    if (err < 0) {
        mp__heap_free_any(it);
        return err;
    }
    if (old != NULL)
        mp__heap_free_any(old);
    return 0;
}

/* Look key up and hand its item to fn under the lock. */
static int with_item(mp_dict *d, const void *key, size_t klen,
                     int (*fn)(const item *it, void *ctx), void *ctx)
{
    if (bad_key(d, key, klen))
        return -EINVAL;
    uint64_t h = hash_bytes(key, klen);
    lock(d);
    ptrdiff_t at = find(tab(d), h, key, klen, NULL);
    int rc = at < 0 ? -ENOENT : fn(slot_get(tab(d), (size_t)at), ctx);
    unlock(d);
    return rc;
}

typedef struct {
    void *buf;
    size_t cap;
    size_t *len;
    void **out;
} copy_ctx;

static int copy_out(const item *it, void *p)
{
    copy_ctx *c = p;
    *c->len = (size_t)it->vlen;
    if (c->out != NULL) {
        void *m = malloc(it->vlen ? (size_t)it->vlen : 1);
        if (m == NULL)
            return -ENOMEM;
        memcpy(m, val_of(it), (size_t)it->vlen);
        *c->out = m;
        return 0;
    }
    if (it->vlen > c->cap)
        return MP_ETOOBIG;
    if (it->vlen > 0)
        memcpy(c->buf, val_of(it), (size_t)it->vlen);
    return 0;
}

int mp_dict_get(mp_dict *d, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    if (vlen == NULL || (buf == NULL && cap > 0))
        return -EINVAL;
    return with_item(d, key, klen, copy_out, &(copy_ctx){buf, cap, vlen, NULL});
}

int mp_dict_get_alloc(mp_dict *d, const void *key, size_t klen, void **val, size_t *vlen)
{
    if (val == NULL || vlen == NULL)
        return -EINVAL;
    *val = NULL;
    return with_item(d, key, klen, copy_out, &(copy_ctx){NULL, 0, vlen, val});
}

static int found(const item *it, void *ctx)
{
    (void)it;
    (void)ctx;
    return 0;
}

bool mp_dict_contains(mp_dict *d, const void *key, size_t klen)
{
    return with_item(d, key, klen, found, NULL) == 0;
}

int mp_dict_del(mp_dict *d, const void *key, size_t klen)
{
    if (bad_key(d, key, klen))
        return -EINVAL;
    uint64_t h = hash_bytes(key, klen);
    lock(d);
    ptrdiff_t at = find(tab(d), h, key, klen, NULL);
    item *old = NULL;
    if (at >= 0) {
        old = slot_get(tab(d), (size_t)at);
        atomic_store_explicit(&tab(d)->slot[at], TOMB, memory_order_release); /* commit */
        d->count--;
    }
    unlock(d);
    if (old == NULL)
        return -ENOENT;
    mp__heap_free_any(old);
    return 0;
}

size_t mp_dict_len(mp_dict *d)
{
    if (d == NULL)
        return 0;
    lock(d);
    size_t n = d->count;
    unlock(d);
    return n;
}

/* Swap in an empty table; return the old one for freeing outside the
 * lock. */
static int swap_empty(mp_dict *d, table **old)
{
    int err = 0;
    table *n = table_new(FIRST_CAP, &err);
    if (n == NULL)
        return err;
    *old = tab(d);
    atomic_store_explicit(&d->t, n, memory_order_release); /* commit */
    d->count = d->used = 0;
    return 0;
}

static void free_table(table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        item *it = slot_get(t, i);
        if (it != NULL && it != TOMB)
            mp__heap_free_any(it);
    }
    mp__heap_free_any(t);
}

int mp_dict_clear(mp_dict *d)
{
    if (d == NULL)
        return -EINVAL;
    table *old = NULL;
    lock(d);
    int rc = swap_empty(d, &old);
    unlock(d);
    if (old != NULL)
        free_table(old);
    return rc;
}

int mp_dict_snapshot_new(mp_dict *d, mp_dict_snapshot **out)
{
    if (d == NULL || out == NULL)
        return -EINVAL;
    *out = NULL;
    mp_dict_snapshot *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    lock(d);
    table *t = tab(d);
    s->items = calloc(d->count ? d->count : 1, sizeof *s->items);
    int rc = s->items ? 0 : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < t->cap; i++) {
        item *it = slot_get(t, i);
        if (it == NULL || it == TOMB)
            continue;
        size_t size = sizeof *it + it->klen + (size_t)it->vlen;
        item *copy = malloc(size);
        if (copy == NULL) {
            rc = -ENOMEM;
            break;
        }
        memcpy(copy, it, size);
        s->items[s->n++] = copy;
    }
    unlock(d);
    if (rc < 0) {
        mp_dict_snapshot_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int mp_dict_snapshot_next(mp_dict_snapshot *s, const void **key, size_t *klen, const void **val,
                          size_t *vlen)
{
    if (s == NULL || key == NULL || klen == NULL || val == NULL || vlen == NULL)
        return -EINVAL;
    if (s->next >= s->n)
        return 0;
    const item *it = s->items[s->next++];
    *key = key_of(it);
    *klen = it->klen;
    *val = val_of(it);
    *vlen = (size_t)it->vlen;
    return 1;
}

size_t mp_dict_snapshot_len(const mp_dict_snapshot *s)
{
    return s == NULL ? 0 : s->n;
}

void mp_dict_snapshot_free(mp_dict_snapshot *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i]);
    free(s->items);
    free(s);
}

void mp_dict_free(mp_dict *d)
{
    if (d == NULL || !mp__heap_owned(d))
        return;
    free_table(tab(d));
    mp__heap_free(d);
}
