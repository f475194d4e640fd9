/* Processes: start, join, exit codes, signals, daemons, names, detaching,
 * exit-time joining, the child's wait for its threads, current/parent
 * process, active children, sentinels and mp_wait_fds, and bad input. */
// labels: unit tsan
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <mproc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "mp_test.h"

static int ret_arg(void *arg) { return (int)(intptr_t)arg; }

static int crash(void *arg)
{
    (void)arg;
    raise(SIGSEGV);
    return 0;
}

/* A gate: a pipe whose write end the test closes to say "go".  Children
 * inherit both ends, so each closes its copy of the write end first. */
typedef struct {
    int rd, wr;
    int report; /* where to write our pid, or -1 */
} gate;

static gate gate_new(int report)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    return (gate){.rd = fds[0], .wr = fds[1], .report = report};
}

/* Report our pid if asked, then block until the gate opens. */
static int wait_gate(void *arg)
{
    gate *g = arg;
    char c;
    close(g->wr);
    if (g->report >= 0) {
        pid_t me = getpid();
        if (write(g->report, &me, sizeof me) != sizeof me)
            return 1;
    }
    while (read(g->rd, &c, 1) < 0 && errno == EINTR)
        ;
    return 7;
}

Test(process, start_join_exitcode, .timeout = MP_TMO(10))
{
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, ret_arg, (void *)(intptr_t)42, NULL), 0);
    cr_assert_eq(mp_process_pid(p), 0);
    cr_assert(!mp_process_is_alive(p));
    int code = -1;
    mp_expect_rc(mp_process_exitcode(p, &code), -EAGAIN);
    mp_expect_rc(mp_process_start(p), 0);
    cr_assert_gt(mp_process_pid(p), 0);
    cr_assert_neq(mp_process_pid(p), getpid());
    mp_expect_rc(mp_process_join(p, MP_FOREVER), 0);
    cr_assert(!mp_process_is_alive(p));
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 42);
    /* Joining again is fine and keeps the code. */
    mp_expect_rc(mp_process_join(p, 0), 0);
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 42);
    mp_process_free(p);
}

Test(process, exit_status_is_masked_like_exit, .timeout = MP_TMO(10))
{
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, ret_arg, (void *)(intptr_t)0x1ff, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0xff);
    mp_process_free(p);
}

Test(process, killed_child_reports_minus_signal, .timeout = MP_TMO(10))
{
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, crash, NULL, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, -SIGSEGV);
    mp_process_free(p);
}

Test(process, join_timeout_then_terminate_and_kill, .timeout = MP_TMO(10))
{
    gate g = gate_new(-1);
    mp_process *p, *q;
    cr_assert_eq(mp_process_new(&p, wait_gate, &g, NULL), 0);
    cr_assert_eq(mp_process_new(&q, wait_gate, &g, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_process_start(q), 0);
    double t0 = mp_test_now();
    mp_expect_rc(mp_process_join(p, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049, "join waited its timeout");
    mp_expect_rc(mp_process_join(p, 0), MP_ETIMEDOUT);
    cr_assert(mp_process_is_alive(p));
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), -EAGAIN);
    mp_expect_rc(mp_process_terminate(p), 0);
    mp_expect_rc(mp_process_kill(q), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    mp_expect_rc(mp_process_join(q, MP_TMO(5)), 0);
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, -SIGTERM);
    mp_expect_rc(mp_process_exitcode(q, &code), 0);
    cr_assert_eq(code, -SIGKILL);
    /* Signalling a finished process is harmless. */
    mp_expect_rc(mp_process_terminate(p), 0);
    mp_expect_rc(mp_process_kill(q), 0);
    mp_process_free(p);
    mp_process_free(q);
    close(g.rd);
    close(g.wr);
}

