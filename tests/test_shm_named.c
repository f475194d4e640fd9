/* Named shared memory: create/open across unrelated processes, errors, and
 * cleanup when the creator's tree exits — even by SIGKILL — unless the
 * segment was made persistent. */
// labels: unit tsan
#include <fcntl.h>
#include <limits.h>
#include <mproc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "mp_test.h"

static void unique_name(char *buf, size_t n, const char *what)
{
    snprintf(buf, n, "mproc-test-%s-%d", what, (int)getpid());
}

static bool shm_exists(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return access(path, F_OK) == 0;
}

/* Wait until /dev/shm/name is gone, at most timeout s, on inotify events. */
static bool wait_gone(const char *name, double timeout)
{
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    cr_assert_geq(in, 0);
    cr_assert_geq(inotify_add_watch(in, "/dev/shm", IN_DELETE), 0);
    double end = mp_test_now() + timeout;
    bool gone;
    while (!(gone = !shm_exists(name))) {
        double left = end - mp_test_now();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = in, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) > 0) {
            char buf[4096];
            while (read(in, buf, sizeof buf) > 0)
                ;
        }
    }
    close(in);
    return gone;
}

Test(shm_named, create_open_share_and_errors, .timeout = MP_TMO(10))
{
    char name[64];
    unique_name(name, sizeof name, "basic");
    mp_shm *a, *b, *c;
    mp_expect_rc(mp_shm_create(&a, name, 10000), 0);
    cr_assert(shm_exists(name));
    cr_assert_eq(mp_shm_size(a), 10000);
    cr_assert_str_eq(mp_shm_name(a), name);
    unsigned char *pa = mp_shm_data(a);
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(pa[i], 0, "zero-filled");
    mp_expect_rc(mp_shm_create(&c, name, 100), -EEXIST);
    cr_assert_null(c);
    char slash[70];
    snprintf(slash, sizeof slash, "/%s", name);
    mp_expect_rc(mp_shm_open(&b, slash), 0); /* with or without '/' */
    cr_assert_eq(mp_shm_size(b), 10000);
    memcpy(pa, "shared", 7);
    cr_assert_str_eq((char *)mp_shm_data(b), "shared");
    mp_shm_free(b);
    mp_expect_rc(mp_shm_unlink(a), 0);
    cr_assert(!shm_exists(name));
    cr_assert_str_eq((char *)mp_shm_data(a), "shared", "the mapping outlives the name");
    mp_expect_rc(mp_shm_unlink(a), -ENOENT);
    mp_expect_rc(mp_shm_open(&b, name), -ENOENT);
    mp_shm_free(a);

    const char *bad[] = {"", "/", "a/b", "..", ".", "sp ace", "tab\t", "é"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mp_expect_rc(mp_shm_create(&a, bad[i], 10), -EINVAL);
        mp_expect_rc(mp_shm_open(&a, bad[i]), -EINVAL);
    }
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    mp_expect_rc(mp_shm_create(&a, longname, 10), -EINVAL);
    mp_expect_rc(mp_shm_create(&a, name, 0), -EINVAL);
    mp_expect_rc(mp_shm_create(&a, NULL, 10), -EINVAL);
    mp_expect_rc(mp_shm_create(NULL, name, 10), -EINVAL);
    mp_expect_rc(mp_shm_open(NULL, name), -EINVAL);
    mp_expect_rc(mp_shm_unlink(NULL), -EINVAL);
    mp_expect_rc(mp_shm_persist(NULL), -EINVAL);
    cr_assert_null(mp_shm_data(NULL));
    cr_assert_eq(mp_shm_size(NULL), 0);
    cr_assert_null(mp_shm_name(NULL));
    mp_shm_free(NULL);
    cr_assert(!shm_exists(name));
}

Test(shm_named, an_unrelated_program_opens_it_by_name, .timeout = MP_TMO(10))
{
    char name[64];
    unique_name(name, sizeof name, "peer");
    mp_shm *s;
    mp_expect_rc(mp_shm_create(&s, name, 4096), 0);
    strcpy(mp_shm_data(s), "hello from the creator");
    const char *dir = getenv("MPROC_TEST_BINARY_DIR");
    char prog[PATH_MAX];
    snprintf(prog, sizeof prog, "%s/tests/helpers/shm_peer", dir ? dir : ".");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execl(prog, "shm_peer", name, (char *)NULL);
        _exit(127);
    }
    int st = mp_test_waitpid(pid, MP_TMO(5));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "peer status %#x", st);
    cr_assert_str_eq((char *)mp_shm_data(s) + 64, "hello from the peer");
    mp_expect_rc(mp_shm_unlink(s), 0);
    mp_shm_free(s);
}

/* A creator process: make the segment, report, then act as told. */
typedef struct {
    char name[64];
    int report;     /* write end: one byte when created */
    int mode;       /* 0: wait to be killed; 1: return; 2: persist and return;
                       3: unlink and return */
    int hold[2];    /* the tree test: the holder waits for EOF on hold[0] */
} creator_job;

