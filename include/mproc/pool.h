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
 * Callbacks run one at a time on the pool's supervisor thread, in the
 * parent.  They must not block.  Submitting tasks from a callback never
 * blocks; mp_pool_close, _terminate, _join and _free called from a callback
 * of the same pool return -EDEADLK (or, for _free, do nothing).
 *
 * A pool is local to the process that made it: used in a forked child
 * (a worker included), every call returns -EPERM. */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include <stdint.h>

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

/* A run of count consecutive elements of mp_pool_map_chunks: in[i] ->
 * out[i] for i < count, elements in_size and out_size bytes apart; returns
 * 0 for success (non-zero fails every element of the run with MP_ETASK). */
typedef int (*mp_chunk_fn)(const void *in, void *out, size_t count);

typedef enum {
    MP_POOL_PROCESS, /* worker processes: crash isolation, kill on timeout */
    MP_POOL_THREAD,  /* worker threads: no crash isolation, no timeouts */
    MP_POOL_MPI      /* the other ranks of an MPI job (see "MPI pools" below) */
} mp_pool_kind;

/* mp_pool_opts.flags */
#define MP_POOL_FALLBACK 1u  /* MPI pool: outside mpirun, a process pool instead */
#define MP_POOL_PROGRESS_BAR 2u /* a progress bar on stderr for every map that runs
                                   over a second (as tqdm; also turned on for every
                                   pool by the environment: MPROC_PROGRESS=1) */

typedef struct {
    unsigned workers;                 /* 0: mp_cpu_count() (MPI: every worker rank) */
    mp_pool_kind kind;
    void (*initializer)(void *);      /* run once in each worker at its start */
    void *initarg;
    unsigned maxtasksperchild;        /* 0: unlimited; a map chunk is one task */
    double task_timeout;              /* seconds per task or map item; <= 0: none */
    unsigned flags;                   /* MP_POOL_* flags */
    size_t initarg_len;               /* MPI: bytes at initarg sent to the ranks */
    /* Called on the pool's collector thread for every map, map_ex,
     * map_chunks, imap and imap_items: about 10 times a second while it
     * runs (failed items count as done), and once at its end, before the
     * map returns (imap, imap_items: before the iterator gives MP_EDONE;
     * imap_items counts items as their piece comes back), with done == total when
     * every item ran.  NULL: none. */
    void (*progress)(size_t done, size_t total, void *ud);
    void *progress_ud;
    /* At most this many tasks wait for a worker (0: no bound): once they
     * do, mp_pool_apply_async waits for room (or, with
     * mp_task_opts.nowait, fails with -EAGAIN).  A server's backpressure:
     * it stops accepting while its workers are behind.  Maps are not held
     * back by it. */
    size_t max_queued;
    /* Process pools: bytes of private memory (resident, not shared) a
     * worker may use (0: no limit).  A worker past it is killed and
     * replaced; its task (in a map, its item) fails with MP_EMEMORY.  The
     * supervisor reads each busy worker's size every 20 ms (docs/pool.md);
     * other pool kinds: -EINVAL. */
    size_t worker_memory;
} mp_pool_opts;

#define MP_TASK_MAX_FDS 8

typedef struct {
    void (*callback)(const void *res, size_t len, void *ud); /* run in the parent */
    void (*error_callback)(int code, void *ud);
    void *ud;
    double timeout;   /* 0: the pool's limit; < 0: none; > 0: this task's */
    const int *fds;   /* descriptors the task receives (duplicated at submission; */
    unsigned nfds;    /*   the caller may close its own at once), <= MP_TASK_MAX_FDS */
    bool nowait;      /* a pool at max_queued: -EAGAIN at once instead of waiting */
} mp_task_opts;

