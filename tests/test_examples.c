/* The example programs run to completion and print what their seed prints. */
// labels: unit examples
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

#include "mp_test.h"

/* Run build/examples/<name>, capture its stdout (at most cap-1 bytes) and
 * return its wait status, or -1 if it could not run in timeout s. */
static int run_example(const char *name, char *out, size_t cap, double timeout)
{
    const char *dir = getenv("MPROC_TEST_BINARY_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s", dir ? dir : ".", name);
    cr_assert_eq(access(path, X_OK), 0, "example %s is built", path);
    char *argv[] = {path, NULL};
    return mp_test_run(argv, out, cap, timeout);
}

static void expect_success(int st, const char *out)
{
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "status %#x, output:\n%s", st, out);
}

/* Run an example and check it succeeded with exactly this output. */
static void expect_output(const char *name, const char *want)
{
    char out[8192];
    int st = run_example(name, out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    cr_assert_str_eq(out, want, "%s printed:\n%s", name, out);
}

Test(examples, readme_example, .timeout = MP_TMO(30))
{
    expect_output("readme_example", "child exited with 0, value = 3.14159\n");
}

Test(examples, s000_parent_child, .timeout = MP_TMO(30))
{
    char out[4096];
    int st = run_example("s000_parent_child", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    int ppid1, pid1, ppid2, pid2;
    cr_assert_eq(sscanf(out,
                        "+++++++++++++main process++++++++++++++\nppid: %d\npid: %d\n"
                        "+++++++++++++other process++++++++++++++\nppid: %d\npid: %d\n",
                        &ppid1, &pid1, &ppid2, &pid2), 4, "output:\n%s", out);
    cr_assert_eq(ppid1, getpid(), "the program's parent is the test");
    cr_assert_eq(ppid2, pid1, "the child's parent is the program");
    cr_assert_neq(pid2, pid1);
}

Test(examples, s000_process_memory, .timeout = MP_TMO(30))
{
    expect_output("s000_process_memory", "+++++++++process+++++++++\n[0]\n[1]\n[2]\n[3]\n[4]\n"
                          "parent's list after the children: []\n"
                          "+++++++++thread++++++++++\n[0]\n[0, 1]\n[0, 1, 2]\n[0, 1, 2, 3]\n"
                          "[0, 1, 2, 3, 4]\n");
}

Test(examples, s002_start_join, .timeout = MP_TMO(30))
{
    char out[4096];
    double t0 = mp_test_now();
    int st = run_example("s002_start_join", out, sizeof out, MP_TMO(20));
    double took = mp_test_now() - t0;
    expect_success(st, out);
    /* Both children sleep 3 s at the same time. */
    cr_assert(took >= 2.9 && took < 6 * MP_TEST_TIMEOUT_MULTIPLIER, "took %.2f s", took);
    int starts = 0, ppids = 0, pids = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int v;
        if (strcmp(line, "start a process") == 0)
            starts++;
        else if (sscanf(line, "the process parent id : %d", &v) == 1)
            ppids++;
        else if (sscanf(line, "the process id is : %d", &v) == 1)
            pids++;
        else if (strcmp(line, "all sub process is done!") == 0)
            cr_assert_eq(starts + ppids + pids, 6, "done is printed last");
        else
            cr_assert(strcmp(line, "start all process") == 0, "unexpected line '%s'", line);
    }
    cr_assert_eq(starts, 2);
    cr_assert_eq(ppids, 2);
    cr_assert_eq(pids, 2);
}

Test(examples, s004_process_hello, .timeout = MP_TMO(30))
{
    expect_output("s004_process_hello", "\033[31;1m hello 陈鑫\033[0m\n");
}

Test(examples, s004_process_info, .timeout = MP_TMO(30))
{
    char out[4096];
    int st = run_example("s004_process_info", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    int ppid, pid;
    cr_assert_eq(sscanf(out,
                        "\033[31;1m main Process line \033[0m\nmodule name: s004_process_info\n"
                        "parent process: %d\nprocess id: %d\n\n\n\nhello bob\n",
                        &ppid, &pid), 2, "output:\n%s", out);
    cr_assert_neq(ppid, getpid(), "the child's parent is the program, not the test");
    cr_assert(strstr(out, "hello bob\n") != NULL);
}

Test(examples, s000_value_array, .timeout = MP_TMO(30))
{
    expect_output("s000_value_array", "3.1415926\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]\n");
}

Test(examples, s004_value_array, .timeout = MP_TMO(30))
{
    expect_output("s004_value_array", "3.333333333333333\n0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
}

Test(examples, s004_lock_print, .timeout = MP_TMO(30))
{
    char out[4096];
    int st = run_example("s004_lock_print", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    /* Ten whole lines, each number once, in any order. */
    int seen[10] = {0}, lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int i;
        char tail;
        cr_assert_eq(sscanf(line, "hello world %d%c", &i, &tail), 1, "line '%s'", line);
        cr_assert(i >= 0 && i < 10);
        seen[i]++;
        lines++;
    }
    cr_assert_eq(lines, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(seen[i], 1, "hello world %d printed once", i);
}

Test(examples, s000_queue_put, .timeout = MP_TMO(30))
{
    char out[4096];
    int st = run_example("s000_queue_put", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    int seen[5] = {0}, v, off = 0, used;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(sscanf(out + off, "%d\n%n", &v, &used), 1, "output:\n%s", out);
        cr_assert(v >= 0 && v < 5 && !seen[v], "each of 0..4 once:\n%s", out);
        seen[v] = 1;
        off += used;
    }
    cr_assert_eq(out[off], '\0', "nothing more:\n%s", out);
}

Test(examples, s001_queue_pipeline, .timeout = MP_TMO(30))
{
    expect_output("s001_queue_pipeline", "download finished\n[11, 22, 33, 44]\nqueue empty: True\n");
}

Test(examples, s002_queue_results, .timeout = MP_TMO(30))
{
    expect_output("s002_queue_results", "start process...\nstart process...\nstart process...\nKEL\nKEL\nKEL\n");
}

Test(examples, s004_queue_kinds, .timeout = MP_TMO(30))
{
    expect_output("s004_queue_kinds", "q.full(): True, q.qsize(): 2\n"
                          "q.put_nowait(3): Full\n"
                          "q.get(): 1\nq.get(): 2\n"
                          "q.get_nowait(): Empty, q.empty(): True\n"
                          "q1.get(): 3\nq1.get(): 2\nq1.get(): 1\n"
                          "q2.get(): cc\nq2.get(): cx\n");
}

Test(examples, s004_queue_process, .timeout = MP_TMO(30))
{
    expect_output("s004_queue_process", "[42, None, 'hello']\n");
}

Test(examples, s002_pipe_results, .timeout = MP_TMO(30))
{
    expect_output("s002_pipe_results", "start process...\nstart process...\nstart process...\nKEL\nKEL\nKEL\n");
}

Test(examples, s004_pipe_process, .timeout = MP_TMO(30))
{
    expect_output("s004_pipe_process", "[42, None, 'hello']\n");
}

Test(examples, s004_thread_direct, .timeout = MP_TMO(30))
{
    char out[4096];
    int st = run_example("s004_thread_direct", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    cr_assert_eq(strncmp(out, "main thread stop\n", 17), 0, "main stops first:\n%s", out);
    int seen[10] = {0}, v, off = 17, used;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(sscanf(out + off, "threading %d\n%n", &v, &used), 1, "output:\n%s", out);
        cr_assert(v >= 0 && v < 10 && !seen[v], "each thread once:\n%s", out);
        seen[v] = 1;
        off += used;
    }
    cr_assert_eq(out[off], '\0', "and the program waited for all ten");
}

Test(examples, s004_join_daemon, .timeout = MP_TMO(30))
{
    char out[4096];
    int st = run_example("s004_join_daemon", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    const char *first = "[0]---running---\n\nstarting thread Thread-2\n[1]---running---\n\n";
    cr_assert_eq(strncmp(out, first, strlen(first)), 0, "output:\n%s", out);
    cr_assert_not_null(strstr(out, "---main thread done----\n"), "output:\n%s", out);
    cr_assert_null(strstr(out, "[4]"), "the daemon did not hold the exit:\n%s", out);
}

Test(examples, s004_timer, .timeout = MP_TMO(30))
{
    char out[4096];
    double t0 = mp_test_now();
    int st = run_example("s004_timer", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    cr_assert_str_eq(out, "hello,world\n");
    cr_assert_geq(mp_test_now() - t0, 0.95, "not before its delay");
}

Test(examples, s004_manager, .timeout = MP_TMO(30))
{
    char out[8192];
    int st = run_example("s004_manager", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    char *line = out;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(strncmp(line, "[0, 1, 2, 3, 4, 1", 17), 0, "child line %d:\n%s", i, out);
        line = strchr(line, '\n');
        cr_assert_not_null(line);
        line++;
    }
    cr_assert_str_eq(line, "{1: 1, 2: 2, 0.25: None}\n"
                           "[0, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n");
}

Test(examples, s004_rlock_threads, .timeout = MP_TMO(30))
{
    expect_output("s004_rlock_threads", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\nmain threading stop\n");
}

Test(examples, s004_semaphore_threads, .timeout = MP_TMO(30))
{
    char out[4096];
    double t0 = mp_test_now();
    int st = run_example("s004_semaphore_threads", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    int seen[20] = {0}, v, off = 0, used;
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(sscanf(out + off, "run the thread :%d\n%n", &v, &used), 1, "output:\n%s", out);
        cr_assert(v >= 0 && v < 20 && !seen[v], "each thread once:\n%s", out);
        seen[v] = 1;
        off += used;
    }
    /* Five at a time: four waves of 0.2 s, not one. */
    cr_assert_geq(mp_test_now() - t0, 0.75, "the semaphore let more than five in");
}

Test(examples, s004_bones_joinable, .timeout = MP_TMO(30))
{
    char out[4096];
    int st = run_example("s004_bones_joinable", out, sizeof out, MP_TMO(20));
    expect_success(st, out);
    /* The ten bones eaten in order (the producer's "waiting" line may fall
     * anywhere among them), then the producer's last word. */
    const char *p = out;
    for (int i = 0; i < 10; i++) {
        char want[64];
        snprintf(want, sizeof want, "司家勇 正在吃 骨头 %d\n", i);
        const char *at = strstr(p, want);
        cr_assert_not_null(at, "bone %d, in order:\n%s", i, out);
        p = at + strlen(want);
    }
    cr_assert_not_null(strstr(out, "开始等待所有的骨头被吃掉。。。。\n"), "output:\n%s", out);
    const char *last = "所有的骨头被吃完...\n";
    size_t n = strlen(out), k = strlen(last);
    cr_assert(n >= k && strcmp(out + n - k, last) == 0, "join returned after all ten:\n%s", out);
}

/* ---- pools ---- */

/* How many lines of out start with prefix. */
static int count_prefix(const char *out, const char *prefix)
{
    int n = 0;
    size_t k = strlen(prefix);
    for (const char *l = out; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        if (strncmp(l, prefix, k) == 0)
            n++;
    return n;
}

static void run_ok(const char *name, char *out, size_t cap, double timeout)
{
    int st = run_example(name, out, cap, timeout);
    expect_success(st, out);
}

Test(examples, s000_pool_map_speed, .timeout = MP_TMO(60))
{
    /* Ten one-second tasks: about 1 s on the pool, 10 s serially. */
    char out[1024];
    double t0 = mp_test_now();
    run_ok("s000_pool_map_speed", out, sizeof out, MP_TMO(40));
    double t = mp_test_now() - t0;
    cr_assert_str_eq(out, "[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]\n"
                          "[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]\n");
    cr_assert(t > 10.5 && t < 10.0 + 3.0 * MP_TEST_TIMEOUT_MULTIPLIER, "took %.2f s", t);
}

Test(examples, s000_pool_apply_async, .timeout = MP_TMO(60))
{
    char out[1024];
    double t0 = mp_test_now();
    run_ok("s000_pool_apply_async", out, sizeof out, MP_TMO(30));
    double t = mp_test_now() - t0;
    /* Each square twice: once from its task, once from get. */
    for (int i = 0; i < 10; i++) {
        char l[16];
        snprintf(l, sizeof l, "%d\n", i * i);
        int n = 0;
        for (const char *p = out; (p = strstr(p, l)) != NULL; p++)
            if (p == out || p[-1] == '\n')
                n++;
        cr_assert_eq(n, 2, "%d printed %d times:\n%s", i * i, n, out);
    }
    /* Four at a time: three rounds of one second. */
    cr_assert(t > 2.9 && t < 3.0 + 3.0 * MP_TEST_TIMEOUT_MULTIPLIER, "took %.2f s", t);
}

Test(examples, s001_pool_workers, .timeout = MP_TMO(60))
{
    char out[4096];
    run_ok("s001_pool_workers", out, sizeof out, MP_TMO(40));
    cr_assert_eq(count_prefix(out, "----start----\n"), 1, "%s", out);
    cr_assert_eq(strstr(out, "-----end-----\n") + strlen("-----end-----\n"), out + strlen(out),
                 "end comes last:\n%s", out);
    int started = 0, done = 0;
    for (int i = 0; i < 10; i++) {
        char l[32];
        snprintf(l, sizeof l, "%d開始執行,程序號為", i);
        started += count_prefix(out, l);
        snprintf(l, sizeof l, "%d 執行完畢,耗時", i);
        done += count_prefix(out, l);
    }
    cr_assert_eq(started, 10, "%s", out);
    cr_assert_eq(done, 10, "%s", out);
}

Test(examples, s002_pool_map_imap, .timeout = MP_TMO(30))
{
    char out[1024];
    run_ok("s002_pool_map_imap", out, sizeof out, MP_TMO(20));
    cr_assert_eq(count_prefix(out, "start process\n"), 4, "%s", out);
    const char *list = strstr(out, "['KEL', 'SMILE']\n");
    cr_assert_not_null(list, "%s", out);
    const char *kel = strstr(list, "KEL\n"), *smile = kel ? strstr(kel, "SMILE\n") : NULL;
    cr_assert(kel && smile, "imap results in order:\n%s", out);
}

Test(examples, s002_pool_get_timeout, .timeout = MP_TMO(60))
{
    char out[1024];
    run_ok("s002_pool_get_timeout", out, sizeof out, MP_TMO(30));
    cr_assert_eq(count_prefix(out, "start process\n"), 7, "%s", out);
    /* The first five always make it; the last two have 0.1 s to spare. */
    int kel = count_prefix(out, "KEL\n"), late = count_prefix(out, "get: ");
    cr_assert(kel >= 5 && kel + late == 7, "%s", out);
}

Test(examples, s003_pool_vs_process, .timeout = MP_TMO(60))
{
    char out[256];
    run_ok("s003_pool_vs_process", out, sizeof out, MP_TMO(50));
    double t_pool, t_proc;
    cr_assert_eq(sscanf(out, "%lf\n%lf\n", &t_pool, &t_proc), 2, "%s", out);
    cr_assert_lt(t_pool, t_proc, "the pool is faster:\n%s", out);
}

Test(examples, s003_pool_apply_sync, .timeout = MP_TMO(60))
{
    char out[1024];
    run_ok("s003_pool_apply_sync", out, sizeof out, MP_TMO(30));
    cr_assert_eq(count_prefix(out, "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n"), 1, "%s", out);
    int runs = 0;
    for (const char *l = out; (l = strstr(l, " run\n")) != NULL; l++)
        runs++;
    cr_assert_eq(runs, 10, "%s", out);
}

Test(examples, s003_pool_apply_async, .timeout = MP_TMO(60))
{
    char out[1024];
    run_ok("s003_pool_apply_async", out, sizeof out, MP_TMO(30));
    const char *res = strstr(out, "0\n1\n4\n9\n16\n25\n36\n49\n64\n81\n");
    cr_assert_not_null(res, "%s", out);
    cr_assert_eq(res + strlen(res), out + strlen(out), "results come last:\n%s", out);
}

Test(examples, s003_pool_callback, .timeout = MP_TMO(30))
{
    char out[2048];
    run_ok("s003_pool_callback", out, sizeof out, MP_TMO(20));
    int parent;
    cr_assert_eq(sscanf(out, "----> %d\n", &parent), 1, "%s", out);
    char cb[64];
    snprintf(cb, sizeof cb, "回调 : %d\n", parent);
    cr_assert_eq(count_prefix(out, cb), 10, "callbacks run in the parent:\n%s", out);
    cr_assert_eq(count_prefix(out, "子进程"), 10, "%s", out);
    cr_assert_eq(count_prefix(out, "*********\n"), 1, "%s", out);
}

Test(examples, s003_pool_collect, .timeout = MP_TMO(60))
{
    expect_output("s003_pool_collect", "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n");
}

Test(examples, s003_pool_chat_server, .timeout = MP_TMO(60))
{
    char out[2048];
    run_ok("s003_pool_chat_server", out, sizeof out, MP_TMO(30));
    cr_assert_eq(count_prefix(out, "4 clients served, 2 waiting for a free worker\n"), 1, "%s", out);
    cr_assert_eq(count_prefix(out, "进程pid: "), 6, "%s", out);
    for (int i = 1; i <= 6; i++) {
        char l[64];
        snprintf(l, sizeof l, "client %d got: HELLO FROM CLIENT %d\n", i, i);
        cr_assert_eq(count_prefix(out, l), 1, "%s", out);
    }
    /* At most four workers served the six. */
    int pids[6], n = 0;
    for (const char *l = out; (l = strstr(l, "进程pid: ")) != NULL; l++) {
        int pid = atoi(l + strlen("进程pid: ")), seen = 0;
        for (int k = 0; k < n; k++)
            seen |= pids[k] == pid;
        if (!seen)
            pids[n++] = pid;
    }
    cr_assert_leq(n, 4, "%s", out);
    cr_assert_eq(strstr(out, "all 6 clients served\n") + strlen("all 6 clients served\n"),
                 out + strlen(out), "%s", out);
}

Test(examples, s004_pool_callback, .timeout = MP_TMO(60))
{
    char out[8192];
    run_ok("s004_pool_callback", out, sizeof out, MP_TMO(30));
    cr_assert_eq(count_prefix(out, "end\n"), 1, "%s", out);
    for (int i = 0; i < 100; i++) {
        char l[64];
        snprintf(l, sizeof l, "--->exec done: %d\n", i + 100);
        cr_assert_eq(count_prefix(out, l), 1, "%d:\n%s", i, out);
    }
}

/* ---- events, conditions, the thread pool ---- */

Test(examples, s004_event_traffic_light, .timeout = MP_TMO(60))
{
    char out[16384];
    run_ok("s004_event_traffic_light", out, sizeof out, MP_TMO(30));
    /* Two cycles of 10 green, 3 yellow and 7 red ticks. */
    cr_assert_eq(count_prefix(out, "\033[42;1m---green light on ---"), 20, "%s", out);
    cr_assert_eq(count_prefix(out, "\033[43;1m---yellow light on ---"), 6, "%s", out);
    cr_assert_eq(count_prefix(out, "\033[41;1m --red light on -- "), 14, "%s", out);
    int cars = 0;
    for (int i = 0; i < 3; i++) {
        char run[64], wait[64];
        snprintf(run, sizeof run, "car [%d] is running..\n", i);
        snprintf(wait, sizeof wait, "car [%d] is waiting for the red light..\n", i);
        cars += count_prefix(out, run) + count_prefix(out, wait);
    }
    cr_assert_gt(cars, 3, "the cars drove:\n%s", out);
}

Test(examples, s004_event_door, .timeout = MP_TMO(60))
{
    char out[16384];
    run_ok("s004_event_door", out, sizeof out, MP_TMO(30));
    cr_assert_eq(count_prefix(out, "\033[34;1m door is opened ,passing....\033[0m\n"), 5, "%s", out);
    for (int i = 0; i < 5; i++) {
        char l[64];
        snprintf(l, sizeof l, "staff [%d] is comming...\n", i);
        cr_assert_eq(count_prefix(out, l), 1, "%s", out);
    }
    cr_assert_geq(count_prefix(out, "\033[32;1m door opening...\033[0m\n"), 1, "%s", out);
    const char *last = "\033[31;1m door closed....,swipe to open.\033[0m\n";
    cr_assert_eq(strcmp(out + strlen(out) - strlen(last), last), 0, "the door ends closed:\n%s", out);
}

Test(examples, s004_condition_notify, .timeout = MP_TMO(30))
{
    char out[2048];
    run_ok("s004_condition_notify", out, sizeof out, MP_TMO(20));
    /* Batches of 3, 3 and 4 woken threads, each after its prompt. */
    const char *b[3] = {strstr(out, ">>>>3\n"), NULL, strstr(out, ">>>>4\n")};
    cr_assert(b[0] && b[2], "%s", out);
    b[1] = strstr(b[0] + 1, ">>>>3\n");
    cr_assert(b[1] && b[1] < b[2], "%s", out);
    int per[3] = {0, 0, 0};
    unsigned seen = 0;
    for (const char *l = out; (l = strstr(l, "run the thread :")) != NULL; l++) {
        int n = atoi(l + strlen("run the thread :"));
        cr_assert(n >= 0 && n < 10 && !(seen & (1u << n)), "%s", out);
        seen |= 1u << n;
        per[l < b[1] ? 0 : l < b[2] ? 1 : 2]++;
    }
    cr_assert_eq(seen, 0x3ffu, "%s", out);
    cr_assert(per[0] == 3 && per[1] == 3 && per[2] == 4, "%d %d %d:\n%s", per[0], per[1], per[2], out);
}

Test(examples, s004_thread_pool, .timeout = MP_TMO(30))
{
    expect_output("s004_thread_pool", "[1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144]\n"
                                      "every job ran in this process: True, on one of 3 threads: True\n");
}

/* ---- the remaining process and thread seeds ---- */

Test(examples, s004_thread_subclass, .timeout = MP_TMO(30))
{
    char out[256];
    run_ok("s004_thread_subclass", out, sizeof out, MP_TMO(20));
    cr_assert(strcmp(out, "running on number:1\nrunning on number:2\n") == 0 ||
                  strcmp(out, "running on number:2\nrunning on number:1\n") == 0,
              "%s", out);
}

Test(examples, s004_thread_no_lock, .timeout = MP_TMO(30))
{
    char out[256];
    run_ok("s004_thread_no_lock", out, sizeof out, MP_TMO(20));
    cr_assert_eq(count_prefix(out, "main thread stop\n"), 1, "%s", out);
    for (int i = 1; i <= 10; i++) {
        char l[8];
        snprintf(l, sizeof l, "%d\n", i);
        cr_assert_eq(count_prefix(out, l), 1, "%d missing or twice:\n%s", i, out);
    }
}

Test(examples, s004_producer_consumer, .timeout = MP_TMO(60))
{
    char out[8192];
    run_ok("s004_producer_consumer", out, sizeof out, MP_TMO(40));
    int eaten = 0, none = count_prefix(out, "-----no baozi anymore-----\n"), last = -1;
    for (const char *l = out; (l = strstr(l, " has eat ")) != NULL; l++) {
        int d = atoi(l + strlen(" has eat "));
        cr_assert_eq(d, last + 1, "eaten in order:\n%s", out);
        last = d;
        eaten++;
    }
    cr_assert_eq(count_prefix(out, "producer 陈鑫 has produced "), 20, "%s", out);
    cr_assert_eq(eaten + none, 20, "twenty looks:\n%s", out);
}

Test(examples, s002_process_subclass, .timeout = MP_TMO(30))
{
    expect_output("s002_process_subclass", "start process...\nprocess\nKEL\n"
                                           "start process...\nprocess\nKEL\n"
                                           "start process...\nprocess\nKEL\n\n\n\n");
}

Test(examples, s001_two_processes, .timeout = MP_TMO(30))
{
    char out[256];
    run_ok("s001_two_processes", out, sizeof out, MP_TMO(20));
    cr_assert_eq(count_prefix(out, "---1---\n"), 3, "%s", out);
    cr_assert_eq(count_prefix(out, "---2---\n"), 3, "%s", out);
    cr_assert_eq(strlen(out), 6 * strlen("---1---\n"), "%s", out);
}

/* ---- coroutines ---- */

Test(examples, s004_coroutine_producer_consumer, .timeout = MP_TMO(30))
{
    char want[1024] = "";
    for (int n = 1; n <= 5; n++) {
        char l[160];
        snprintf(l, sizeof l, "[PRODUCER] Producing %d...\n[CONSUMER] Consuming %d...\n"
                              "[PRODUCER] Consumer return: 200 OK\n", n, n);
        strcat(want, l);
    }
    expect_output("s004_coroutine_producer_consumer", want);
}

Test(examples, co_crawler, .timeout = MP_TMO(30))
{
    char out[1024];
    run_ok("co_crawler", out, sizeof out, MP_TMO(20));
    for (int i = 0; i < 4; i++) {
        char l[32];
        snprintf(l, sizeof l, "site %d: 19 bytes in ", i);
        cr_assert_eq(count_prefix(out, l), 1, "%s", out);
    }
    cr_assert_eq(count_prefix(out, "site 4: Connection timed out after "), 1, "%s", out);
    cr_assert_eq(count_prefix(out, "site 5: Connection timed out after "), 1, "%s", out);
    double t;
    const char *fin = strstr(out, "crawl finished in ");
    cr_assert(fin && sscanf(fin, "crawl finished in %lf", &t) == 1, "%s", out);
    cr_assert(t >= 0.5 && t < 0.5 + 1.0 * MP_TEST_TIMEOUT_MULTIPLIER, "fan-out, not the sum:\n%s", out);
}

Test(examples, co_echo_server, .timeout = MP_TMO(120))
{
    char out[1024];
    run_ok("co_echo_server", out, sizeof out, MP_TMO(100));
    cr_assert_eq(count_prefix(out, "clients: 10000 echoes, 0 failures\n"), 1, "%s", out);
    cr_assert_eq(count_prefix(out, "server: 10000 connections, at most 10000 open at once"), 1, "%s", out);
}

/* sha256_files: the list built after the pool, a digest per file as
 * sha256sum prints it, and the errno of a file that cannot be read. */
Test(examples, sha256_files, .timeout = MP_TMO(60))
{
    char dir[] = "/tmp/mproc-sha-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[4096];
    snprintf(path, sizeof path, "%s/a.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("abc", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/gone", dir);
    cr_assert_eq(symlink("/nonexistent/mproc", path), 0);
    const char *bin = getenv("MPROC_TEST_BINARY_DIR");
    char exe[4096];
    snprintf(exe, sizeof exe, "%s/examples/sha256_files", bin ? bin : ".");
    char *argv[] = {exe, dir, NULL};
    char out[8192];
    int st = mp_test_run(argv, out, sizeof out, MP_TMO(30));
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %#x:\n%s", st, out);
    char want[8192];
    snprintf(want, sizeof want,
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  %s/a.txt\n"
             "FAILED %s/gone: No such file or directory\n",
             dir, dir);
    cr_assert_str_eq(out, want);
    unlink(path);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    unlink(path);
    rmdir(dir);
}

/* pipeline_worker_dies: the killed worker's line is lost and the join
 * says so (status 1, not a hang); healthy, every line is counted. */
Test(examples, pipeline_worker_dies, .timeout = MP_TMO(60))
{
    char out[1024];
    int st = run_example("pipeline_worker_dies", out, sizeof out, MP_TMO(30));
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %#x:\n%s", st, out);
    long words, lines;
    cr_assert_eq(sscanf(out, "collector: %ld words in %ld lines\n", &words, &lines), 2, "%s", out);
    cr_assert_lt(lines, 2000, "the dead worker's line is not counted:\n%s", out);

    const char *bin = getenv("MPROC_TEST_BINARY_DIR");
    char exe[4096];
    snprintf(exe, sizeof exe, "%s/examples/pipeline_worker_dies", bin ? bin : ".");
    char *argv[] = {exe, "healthy", NULL};
    st = mp_test_run(argv, out, sizeof out, MP_TMO(30));
    expect_success(st, out);
    cr_assert_str_eq(out, "collector: 12000 words in 2000 lines\n");
}