Test(process, names_and_daemon_flag, .timeout = MP_TMO(5))
{
    mp_process *a, *b;
    mp_process_opts o = {.name = "worker-a", .daemon = true};
    cr_assert_eq(mp_process_new(&a, ret_arg, NULL, &o), 0);
    cr_assert_eq(mp_process_new(&b, ret_arg, NULL, NULL), 0);
    cr_assert_str_eq(mp_process_name(a), "worker-a");
    cr_assert_eq(strncmp(mp_process_name(b), "Process-", 8), 0);
    cr_assert(mp_process_daemon(a));
    cr_assert(!mp_process_daemon(b));
    cr_assert_null(mp_process_name(NULL));
    mp_process_free(a);
    mp_process_free(b);
}

/* Process(name="") is named "Process-N", as with no name. */
Test(process, empty_name_gets_the_default, .timeout = MP_TMO(5))
{
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, ret_arg, NULL, &(mp_process_opts){.name = ""}), 0);
    const char *name = mp_process_name(p);
    cr_assert_eq(strncmp(name, "Process-", 8), 0, "name \"%s\"", name);
    cr_assert_gt(strlen(name), 8, "name \"%s\" has its number", name);
    mp_process_free(p);
}

Test(process, bad_input, .timeout = MP_TMO(5))
{
    mp_process *p = (mp_process *)0x1;
    mp_expect_rc(mp_process_new(NULL, ret_arg, NULL, NULL), -EINVAL);
    mp_expect_rc(mp_process_new(&p, NULL, NULL, NULL), -EINVAL);
    cr_assert_null(p, "*out is NULL after a failure");
    mp_expect_rc(mp_process_start(NULL), -EINVAL);
    mp_expect_rc(mp_process_join(NULL, 1), -EINVAL);
    mp_expect_rc(mp_process_terminate(NULL), -EINVAL);
    mp_expect_rc(mp_process_kill(NULL), -EINVAL);
    int code;
    mp_expect_rc(mp_process_exitcode(NULL, &code), -EINVAL);
    cr_assert(!mp_process_is_alive(NULL));
    cr_assert_eq(mp_process_pid(NULL), 0);
    mp_process_free(NULL);

    cr_assert_eq(mp_process_new(&p, ret_arg, NULL, NULL), 0);
    mp_expect_rc(mp_process_join(p, 1), -EINVAL);       /* before start */
    mp_expect_rc(mp_process_terminate(p), -EINVAL);     /* before start */
    mp_expect_rc(mp_process_exitcode(p, NULL), -EINVAL);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_process_start(p), -EALREADY);       /* double start */
    mp_expect_rc(mp_process_join(p, NAN), -EINVAL);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    mp_process_free(p);
}

/* Process objects are local to their creator: a forked child gets -EPERM. */
static int use_parents_object(void *arg)
{
    mp_process *p = arg;
    int code;
    if (mp_process_start(p) != -EPERM || mp_process_join(p, 0) != -EPERM ||
        mp_process_kill(p) != -EPERM || mp_process_exitcode(p, &code) != -EPERM ||
        mp_process_sentinel(p) != -EPERM || mp_process_is_alive(p))
        return 1;
    return 0;
}

