/* The shared heap: sharing across fork, allocator correctness, many
 * processes at once, and a process killed inside the allocator. */
// labels: unit tsan
#include <mproc.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "heap_int.h"
#include "mp_test.h"

Test(heap, parent_allocates_child_writes_parent_reads, .timeout = MP_TMO(10))
{
    int *v = mp_shared_alloc(1000 * sizeof(int));
    cr_assert_not_null(v);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(v[i], 0, "shared memory starts zeroed");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        for (int i = 0; i < 1000; i++)
            v[i] = i * 3;
        _exit(0);
    }
    int st = mp_test_waitpid(pid, MP_TMO(5));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(v[i], i * 3);
    mp_shared_free(v);
}

Test(heap, child_allocation_is_visible_to_parent, .timeout = MP_TMO(10))
{
    /* A block allocated by a child is in the same region, so the parent can
     * read it once told where it is. */
    char **slot = mp_shared_alloc(sizeof(char *));
    cr_assert_not_null(slot);
    pid_t pid = fork();
    if (pid == 0) {
        char *s = mp_shared_alloc(64);
        if (s == NULL)
            _exit(1);
        strcpy(s, "from the child");
        *slot = s;
        _exit(0);
    }
    int st = mp_test_waitpid(pid, MP_TMO(5));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cr_assert_str_eq(*slot, "from the child");
    /* The parent did not allocate it: its free is a no-op ... */
    cr_assert_eq(mp__heap_free(*slot), -EPERM);
    /* ... but the internal hand-off free works. */
    cr_assert_eq(mp__heap_free_any(*slot), 0);
    mp_shared_free(slot);
}

Test(heap, sizes_alignment_and_reuse, .timeout = MP_TMO(10))
{
    mp_heap_stats s0, s1;
    cr_assert_eq(mp_heap_usage(&s0), 0);
    size_t sizes[] = {1, 15, 16, 17, 100, 128, 129, 1000, 4096, 5000, 32768,
                      32769, 65536, 65537, 1 << 20, (5 << 20) + 3};
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        p[i] = mp_shared_alloc(sizes[i]);
        cr_assert_not_null(p[i], "size %zu", sizes[i]);
        cr_assert_eq((uintptr_t)p[i] % _Alignof(max_align_t), 0);
        cr_assert_geq(mp__heap_block_size(p[i]), sizes[i]);
        memset(p[i], 0xab, sizes[i]); /* the whole block is writable */
        for (size_t j = 0; j < i; j++) {
            char *a = p[i], *b = p[j];
            cr_assert(a + sizes[i] <= b || b + sizes[j] <= a, "blocks overlap");
        }
    }
    cr_assert_eq(mp_heap_usage(&s1), 0);
    cr_assert_eq(s1.blocks, s0.blocks + sizeof sizes / sizeof sizes[0]);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        mp_shared_free(p[i]);
    cr_assert_eq(mp_heap_usage(&s1), 0);
    cr_assert_eq(s1.blocks, s0.blocks);
    cr_assert_eq(s1.in_use, s0.in_use);
    /* Freed blocks are reused: the same size comes back at the same place. */
    void *a = mp_shared_alloc(200);
    mp_shared_free(a);
    void *b = mp_shared_alloc(200);
    cr_assert_eq(a, b);
    mp_shared_free(b);
}

Test(heap, bad_input, .timeout = MP_TMO(5))
{
    cr_assert_null(mp_shared_alloc(0));
    cr_assert_null(mp_shared_alloc(SIZE_MAX));
    int err = 0;
    cr_assert_null(mp__heap_alloc(0, &err));
    cr_assert_eq(err, -EINVAL);
    cr_assert_null(mp__heap_alloc((size_t)1 << 62, &err));
    cr_assert_eq(err, -ENOMEM);
    mp_shared_free(NULL); /* no-op */
    int local;
    mp_shared_free(&local); /* not from the heap: ignored */
    cr_assert_eq(mp__heap_free(&local), -EINVAL);
    char *p = mp_shared_alloc(64);
    cr_assert_eq(mp__heap_free(p + 16), -EINVAL, "interior pointer");
    cr_assert_eq(mp__heap_free(p), 0);
    cr_assert_eq(mp__heap_free(p), -EINVAL, "double free detected");
    cr_assert_eq(mp_heap_usage(NULL), -EINVAL);
    cr_assert_eq(mp_heap_configure(1 << 20), -EINVAL, "below the minimum");
    cr_assert_eq(mp_heap_configure(64 << 20), -EBUSY, "heap already mapped");
}

