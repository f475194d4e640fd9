/* Progress of maps: the user's progress callback and the bar
 * (MP_POOL_PROGRESS_BAR), both run on the supervisor (progress.c). */
#ifndef MPROC_POOL_PROGRESS_H
#define MPROC_POOL_PROGRESS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct pool_core pool_core;

/* A map's progress record (in its map_batch; all zero: not reported). */
typedef struct progress_rec progress_rec;
struct progress_rec {
    progress_rec *next, *prev;  /* (the pool's progress lock) registered */
    uint64_t total;             /* items */
    uint64_t (*count)(void *arg); /* items done (any thread) */
    void *arg;
    bool on;                    /* registered */
    int64_t t0;                 /* when the map started */
    int64_t next_at;            /* (supervisor) the next report */
    bool drew;                  /* (supervisor) the bar has been drawn */
    unsigned tenths;            /* (supervisor) plain bar: tenths printed */
    _Atomic uint32_t final_want; /* the owner asks for the last report */
    _Atomic uint32_t final_seen; /* futex: the last report has been made */
    _Atomic uint32_t waiters;
};

/* The pool's side (in pool_core). */
typedef struct {
    void (*fn)(size_t done, size_t total, void *ud);
    void *ud;
    bool bar;                   /* MP_POOL_PROGRESS_BAR or MPROC_PROGRESS=1 */
    bool tty;                   /* stderr is a terminal: redraw in place */
} progress_opts;

/* (owner) Report the progress of total items, count(arg) of them done, if
 * the pool asks for it: from now on. */
void mp__progress_begin(pool_core *c, progress_rec *pr, uint64_t total,
                        uint64_t (*count)(void *arg), void *arg);
/* (owner) The map is over: have the last report made, then stop.  Returns
 * once it has been (on the supervisor; by the caller if the supervisor is
 * gone, or if the caller is the supervisor). */
void mp__progress_end(pool_core *c, progress_rec *pr);
/* (owner) Stop reporting without a last report (an iterator freed early). */
void mp__progress_drop(pool_core *c, progress_rec *pr);
/* (supervisor) Make the reports that are due; the time of the next. */
int64_t mp__progress_tick(pool_core *c);

#endif