Test(process, objects_are_local_to_their_creator, .timeout = MP_TMO(10))
{
    gate g = gate_new(-1);
    mp_process *sleeper, *checker;
    cr_assert_eq(mp_process_new(&sleeper, wait_gate, &g, NULL), 0);
    mp_expect_rc(mp_process_start(sleeper), 0);
    cr_assert_eq(mp_process_new(&checker, use_parents_object, sleeper, NULL), 0);
    mp_expect_rc(mp_process_start(checker), 0);
    mp_expect_rc(mp_process_join(checker, MP_TMO(5)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(checker, &code), 0);
    cr_assert_eq(code, 0);
    close(g.wr);
    mp_expect_rc(mp_process_join(sleeper, MP_TMO(5)), 0);
    mp_expect_rc(mp_process_exitcode(sleeper, &code), 0);
    cr_assert_eq(code, 7);
    mp_process_free(sleeper);
    mp_process_free(checker);
    close(g.rd);
}

Test(process, shared_heap_memory_crosses_into_the_child, .timeout = MP_TMO(10))
{
    int *counter = mp_shared_alloc(sizeof *counter);
    cr_assert_not_null(counter);
    mp_process *p[4];
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(mp_process_new(&p[i], ret_arg, NULL, NULL), 0);
    }
    /* Each child adds to its own slot; check via the child's exit path. */
    int *slots = mp_shared_alloc(4 * sizeof(int));
    for (int i = 0; i < 4; i++) {
        mp_process_free(p[i]);
        cr_assert_eq(mp_process_new(&p[i], ret_arg, (void *)(intptr_t)i, NULL), 0);
        mp_expect_rc(mp_process_start(p[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        int code;
        mp_expect_rc(mp_process_join(p[i], MP_TMO(5)), 0);
        mp_expect_rc(mp_process_exitcode(p[i], &code), 0);
        cr_assert_eq(code, i);
        mp_process_free(p[i]);
    }
    mp_shared_free(slots);
    mp_shared_free(counter);
}

/* A daemon child dies when its parent is SIGKILLed. */
static int start_daemon_and_park(void *arg)
{
    mp_process *d;
    mp_process_opts o = {.daemon = true};
    if (mp_process_new(&d, wait_gate, arg, &o) < 0 || mp_process_start(d) < 0)
        return 1;
    for (;;) /* park; the test kills us */
        pause();
}

Test(process, daemon_dies_with_its_parent_even_by_sigkill, .timeout = MP_TMO(10))
{
    int report[2];
    cr_assert_eq(pipe(report), 0);
    gate g = gate_new(report[1]);
    mp_process *mid;
    cr_assert_eq(mp_process_new(&mid, start_daemon_and_park, &g, NULL), 0);
    mp_expect_rc(mp_process_start(mid), 0);
    pid_t daemon_pid;
    cr_assert_eq(mp_test_read(report[0], &daemon_pid, sizeof daemon_pid, MP_TMO(5)),
                 (ssize_t)sizeof daemon_pid);
    cr_assert_eq(kill(daemon_pid, 0), 0, "daemon is running");
    mp_expect_rc(mp_process_kill(mid), 0);
    mp_expect_rc(mp_process_join(mid, MP_TMO(5)), 0);
    cr_assert(mp_test_process_gone(daemon_pid, MP_TMO(5)), "daemon outlived its parent");
    mp_process_free(mid);
}

/* At normal exit, non-daemon children are joined and daemon children are
 * terminated.  A forked helper plays the program: it starts both kinds,
 * waits until both run, reports their pids and calls exit(); its exit must
 * wait for the non-daemon child. */
Test(process, exit_joins_children_and_terminates_daemons, .timeout = MP_TMO(10))
{
    int ready[2], pids[2];
    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(pids), 0);
    gate g = gate_new(ready[1]);
    pid_t prog = fork();
    if (prog == 0) {
        mp_process *child, *daemon;
        mp_process_opts d = {.daemon = true};
        if (mp_process_new(&child, wait_gate, &g, NULL) < 0 ||
            mp_process_new(&daemon, wait_gate, &g, &d) < 0 ||
            mp_process_start(child) < 0 || mp_process_start(daemon) < 0)
            _exit(3);
        close(g.wr);
        pid_t two[2];
        if (mp_test_read(ready[0], two, sizeof two, 5) != sizeof two)
            _exit(4);
        pid_t out[2] = {mp_process_pid(child), mp_process_pid(daemon)};
        (void)!write(pids[1], out, sizeof out);
        exit(0); /* atexit: terminate the daemon, join the child */
    }
    pid_t kids[2];
    cr_assert_eq(mp_test_read(pids[0], kids, sizeof kids, MP_TMO(5)), (ssize_t)sizeof kids);
    /* The daemon is terminated; the program waits in exit() for its
     * non-daemon child, which waits for the gate. */
    cr_assert(mp_test_process_gone(kids[1], MP_TMO(5)), "daemon was terminated at exit");
    cr_assert(!mp_test_process_gone(prog, 0.05), "exit waits for the non-daemon child");
    cr_assert(!mp_test_process_gone(kids[0], 0));
    close(g.wr); /* open the gate: ours was the last write end */
    close(g.rd);
    int st = mp_test_waitpid(prog, MP_TMO(5));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
    cr_assert(mp_test_process_gone(kids[0], MP_TMO(5)));
}

/* Freeing a running process detaches it: not killed, and reaped later. */
Test(process, free_of_running_process_detaches, .timeout = MP_TMO(10))
{
    gate g = gate_new(-1);
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, wait_gate, &g, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    pid_t pid = mp_process_pid(p);
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    cr_assert_geq(pfd, 0);
    mp_process_free(p);
    struct pollfd pp = {.fd = pfd, .events = POLLIN};
    cr_assert_eq(poll(&pp, 1, 50), 0, "still running after free");
    close(g.wr);
    /* It exits; the next process call of ours reaps it (no zombie). */
    cr_assert_eq(poll(&pp, 1, (int)(MP_TMO(5) * 1000)), 1);
    mp_process *q;
    cr_assert_eq(mp_process_new(&q, ret_arg, NULL, NULL), 0);
    mp_expect_rc(mp_process_start(q), 0); /* sweeps detached children */
    siginfo_t si = {0};
    cr_assert_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT), -1);
    cr_assert_eq(errno, ECHILD, "the detached child was reaped");
    mp_expect_rc(mp_process_join(q, MP_TMO(5)), 0);
    mp_process_free(q);
    close(pfd);
    close(g.rd);
}

