/* mproc — pools of workers (multiprocessing.Pool, multiprocessing.pool
 * ThreadPool, concurrent.futures).
 *
 * A process pool forks its workers from a small single-threaded fork server
 * made when the pool is created, so workers see the parent's memory as of
 * mp_pool_new (code, globals, and the shared heap at its fixed address).
 * Task functions are plain function pointers of the program: they are valid
 * in the workers because the workers are forks of it.
 *
 * Beyond Python: a worker that dies (segfault, abort, _exit, SIGKILL) fails
 * only the task it was running, with MP_EWORKER, and is replaced; a task
 * that runs past its time limit is killed and fails with MP_EDEADLINE; a
 * task function that returns non-zero fails with MP_ETASK.  In map and
 * imap these hold per item: the other items of the chunk still complete.
 *
 * Tasks and results cross through the shared heap, never through a pipe.
 * Arguments are copied once into it; results are written there once by the
 * worker and read in place by mp_result_get.  map over arrays allocated
 * with mp_shared_alloc reads and writes them in place, without any copy.
 *
 * Callbacks run one at a time on the pool's collector thread, in the
 * parent.  They must not block.  Submitting tasks from a callback never
 * blocks; mp_pool_close, _terminate, _join and _free called from a callback
 * of the same pool return -EDEADLK (or, for _free, do nothing).
 *
 * A pool is local to the process that made it: used in a forked child
 * (a worker included), every call returns -EPERM. */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include <mproc/common.h>

MP_BEGIN_DECLS

typedef struct mp_pool mp_pool;
typedef struct mp_result mp_result;
typedef struct mp_iter mp_iter;
typedef struct mp_buf mp_buf;

/* Append len bytes to a task's result.  Returns 0, -EINVAL (NULL buffer,
 * or data NULL with len > 0), -ENOMEM (the shared heap is full). */
MP_API int mp_buf_append(mp_buf *b, const void *data, size_t len);

/* A task: reads len bytes at arg, appends its result to *result, returns 0
 * for success (non-zero fails the task with MP_ETASK; the value is kept in
 * mp_task_info.task_rc). */
typedef int (*mp_task_fn)(const void *arg, size_t len, mp_buf *result);

/* One element of map/imap: reads *in, writes *out, returns 0 for success. */
typedef int (*mp_map_fn)(const void *in, void *out);

typedef enum {
    MP_POOL_PROCESS, /* worker processes: crash isolation, kill on timeout */
    MP_POOL_THREAD   /* worker threads: no crash isolation, no timeouts */
} mp_pool_kind;

typedef struct {
    unsigned workers;                 /* 0: mp_cpu_count() */
    mp_pool_kind kind;
    void (*initializer)(void *);      /* run once in each worker at its start */
    void *initarg;
    unsigned maxtasksperchild;        /* 0: unlimited; a map chunk is one task */
    double task_timeout;              /* seconds per task or map item; <= 0: none */
} mp_pool_opts;

#define MP_TASK_MAX_FDS 8

typedef struct {
    void (*callback)(const void *res, size_t len, void *ud); /* run in the parent */
    void (*error_callback)(int code, void *ud);
    void *ud;
    double timeout;   /* 0: the pool's limit; < 0: none; > 0: this task's */
    const int *fds;   /* descriptors the task receives (duplicated at submission; */
    unsigned nfds;    /*   the caller may close its own at once), <= MP_TASK_MAX_FDS */
} mp_task_opts;

/* Why a task failed.  code: the failure (0 for success); signo: the signal
 * that killed the worker (MP_EWORKER); exit_status: the worker's exit
 * status if it exited instead; task_rc: the task function's return value
 * (MP_ETASK). */
typedef struct { int code; int signo; int exit_status; int task_rc; } mp_task_info;

/* One failed item of mp_pool_map_ex. */
typedef struct { size_t index; mp_task_info info; } mp_map_error;

/* Start a pool (opts may be NULL: a process pool of mp_cpu_count()
 * workers).  Returns when the workers are being started; tasks may be
 * submitted at once.  Errors: -EINVAL (out NULL, task_timeout NaN, a
 * timeout for a thread pool), -ENOMEM, -EAGAIN, -ENOSYS (kernel without
 * pidfds). */
MP_API int mp_pool_new(mp_pool **out, const mp_pool_opts *opts);

/* Run fn(arg, len) on a worker and wait for it; *res (malloc'd, the caller
 * free()s it; NULL when the result is empty) and *res_len receive the
 * result.  res and res_len may be NULL.  Returns 0 or the task's failure
 * (MP_ETASK, MP_EWORKER, MP_EDEADLINE), MP_ECLOSED (pool closed), -EINVAL. */
MP_API int mp_pool_apply(mp_pool *p, mp_task_fn fn, const void *arg, size_t len,
                         void **res, size_t *res_len);

/* Submit fn(arg, len) (the argument is copied) and return at once with a
 * result handle in *out (opts may be NULL).  Never blocks.  Errors:
 * -EINVAL, MP_ECLOSED, -ENOMEM, -ENOTSUP (a timeout on a thread pool). */
