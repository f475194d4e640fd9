/* Who holds a queue's messages.
 *
 * A message taken by get and not yet task_done'd is held by the process
 * that took it.  Each consumer process has a record in the queue: its pid
 * and start time (together they name one process, even after the pid is
 * reused), `taken` and `done`; it holds taken - done.  Records sit in
 * chunks of 15 in the shared heap, linked from the queue; a thread finds
 * its process's record through a small per-thread cache.
 *
 * Counting.  `taken` is written only under the queue's consumer lock (the
 * ring's head lock, the ordered queue's lock), with the get's commit;
 * `done` only under the queue's done lock (the ring's own, the ordered
 * queue's one lock), with the task_done's commit of the queue's count.
 *
 * Kill -9 at any instruction.  `taken` and `done` count in steps of two,
 * the low bit a mark.  A get, under the consumer lock, stores the commit
 * word it read and marks `taken` (one store), commits, then stores
 * `taken` + 1 past the mark (one store).  A process killed in between dies
 * holding that lock, so the next locker gets MP_EOWNERDEAD and calls
 * mp__holders_repair_take: a marked record's get was committed if the
 * commit word has moved (no one else can have moved it), and its count
 * becomes the one after, else the one before.  A task_done does the same
 * with `done` and the queue's done count under the done lock
 * (mp__holders_repair_done).  So the counts are exact whenever a process
 * dies: each message is counted as done once.
 *
 * Records change hands by CAS on pid: 0 (free) or a dead process's pid
 * whose record holds nothing -> -1 (being set up) -> the claimer's pid;
 * a collector frees a dead holder's record by CAS pid -> 0 and counts
 * what it read only if its CAS won.  A record holding messages is never
 * claimed, so a collector's count is never lost or doubled.
 *
 * Deaths.  A joiner looks at the records that hold messages (when its
 * join starts and after every wait slice, 100 ms).  If one's process is
 * gone (no such pid, a zombie, another start time) it takes the consumer
 * and done locks (which settles what the dead was doing) and collects: the dead
 * records' messages count as done, and each death that held any is
 * counted in `deaths`; every join claims one death not yet told and
 * returns MP_EOWNERDEAD for it. */
#include "queue_holders.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>

#include "heap_int.h"
#include "os/os.h"

#define PER_CHUNK 15

struct mp__holder_chunk {
    mp__holder_chunk *_Atomic next;
    char pad[64 - sizeof(void *)];
    mp__holder h[PER_CHUNK];
};

_Static_assert(sizeof(mp__holder) == 64, "one record a cache line");

/* ---- this process ---- */

static pthread_mutex_t claim_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t self_pid;
static int64_t self_start = -1;

static void claim_prepare(void) { pthread_mutex_lock(&claim_lock); }
static void claim_parent(void) { pthread_mutex_unlock(&claim_lock); }
static void claim_child(void)
{
    self_start = -1; /* a new process */
    pthread_mutex_unlock(&claim_lock);
}

__attribute__((constructor)) static void holders_register_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {
        .rank = MP__RANK_USER,
        .prepare = claim_prepare,
        .parent = claim_parent,
        .child = claim_child,
    };
    mp__fork_hooks_add(&hooks);
}

/* Each thread remembers its process's record in the last few queues. */
typedef struct {
    const mp__holders *hs;
    uint64_t id;
    pid_t pid;
    mp__holder *h;
} cached;

#define CACHE 8
static _Thread_local cached cache[CACHE];

static cached *slot_for(const mp__holders *hs)
{
    return &cache[((uintptr_t)hs >> 6) % CACHE];
}

/* ---- the table ---- */

void mp__holders_init(mp__holders *hs)
{
    static _Atomic uint64_t made;
    uint64_t x = (uint64_t)mp__now_ns() ^ (uint64_t)mp__getpid() << 40 ^
                 atomic_fetch_add(&made, 1) << 20 ^ (uintptr_t)hs;
    x *= 0x9E3779B97F4A7C15ull; /* spread: ids of two queues almost never meet */
    hs->id = x | 1;
    atomic_init(&hs->first, NULL);
    atomic_init(&hs->deaths, 0);
    atomic_init(&hs->told, 0);
}

void mp__holders_free(mp__holders *hs)
{
    mp__holder_chunk *c = atomic_load(&hs->first);
    while (c != NULL) {
        mp__holder_chunk *next = atomic_load(&c->next);
        mp__heap_free_any(c);
        c = next;
    }
    atomic_store(&hs->first, NULL);
}

static uint64_t held(mp__holder *h)
{
    return (atomic_load_explicit(&h->taken, memory_order_acquire) >> 1) -
           (atomic_load_explicit(&h->done, memory_order_acquire) >> 1);
}

/* A get or a task_done between its mark and its commit. */
static bool marked(mp__holder *h)
{
    return ((atomic_load(&h->taken) | atomic_load(&h->done)) & 1) != 0;
}