/* A child waits for its own non-daemon threads and pending timers before
 * it exits, as a Python child does, and not for its daemon threads.  The
 * child's thread (or timer) waits for an event that the test sets only
 * after seeing the child still running once its target has returned; then
 * it writes a marker to shared memory, which the test finds after the
 * join.  The exit code stays the target's. */
typedef struct {
    mp_event *go;       /* set by the test: the thread may finish */
    mp_event *never;    /* never set: a daemon thread blocks on it */
    _Atomic int *mark;  /* in the shared heap: 1 once the thread finished */
    int returned;       /* pipe: the child writes a byte as its target returns */
    bool timer;         /* a Timer instead of a Thread */
} child_threads;

static int finish_after_go(void *arg)
{
    child_threads *a = arg;
    if (mp_event_wait(a->go, MP_TMO(10)) != 0)
        return 1;
    atomic_store(a->mark, 1);
    return 0;
}

static mp_timer *child_timer; /* the child's timer, freed by a cleaner */

static int free_child_timer(void *arg)
{
    (void)arg;
    mp_timer_free(child_timer); /* joins the timer's thread */
    return 0;
}

static void timer_finish_after_go(void *arg)
{
    (void)finish_after_go(arg);
    /* The timer is freed (its thread joined) by a thread of its own, since
     * a timer's function cannot wait for itself.  It is a non-daemon
     * thread, started before this one ends: the exit waits for it too. */
    mp_thread *c;
    if (mp_thread_new(&c, free_child_timer, NULL, NULL) == 0) {
        mp_thread_start(c);
        mp_thread_free(c);
    }
}

static int block_forever(void *arg)
{
    child_threads *a = arg;
    return mp_event_wait(a->never, MP_FOREVER);
}

static int start_threads_and_return(void *arg)
{
    child_threads *a = arg;
    mp_thread *d;
    if (mp_thread_new(&d, block_forever, a, &(mp_thread_opts){.daemon = true}) < 0 ||
        mp_thread_start(d) < 0)
        return 2;
    mp_thread_free(d);
    if (a->timer) {
        /* Not freed here: mp_timer_free would wait for it in the target. */
        if (mp_timer_new(&child_timer, 0, timer_finish_after_go, a) < 0 ||
            mp_timer_start(child_timer) < 0)
            return 3;
    } else {
        mp_thread *t;
        if (mp_thread_new(&t, finish_after_go, a, NULL) < 0 || mp_thread_start(t) < 0)
            return 3;
        mp_thread_free(t); /* detached: still waited for */
    }
    if (write(a->returned, "r", 1) != 1)
        return 4;
    return 5;
}

