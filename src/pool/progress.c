/* Progress of maps: the user's callback and a tqdm-style bar, both on the
 * supervisor thread.
 *
 * A map (or imap_items' iterator) whose pool asks for progress is
 * registered at its start on the pool's list (under progress_lock), with a
 * function that counts its items done.  The supervisor's loop calls
 * mp__progress_tick, which reports every registered map each REPORT_NS
 * and tells the loop when the next is due, so that it sleeps no longer.
 * A map's count is read from its batch's done counters
 * (mp__batch_items_done), imap_items' from its pieces back: nothing on a
 * worker's way changes for it.
 *
 * The last report is the owner's to ask for, once the map is over:
 *
 *     owner                           supervisor
 *     final_want = 1, kick  ───────►  tick: report(done, total),
 *     wait on final_seen    ◄───────  final_seen = 1, wake
 *     unregister
 *
 * The tick holds progress_lock while it reports, so a map is never
 * unregistered (and freed) under a report.  If the supervisor has stopped
 * (the pool was terminated), or the owner is the supervisor (an iterator
 * read from a callback), the owner makes the last report itself. */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>

#include "os/os.h"
#include "pool/core.h"
#include "pool/progress.h"
#include "wait_int.h"

#define REPORT_NS 100000000LL     /* 10 reports a second */
#define BAR_AFTER_NS 1000000000LL /* the bar shows maps that run longer */
#define BAR_WIDTH 25

static void fmt_time(char *buf, size_t cap, double s)
{
    if (s < 0 || s > 360000)
        s = 0;
    unsigned t = (unsigned)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%u:%02u:%02u", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, cap, "%02u:%02u", t / 60, t % 60);
}

static void fmt_rate(char *buf, size_t cap, double r)
{
    if (r >= 1e6)
        snprintf(buf, cap, "%.2fM", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, cap, "%.2fk", r / 1e3);
    else
        snprintf(buf, cap, "%.2f", r);
}

/* One line of the bar: "map:  45%|###########    | 450/1000 [00:01<00:01, 412.00it/s]". */
static void draw(const progress_opts *o, progress_rec *pr, uint64_t done, uint64_t total,
                 int64_t now, bool last)
{
    double el = (double)(now - pr->t0) / 1e9;
    double frac = total ? (double)done / (double)total : 1;
    unsigned pct = (unsigned)(frac * 100);
    if (!o->tty && !last) {
        /* plain: a line each 10% */
        if (pct / 10 <= pr->tenths && pr->drew)
            return;
        pr->tenths = pct / 10;
    }
    char bar[BAR_WIDTH + 1];
    unsigned fill = (unsigned)(frac * BAR_WIDTH);
    for (unsigned i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : ' ';
    bar[BAR_WIDTH] = 0;
    double rate = el > 0 ? (double)done / el : 0;
    char e[16], r[16], rt[16];
    fmt_time(e, sizeof e, el);
    fmt_time(r, sizeof r, rate > 0 ? (double)(total - done) / rate : 0);
    fmt_rate(rt, sizeof rt, rate);
    fprintf(stderr, "%smap: %3u%%|%s| %llu/%llu [%s<%s, %sit/s]%s", o->tty ? "\r" : "", pct, bar,
            (unsigned long long)done, (unsigned long long)total, e, r, rt,
            o->tty && !last ? "" : "\n");
    fflush(stderr);
    pr->drew = true;
}

/* Report pr now (progress_lock held). */
static void report(pool_core *c, progress_rec *pr, int64_t now, bool last)
{
    uint64_t total = pr->total;
    uint64_t done = pr->count(pr->arg);
    if (done > total)
        done = total;
    if (c->prog.fn) {
        mp__pool_enter_callback(c);
        c->prog.fn((size_t)done, (size_t)total, c->prog.ud);
        mp__pool_leave_callback();
    }
    if (c->prog.bar && (pr->drew || now - pr->t0 >= BAR_AFTER_NS) && (pr->drew || !last))
        draw(&c->prog, pr, done, total, now, last);
}

void mp__progress_begin(pool_core *c, progress_rec *pr, uint64_t total,
                        uint64_t (*count)(void *arg), void *arg)
{
    if (!c->prog.fn && !c->prog.bar)
        return;
    pr->total = total;
    pr->count = count;
    pr->arg = arg;
    pr->t0 = mp__now_ns();
    pr->next_at = pr->t0 + REPORT_NS;
    pthread_mutex_lock(&c->progress_lock);
    pr->next = c->progress_head;
    pr->prev = NULL;
    if (c->progress_head)
        c->progress_head->prev = pr;
    c->progress_head = pr;
    pr->on = true;
    pthread_mutex_unlock(&c->progress_lock);
    mp__pool_kick(c); /* (its loop sleeps no longer than the first report) */
}

static void unlink_locked(pool_core *c, progress_rec *pr)
{
    if (pr->prev)
        pr->prev->next = pr->next;
    else
        c->progress_head = pr->next;
    if (pr->next)
        pr->next->prev = pr->prev;
    pr->on = false;
}

void mp__progress_drop(pool_core *c, progress_rec *pr)
{
    if (!pr->on)
        return;
    pthread_mutex_lock(&c->progress_lock);
    unlink_locked(c, pr);
    pthread_mutex_unlock(&c->progress_lock);
}

static bool final_seen(void *arg)
{
    return atomic_load(&((progress_rec *)arg)->final_seen) != 0;
}

void mp__progress_end(pool_core *c, progress_rec *pr)
{
    if (!pr->on)
        return;
    if (!mp__pool_in_callback(c)) {
        atomic_store(&pr->final_want, 1);
        mp__pool_kick(c);
        /* In slices: the supervisor may stop meanwhile (terminate). */
        while (!final_seen(pr) && atomic_load((_Atomic int *)&c->life) < POOL_STOPPED)
            mp__wait_word(&pr->final_seen, &pr->waiters, final_seen, pr,
                          mp__now_ns() + REPORT_NS, 0);
    }
    pthread_mutex_lock(&c->progress_lock);
    if (!atomic_load(&pr->final_seen))
        report(c, pr, mp__now_ns(), true);
    unlink_locked(c, pr);
    pthread_mutex_unlock(&c->progress_lock);
}

int64_t mp__progress_tick(pool_core *c)
{
    int64_t next = MP__NO_DEADLINE;
    pthread_mutex_lock(&c->progress_lock);
    int64_t now = mp__now_ns();
    for (progress_rec *pr = c->progress_head; pr; pr = pr->next) {
        if (atomic_load(&pr->final_seen))
            continue;
        if (atomic_load(&pr->final_want)) {
            report(c, pr, now, true);
            atomic_store(&pr->final_seen, 1);
            mp__wake_word(&pr->final_seen, &pr->waiters);
            continue;
        }
        if (now >= pr->next_at) {
            report(c, pr, now, false);
            pr->next_at = now + REPORT_NS;
        }
        if (pr->next_at < next)
            next = pr->next_at;
    }
    pthread_mutex_unlock(&c->progress_lock);
    return next;
}
