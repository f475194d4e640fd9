/* mproc — process-shared queues of byte messages (multiprocessing.Queue,
 * JoinableQueue, queue.LifoQueue, queue.PriorityQueue).
 *
 * A queue lives in the shared heap: it works between threads and between
 * every process forked after it was created, with any number of producers
 * and consumers.  Messages are copied in and out; each is at most max_msg
 * bytes.
 *
 * Crash safety: a producer or consumer killed at any instruction (even by
 * SIGKILL) leaves the queue usable and consistent for the others.  Each
 * message is delivered whole, once, or not at all; the one message a
 * consumer was taking when it died may be lost with it.  For join, the
 * queue keeps, per consumer process, the messages it took and has not
 * task_done'd: when that process dies they count as done (that one
 * message too), and a join reports the death (MP_EOWNERDEAD) instead of
 * waiting forever.
 *
 * Timeouts: MP_FOREVER blocks, 0 never blocks, NaN is -EINVAL.  As Python
 * raises Full/Empty, put and get return MP_EFULL / MP_EEMPTY when the
 * timeout expires. */
#ifndef MPROC_QUEUE_H
#define MPROC_QUEUE_H

#include <mproc/common.h>
#include <mproc/error.h>

MP_BEGIN_DECLS

typedef struct mp_queue mp_queue;

typedef enum {
    MP_FIFO,     /* Queue: first in, first out */
    MP_LIFO,     /* LifoQueue: last in, first out */
    MP_PRIORITY  /* PriorityQueue: lowest priority number first; FIFO among equals */
} mp_queue_order;

/* The default and largest message size (max_msg 0 means the default). */
#define MP_QUEUE_DEFAULT_MAX_MSG ((size_t)1 << 20)
#define MP_QUEUE_LARGEST_MAX_MSG ((size_t)1 << 30)

typedef struct {
    size_t maxsize;        /* most messages held at once; 0: unbounded */
    size_t max_msg;        /* largest message in bytes; 0: 1 MiB */
    mp_queue_order order;
} mp_queue_opts;

/* Create a queue.  opts NULL: FIFO, unbounded, 1 MiB messages.
 * Errors: -EINVAL (out NULL, bad order, max_msg over 1 GiB, maxsize over
 * 2^31), -ENOMEM (shared heap exhausted). */
MP_API int mp_queue_new(mp_queue **out, const mp_queue_opts *opts);

/* Append a message of len bytes (len 0 is allowed), waiting at most
 * timeout s for room in a bounded queue.  In a priority queue it gets
 * priority 0.  Returns 0, MP_EFULL (no room by the deadline), MP_ECLOSED,
 * MP_ETOOBIG (len > max_msg), -EINVAL (NULL queue, NULL data with len > 0,
 * NaN), -ENOMEM. */
MP_API int mp_queue_put(mp_queue *q, const void *data, size_t len, double timeout);

/* Same with a priority (only meaningful for MP_PRIORITY queues: lower
 * numbers come out first; in FIFO/LIFO queues prio is ignored). */
MP_API int mp_queue_put_prio(mp_queue *q, int prio, const void *data, size_t len,
                             double timeout);

/* Take the next message into buf (cap bytes), waiting at most timeout s.
 * *len gets its size.  Returns 0, MP_EEMPTY (none by the deadline),
 * MP_ECLOSED (shut down and drained), MP_ETOOBIG (cap too small: *len is the
 * size needed and the message stays queued), -EINVAL (NULL q or len, NULL
 * buf with cap > 0, NaN). */
MP_API int mp_queue_get(mp_queue *q, void *buf, size_t cap, size_t *len, double timeout);

/* Take the next message into a malloc'd buffer (*data; the caller frees
 * it; at least 1 byte even for an empty message).  Same returns as
 * mp_queue_get, without MP_ETOOBIG, plus -ENOMEM. */
MP_API int mp_queue_get_alloc(mp_queue *q, void **data, size_t *len, double timeout);

/* Messages queued now (a snapshot, like Python's qsize()); 0 for NULL. */
MP_API size_t mp_queue_qsize(mp_queue *q);
/* qsize() == 0 / a bounded queue at maxsize (snapshots); false for NULL. */
MP_API bool mp_queue_empty(mp_queue *q);
MP_API bool mp_queue_full(mp_queue *q);

/* JoinableQueue: mark one message taken by get as processed (counted
 * against the calling process's messages, if it holds any).  Returns 0,
 * -EOVERFLOW (called more times than messages were put), -EINVAL. */
MP_API int mp_queue_task_done(mp_queue *q);
/* Wait until every message put so far has been task_done'd, or taken by a
 * consumer process that has died since (its messages count as done).
 * Returns 0; MP_EOWNERDEAD once for each consumer that died holding
 * messages (to one join: at once for a join waiting then, within a
 * second of the death; otherwise to the next join), after which a join
 * returns 0 once the rest are done; MP_ETIMEDOUT; -EINVAL. */
MP_API int mp_queue_join(mp_queue *q, double timeout);

/* Shut the queue down for every process, as Python 3.13's
 * Queue.shutdown(immediate): later puts, and puts blocked on a full queue,
 * return MP_ECLOSED.  Not immediate: gets drain what is queued, then return
 * MP_ECLOSED.  Immediate: what is queued is dropped (each dropped message
 * counts as task_done'd, so mp_queue_join waiters are released once the
 * messages taken before are done too), and blocked gets return MP_ECLOSED
 * at once.  Wakes every waiter.  Calling it again is harmless (an
 * immediate one after a plain one still drops).  Returns 0 or -EINVAL. */
MP_API int mp_queue_shutdown(mp_queue *q, bool immediate);

/* mp_queue_shutdown(q, false).  Not Python's Queue.close(), which concerns
 * only the calling process (it has no C counterpart: there is no feeder
 * thread to stop; a producer that is done simply stops putting). */
MP_API int mp_queue_close(mp_queue *q);

/* Free the queue and the messages in it (creator only; a no-op in other
 * processes and for NULL).  No one may use it afterwards. */
MP_API void mp_queue_free(mp_queue *q);

MP_END_DECLS

#endif