/* Why a task failed.  code: the failure (0 for success); signo: the signal
 * that killed the worker (MP_EWORKER; SIGKILL for MP_EMEMORY); exit_status:
 * the worker's exit status if it exited instead; task_rc: the task
 * function's return value (MP_ETASK).
 *
 * A process worker that dies of SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT or
 * SIGTRAP while running the task (stack overflows included) leaves a crash
 * report: fault_addr is the signal's si_addr (the address it touched; for
 * SIGFPE, SIGILL and SIGTRAP the instruction's; 0 for SIGABRT), and crash
 * the faulting thread's stack, one frame a line,
 *   "#N function+0xoffset (object) file:line"
 * (file:line where debug information exists, through elfutils' libdw when
 * the system has it), cut at a frame's end when it would not fit.  Both
 * are 0 / "" for any other end (SIGKILL, _exit, a deadline, MPI ranks'
 * apply tasks, thread pools). */
typedef struct {
    int code;
    int signo;
    int exit_status;
    int task_rc;
    uintptr_t fault_addr;
    char crash[512];
} mp_task_info;

/* One failed item of mp_pool_map_ex. */
typedef struct { size_t index; mp_task_info info; } mp_map_error;

/* Start a pool (opts may be NULL: a process pool of mp_cpu_count()
 * workers).  Returns when the workers are being started; tasks may be
 * submitted at once.  Errors: -EINVAL (out NULL, task_timeout NaN, a
 * timeout for a thread pool, an MPI pool's initarg without initarg_len),
 * -ENOMEM, -EAGAIN, -ENOSYS (kernel without pidfds), and for MPI pools
 * MP_ENOMPI, MP_EFUNC (the initializer), -EBUSY (one is open already).
 * On an MPI worker rank an MPI pool never returns: see below. */
MP_API int mp_pool_new(mp_pool **out, const mp_pool_opts *opts);

/* Run fn(arg, len) on a worker and wait for it; *res (malloc'd, the caller
 * free()s it; NULL when the result is empty) and *res_len receive the
 * result.  res and res_len may be NULL.  Returns 0 or the task's failure
 * (MP_ETASK, MP_EWORKER, MP_EDEADLINE), MP_ECLOSED (pool closed), -EINVAL. */
MP_API int mp_pool_apply(mp_pool *p, mp_task_fn fn, const void *arg, size_t len,
                         void **res, size_t *res_len);

