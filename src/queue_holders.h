/* Who holds a queue's messages: for each consumer process, the messages it
 * has taken and not yet task_done'd, so that a join can count a dead
 * consumer's messages as done and report its death (queue.c and
 * queue_fifo.c; the mechanism is described in queue_holders.c). */
#ifndef MPROC_QUEUE_HOLDERS_H
#define MPROC_QUEUE_HOLDERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* taken and done count in steps of 2; their low bit marks a get (taken) or
 * a task_done (done) between its mark and its commit.  Each mark and each
 * count moves with one store, so a kill leaves either the mark with the
 * count before it, or the count after it. */
typedef struct mp__holder {
    _Atomic int32_t pid;        /* 0: free; -1: being claimed */
    uint32_t unused;
    uint64_t start;             /* mp__proc_start of pid */
    uint64_t from;              /* with taken's mark: the commit word before */
    uint64_t fin_from;          /* with done's mark: the done count before */
    _Atomic uint64_t taken;     /* 2 x gets committed (consumer lock) | mark */
    _Atomic uint64_t done;      /* 2 x task_done's (done lock) | mark */
    char pad[64 - 48];
} mp__holder;

typedef struct mp__holder_chunk mp__holder_chunk;

/* Part of a queue's control block, in the shared heap; zeroed memory plus
 * mp__holders_init is a valid empty table. */
typedef struct {
    uint64_t id;                         /* tells queues at one address apart */
    mp__holder_chunk *_Atomic first;
    _Atomic uint64_t deaths;             /* consumers that died holding messages */
    _Atomic uint64_t told;               /* of them, reported by a join */
} mp__holders;

void mp__holders_init(mp__holders *hs);
void mp__holders_free(mp__holders *hs);

/* The calling process's record, made on its first get; NULL if none can
 * be made (the shared heap is full: the process goes untracked). */
mp__holder *mp__holders_self(mp__holders *hs);

/* One counted step (a get's `taken`, a task_done's `done`), under its
 * lock: mark the count, with the queue's word before the commit in *at;
 * after the commit, count the step past the mark.  Each is one store. */
static inline void mp__holder_mark(_Atomic uint64_t *count, uint64_t *at, uint64_t word)
{
    *at = word;
    atomic_signal_fence(memory_order_seq_cst); /* a kill lands in order */
    uint64_t c = atomic_load_explicit(count, memory_order_relaxed);
    atomic_store_explicit(count, c | 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
}
static inline void mp__holder_count(_Atomic uint64_t *count)
{
    atomic_signal_fence(memory_order_seq_cst);
    uint64_t c = atomic_load_explicit(count, memory_order_relaxed);
    atomic_store_explicit(count, (c | 1) + 1, memory_order_relaxed);
}

/* Around a get's commit, under the consumer lock: `from` is the commit
 * word (head position or gets count) before the get.  h may be NULL. */
static inline void mp__holder_taking(mp__holder *h, uint64_t from)
{
    if (h != NULL)
        mp__holder_mark(&h->taken, &h->from, from);
}
static inline void mp__holder_took(mp__holder *h)
{
    if (h != NULL)
        mp__holder_count(&h->taken);
}

/* The calling process's record if it holds messages, else NULL (its
 * task_done is then counted against no one). */
mp__holder *mp__holders_mine(mp__holders *hs);

/* Around a task_done's commit, under the queue's done lock: `from` is the
 * queue's done count before it.  h may be NULL. */
static inline void mp__holder_finishing(mp__holder *h, uint64_t from)
{
    if (h != NULL)
        mp__holder_mark(&h->done, &h->fin_from, from);
}
static inline void mp__holder_finished(mp__holder *h)
{
    if (h != NULL)
        mp__holder_count(&h->done);
}

/* Under the consumer lock, when it came with MP_EOWNERDEAD: settle the get
 * the dead holder was making.  now: the commit word now. */
void mp__holders_repair_take(mp__holders *hs, uint64_t now);
/* Under the done lock, when it came with MP_EOWNERDEAD: settle the
 * task_done the dead holder was making.  now: the done count now. */
void mp__holders_repair_done(mp__holders *hs, uint64_t now);

/* Without the locks: true if a process that holds messages has died (the
 * caller then takes the consumer lock and the done lock, and collects). */
bool mp__holders_any_dead(mp__holders *hs);

/* Under the consumer lock and the done lock: free the records of dead processes; returns
 * the messages they held (to count as done) and counts each death that
 * held any. */
uint64_t mp__holders_collect(mp__holders *hs);

/* For a join: claim one death not reported yet.  True at most once per
 * death. */
bool mp__holders_claim_death(mp__holders *hs);

#endif
