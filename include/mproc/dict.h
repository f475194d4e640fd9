/* mproc — a shared dict and list (Manager().dict(), Manager().list()).
 *
 * Both live in the shared heap: create one before forking and every
 * descendant, and every thread, may use it.  Keys and values are byte
 * strings, copied in and out.  Every operation is atomic: a process killed
 * by SIGKILL in the middle of one leaves the structure consistent for the
 * others, with the operation either done or not done.
 *
 * Unlike Python's Manager, there is no server process: an operation is a
 * robust lock, a lookup and a copy, in the caller's process. */
#ifndef MPROC_DICT_H
#define MPROC_DICT_H

#include <mproc/common.h>
#include <mproc/error.h>

MP_BEGIN_DECLS

typedef struct mp_dict mp_dict;
typedef struct mp_list mp_list;
typedef struct mp_dict_snapshot mp_dict_snapshot;

/* Largest key (bytes) and largest value or list item. */
#define MP_DICT_MAX_KEY ((size_t)64 << 10)
#define MP_DICT_MAX_VALUE ((size_t)1 << 30)

/* ---- dict ---- */

/* An empty dict.  Errors: -EINVAL, -ENOMEM. */
MP_API int mp_dict_new(mp_dict **out);

/* d[key] = val.  Errors: -EINVAL (NULL dict, NULL key or val with a
 * non-zero length), MP_ETOOBIG (key or value over the limits), -ENOMEM. */
MP_API int mp_dict_set(mp_dict *d, const void *key, size_t klen, const void *val, size_t vlen);

/* Copy d[key] into buf (cap bytes); *vlen gets its size.  Returns 0,
 * -ENOENT (no such key), MP_ETOOBIG (cap too small; *vlen is the size
 * needed), -EINVAL. */
MP_API int mp_dict_get(mp_dict *d, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *vlen);

/* d[key] in a malloc'd buffer (*val, at least 1 byte; the caller frees
 * it).  Returns 0, -ENOENT, -EINVAL, -ENOMEM. */
MP_API int mp_dict_get_alloc(mp_dict *d, const void *key, size_t klen, void **val, size_t *vlen);

/* del d[key].  Returns 0, -ENOENT, -EINVAL. */
MP_API int mp_dict_del(mp_dict *d, const void *key, size_t klen);

/* key in d (false for NULL). */
MP_API bool mp_dict_contains(mp_dict *d, const void *key, size_t klen);

/* len(d) (0 for NULL). */
MP_API size_t mp_dict_len(mp_dict *d);

/* Remove every item.  Returns 0, -EINVAL, -ENOMEM. */
MP_API int mp_dict_clear(mp_dict *d);

/* A private copy of every item, taken at one instant (d.items()).  Walk it
 * with mp_dict_snapshot_next; free it with mp_dict_snapshot_free.  Returns
 * 0, -EINVAL, -ENOMEM. */
MP_API int mp_dict_snapshot_new(mp_dict *d, mp_dict_snapshot **out);

/* The next item of the snapshot: 1 (pointers into the snapshot, valid
 * until it is freed), 0 at the end, -EINVAL. */
MP_API int mp_dict_snapshot_next(mp_dict_snapshot *s, const void **key, size_t *klen,
                                 const void **val, size_t *vlen);

/* Items in the snapshot (0 for NULL). */
MP_API size_t mp_dict_snapshot_len(const mp_dict_snapshot *s);

MP_API void mp_dict_snapshot_free(mp_dict_snapshot *s);

/* Free the dict and its items (creator only; a no-op elsewhere and for
 * NULL).  No one may use it afterwards. */
MP_API void mp_dict_free(mp_dict *d);

/* ---- list ---- */

/* An empty list.  Errors: -EINVAL, -ENOMEM. */
MP_API int mp_list_new(mp_list **out);

/* l.append(val): amortised O(1).  Errors: -EINVAL, MP_ETOOBIG, -ENOMEM. */
MP_API int mp_list_append(mp_list *l, const void *val, size_t len);

/* Copy l[i] into buf (cap bytes); *len gets its size.  Returns 0, -ERANGE
 * (i >= len(l)), MP_ETOOBIG (cap too small; *len is the size needed),
 * -EINVAL. */
MP_API int mp_list_get(mp_list *l, size_t i, void *buf, size_t cap, size_t *len);

/* l[i] in a malloc'd buffer.  Returns 0, -ERANGE, -EINVAL, -ENOMEM. */
MP_API int mp_list_get_alloc(mp_list *l, size_t i, void **val, size_t *len);

/* l[i] = val.  Returns 0, -ERANGE, -EINVAL, MP_ETOOBIG, -ENOMEM. */
MP_API int mp_list_set(mp_list *l, size_t i, const void *val, size_t len);

/* l.insert(i, val): i == len(l) appends.  O(len).  Returns 0, -ERANGE
 * (i > len(l)), -EINVAL, MP_ETOOBIG, -ENOMEM. */
MP_API int mp_list_insert(mp_list *l, size_t i, const void *val, size_t len);

/* l.pop(i) into buf (NULL and cap 0 to discard it): O(1) for the last
 * item, O(len) otherwise.  Returns 0, -ERANGE, MP_ETOOBIG (nothing is
 * removed; *len is the size needed), -EINVAL, -ENOMEM. */
MP_API int mp_list_pop(mp_list *l, size_t i, void *buf, size_t cap, size_t *len);

/* len(l) (0 for NULL). */
MP_API size_t mp_list_len(mp_list *l);

/* Remove every item.  Returns 0, -EINVAL, -ENOMEM. */
MP_API int mp_list_clear(mp_list *l);

/* Free the list and its items (creator only; a no-op elsewhere and for
 * NULL). */
MP_API void mp_list_free(mp_list *l);

MP_END_DECLS

#endif