Test(heap, configured_size_is_a_budget, .timeout = MP_TMO(10))
{
    cr_assert_eq(mp_heap_configure(8 << 20), 0);
    mp_heap_stats s;
    cr_assert_eq(mp_heap_usage(&s), 0);
    cr_assert_eq(s.capacity, 8 << 20);
    /* Exhaust it: every allocation fails cleanly, never SIGBUS. */
    size_t got = 0;
    void *blocks[256];
    int n = 0;
    while (n < 256) {
        void *p = mp_shared_alloc(1 << 20);
        if (p == NULL)
            break;
        memset(p, 1, 1 << 20);
        blocks[n++] = p;
        got += 1 << 20;
    }
    cr_assert_eq(got, 8 << 20, "exactly the budget in 1 MiB blocks");
    cr_assert_null(mp_shared_alloc(16));
    for (int i = 0; i < n; i++)
        mp_shared_free(blocks[i]);
    cr_assert_not_null(mp_shared_alloc(1 << 20), "freed memory is reusable");
}

Test(heap, env_sets_the_size, .timeout = MP_TMO(5))
{
    setenv("MPROC_HEAP_SIZE", "16M", 1);
    mp_heap_stats s;
    cr_assert_eq(mp_heap_usage(&s), 0);
    cr_assert_eq(s.capacity, 16 << 20);
}

/* Many processes allocate, fill, check and free at once. */
#define NPROC 8
#define ROUNDS 3000
static int churn(unsigned seed)
{
    const unsigned tag = seed % 7;
    void *live[64] = {0};
    size_t len[64] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        int i = rand_r(&seed) % 64;
        if (live[i]) {
            unsigned char *b = live[i];
            for (size_t k = 0; k < len[i]; k++)
                if (b[k] != (unsigned char)(i + tag))
                    return 1; /* someone else wrote into our block */
            mp_shared_free(live[i]);
            live[i] = NULL;
        } else {
            len[i] = 1 + rand_r(&seed) % 3000;
            live[i] = mp_shared_alloc(len[i]);
            if (live[i] == NULL)
                return 2;
            memset(live[i], (int)(i + tag), len[i]);
        }
    }
    for (int i = 0; i < 64; i++)
        mp_shared_free(live[i]);
    return 0;
}

Test(heap, many_processes_allocate_and_free_at_once, .timeout = MP_TMO(30))
{
    mp_heap_stats s0, s1;
    cr_assert_eq(mp_heap_usage(&s0), 0);
    pid_t pids[NPROC];
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(churn((unsigned)i * 7919u + 1));
    }
    for (int i = 0; i < NPROC; i++) {
        int st = mp_test_waitpid(pids[i], MP_TMO(25));
        cr_assert(WIFEXITED(st), "child %d did not exit", i);
        cr_assert_eq(WEXITSTATUS(st), 0, "child %d saw corruption (%d)", i, WEXITSTATUS(st));
    }
    cr_assert_eq(mp_heap_usage(&s1), 0);
    cr_assert_eq(s1.blocks, s0.blocks, "every block was given back");
}

/* A process SIGKILLed while allocating in a loop must not wedge or corrupt
 * the heap: the others keep allocating, and a full check passes after. */
