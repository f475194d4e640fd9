/* The shared dict and list: semantics, ten processes at once, SIGKILL in
 * the middle of updates, bad input. */
// labels: unit tsan
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

#include "mp_test.h"

static void set_str(mp_dict *d, const char *k, const char *v)
{
    mp_expect_rc(mp_dict_set(d, k, strlen(k), v, strlen(v)), 0);
}

static void expect_str(mp_dict *d, const char *k, const char *v)
{
    char buf[256];
    size_t len;
    mp_expect_rc(mp_dict_get(d, k, strlen(k), buf, sizeof buf, &len), 0);
    cr_assert_eq(len, strlen(v));
    cr_assert_eq(memcmp(buf, v, len), 0, "d[%s]", k);
}

Test(dict, set_get_replace_delete, .timeout = MP_TMO(10))
{
    mp_dict *d;
    mp_expect_rc(mp_dict_new(&d), 0);
    set_str(d, "1", "1");
    set_str(d, "2", "2");
    set_str(d, "0.25", "None");
    expect_str(d, "1", "1");
    set_str(d, "1", "one");
    expect_str(d, "1", "one");
    cr_assert_eq(mp_dict_len(d), 3);
    cr_assert(mp_dict_contains(d, "2", 1));
    mp_expect_rc(mp_dict_del(d, "2", 1), 0);
    mp_expect_rc(mp_dict_del(d, "2", 1), -ENOENT);
    cr_assert_not(mp_dict_contains(d, "2", 1));
    char buf[4];
    size_t len;
    mp_expect_rc(mp_dict_get(d, "2", 1, buf, sizeof buf, &len), -ENOENT);
    mp_expect_rc(mp_dict_get(d, "0.25", 4, buf, 2, &len), MP_ETOOBIG);
    cr_assert_eq(len, 4, "the size needed");
    void *v;
    mp_expect_rc(mp_dict_get_alloc(d, "0.25", 4, &v, &len), 0);
    cr_assert_eq(len, 4);
    cr_assert_eq(memcmp(v, "None", 4), 0);
    free(v);
    mp_expect_rc(mp_dict_set(d, "", 0, "", 0), 0); /* empty key and value */
    mp_expect_rc(mp_dict_get(d, "", 0, NULL, 0, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(mp_dict_len(d), 3);
    mp_expect_rc(mp_dict_clear(d), 0);
    cr_assert_eq(mp_dict_len(d), 0);
    cr_assert_not(mp_dict_contains(d, "1", 1));
    mp_dict_free(d);
}

Test(dict, grows_and_snapshots, .timeout = MP_TMO(20))
{
    mp_dict *d;
    mp_expect_rc(mp_dict_new(&d), 0);
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        int v = i * 3;
        mp_expect_rc(mp_dict_set(d, &i, sizeof i, &v, sizeof v), 0);
        if (i % 4 == 3) /* tombstones among the growth */
            mp_expect_rc(mp_dict_del(d, &(int){i - 1}, sizeof(int)), 0);
    }
    cr_assert_eq(mp_dict_len(d), N - N / 4);
    mp_dict_snapshot *s;
    mp_expect_rc(mp_dict_snapshot_new(d, &s), 0);
    mp_dict_clear(d); /* the snapshot is a private copy */
    cr_assert_eq(mp_dict_snapshot_len(s), N - N / 4);
    static char seen[N];
    const void *k, *v;
    size_t kl, vl;
    int rc, n = 0;
    while ((rc = mp_dict_snapshot_next(s, &k, &kl, &v, &vl)) == 1) {
        int key, val;
        cr_assert_eq(kl, sizeof key);
        cr_assert_eq(vl, sizeof val);
        memcpy(&key, k, sizeof key);
        memcpy(&val, v, sizeof val);
        cr_assert(key >= 0 && key < N && key % 4 != 2, "key %d", key);
        cr_assert_eq(val, key * 3);
        cr_assert_not(seen[key]);
        seen[key] = 1;
        n++;
    }
    mp_expect_rc(rc, 0);
    cr_assert_eq(n, N - N / 4);
    mp_dict_snapshot_free(s);
    mp_dict_free(d);
}

Test(dict, bad_input, .timeout = MP_TMO(10))
{
    mp_dict *d;
    size_t len;
    char buf[8];
    mp_expect_rc(mp_dict_new(NULL), -EINVAL);
    mp_expect_rc(mp_dict_new(&d), 0);
    mp_expect_rc(mp_dict_set(NULL, "a", 1, "b", 1), -EINVAL);
    mp_expect_rc(mp_dict_set(d, NULL, 1, "b", 1), -EINVAL);
    mp_expect_rc(mp_dict_set(d, "a", 1, NULL, 1), -EINVAL);
    static char big[MP_DICT_MAX_KEY + 1];
    mp_expect_rc(mp_dict_set(d, big, sizeof big, "b", 1), MP_ETOOBIG);
    mp_expect_rc(mp_dict_get(d, "a", 1, NULL, 4, &len), -EINVAL);
    mp_expect_rc(mp_dict_get(d, "a", 1, buf, sizeof buf, NULL), -EINVAL);
    mp_expect_rc(mp_dict_del(NULL, "a", 1), -EINVAL);
    mp_expect_rc(mp_dict_clear(NULL), -EINVAL);
    mp_expect_rc(mp_dict_snapshot_new(NULL, NULL), -EINVAL);
    cr_assert_eq(mp_dict_len(NULL), 0);
    cr_assert_not(mp_dict_contains(NULL, "a", 1));
    mp_dict_free(NULL);
    mp_dict_snapshot_free(NULL);
    cr_assert_eq(mp_dict_len(d), 0, "nothing was stored by the failures");
    mp_dict_free(d);
}

Test(list, append_get_set_insert_pop, .timeout = MP_TMO(10))
{
    mp_list *l;
    mp_expect_rc(mp_list_new(&l), 0);
    for (int i = 0; i < 100; i++)
        mp_expect_rc(mp_list_append(l, &i, sizeof i), 0);
    cr_assert_eq(mp_list_len(l), 100);
    int v;
    size_t len;
    mp_expect_rc(mp_list_get(l, 42, &v, sizeof v, &len), 0);
    cr_assert_eq(v, 42);
    mp_expect_rc(mp_list_get(l, 100, &v, sizeof v, &len), -ERANGE);
    mp_expect_rc(mp_list_get(l, 0, &v, 2, &len), MP_ETOOBIG);
    cr_assert_eq(len, sizeof v);
    mp_expect_rc(mp_list_set(l, 0, &(int){-1}, sizeof(int)), 0);
    mp_expect_rc(mp_list_set(l, 100, &(int){-1}, sizeof(int)), -ERANGE);
    mp_expect_rc(mp_list_insert(l, 1, &(int){1000}, sizeof(int)), 0);
    mp_expect_rc(mp_list_insert(l, 102, &v, sizeof v), -ERANGE);
    mp_expect_rc(mp_list_insert(l, 101, &(int){2000}, sizeof(int)), 0); /* at the end */
    cr_assert_eq(mp_list_len(l), 102);
    int want[] = {-1, 1000, 1, 2, 3};
    for (int i = 0; i < 5; i++) {
        mp_expect_rc(mp_list_get(l, (size_t)i, &v, sizeof v, &len), 0);
        cr_assert_eq(v, want[i], "l[%d]", i);
    }
    mp_expect_rc(mp_list_pop(l, 101, &v, sizeof v, &len), 0);
    cr_assert_eq(v, 2000);
    mp_expect_rc(mp_list_pop(l, 1, &v, sizeof v, &len), 0);
    cr_assert_eq(v, 1000);
    mp_expect_rc(mp_list_pop(l, 0, &v, 1, &len), MP_ETOOBIG);
    cr_assert_eq(mp_list_len(l), 100, "a failed pop removes nothing");
    mp_expect_rc(mp_list_pop(l, 0, NULL, 0, NULL), 0);
    mp_expect_rc(mp_list_get(l, 0, &v, sizeof v, &len), 0);
    cr_assert_eq(v, 1);
    void *p;
    mp_expect_rc(mp_list_get_alloc(l, 98, &p, &len), 0);
    cr_assert_eq(*(int *)p, 99);
    free(p);
    mp_expect_rc(mp_list_pop(l, 99, NULL, 0, NULL), -ERANGE);
    mp_expect_rc(mp_list_clear(l), 0);
    cr_assert_eq(mp_list_len(l), 0);
    mp_expect_rc(mp_list_append(NULL, &v, sizeof v), -EINVAL);
    mp_expect_rc(mp_list_append(l, NULL, 4), -EINVAL);
    mp_expect_rc(mp_list_get(l, 0, NULL, 4, &len), -EINVAL);
    mp_list_free(l);
    mp_list_free(NULL);
}

/* Ten processes update one dict and one list at once. */
typedef struct {
    mp_dict *d;
    mp_list *l;
    int id;
} worker_arg;

enum { WORKERS = 10, EACH = 300 };

static int worker(void *p)
{
    worker_arg *a = p;
    for (int i = 0; i < EACH; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "%d:%d", a->id, i);
        int v = a->id * 100000 + i;
        if (mp_dict_set(a->d, key, (size_t)n, &v, sizeof v) != 0)
            return 1;
        if (mp_list_append(a->l, &v, sizeof v) != 0)
            return 2;
        if (i % 2 == 1 && mp_dict_del(a->d, key, (size_t)n) != 0) /* keep even ones */
            return 3;
    }
    int shared = a->id; /* all write the same key: one of them wins */
    return mp_dict_set(a->d, "last", 4, &shared, sizeof shared) == 0 ? 0 : 4;
}