static bool is_dead(mp__holder *h, pid_t pid)
{
    int64_t s = mp__proc_start(pid);
    return s == -ESRCH || (s >= 0 && (uint64_t)s != h->start);
}

/* Take record h from `from` (0, or a dead pid) for this process. */
static bool claim(mp__holder *h, int32_t from)
{
    if (!atomic_compare_exchange_strong(&h->pid, &from, -1))
        return false;
    h->start = (uint64_t)self_start;
    atomic_store(&h->taken, 0);
    atomic_store(&h->done, 0);
    atomic_store_explicit(&h->pid, self_pid, memory_order_release);
    return true;
}

#define EACH_RECORD(hs, h)                                                        \
    for (mp__holder_chunk *c_ = atomic_load(&(hs)->first); c_ != NULL;            \
         c_ = atomic_load(&c_->next))                                             \
        for (mp__holder *h = c_->h; h < c_->h + PER_CHUNK; h++)

/* This process's record: its own, else a free one, else a dead
 * process's that holds nothing, else one in a new chunk. */
static mp__holder *find_or_claim(mp__holders *hs, bool make)
{
    EACH_RECORD(hs, h) {
        if (atomic_load_explicit(&h->pid, memory_order_acquire) == self_pid &&
            h->start == (uint64_t)self_start)
            return h;
    }
    if (!make)
        return NULL;
    EACH_RECORD(hs, h) {
        if (claim(h, 0))
            return h;
    }
    EACH_RECORD(hs, h) {
        /* Dead and holding nothing stays so: no one counts against it. */
        int32_t pid = atomic_load_explicit(&h->pid, memory_order_acquire);
        if (pid > 0 && held(h) == 0 && !marked(h) && is_dead(h, pid) && claim(h, pid))
            return h;
    }
    int err = 0;
    mp__holder_chunk *n = mp__heap_calloc(sizeof *n, &err);
    if (n == NULL)
        return NULL;
    claim(&n->h[0], 0);
    mp__holder_chunk *_Atomic *link = &hs->first;
    for (;;) {
        mp__holder_chunk *expect = NULL;
        if (atomic_compare_exchange_strong(link, &expect, n))
            return &n->h[0];
        link = &expect->next;
    }
}

static mp__holder *lookup(mp__holders *hs, bool make)
{
    pid_t me = mp__getpid();
    cached *e = slot_for(hs);
    if (e->hs == hs && e->id == hs->id && e->pid == me)
        return e->h;
    pthread_mutex_lock(&claim_lock); /* one record per process */
    if (self_start < 0 || self_pid != me) {
        self_pid = me;
        self_start = mp__proc_start(me);
    }
    mp__holder *h = self_start >= 0 ? find_or_claim(hs, make) : NULL;
    pthread_mutex_unlock(&claim_lock);
    if (h != NULL) /* a process with none may make one later */
        *e = (cached){hs, hs->id, me, h};
    return h;
}

mp__holder *mp__holders_self(mp__holders *hs)
{
    return lookup(hs, true);
}

mp__holder *mp__holders_mine(mp__holders *hs)
{
    mp__holder *h = lookup(hs, false);
    return h != NULL && held(h) > 0 ? h : NULL;
}

/* ---- deaths ---- */

void mp__holders_repair_take(mp__holders *hs, uint64_t now)
{
    EACH_RECORD(hs, h) {
        uint64_t t = atomic_load(&h->taken);
        if (t & 1) /* the dead committed its get if the word moved */
            atomic_store(&h->taken, now != h->from ? t + 1 : t - 1);
    }
}

void mp__holders_repair_done(mp__holders *hs, uint64_t now)
{
    EACH_RECORD(hs, h) {
        uint64_t d = atomic_load(&h->done);
        if (d & 1) /* ... its task_done if the count moved */
            atomic_store(&h->done, now != h->fin_from ? d + 1 : d - 1);
    }
}

bool mp__holders_any_dead(mp__holders *hs)
{
    EACH_RECORD(hs, h) {
        int32_t pid = atomic_load_explicit(&h->pid, memory_order_acquire);
        if (pid > 0 && (held(h) > 0 || marked(h)) && is_dead(h, pid))
            return true;
    }
    return false;
}

uint64_t mp__holders_collect(mp__holders *hs)
{
    uint64_t total = 0;
    EACH_RECORD(hs, h) {
        int32_t pid = atomic_load_explicit(&h->pid, memory_order_acquire);
        if (pid <= 0 || !is_dead(h, pid))
            continue;
        uint64_t n = held(h);
        if (!atomic_compare_exchange_strong(&h->pid, &pid, 0))
            continue; /* claimed: it held nothing */
        if (n > 0) {
            total += n;
            atomic_fetch_add(&hs->deaths, 1);
        }
    }
    return total;
}

bool mp__holders_claim_death(mp__holders *hs)
{
    uint64_t t = atomic_load(&hs->told);
    while (t < atomic_load(&hs->deaths))
        if (atomic_compare_exchange_weak(&hs->told, &t, t + 1))
            return true;
    return false;
}