static void child_waits_for(bool timer)
{
    child_threads a = {.timer = timer};
    int ret[2];
    cr_assert_eq(pipe(ret), 0);
    a.returned = ret[1];
    mp_expect_rc(mp_event_new(&a.go), 0);
    mp_expect_rc(mp_event_new(&a.never), 0);
    a.mark = mp_shared_alloc(sizeof *a.mark);
    cr_assert_not_null(a.mark);
    atomic_store(a.mark, 0);
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, start_threads_and_return, &a, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    /* Once the target has returned, the child must still be there. */
    char c;
    cr_assert_eq(mp_test_read(ret[0], &c, 1, MP_TMO(5)), 1, "the target returned");
    cr_assert(!mp_test_process_gone(mp_process_pid(p), 0.2),
              "the child did not wait for its %s", timer ? "timer" : "thread");
    cr_assert_eq(atomic_load(a.mark), 0);
    mp_expect_rc(mp_event_set(a.go), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0); /* not for the daemon */
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 5, "the exit code is the target's");
    cr_assert_eq(atomic_load(a.mark), 1, "the thread ran to its end");
    mp_process_free(p);
    mp_shared_free(a.mark);
    close(ret[0]);
    close(ret[1]);
    mp_event_free(a.go);
    mp_event_free(a.never);
}

Test(process, child_waits_for_its_non_daemon_threads, .timeout = MP_TMO(15))
{
    child_waits_for(false);
}

Test(process, child_waits_for_its_pending_timers, .timeout = MP_TMO(15))
{
    child_waits_for(true);
}

static int print_and_return(void *arg)
{
    printf("hello from %s\n", (const char *)arg);
    return 0; /* no fflush: the library flushes before _exit */
}

Test(process, child_output_is_flushed, .timeout = MP_TMO(10))
{
    int out[2];
    cr_assert_eq(pipe(out), 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(out[1], 1);
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, print_and_return, "the child", NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    dup2(saved, 1);
    close(out[1]);
    char buf[64] = {0};
    cr_assert_gt(mp_test_read(out[0], buf, 20, MP_TMO(5)), 0);
    cr_assert_str_eq(buf, "hello from the child");
    mp_process_free(p);
}

Test(process, many_children_at_once, .timeout = MP_TMO(20))
{
    enum { N = 64 };
    mp_process *p[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(mp_process_new(&p[i], ret_arg, (void *)(intptr_t)(i % 200), NULL), 0);
        mp_expect_rc(mp_process_start(p[i]), 0);
    }
    for (int i = N - 1; i >= 0; i--) {
        int code;
        mp_expect_rc(mp_process_join(p[i], MP_TMO(10)), 0);
        mp_expect_rc(mp_process_exitcode(p[i], &code), 0);
        cr_assert_eq(code, i % 200);
        mp_process_free(p[i]);
    }
}

Test(process, cpu_count_and_ids, .timeout = MP_TMO(5))
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int n = mp_cpu_count();
    cr_assert_geq(n, 1);
    cr_assert_leq(n, CPU_COUNT(&set));
    cr_assert_eq(mp_getpid(), getpid());
    cr_assert_eq(mp_getppid(), getppid());
}

Test(process, cpu_count_follows_affinity, .timeout = MP_TMO(5))
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
    cr_assert_eq(mp_cpu_count(), 1);
}

/* ---- this process, its parent, its children ---- */

/* multiprocessing.current_process() and parent_process() in the main
 * program: "MainProcess", our pid, no parent; the library owns it. */
Test(process, current_process_in_the_main_program, .timeout = MP_TMO(10))
{
    const mp_process *cur = mp_process_current();
    cr_assert_not_null(cur);
    cr_assert_eq(mp_process_current(), cur, "the same object on every call");
    cr_assert_str_eq(mp_process_name(cur), "MainProcess");
    cr_assert_eq(mp_process_pid(cur), getpid());
    cr_assert_not(mp_process_daemon(cur));
    cr_assert_null(mp_process_parent());
    mp_process *c = (mp_process *)cur;
    cr_assert(mp_process_is_alive(c));
    int code;
    mp_expect_rc(mp_process_exitcode(c, &code), -EAGAIN);
    mp_expect_rc(mp_process_exitcode(c, NULL), -EINVAL);
    mp_expect_rc(mp_process_join(c, 0), -EDEADLK);
    mp_expect_rc(mp_process_join(c, NAN), -EINVAL);
    mp_expect_rc(mp_process_start(c), -EPERM);
    mp_expect_rc(mp_process_terminate(c), -EPERM);
    mp_expect_rc(mp_process_kill(c), -EPERM);
    mp_expect_rc(mp_process_sentinel(cur), -EINVAL);
    mp_process_free(c); /* not ours to free: a no-op */
    cr_assert_str_eq(mp_process_name(mp_process_current()), "MainProcess");
    /* A child forked by other means keeps the name, with its own pid. */
    pid_t pid = fork();
    if (pid == 0)
        _exit(mp_process_pid(mp_process_current()) == getpid() &&
                      strcmp(mp_process_name(mp_process_current()), "MainProcess") == 0
                  ? 0
                  : 1);
    int st = mp_test_waitpid(pid, MP_TMO(5));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
}