MP_API int mp_pool_apply_async(mp_pool *p, mp_task_fn fn, const void *arg, size_t len,
                               const mp_task_opts *opts, mp_result **out);

/* Wait up to timeout for the task, then give its result: *res (may be NULL
 * for an empty result) lives until mp_result_free.  Returns 0, the task's
 * failure (MP_ETASK, MP_EWORKER, MP_EDEADLINE, MP_ECANCELED), or
 * MP_ETIMEDOUT if it has not finished by then. */
MP_API int mp_result_get(mp_result *r, double timeout, const void **res, size_t *len);

/* Wait up to timeout for the task to finish: 0 or MP_ETIMEDOUT. */
MP_API int mp_result_wait(mp_result *r, double timeout);

/* True once the task has finished (successfully or not). */
MP_API bool mp_result_ready(mp_result *r);

/* Cancel a task that no worker has started: 0 (it fails with
 * MP_ECANCELED), -EBUSY (running or finished), -EINVAL. */
MP_API int mp_result_cancel(mp_result *r);

/* Why a finished task failed.  Returns 0, -EAGAIN (not finished), -EINVAL. */
MP_API int mp_result_info(mp_result *r, mp_task_info *info);

/* Wait up to timeout until one of rs[0..n) has finished and return its
 * index (the lowest finished one).  NULL entries are skipped, so setting
 * each handled entry to NULL iterates results as they complete (as
 * concurrent.futures.as_completed).  Errors: MP_ETIMEDOUT, MP_EDONE (every
 * entry NULL), -EINVAL. */
MP_API int mp_result_wait_any(mp_result *const *rs, size_t n, double timeout);

/* Wait up to timeout until every non-NULL entry of rs has finished:
 * 0, MP_ETIMEDOUT, -EINVAL. */
MP_API int mp_result_wait_all(mp_result *const *rs, size_t n, double timeout);

/* Release a result.  A task still queued or running goes on; its result is
 * dropped when it ends.  NULL: no-op. */
MP_API void mp_result_free(mp_result *r);

/* out[i] = fn(in[i]) for i < n (elements of in_size and out_size bytes),
 * spread over the workers in chunks of chunksize items (0: automatic, about
 * four chunks per worker).  Waits for every item.  Returns 0, or the error
 * of the lowest failed item (MP_ETASK, MP_EWORKER, MP_EDEADLINE); every
 * other item is still computed.  Errors: -EINVAL, MP_ECLOSED, -ENOMEM. */
MP_API int mp_pool_map(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                       void *out, size_t out_size, size_t chunksize);

/* mp_pool_map that also lists every failed item: *errs (malloc'd, the
 * caller free()s it; NULL when none) holds *nerrs entries in index
 * order. */
MP_API int mp_pool_map_ex(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                          void *out, size_t out_size, size_t chunksize,
                          mp_map_error **errs, size_t *nerrs);

/* Submit the same work as mp_pool_map and return an iterator over the
 * results: in index order (ordered) or as they complete.  `in` must stay
 * valid and unchanged until the iterator is freed. */
MP_API int mp_pool_imap(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                        size_t out_size, size_t chunksize, bool ordered, mp_iter **out);

/* Next result: copies it to out (out_size bytes) and its index to *index
 * (either may be NULL).  Returns 0, the item's failure (MP_ETASK,
 * MP_EWORKER, MP_EDEADLINE: *index says which item; out is untouched),
 * MP_ETIMEDOUT, or MP_EDONE after the last one. */
MP_API int mp_iter_next(mp_iter *it, void *out, size_t *index, double timeout);

/* Release an iterator; work not yet done is cancelled.  NULL: no-op. */
MP_API void mp_iter_free(mp_iter *it);

/* No more tasks: later submissions fail with MP_ECLOSED; queued ones run. */
MP_API int mp_pool_close(mp_pool *p);

/* Stop now: kill the workers; tasks not finished fail with MP_ECANCELED. */
MP_API int mp_pool_terminate(mp_pool *p);

/* After close or terminate: wait up to timeout until every task has ended,
 * its callbacks have returned, and the workers have exited.  Returns 0,
 * MP_ETIMEDOUT, -EBUSY (neither closed nor terminated), -EDEADLK (from a
 * callback), -EINVAL. */
MP_API int mp_pool_join(mp_pool *p, double timeout);

/* Terminate if need be, join, and release the pool.  Results and iterators
 * still held stay valid (unfinished ones fail with MP_ECANCELED) until
 * freed.  NULL: no-op. */
MP_API void mp_pool_free(mp_pool *p);

/* Inside a task: the index of the worker running it (0 .. workers-1);
 * -1 outside a task. */
MP_API int mp_pool_worker_index(void);

/* Inside a task: how many descriptors came with it (mp_task_opts.fds). */
MP_API unsigned mp_task_nfds(void);

/* Inside a task: its i-th passed descriptor, open in the worker until the
 * task returns (dup it to keep it longer), or -EBADF. */
MP_API int mp_task_fd(unsigned i);

MP_END_DECLS

#endif