static int creator(void *arg)
{
    creator_job *j = arg;
    mp_shm *s;
    if (mp_shm_create(&s, j->name, 1 << 16) < 0)
        return 1;
    if (j->mode == 2 && mp_shm_persist(s) < 0)
        return 2;
    if (j->mode == 3 && mp_shm_unlink(s) < 0)
        return 3;
    char c = 'c';
    (void)!write(j->report, &c, 1);
    if (j->mode == 0)
        for (;;)
            pause();
    mp_shm_free(s);
    return 0;
}

static mp_process *start_creator(creator_job *j, int mode, const char *what, int *rd)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    unique_name(j->name, sizeof j->name, what);
    j->report = fds[1];
    j->mode = mode;
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, creator, j, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    close(fds[1]);
    char c;
    cr_assert_eq(mp_test_read(fds[0], &c, 1, MP_TMO(5)), 1, "the creator made it");
    *rd = fds[0];
    return p;
}

Test(shm_named, removed_when_the_creator_is_killed, .timeout = MP_TMO(10))
{
    creator_job j;
    int rd;
    mp_process *p = start_creator(&j, 0, "killed", &rd);
    cr_assert(shm_exists(j.name));
    mp_expect_rc(mp_process_kill(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    cr_assert(wait_gone(j.name, MP_TMO(5)), "%s left in /dev/shm", j.name);
    mp_process_free(p);
    close(rd);
}

Test(shm_named, removed_when_the_creator_returns, .timeout = MP_TMO(10))
{
    creator_job j;
    int rd;
    mp_process *p = start_creator(&j, 1, "returns", &rd);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    cr_assert(wait_gone(j.name, MP_TMO(5)), "%s left in /dev/shm", j.name);
    mp_process_free(p);
    close(rd);
}

Test(shm_named, persistent_segments_stay, .timeout = MP_TMO(10))
{
    creator_job j;
    int rd;
    mp_process *p = start_creator(&j, 2, "persist", &rd);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0);
    /* The tracker saw EOF and did its removals; ours must still be here.
     * Its removals race with nothing we can wait on, so check the only
     * stable outcome: the name exists and can be opened and removed. */
    cr_assert(!wait_gone(j.name, 0.2), "a persistent segment was removed");
    mp_shm *s;
    mp_expect_rc(mp_shm_open(&s, j.name), 0);
    cr_assert_eq(mp_shm_size(s), 1 << 16);
    mp_expect_rc(mp_shm_persist(s), 0); /* an opener's handle: nothing to do */
    mp_expect_rc(mp_shm_unlink(s), 0);
    mp_shm_free(s);
    mp_process_free(p);
    close(rd);
}

Test(shm_named, unlinked_early_then_exit_is_fine, .timeout = MP_TMO(10))
{
    creator_job j;
    int rd;
    mp_process *p = start_creator(&j, 3, "early", &rd);
    cr_assert(!shm_exists(j.name));
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0);
    mp_process_free(p);
    close(rd);
}

/* The creator's children keep the segment alive: it goes with the tree. */
static int create_then_fork_holder(void *arg)
{
    creator_job *j = arg;
    mp_shm *s;
    if (mp_shm_create(&s, j->name, 4096) < 0)
        return 1;
    pid_t holder = fork();
    if (holder == 0) { /* holds the tracker pipe until hold[1] closes */
        char c;
        close(j->hold[1]);
        close(j->report);
        while (read(j->hold[0], &c, 1) > 0)
            ;
        _exit(0);
    }
    (void)!write(j->report, &holder, sizeof holder);
    for (;;)
        pause();
    return 0;
}