/* What a child of mp_process_start sees: itself under its own name, pid
 * and daemon flag, its parent under the parent's, and no children. */
typedef struct {
    const char *parent_name;
    bool parent_daemon;
} parent_is;

static int check_identity(void *arg)
{
    const parent_is *want = arg;
    const mp_process *cur = mp_process_current();
    const mp_process *par = mp_process_parent();
    if (cur == NULL || par == NULL)
        return 10;
    if (mp_process_pid(cur) != getpid() || mp_process_pid(par) != getppid())
        return 11;
    if (strcmp(mp_process_name(par), want->parent_name) != 0 ||
        mp_process_daemon(par) != want->parent_daemon)
        return 12;
    if (!mp_process_is_alive((mp_process *)par) || !mp_process_is_alive((mp_process *)cur))
        return 13;
    int s = mp_process_sentinel(par);
    if (s < 0 || mp_process_sentinel(par) != s || mp_wait_fds(&s, 1, 0) != MP_ETIMEDOUT)
        return 14;
    int code;
    if (mp_process_join((mp_process *)par, 0) != MP_ETIMEDOUT ||
        mp_process_exitcode((mp_process *)par, &code) != -ECHILD ||
        mp_process_kill((mp_process *)par) != -EPERM)
        return 15;
    if (mp_active_children(NULL, 0) != 0)
        return 16; /* the parent's children are not ours */
    mp_process_free((mp_process *)par);
    if (mp_process_parent() != par || mp_process_pid(par) != getppid())
        return 17;
    /* The name and flag are this child's own. */
    if (strcmp(mp_process_name(cur), "kid") == 0)
        return mp_process_daemon(cur) ? 0 : 18;
    return strcmp(mp_process_name(cur), "grandkid") == 0 && !mp_process_daemon(cur) ? 0 : 19;
}

/* A child that checks itself, then starts a grandchild that checks itself
 * and sees the child as its parent. */
static int check_identity_and_start_grandkid(void *arg)
{
    int rc = check_identity(arg);
    if (rc != 0)
        return rc;
    mp_process *g;
    static const parent_is kid = {"kid", true};
    if (mp_process_new(&g, check_identity, (void *)&kid, &(mp_process_opts){.name = "grandkid"}) < 0 ||
        mp_process_start(g) < 0 || mp_process_join(g, MP_TMO(5)) < 0)
        return 20;
    int code = -1;
    mp_process_exitcode(g, &code);
    mp_process_free(g);
    if (code != 0)
        return 30 + code;
    return strcmp(mp_process_name(mp_process_current()), "kid") == 0 ? 0 : 21;
}

Test(process, current_and_parent_process_in_children, .timeout = MP_TMO(10))
{
    mp_process *p;
    static const parent_is main_program = {"MainProcess", false};
    cr_assert_eq(mp_process_new(&p, check_identity_and_start_grandkid, (void *)&main_program,
                                &(mp_process_opts){.name = "kid", .daemon = true}),
                 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0, "the child's check %d failed", code);
    mp_process_free(p);
}

/* The parent's sentinel becomes readable when the parent dies, even by
 * SIGKILL and after the child has been re-parented. */
typedef struct {
    int report; /* the grandchild writes its pid, then 'P' once its parent ended */
    gate g;     /* the middle child parks on it */
} orphan_arg;