Test(heap, kill9_inside_the_allocator_does_not_wedge, .timeout = MP_TMO(60))
{
    mp_heap_stats s0;
    cr_assert_eq(mp_heap_usage(&s0), 0);
    _Atomic unsigned long *progress = mp_shared_alloc(sizeof *progress);
    cr_assert_not_null(progress);
    for (int round = 0; round < 40; round++) {
        pid_t victim = fork();
        if (victim == 0) {
            /* Allocate and free forever, counting: small blocks that fill
             * and empty chunks, and large ones that split and merge spans. */
            void *live[32] = {0};
            unsigned seed = (unsigned)round;
            for (;;) {
                int i = rand_r(&seed) % 32;
                mp__heap_free(live[i]);
                size_t size = rand_r(&seed) % 4 ? 16 + (size_t)rand_r(&seed) % 5000
                                                : 40000 + (size_t)rand_r(&seed) % 600000;
                live[i] = mp__heap_alloc(size, NULL); /* (not zeroed: most time in the lock) */
                atomic_fetch_add(progress, 1);
            }
        }
        /* Let it run a little (until it made some progress), then kill it
         * at an arbitrary instruction. */
        unsigned long start = atomic_load(progress);
        unsigned long want = start + 200 + (unsigned long)(round * 37 % 500);
        while (atomic_load(progress) < want)
            ;
        kill(victim, SIGKILL);
        int st = mp_test_waitpid(victim, MP_TMO(5));
        cr_assert(WIFSIGNALED(st));
        /* Whatever the victim was doing was undone: every list and span
         * is whole.  The heap still works here, and in a fresh process. */
        char why[200] = "";
        cr_assert_eq(mp__heap_check(why, sizeof why), 0, "after kill %d: %s", round, why);
        int rc = churn((unsigned)round + 100);
        cr_assert_eq(rc, 0);
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(churn(4242));
    int st = mp_test_waitpid(pid, MP_TMO(10));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mp_shared_free((void *)progress);
    mp_heap_stats s1;
    cr_assert_eq(mp_heap_usage(&s1), 0);
    /* The victims' live blocks leak (nobody frees a dead process's
     * blocks), at most 32 each, and nothing else. */
    cr_assert_leq(s1.blocks, s0.blocks + 40 * 32);
}

/* ---- freed memory returns to a common pool ---- */

static void expect_whole(void)
{
    char why[200] = "";
    int rc = mp__heap_check(why, sizeof why);
    cr_assert_eq(rc, 0, "heap check: %s", why);
}

/* The size a block of `size` bytes takes. */
static size_t block_bytes(size_t size)
{
    void *p = mp_shared_alloc(size);
    cr_assert_not_null(p);
    size_t n = mp__heap_block_size(p);
    mp_shared_free(p);
    return n;
}

/* mp_heap_usage gives back the empty chunk each size class keeps, so that
 * a fill starts from a heap as fresh as it can be. */
static mp_heap_stats settle(void)
{
    mp_heap_stats s;
    cr_assert_eq(mp_heap_usage(&s), 0);
    return s;
}

/* Allocate `size` until the heap is full; free them all unless keep.
 * Returns how many fit. */
static size_t fill(size_t size, void ***keep)
{
    size_t n = 0, cap = 1024;
    void **v = malloc(cap * sizeof *v);
    cr_assert_not_null(v);
    for (;;) {
        void *p = mp_shared_alloc(size);
        if (p == NULL)
            break;
        if (n == cap)
            cr_assert_not_null(v = realloc(v, (cap *= 2) * sizeof *v));
        v[n++] = p;
    }
    if (keep) {
        *keep = v;
        return n;
    }
    for (size_t i = 0; i < n; i++) /* every other one first: holes */
        if (i % 2 == 0)
            mp_shared_free(v[i]);
    for (size_t i = 0; i < n; i++)
        if (i % 2 == 1)
            mp_shared_free(v[i]);
    free(v);
    return n;
}

/* The heap of these tests: small, so that filling it with 24-byte blocks
 * stays quick under the sanitizers (the smallest there is under TSan). */
#ifdef MP_TEST_MINI
#define HEAP ((size_t)4 << 20)
#else
#define HEAP ((size_t)16 << 20)
#endif

/* The sizes a long-running program may go through in a day. */
static const size_t day[] = {24, 4096, 65536, HEAP / 16, HEAP / 8, HEAP / 2, 100, 300000};
#define NDAY (sizeof day / sizeof day[0])

/* After any fill-and-free, any size fits again up to the heap's brim: the
 * count of a size is the same as in a fresh heap. */
Test(heap, any_fill_and_free_leaves_the_heap_to_any_size, .timeout = MP_TMO(60))
{
    cr_assert_eq(mp_heap_configure(HEAP), 0);
    mp_heap_stats s0;
    cr_assert_eq(mp_heap_usage(&s0), 0);
    cr_assert_eq(s0.free_bytes, s0.capacity - s0.chunks_used);
    cr_assert_eq(s0.largest_free, s0.free_bytes, "a fresh heap is one span");
    size_t fresh[NDAY];
    for (size_t b = 0; b < NDAY; b++) {
        settle();
        fresh[b] = fill(day[b], NULL);
        cr_assert_geq(fresh[b] * block_bytes(day[b]), s0.free_bytes * 9 / 10,
                      "%zu B blocks fill 90%% of a fresh heap", day[b]);
    }
    for (size_t a = 0; a < NDAY; a++) {
        for (size_t b = 0; b < NDAY; b++) {
            fill(day[a], NULL);
            expect_whole();
            mp_heap_stats s = settle();
            cr_assert_eq(s.free_bytes, s0.free_bytes, "after %zu B blocks: all free", day[a]);
            cr_assert_eq(s.largest_free, s0.largest_free, "after %zu B blocks: in one span",
                         day[a]);
            size_t n = fill(day[b], NULL);
            cr_assert_eq(n, fresh[b], "%zu B blocks after %zu B ones: %zu, fresh %zu", day[b],
                         day[a], n, fresh[b]);
        }
    }
    expect_whole();
}

/* Values of 1/64 of the heap (1 MiB ones in a 64 MiB heap left room for
 * only 30,720 24-byte blocks) filled and freed, then 24-byte blocks. */
Test(heap, values_then_small_blocks, .timeout = MP_TMO(30))
{
    cr_assert_eq(mp_heap_configure(HEAP), 0);
    size_t fresh = fill(24, NULL);
    mp_value *v[128];
    int n = 0;
    while (n < 128 && mp_value_new(&v[n], HEAP / 64, NULL) == 0)
        n++;
    cr_assert(n >= 30 && n < 128, "%d values filled the heap", n);
    for (int i = 0; i < n; i++)
        mp_value_free(v[i]);
    expect_whole();
    cr_assert_eq(fill(24, NULL), fresh);
    expect_whole();
}

/* Holes: with every other block of a size still live, the rest of the
 * heap still takes blocks of any size, and usage says how it is cut up. */
Test(heap, usage_reports_fragmentation, .timeout = MP_TMO(30))
{
    cr_assert_eq(mp_heap_configure(HEAP), 0);
    mp_heap_stats s0, s1, s2;
    cr_assert_eq(mp_heap_usage(&s0), 0);
    void **v;
    size_t n = fill(65536, &v); /* every chunk */
    cr_assert_eq(mp_heap_usage(&s1), 0);
    cr_assert_eq(s1.free_bytes, 0);
    cr_assert_eq(s1.largest_free, 0);
    for (size_t i = 0; i < n; i += 2)
        mp_shared_free(v[i]);
    cr_assert_eq(mp_heap_usage(&s2), 0);
    cr_assert_eq(s2.free_bytes, (n + 1) / 2 * 65536, "half the chunks are free");
    cr_assert_eq(s2.largest_free, 65536, "in holes of one chunk");
    cr_assert_null(mp_shared_alloc(2 * 65536), "no two free chunks are adjacent");
    for (size_t i = 1; i < n; i += 2)
        mp_shared_free(v[i]);
    free(v);
    cr_assert_eq(mp_heap_usage(&s2), 0);
    cr_assert_eq(s2.free_bytes, s0.free_bytes);
    cr_assert_eq(s2.largest_free, s0.largest_free);
    expect_whole();
}

/* Two processes fill and free different sizes at the same time; then the
 * parent gets the whole heap in the largest blocks. */
static int churn_size(size_t size, int rounds)
{
    for (int r = 0; r < rounds; r++) {
        void **v;
        size_t n = fill(size, &v);
        for (size_t i = 0; i < n; i++)
            if (mp__heap_free(v[i]) != 0)
                return 1;
        free(v);
    }
    return 0;
}

Test(heap, processes_fill_and_free_at_once_then_one_takes_all, .timeout = MP_TMO(60))
{
    cr_assert_eq(mp_heap_configure(HEAP), 0);
    size_t fresh = fill(HEAP / 4, NULL);
    cr_assert_eq(fresh, 4);
    pid_t a = fork();
    if (a == 0)
        _exit(churn_size(24, 4));
    pid_t b = fork();
    if (b == 0)
        _exit(churn_size(300000, 200));
    int st = mp_test_waitpid(a, MP_TMO(50));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    st = mp_test_waitpid(b, MP_TMO(50));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    expect_whole();
    cr_assert_geq(fill(HEAP / 4, NULL), fresh - 1, "without settling: all but one block");
    settle();
    cr_assert_eq(fill(HEAP / 4, NULL), fresh);
}