Test(dict, ten_processes_exact_contents, .timeout = MP_TMO(60))
{
    mp_dict *d;
    mp_list *l;
    mp_expect_rc(mp_dict_new(&d), 0);
    mp_expect_rc(mp_list_new(&l), 0);
    mp_process *p[WORKERS];
    worker_arg args[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        args[i] = (worker_arg){d, l, i};
        mp_expect_rc(mp_process_new(&p[i], worker, &args[i], NULL), 0);
        mp_expect_rc(mp_process_start(p[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++) {
        mp_expect_rc(mp_process_join(p[i], MP_TMO(30)), 0);
        int code;
        mp_process_exitcode(p[i], &code);
        cr_assert_eq(code, 0, "worker %d: %d", i, code);
        mp_process_free(p[i]);
    }
    cr_assert_eq(mp_dict_len(d), WORKERS * EACH / 2 + 1);
    for (int w = 0; w < WORKERS; w++)
        for (int i = 0; i < EACH; i++) {
            char key[32];
            int n = snprintf(key, sizeof key, "%d:%d", w, i), v;
            size_t len;
            int rc = mp_dict_get(d, key, (size_t)n, &v, sizeof v, &len);
            if (i % 2 == 1) {
                cr_assert_eq(rc, -ENOENT, "%s was deleted", key);
            } else {
                cr_assert_eq(rc, 0, "%s", key);
                cr_assert_eq(v, w * 100000 + i);
            }
        }
    cr_assert_eq(mp_list_len(l), WORKERS * EACH);
    static int next[WORKERS];
    for (size_t k = 0; k < WORKERS * EACH; k++) {
        int v;
        size_t len;
        mp_expect_rc(mp_list_get(l, k, &v, sizeof v, &len), 0);
        int w = v / 100000, i = v % 100000;
        cr_assert(w >= 0 && w < WORKERS);
        cr_assert_eq(i, next[w], "each worker's appends in order");
        next[w]++;
    }
    mp_dict_free(d);
    mp_list_free(l);
}

/* Writers killed mid-update: every survivor still finds a consistent dict
 * and list, with each item either fully there or absent. */
static int hammer(void *p)
{
    worker_arg *a = p;
    for (unsigned i = 0;; i++) {
        unsigned char val[300];
        int k = (int)(i % 500);
        memset(val, (int)(k & 0xff), sizeof val);
        size_t vlen = 1 + (i * 7) % sizeof val;
        mp_dict_set(a->d, &k, sizeof k, val, vlen);
        if (i % 3 == 0)
            mp_dict_del(a->d, &k, sizeof k);
        mp_list_append(a->l, val, vlen);
        if (i % 2 == 0)
            mp_list_pop(a->l, i % 7 == 0 ? 0 : mp_list_len(a->l) - 1, NULL, 0, NULL);
        if (i % 97 == 0)
            mp_list_insert(a->l, 0, val, vlen);
    }
    return 0;
}

Test(dict, sigkill_during_updates, .timeout = MP_TMO(60))
{
    mp_dict *d;
    mp_list *l;
    mp_expect_rc(mp_dict_new(&d), 0);
    mp_expect_rc(mp_list_new(&l), 0);
    worker_arg a = {d, l, 0};
    for (int round = 0; round < 20; round++) {
        mp_process *p[3];
        for (int i = 0; i < 3; i++) {
            mp_expect_rc(mp_process_new(&p[i], hammer, &a, NULL), 0);
            mp_expect_rc(mp_process_start(p[i]), 0);
        }
        /* Let them run into the middle of things, then kill them. */
        size_t target = mp_list_len(l) + 200 + (size_t)round * 37;
        double end = mp_test_now() + MP_TMO(10);
        while (mp_list_len(l) < target && mp_test_now() < end)
            ;
        for (int i = 0; i < 3; i++) {
            mp_process_kill(p[i]);
            mp_expect_rc(mp_process_join(p[i], MP_TMO(10)), 0);
            mp_process_free(p[i]);
        }
        /* Consistent: every value is whole, every count matches. */
        mp_dict_snapshot *s;
        mp_expect_rc(mp_dict_snapshot_new(d, &s), 0);
        cr_assert_eq(mp_dict_snapshot_len(s), mp_dict_len(d), "round %d: len matches", round);
        const void *k, *v;
        size_t kl, vl;
        while (mp_dict_snapshot_next(s, &k, &kl, &v, &vl) == 1) {
            int key;
            cr_assert_eq(kl, sizeof key);
            memcpy(&key, k, sizeof key);
            cr_assert(key >= 0 && key < 500);
            for (size_t i = 0; i < vl; i++)
                cr_assert_eq(((const unsigned char *)v)[i], (unsigned char)(key & 0xff));
        }
        mp_dict_snapshot_free(s);
        size_t n = mp_list_len(l);
        for (size_t i = 0; i < n; i++) {
            unsigned char buf[300];
            size_t len;
            mp_expect_rc(mp_list_get(l, i, buf, sizeof buf, &len), 0);
            cr_assert(len >= 1 && len <= sizeof buf);
            for (size_t j = 1; j < len; j++)
                cr_assert_eq(buf[j], buf[0], "round %d: item %zu whole", round, i);
        }
        /* And usable. */
        mp_expect_rc(mp_dict_set(d, "probe", 5, "x", 1), 0);
        mp_expect_rc(mp_dict_del(d, "probe", 5), 0);
        mp_expect_rc(mp_list_append(l, "x", 1), 0);
    }
    mp_dict_free(d);
    mp_list_free(l);
}