static int watch_parent(void *arg)
{
    orphan_arg *a = arg;
    close(a->g.wr);
    pid_t me = getpid();
    if (write(a->report, &me, sizeof me) != sizeof me)
        return 1;
    const mp_process *par = mp_process_parent();
    int s = mp_process_sentinel(par);
    if (mp_wait_fds(&s, 1, MP_TMO(5)) != 0 || mp_process_is_alive((mp_process *)par) ||
        mp_process_join((mp_process *)par, 0) != 0)
        return 2;
    return write(a->report, "P", 1) == 1 ? 0 : 3;
}

static int start_watcher_and_park(void *arg)
{
    orphan_arg *a = arg;
    mp_process *w;
    if (mp_process_new(&w, watch_parent, a, NULL) < 0 || mp_process_start(w) < 0)
        return 1;
    return wait_gate(&a->g);
}

Test(process, parent_sentinel_fires_when_the_parent_dies, .timeout = MP_TMO(10))
{
    int report[2];
    cr_assert_eq(pipe(report), 0);
    orphan_arg a = {.report = report[1], .g = gate_new(-1)};
    mp_process *mid;
    cr_assert_eq(mp_process_new(&mid, start_watcher_and_park, &a, NULL), 0);
    mp_expect_rc(mp_process_start(mid), 0);
    pid_t watcher;
    cr_assert_eq(mp_test_read(report[0], &watcher, sizeof watcher, MP_TMO(5)),
                 (ssize_t)sizeof watcher);
    mp_expect_rc(mp_process_kill(mid), 0);
    mp_expect_rc(mp_process_join(mid, MP_TMO(5)), 0);
    char c = 0;
    cr_assert_eq(mp_test_read(report[0], &c, 1, MP_TMO(5)), 1, "the orphan saw its parent end");
    cr_assert_eq(c, 'P');
    cr_assert(mp_test_process_gone(watcher, MP_TMO(5)));
    mp_process_free(mid);
    close(a.g.rd);
    close(a.g.wr);
    close(report[0]);
    close(report[1]);
}

/* multiprocessing.active_children(): live children, oldest first; one that
 * has exited is reaped (its exit code kept) and not listed; a freed
 * object is not listed either. */
Test(process, active_children_lists_live_ones_and_reaps_the_rest, .timeout = MP_TMO(10))
{
    gate g = gate_new(-1);
    mp_process *a, *b, *c, *d;
    cr_assert_eq(mp_process_new(&a, wait_gate, &g, NULL), 0);
    cr_assert_eq(mp_process_new(&b, wait_gate, &g, &(mp_process_opts){.daemon = true}), 0);
    cr_assert_eq(mp_process_new(&c, ret_arg, (void *)(intptr_t)9, NULL), 0);
    cr_assert_eq(mp_process_new(&d, wait_gate, &g, NULL), 0);
    mp_expect_rc(mp_active_children(NULL, 0), 0);
    mp_expect_rc(mp_process_start(a), 0);
    mp_expect_rc(mp_process_start(b), 0);
    mp_expect_rc(mp_process_start(c), 0);
    mp_expect_rc(mp_process_start(d), 0);
    /* c has ended (its sentinel says so; nothing has reaped it yet). */
    int s = mp_process_sentinel(c);
    mp_expect_rc(mp_wait_fds(&s, 1, MP_TMO(5)), 0);
    mp_process *out[8] = {0};
    mp_expect_rc(mp_active_children(out, 8), 3);
    cr_assert(out[0] == a && out[1] == b && out[2] == d && out[3] == NULL);
    cr_assert_eq(mp_process_pid(out[1]), mp_process_pid(b));
    cr_assert_str_eq(mp_process_name(out[2]), mp_process_name(d));
    int code;
    mp_expect_rc(mp_process_exitcode(c, &code), 0); /* reaped, code kept */
    cr_assert_eq(code, 9);
    mp_expect_rc(mp_process_join(c, 0), 0);
    siginfo_t si = {0};
    cr_assert_eq(waitid(P_PID, (id_t)mp_process_pid(c), &si, WEXITED | WNOHANG | WNOWAIT), -1);
    cr_assert_eq(errno, ECHILD, "active_children reaped the finished child");
    /* At most cap are stored; the count is all of them. */
    mp_process *one[2] = {NULL, (mp_process *)0x1};
    mp_expect_rc(mp_active_children(one, 1), 3);
    cr_assert(one[0] == a && one[1] == (mp_process *)0x1);
    mp_expect_rc(mp_active_children(NULL, 1), -EINVAL);
    /* A freed (detached) object is not handed out. */
    mp_process_free(a);
    mp_expect_rc(mp_active_children(out, 8), 2);
    cr_assert(out[0] == b && out[1] == d);
    close(g.wr);
    mp_expect_rc(mp_process_join(b, MP_TMO(5)), 0);
    mp_expect_rc(mp_process_join(d, MP_TMO(5)), 0);
    mp_expect_rc(mp_active_children(out, 8), 0);
    mp_process_free(b);
    mp_process_free(c);
    mp_process_free(d);
    close(g.rd);
}

