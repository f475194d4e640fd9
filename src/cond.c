/* Condition and Barrier.
 *
 * Condition: a FIFO list of waiter nodes guarded by the condition's own
 * lock, which the caller holds in wait and notify.  A waiter takes a node
 * from the shared heap (waiters and notifiers in other processes write
 * it), links it at the tail while it still holds the lock, releases the
 * lock and sleeps on node->state until it is non-zero or the deadline
 * passes.  notify(n) sets the state of up to n nodes from the head to 1,
 * wakes each and unlinks it.  Back under the lock, a waiter whose state is
 * set was notified (even if its deadline passed too); any other unlinks
 * itself and times out.  So notify(n) wakes exactly min(n, linked)
 * waiters, a waiter that has not linked yet cannot take a wake-up meant
 * for the others, and no wait returns 0 without a notification.
 *
 * Kill -9.  A list change is a few stores under the lock.  Each is first
 * written to a redo journal in the condition (the node and its neighbours,
 * read before the change), committed by one store of the journal's op,
 * then done by replaying the journal, which only stores values taken from
 * it: doing it twice is harmless.  Whoever next holds the lock and touches
 * the list (wait, notify, mp_cond_acquire), perhaps after an
 * MP_EOWNERDEAD, replays a committed entry first.  Nodes are freed only by
 * their own waiter, holding the lock, after a replay, so no link and no
 * journal entry ever points to a freed node.  What deaths cost:
 *  - a waiter killed while linked stays linked until a notify reaches its
 *    node, which consumes one notification (Python's Condition has the
 *    same limit); its node leaks (32 bytes of heap);
 *  - a waiter killed after being notified takes the notification with it;
 *  - a notifier killed mid-notify: the replay finishes the wake-up it
 *    began; killed between committing and setting the state, it leaves
 *    that waiter asleep until the next wait, notify or mp_cond_acquire
 *    replays the journal (or the waiter's deadline).
 * Only the order of the stores as the dying thread made them matters: it
 * runs the kernel's robust-list walk itself, after all its stores, so the
 * next holder sees them all; compiler fences keep them in program order.
 *
 * Barrier: an internal robust mutex guards the counters; waiters sleep on
 * a generation word that the last arrival (or abort/reset/timeout) bumps.
 * Each generation's outcome (passed or broken) is kept in a 64-bit history
 * so a waiter woken late still knows how its own generation ended.  The
 * last arrival runs the action holding the mutex, as Python runs it under
 * the barrier's lock.  If a process dies holding the mutex (in the action,
 * say), the next caller recovers it and breaks the barrier rather than
 * trust the counters; waiters look for that once a sleep slice, so they
 * learn of it even if no one else comes. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/sync.h"
#include "mutex_int.h"
#include "os/os.h"
#include "wait_int.h"
#include "sync_int.h"

/* A waiter's node.  Links are guarded by the condition's lock; state is
 * also read by its sleeping waiter without the lock. */
struct cond_node {
    struct cond_node *next, *prev;
    _Atomic uint32_t state; /* 0: waiting; 1: notified */
};

/* Journal ops: the list change a holder has committed to. */
enum { J_NONE, J_LINK, J_UNLINK, J_NOTIFY };

struct mp_cond {
    struct mp_lock *lock;   /* the lock, or &rlock->lock */
    mp_rlock *rlock;        /* NULL for a plain lock */
    bool owns_lock;         /* made by new: freed with the condition */
    struct cond_node *head; /* oldest waiter, notified first */
    struct cond_node *tail;
    /* The redo journal (see the top of the file): the node changed and its
     * neighbours as they were before; op commits the entry. */
    struct cond_node *j_node, *j_prev, *j_next;
    _Atomic uint32_t j_op;
};

static int cond_make(mp_cond **out, struct mp_lock *lock, mp_rlock *rlock, bool owns)
{
    int err = 0;
    mp_cond *c = mp__heap_calloc(sizeof *c, &err);
    if (c == NULL)
        return err;
    c->lock = lock;
    c->rlock = rlock;
    c->owns_lock = owns;
    *out = c;
    return 0;
}

int mp_cond_new(mp_cond **out, mp_lock *lock)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    bool owns = lock == NULL;
    if (owns) {
        int rc = mp_lock_new(&lock);
        if (rc < 0)
            return rc;
    }
    int rc = cond_make(out, lock, NULL, owns);
    if (rc < 0 && owns)
        mp_lock_free(lock);
    return rc;
}