Test(shm_named, the_creators_children_keep_it_until_they_exit, .timeout = MP_TMO(10))
{
    creator_job j;
    unique_name(j.name, sizeof j.name, "tree");
    int rep[2];
    cr_assert_eq(pipe(rep), 0);
    cr_assert_eq(pipe(j.hold), 0);
    j.report = rep[1];
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, create_then_fork_holder, &j, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    pid_t holder;
    cr_assert_eq(mp_test_read(rep[0], &holder, sizeof holder, MP_TMO(5)), (ssize_t)sizeof holder);
    mp_expect_rc(mp_process_kill(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    cr_assert(shm_exists(j.name), "the holder still runs: the segment stays");
    close(j.hold[1]); /* let the holder go */
    cr_assert(wait_gone(j.name, MP_TMO(5)), "%s left in /dev/shm", j.name);
    cr_assert(mp_test_process_gone(holder, MP_TMO(5)));
    mp_process_free(p);
    close(j.hold[0]);
    close(rep[0]);
    close(rep[1]);
}

/* ---- the tracker follows any number of segments, and only its own ---- */

/* Our child named mproc-tracker other than `skip`, or 0.  The test makes
 * itself a subreaper first: a tracker (forked twice by a child of ours)
 * then becomes our child, so that we can wait for it to finish. */
static pid_t find_tracker_now(pid_t skip)
{
    DIR *d = opendir("/proc");
    cr_assert_not_null(d);
    pid_t found = 0;
    struct dirent *e;
    while (found == 0 && (e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0 || pid == skip)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *close_paren = strrchr(buf, ')');
        int ppid;
        if (strstr(buf, "(mproc-tracker)") != NULL && close_paren != NULL &&
            sscanf(close_paren + 2, "%*c %d", &ppid) == 1 && ppid == (int)getpid())
            found = pid;
    }
    closedir(d);
    return found;
}

/* The tracker comes to us (the subreaper) once its first parent has
 * exited, which may be a little after the creator reports: wait for it. */
static pid_t find_tracker(pid_t skip)
{
    double until = mp_test_now() + MP_TMO(5);
    pid_t pid;
    while ((pid = find_tracker_now(skip)) == 0 && mp_test_now() < until)
        sched_yield();
    return pid;
}

enum { MANY = 5000 };

static int create_many(void *arg)
{
    const char *base = arg;
    for (int i = 0; i < MANY; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s-%d", base, i);
        mp_shm *s;
        if (mp_shm_create(&s, name, 4096) < 0)
            return 1;
        mp_shm_free(s); /* the handle, not the segment */
    }
    return 0;
}

Test(shm_named, thousands_of_segments_are_all_removed, .timeout = MP_TMO(60))
{
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    char base[64];
    unique_name(base, sizeof base, "many");
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, create_many, base, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(30)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0, "the creator could not make them all");
    mp_process_free(p);
    pid_t tracker = find_tracker(0);
    cr_assert_gt(tracker, 0, "no tracker came to us");
    int st = mp_test_waitpid(tracker, MP_TMO(30));
    cr_assert(st != -1 && WIFEXITED(st), "the tracker did not finish");
    int left = 0;
    for (int i = 0; i < MANY; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s-%d", base, i);
        if (shm_exists(name)) {
            left++;
            char path[128];
            snprintf(path, sizeof path, "/%s", name);
            shm_unlink(path);
        }
    }
    cr_assert_eq(left, 0, "%d of %d segments left in /dev/shm", left, MANY);
}

typedef struct {
    char name[64];
    int report; /* one byte when created */
    int go;     /* read end: return at EOF */
    int go_w;   /* its write end, which the child must not hold */
} holder_job;

static int create_and_hold(void *arg)
{
    holder_job *j = arg;
    close(j->go_w);
    mp_shm *s;
    if (mp_shm_create(&s, j->name, 4096) < 0)
        return 1;
    char c = 'c';
    (void)!write(j->report, &c, 1);
    while (read(j->go, &c, 1) > 0)
        ;
    return 0;
}

/* Make "/name" with plain shm_open, as another program would. */
static void make_raw(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0, "shm_open: %s", strerror(errno));
    cr_assert_eq(ftruncate(fd, 4096), 0);
    close(fd);
}

static void unlink_raw(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/%s", name);
    cr_assert_eq(shm_unlink(path), 0);
}

Test(shm_named, the_tracker_leaves_a_segment_made_again_by_another, .timeout = MP_TMO(20))
{
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    holder_job j;
    unique_name(j.name, sizeof j.name, "again");
    int rep[2], go[2];
    cr_assert_eq(pipe(rep), 0);
    cr_assert_eq(pipe(go), 0);
    j.report = rep[1];
    j.go = go[0];
    j.go_w = go[1];
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, create_and_hold, &j, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    close(rep[1]);
    close(go[0]);
    char c;
    cr_assert_eq(mp_test_read(rep[0], &c, 1, MP_TMO(5)), 1, "the creator made it");
    pid_t tracker = find_tracker(0);
    cr_assert_gt(tracker, 0, "no tracker came to us");
    /* Another program removes it and makes a new one under the name. */
    unlink_raw(j.name);
    make_raw(j.name);
    close(go[1]); /* the creator returns; its tree is gone */
    mp_expect_rc(mp_process_join(p, MP_TMO(5)), 0);
    mp_process_free(p);
    int st = mp_test_waitpid(tracker, MP_TMO(10));
    cr_assert(st != -1 && WIFEXITED(st), "the tracker did not finish");
    bool kept = shm_exists(j.name);
    if (kept)
        unlink_raw(j.name);
    cr_assert(kept, "the tracker removed a segment it did not make");
    close(rep[0]);
}

Test(shm_named, unlink_leaves_a_segment_made_again_by_another, .timeout = MP_TMO(10))
{
    char name[64];
    unique_name(name, sizeof name, "unlink-again");
    mp_shm *s;
    mp_expect_rc(mp_shm_create(&s, name, 4096), 0);
    unlink_raw(name);
    make_raw(name);
    mp_expect_rc(mp_shm_unlink(s), -ENOENT);
    bool kept = shm_exists(name);
    if (kept)
        unlink_raw(name);
    cr_assert(kept, "mp_shm_unlink removed another's segment");
    mp_shm_free(s);
}