/* Submit fn(arg, len) (the argument is copied) and return at once with a
 * result handle in *out (opts may be NULL).  With out NULL the task is
 * fire and forget: it runs, its callbacks run, its result is dropped.
 * Never blocks, unless the pool has max_queued tasks waiting: then it
 * waits for room (from a callback, or with opts->nowait: -EAGAIN).  Errors:
 * -EINVAL, MP_ECLOSED (also when the pool closes while it waits for
 * room), -ENOMEM, -ENOTSUP (a timeout on a thread pool), -EBADF (a
 * descriptor in opts->fds is not open), -EAGAIN (full, as above). */
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
 * spread over the workers in chunks of chunksize items that they take as
 * they come free (0: automatic, about 64 chunks per worker; about four, as
 * Python's, with maxtasksperchild, which counts a chunk as a task).  Waits
 * for every item.  Returns 0, or the error of the lowest failed item
 * (MP_ETASK, MP_EWORKER, MP_EDEADLINE); every other item is still
 * computed.  Errors: -EINVAL (NULL p or fn, in_size 0, NULL in or out
 * with items to move), -EOVERFLOW (n * in_size or n * out_size past
 * SIZE_MAX), -EDEADLK (called from a callback of the same pool),
 * MP_ECLOSED, MP_ECANCELED (the pool was terminated before every item
 * ran), MP_EFUNC (MPI pools: fn cannot be named on the other ranks),
 * -ENOMEM (also when a failure could not be recorded: the map never
 * reports success for items it did not write). */
MP_API int mp_pool_map(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                       void *out, size_t out_size, size_t chunksize);

/* mp_pool_map that also lists every failed item: *errs (malloc'd, the
 * caller free()s it; NULL when none) holds *nerrs entries in index
 * order. */
MP_API int mp_pool_map_ex(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                          void *out, size_t out_size, size_t chunksize,
                          mp_map_error **errs, size_t *nerrs);

/* mp_pool_map with a function that takes a run of elements at a time: one
 * call per chunk (or per what is left of one after a crash), so that the
 * call per element is gone and the compiler can vectorize the loop; for
 * trivial functions it is several times faster.  Crash isolation and time
 * limits hold per call: a run that fails (non-zero, a crash, past the
 * time limit) fails every element in it, the other runs are computed.
 * chunksize 0: automatic (about 64 runs a worker).  Returns and errors as
 * mp_pool_map_ex (errs and nerrs may be NULL). */
MP_API int mp_pool_map_chunks(mp_pool *p, mp_chunk_fn fn, const void *in, size_t n,
                              size_t in_size, void *out, size_t out_size, size_t chunksize,
                              mp_map_error **errs, size_t *nerrs);

/* Submit the same work as mp_pool_map and return an iterator over the
 * results: in index order (ordered) or as they complete.  `in` must stay
 * valid and unchanged until the iterator is freed.  Errors: -EINVAL (NULL
 * p, fn or out, in_size 0, NULL in with n > 0), -EOVERFLOW (n * in_size or
 * n * out_size past SIZE_MAX), MP_ECLOSED, MP_EFUNC (MPI), -ENOMEM. */
MP_API int mp_pool_imap(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                        size_t out_size, size_t chunksize, bool ordered, mp_iter **out);

/* One item of mp_pool_imap_items: len bytes at data. */
typedef struct {
    const void *data;
    size_t len;
} mp_item;

/* Run fn(data, len, result) on each of n items of any size, as imap does
 * (chunksize items a task, 0: chosen; ordered or as they end), with the
 * same crash, deadline and error isolation per item.  Each item is copied
 * at the call: the caller may free its items when it returns; at most a
 * window of them is in the shared heap at a time, whatever their total.
 * Results, of any size, come from mp_iter_next_item.  *out gets the
 * iterator.  Errors: -EINVAL (p, fn or out NULL, items NULL with n > 0, an
 * item's data NULL with len > 0), MP_ETOOBIG (an item over 4 GiB),
 * MP_ECLOSED, MP_EFUNC (MPI), -ENOMEM.  (mp_iter_next is -EINVAL on it.) */
MP_API int mp_pool_imap_items(mp_pool *p, mp_task_fn fn, const mp_item *items, size_t n,
                              size_t chunksize, bool ordered, mp_iter **out);

/* Next result: copies it to out (out_size bytes) and its index to *index
 * (either may be NULL).  Returns 0, the item's failure (MP_ETASK,
 * MP_EWORKER, MP_EDEADLINE: *index says which item; out is untouched),
 * MP_ETIMEDOUT, or MP_EDONE after the last one. */
MP_API int mp_iter_next(mp_iter *it, void *out, size_t *index, double timeout);

/* Next result of any iterator: *res points at it (valid until the next
 * call on the iterator or its free; NULL when it failed), *len is its size
 * (the element size for imap).  index and len may be NULL.  Returns 0, the
 * item's failure (mp_iter_info says more), MP_ETIMEDOUT, MP_ECANCELED
 * (the pool was terminated), or MP_EDONE after the last one. */
MP_API int mp_iter_next_item(mp_iter *it, const void **res, size_t *len, size_t *index,
                             double timeout);

/* Why the item mp_iter_next or mp_iter_next_item last returned failed: its code, signo (the
 * worker's death), exit_status and task_rc (what fn returned); code 0 if
 * it succeeded.  Returns 0, -EAGAIN (no item returned yet), -EINVAL
 * (it or info NULL), -EPERM.  Calls that return no item (MP_ETIMEDOUT,
 * MP_EDONE) leave it as it was. */
MP_API int mp_iter_info(mp_iter *it, mp_task_info *info);

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

/* What a pool has done and is doing (mp_pool_get_stats).  A map item
 * counts as one task, failed or not; a task cancelled before it ran
 * counts in neither total. */
typedef struct {
    unsigned workers;           /* as asked for (MPI: the worker ranks) */
    uint64_t tasks_done;        /* tasks and map items finished */
    uint64_t tasks_failed;      /* ... of them failed (MP_ETASK, a crash, a
                                   deadline) */
    uint64_t worker_restarts;   /* workers replaced (death, maxtasksperchild,
                                   restart) */
    size_t queued;              /* tasks waiting for a worker (a map waiting
                                   counts one a helper) */
    size_t running;             /* tasks (or map helpers) running now */
} mp_pool_stats;

/* Fill *out with p's counts at this moment (each total is exact at some
 * instant; together they are not a snapshot).  0, -EINVAL, -EPERM (the
 * pool belongs to another process). */
MP_API int mp_pool_get_stats(mp_pool *p, mp_pool_stats *out);

/* The pid of worker i now: -EINVAL past the last worker, -ESRCH between
 * a worker's end and its replacement's start; thread pools: the process's
 * own pid; MPI pools: -ENOTSUP (the workers live on other ranks). */
MP_API pid_t mp_pool_worker_pid(mp_pool *p, unsigned i);

/* Inside a task: the index of the worker running it (0 .. workers-1);
 * -1 outside a task. */
MP_API int mp_pool_worker_index(void);

/* Inside a task: how many descriptors came with it (mp_task_opts.fds). */
MP_API unsigned mp_task_nfds(void);

/* Inside a task: its i-th passed descriptor, open in the worker until the
 * task returns (dup it to keep it longer), or -EBADF. */
MP_API int mp_task_fd(unsigned i);

/* ---- pre-fork servers ----
 *
 * mp_pool_serve turns a process pool into a pre-fork server, as Apache's
 * prefork and gunicorn's sync workers: every worker accepts on the shared
 * listening socket itself (no parent in the way of a connection) and
 * calls the handler for each connection.  A worker that dies is replaced
 * and the service goes on; the connection it held is the only one lost.
 * A connection handled past opts.timeout has its worker killed and
 * replaced; after opts.max_requests connections a worker is replaced.
 * The pool's workers serve until mp_pool_serve_stop; other tasks wait. */

/* A connection's handler, in a worker: serve conn_fd (blocking, closed by
 * the library when the handler returns).  Non-zero counts the connection
 * as failed (mp_pool_stats.tasks_failed); nothing else changes. */
typedef int (*mp_serve_fn)(int conn_fd, void *ud);

typedef struct {
    /* Seconds a connection may take; past it its worker is killed and
     * replaced (gunicorn's timeout).  <= 0: no limit.  With coroutines:
     * how long a worker's scheduler may go without coming back to it (a
     * handler that blocks it). */
    double timeout;
    /* Connections a worker handles before it is replaced (gunicorn's
     * max_requests: a leak in the handler stays bounded); 0: no limit. */
    unsigned max_requests;
    /* After mp_pool_serve_stop: seconds the connections being handled may
     * take to end before their workers are killed; 0: 30. */
    double graceful_timeout;
    /* 0: a worker handles one connection at a time, in blocking calls.  n:
     * up to n at once, each in an mproc coroutine of the worker's own
     * scheduler (the handler uses mp_co_read, mp_co_write... on conn_fd,
     * which is non-blocking): many slow clients per worker. */
    unsigned coroutines;
} mp_serve_opts;

/* What a serve has done so far (mp_pool_serve_stats). */
typedef struct {
    uint64_t connections;       /* ended (handled, failed or lost) */
    uint64_t failed;            /* ... of them whose handler returned non-zero,
                                   or lost with their worker */
    uint64_t worker_deaths;     /* serving workers that died (a crash, a kill) */
    uint64_t timeouts;          /* ... killed for a connection past opts.timeout */
    uint64_t recycled;          /* workers replaced after max_requests */
} mp_serve_stats;

/* Serve listen_fd, a listening socket, on every worker of process pool p
 * until mp_pool_serve_stop: blocks.  handle(conn_fd, ud) runs in the
 * workers (ud as it was when the pool was made: workers see the memory of
 * mp_pool_new).  listen_fd is shared with the workers and made
 * non-blocking while it serves (its flag is put back at the end).  opts
 * may be NULL (no time limit, no recycling).  Returns 0 once stopped and
 * drained; MP_ECLOSED (the pool was closed or terminated); -EINVAL (p or
 * handle NULL, a NaN or negative graceful_timeout, listen_fd not
 * listening); -ENOTSOCK; -EBADF; -ENOTSUP (a thread or MPI pool); -EBUSY
 * (already serving); -ENOMEM. */
MP_API int mp_pool_serve(mp_pool *p, int listen_fd, mp_serve_fn handle, void *ud,
                         const mp_serve_opts *opts);

/* Make mp_pool_serve return: the workers stop accepting, finish the
 * connections they hold (within opts.graceful_timeout, then they are
 * killed), and the call returns 0.  Async-signal-safe (a SIGTERM handler
 * may call it).  0, -EINVAL (p NULL), -ESRCH (not serving). */
MP_API int mp_pool_serve_stop(mp_pool *p);

/* The counts of the serve under way on p (or of the last one).  0,
 * -EINVAL, -EPERM (another process's pool). */
MP_API int mp_pool_serve_stats(mp_pool *p, mp_serve_stats *out);

/* ---- MPI pools ----
 *
 * Under `mpirun -n N ./app`, rank 0 runs the program and ranks 1..N-1
 * serve its MPI pools: the same calls as a process pool, with each task
 * run on a worker rank inside a local worker process (a crash fails the
 * task with MP_EWORKER, a time limit kills it with MP_EDEADLINE).  Task
 * functions travel as (loaded object, offset) references, never as
 * pointers: a function outside the code of the loaded objects fails at
 * submission with MP_EFUNC; one whose object is not loaded on the worker
 * rank fails that task with MP_EFUNC.  Arguments, results and map items
 * travel as bytes: they must not hold pointers.  Descriptors cannot be
 * passed (-ENOTSUP).  One MPI pool may be open at a time.
 *
 * Worker ranks: the first of mp_mpi_init or mp_pool_new(MP_POOL_MPI) to
 * run on them serves tasks until rank 0 calls mp_mpi_finalize (or exits),
 * then finalizes MPI and ends the process with exit(0); it never returns.
 * Call mp_mpi_init first thing in main so that nothing before it runs on
 * every rank.  Worker ranks fork their worker processes from a server
 * started before MPI_Init, since several MPI transports do not support
 * fork() after it (if the program called MPI_Init itself, that guarantee
 * is lost).
 *
 * The loss of a whole rank (killed, its node down) ends the MPI job, as
 * MPI does: no pool can recover from it. */

/* Join the MPI job if started by mpirun: initializes MPI (threads
 * serialized) unless the program did.  Returns 0 on rank 0; never returns
 * on the other ranks.  MP_ENOMPI: not started by mpirun with at least two
 * ranks, or the library was built without MPI. */
MP_API int mp_mpi_init(void);

/* This process's rank in the MPI job, or -1 when not under mpirun. */
MP_API int mp_mpi_rank(void);

/* On rank 0: release the worker ranks and finalize MPI (if mproc
 * initialized it).  Done at exit if not called; an MPI pool still open is
 * terminated first.  Returns 0, -EPERM (not rank 0's process). */
MP_API int mp_mpi_finalize(void);

MP_END_DECLS

#endif