int mp_cond_new_rlock(mp_cond **out, mp_rlock *lock)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    bool owns = lock == NULL;
    if (owns) {
        int rc = mp_rlock_new(&lock);
        if (rc < 0)
            return rc;
    }
    int rc = cond_make(out, &lock->lock, lock, owns);
    if (rc < 0 && owns)
        mp_rlock_free(lock);
    return rc;
}

mp_lock *mp_cond_lock(mp_cond *c)
{
    return c != NULL && c->rlock == NULL ? c->lock : NULL;
}

mp_rlock *mp_cond_rlock(mp_cond *c)
{
    return c != NULL ? c->rlock : NULL;
}

/* ---- the waiter list and its journal (lock held) ---- */

/* Do the committed change, or do it again: it stores only values read
 * from the journal, so a replay after a holder's death is harmless. */
static void journal_replay(mp_cond *c)
{
    uint32_t op = atomic_load_explicit(&c->j_op, memory_order_relaxed);
    if (op == J_NONE)
        return;
    struct cond_node *n = c->j_node, *p = c->j_prev, *x = c->j_next;
    if (op == J_NOTIFY) {
        /* Wake first: a notifier killed after this loses nothing. */
        atomic_store_explicit(&n->state, 1, memory_order_release);
        mp__futex_wake(&n->state, 1);
    }
    if (op == J_LINK) {
        n->prev = p;
        n->next = NULL;
        *(p != NULL ? &p->next : &c->head) = n;
        c->tail = n;
    } else {
        *(p != NULL ? &p->next : &c->head) = x;
        *(x != NULL ? &x->prev : &c->tail) = p;
    }
    /* Compiler fence: the change is made before the entry is cleared (a
     * relaxed store could move up past plain stores). */
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&c->j_op, J_NONE, memory_order_relaxed);
}

/* Commit to a change of n (its neighbours p, x as they are now), then
 * make it. */
static void journal_do(mp_cond *c, uint32_t op, struct cond_node *n, struct cond_node *p,
                       struct cond_node *x)
{
    c->j_node = n;
    c->j_prev = p;
    c->j_next = x;
    /* Compiler fences: the entry is complete before its commit, and the
     * commit precedes the change. */
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&c->j_op, op, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    journal_replay(c);
}

static void list_link(mp_cond *c, struct cond_node *n)
{
    journal_do(c, J_LINK, n, c->tail, NULL);
}

static void list_unlink(mp_cond *c, struct cond_node *n)
{
    journal_do(c, J_UNLINK, n, n->prev, n->next);
}

static void list_notify_head(mp_cond *c)
{
    struct cond_node *n = c->head;
    journal_do(c, J_NOTIFY, n, NULL, n->next);
}

/* ---- Condition ---- */

int mp_cond_acquire(mp_cond *c, double timeout)
{
    if (c == NULL)
        return -EINVAL;
    int rc = c->rlock ? mp_rlock_acquire(c->rlock, timeout) : mp_lock_acquire(c->lock, timeout);
    if (MP_ACQUIRED(rc))
        journal_replay(c); /* a dead holder's half-made change */
    return rc;
}

int mp_cond_release(mp_cond *c)
{
    if (c == NULL)
        return -EINVAL;
    return c->rlock ? mp_rlock_release(c->rlock) : mp_lock_release(c->lock);
}

/* Sleep until n is notified or the deadline passes (lock not held). */
static void node_sleep(struct cond_node *n, int64_t deadline)
{
    mp__wait_change(&n->state, NULL, 0, deadline, 0); /* loops on spurious returns */
}

/* mp_cond_wait with an absolute deadline; the lock is held. */
static int cond_wait_until(mp_cond *c, int64_t deadline)
{
    int err = 0;
    struct cond_node *n = mp__heap_alloc(sizeof *n, &err);
    if (n == NULL)
        return err;
    atomic_init(&n->state, 0);
    journal_replay(c);
    list_link(c, n);
    unsigned depth = c->rlock ? c->rlock->count : 0;
    mp__lock_release(c->lock); /* fully, however deep an rlock is held */

    node_sleep(n, deadline);

    int lrc = mp__lock_acquire(c->lock, MP__NO_DEADLINE);
    if (!MP_ACQUIRED(lrc))
        return lrc; /* cannot happen (-EDEADLK needs us to hold it) */
    if (c->rlock)
        c->rlock->count = depth;
    journal_replay(c);
    /* Under the lock the state is final: notify sets it holding the lock. */
    bool notified = atomic_load_explicit(&n->state, memory_order_relaxed) != 0;
    if (!notified)
        list_unlink(c, n);
    mp__heap_free(n);
    if (lrc == MP_EOWNERDEAD)
        return MP_EOWNERDEAD;
    return notified ? 0 : MP_ETIMEDOUT;
}