/* ---- sentinels and mp_wait_fds ---- */

Test(process, sentinel_is_readable_once_the_child_ends, .timeout = MP_TMO(10))
{
    gate g = gate_new(-1);
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, wait_gate, &g, NULL), 0);
    mp_expect_rc(mp_process_sentinel(p), -EINVAL); /* before start */
    mp_expect_rc(mp_process_sentinel(NULL), -EINVAL);
    mp_expect_rc(mp_process_start(p), 0);
    int before = mp_test_lowest_free_fd();
    int s = mp_process_sentinel(p);
    cr_assert_geq(s, 0);
    cr_assert_eq(mp_process_sentinel(p), s, "the same descriptor every time");
    cr_assert_eq(mp_test_lowest_free_fd(), before, "no descriptor opened for it");
    struct pollfd pf = {.fd = s, .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, 0), 0, "not readable while the child runs");
    /* Usable in epoll, as Python's sentinel is in selectors. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_geq(ep, 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 77};
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev), 0);
    cr_assert_eq(epoll_wait(ep, &ev, 1, 0), 0);
    close(g.wr);
    cr_assert_eq(epoll_wait(ep, &ev, 1, (int)(MP_TMO(5) * 1000)), 1);
    cr_assert_eq(ev.data.u32, 77u);
    close(ep);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    cr_assert_eq(mp_process_sentinel(p), s, "kept after the join");
    cr_assert_eq(poll(&pf, 1, 0), 1, "still readable once reaped");
    mp_process_free(p);
    errno = 0;
    cr_assert_eq(fcntl(s, F_GETFD), -1, "closed by mp_process_free");
    cr_assert_eq(errno, EBADF);
    close(g.rd);
}

/* connection.wait([p.sentinel, ...]) blocks until a process ends. */
Test(process, wait_fds_on_sentinels_blocks_until_a_child_ends, .timeout = MP_TMO(10))
{
    gate g = gate_new(-1);
    int idle[2];
    cr_assert_eq(pipe(idle), 0);
    mp_process *slow, *quick;
    cr_assert_eq(mp_process_new(&slow, wait_gate, &g, NULL), 0);
    cr_assert_eq(mp_process_new(&quick, ret_arg, NULL, NULL), 0);
    mp_expect_rc(mp_process_start(slow), 0);
    mp_expect_rc(mp_process_start(quick), 0);
    int fds[3] = {idle[0], mp_process_sentinel(slow), mp_process_sentinel(quick)};
    mp_expect_rc(mp_wait_fds(fds, 3, MP_FOREVER), 2);
    mp_expect_rc(mp_process_join(quick, 0), 0);
    mp_expect_rc(mp_wait_fds(fds, 2, 0), MP_ETIMEDOUT);
    close(g.wr);
    mp_expect_rc(mp_wait_fds(fds, 2, MP_TMO(5)), 1);
    mp_expect_rc(mp_process_join(slow, 0), 0);
    mp_process_free(slow);
    mp_process_free(quick);
    close(idle[0]);
    close(idle[1]);
    close(g.rd);
}