int mp_cond_wait(mp_cond *c, double timeout)
{
    int64_t deadline;
    if (c == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (!mp__lock_held(c->lock))
        return -EPERM;
    return cond_wait_until(c, deadline);
}

int mp_cond_wait_for(mp_cond *c, bool (*pred)(void *), void *arg, double timeout)
{
    int64_t deadline;
    if (c == NULL || pred == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (!mp__lock_held(c->lock))
        return -EPERM;
    for (;;) {
        if (pred(arg))
            return 0;
        if (mp__now_ns() >= deadline)
            return MP_ETIMEDOUT;
        int rc = cond_wait_until(c, deadline);
        if (rc == MP_ETIMEDOUT) /* one last look, as Python's wait_for */
            return pred(arg) ? 0 : MP_ETIMEDOUT;
        if (rc != 0)
            return rc; /* MP_EOWNERDEAD: repair before trusting pred */
    }
}

int mp_cond_notify(mp_cond *c, unsigned n)
{
    if (c == NULL)
        return -EINVAL;
    if (!mp__lock_held(c->lock))
        return -EPERM;
    journal_replay(c);
    for (; n > 0 && c->head != NULL; n--)
        list_notify_head(c);
    return 0;
}

int mp_cond_notify_all(mp_cond *c)
{
    return mp_cond_notify(c, UINT32_MAX);
}

void mp_cond_free(mp_cond *c)
{
    if (c == NULL)
        return;
    bool owns = c->owns_lock;
    struct mp_lock *lock = c->lock;
    mp_rlock *rlock = c->rlock;
    if (mp__heap_free(c) != 0 || !owns) /* no-op unless ours */
        return;
    if (rlock != NULL)
        mp_rlock_free(rlock);
    else
        mp_lock_free(lock);
}

/* ---- Barrier ---- */

struct mp_barrier {
    mp__mutex m;
    unsigned parties;
    unsigned count;          /* arrived in the current generation */
    bool broken;
    uint64_t broken_hist;    /* bit (g & 63): generation g ended broken */
    _Atomic uint32_t gen;
    int (*action)(void *);   /* run by the arrival that trips it; or NULL */
    void *arg;
    double timeout;          /* for waits passing MP_FOREVER; < 0: none */
};

int mp_barrier_new_ex(mp_barrier **out, unsigned parties, int (*action)(void *), void *arg,
                      double timeout)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (parties == 0 || parties > INT32_MAX || isnan(timeout))
        return -EINVAL;
    int err = 0;
    mp_barrier *b = mp__heap_calloc(sizeof *b, &err);
    if (b == NULL)
        return err;
    int rc = mp__mutex_init(&b->m);
    if (rc < 0) {
        mp__heap_free(b);
        return rc;
    }
    b->parties = parties;
    b->action = action;
    b->arg = arg;
    b->timeout = timeout;
    *out = b;
    return 0;
}

int mp_barrier_new(mp_barrier **out, unsigned parties)
{
    return mp_barrier_new_ex(out, parties, NULL, NULL, MP_FOREVER);
}

/* End the current generation; `broken` says how.  Lock held. */
static void end_generation(mp_barrier *b, bool broken)
{
    uint32_t g = atomic_load_explicit(&b->gen, memory_order_relaxed);
    uint64_t bit = (uint64_t)1 << (g & 63);
    b->broken_hist = broken ? b->broken_hist | bit : b->broken_hist & ~bit;
    b->count = 0;
    atomic_store(&b->gen, g + 1);
    mp__wake_word(&b->gen, NULL);
}

/* The mutex was taken from a holder that died: the counters cannot be
 * trusted, so break the barrier. */
static void barrier_recover(mp_barrier *b)
{
    b->broken = true;
    end_generation(b, true);
}

/* Take the internal mutex.  0, or -EDEADLK: the caller already holds it
 * (it is the action, calling its own barrier). */
static int barrier_lock(mp_barrier *b)
{
    int rc = mp__mutex_lock(&b->m, MP__NO_DEADLINE);
    if (rc == MP_EOWNERDEAD) {
        barrier_recover(b);
        return 0;
    }
    return rc;
}

/* A sleeping waiter's look, once a slice, at whether the mutex's holder
 * died (in the action, say): no other arrival may ever come to see it. */
static void barrier_probe(mp_barrier *b)
{
    int rc = mp__mutex_trylock(&b->m);
    if (rc == MP_EOWNERDEAD)
        barrier_recover(b);
    if (MP_ACQUIRED(rc))
        mp__mutex_unlock(&b->m);
}

/* The last arrival: run the action, then release the others, or break the
 * barrier if the action failed.  Lock held; released. */
static int barrier_trip(mp_barrier *b, int index)
{
    bool failed = b->action != NULL && b->action(b->arg) != 0;
    if (failed)
        b->broken = true;
    end_generation(b, failed);
    mp__mutex_unlock(&b->m);
    return failed ? MP_EBROKEN : index;
}

/* Wait for generation g to end (lock not held). */
static int barrier_sleep(mp_barrier *b, uint32_t g, int index, int64_t deadline)
{
    for (;;) {
        mp__wait_change(&b->gen, NULL, g, mp__wait_slice_end(deadline), 0);
        if (atomic_load(&b->gen) != g)
            break;
        if (mp__now_ns() < deadline) {
            barrier_probe(b);
            continue;
        }
        barrier_lock(b);
        if (atomic_load(&b->gen) != g) { /* ended as we timed out */
            mp__mutex_unlock(&b->m);
            break;
        }
        b->broken = true;
        end_generation(b, true);
        mp__mutex_unlock(&b->m);
        return MP_ETIMEDOUT;
    }
    barrier_lock(b);
    bool broken = (b->broken_hist >> (g & 63)) & 1;
    mp__mutex_unlock(&b->m);
    return broken ? MP_EBROKEN : index;
}

int mp_barrier_wait(mp_barrier *b, double timeout)
{
    if (b == NULL || isnan(timeout))
        return -EINVAL;
    if (timeout < 0 || timeout == INFINITY)
        timeout = b->timeout; /* as Python's wait() with no timeout */
    int64_t deadline;
    mp__deadline(timeout, &deadline);
    int rc = barrier_lock(b);
    if (rc < 0)
        return rc;
    if (b->broken) {
        mp__mutex_unlock(&b->m);
        return MP_EBROKEN;
    }
    int index = (int)b->count++;
    uint32_t g = atomic_load_explicit(&b->gen, memory_order_relaxed);
    if (b->count == b->parties)
        return barrier_trip(b, index);
    mp__mutex_unlock(&b->m);
    return barrier_sleep(b, g, index, deadline);
}

int mp_barrier_abort(mp_barrier *b)
{
    if (b == NULL)
        return -EINVAL;
    int rc = barrier_lock(b);
    if (rc < 0)
        return rc;
    b->broken = true;
    end_generation(b, true);
    mp__mutex_unlock(&b->m);
    return 0;
}

int mp_barrier_reset(mp_barrier *b)
{
    if (b == NULL)
        return -EINVAL;
    int rc = barrier_lock(b);
    if (rc < 0)
        return rc;
    if (b->count > 0)
        end_generation(b, true);
    b->broken = false;
    b->count = 0;
    mp__mutex_unlock(&b->m);
    return 0;
}

bool mp_barrier_broken(mp_barrier *b)
{
    if (b == NULL)
        return false;
    bool locked = barrier_lock(b) == 0; /* else the action asks: held */
    bool broken = b->broken;
    if (locked)
        mp__mutex_unlock(&b->m);
    return broken;
}

unsigned mp_barrier_parties(mp_barrier *b)
{
    return b != NULL ? b->parties : 0;
}

unsigned mp_barrier_n_waiting(mp_barrier *b)
{
    if (b == NULL)
        return 0;
    bool locked = barrier_lock(b) == 0; /* else the action asks: held */
    unsigned n = b->broken ? 0 : b->count;
    if (locked)
        mp__mutex_unlock(&b->m);
    return n;
}

void mp_barrier_free(mp_barrier *b)
{
    if (b != NULL)
        mp__heap_free(b);
}
