/* A pipeline that survives its workers: a reader puts lines on a
 * JoinableQueue, four workers count each line's words and put the counts
 * on a results queue, a collector adds them up.  One worker is killed
 * mid-run (here it kills itself on its 11th line, as the OOM killer or an
 * operator might).  In Python the reader's jobs.join() would wait forever
 * for the lines that worker had taken; here the join reports the death
 * (MP_EOWNERDEAD), and the program shuts the queues down and ends with an
 * error message instead of hanging.
 *
 * Exit status: 1, with "error: a worker died ..." on stderr; 0 if run
 * with an argument "healthy" (no worker killed). */
#include <mproc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

enum { WORKERS = 4, LINES = 2000, VICTIM = 2, VICTIM_LINE = 10 };

typedef struct {
    mp_queue *jobs, *results;
    int id;
    bool kill_one;
} worker_arg;

static int count_words(const volatile char *s)
{
    int n = 0;
    for (bool in = false; *s; s++) {
        bool space = *s == ' ';
        n += in == false && !space;
        in = !space;
    }
    return n;
}

static int worker(void *arg)
{
    worker_arg *a = arg;
    char line[256];
    size_t len;
    int rc;
    for (int done = 0; (rc = mp_queue_get(a->jobs, line, sizeof line - 1, &len, MP_FOREVER)) == 0;
         done++) {
        if (a->kill_one && a->id == VICTIM && done == VICTIM_LINE)
            raise(SIGKILL); /* dies holding the line it just took */
        line[len] = '\0';
        int words = 0;
        for (int rep = 0; rep < 200; rep++) /* a line's worth of work */
            words = count_words(line);
        if (mp_queue_put(a->results, &words, sizeof words, MP_FOREVER) != 0)
            return 1;
        mp_queue_task_done(a->jobs);
    }
    return rc == MP_ECLOSED ? 0 : 1; /* the queue was shut down: done */
}

static int collector(void *arg)
{
    mp_queue *results = arg;
    long total = 0, lines = 0;
    int words;
    size_t len;
    int rc;
    while ((rc = mp_queue_get(results, &words, sizeof words, &len, MP_FOREVER)) == 0) {
        total += words;
        lines++;
    }
    printf("collector: %ld words in %ld lines\n", total, lines);
    return rc == MP_ECLOSED ? 0 : 1;
}

int main(int argc, char **argv)
{
    bool kill_one = !(argc > 1 && strcmp(argv[1], "healthy") == 0);
    mp_queue *jobs, *results;
    int rc;
    if ((rc = mp_queue_new(&jobs, &(mp_queue_opts){.maxsize = 64})) < 0 ||
        (rc = mp_queue_new(&results, NULL)) < 0) {
        fprintf(stderr, "queue: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_process *w[WORKERS], *col;
    worker_arg args[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        args[i] = (worker_arg){jobs, results, i, kill_one};
        if ((rc = mp_process_new(&w[i], worker, &args[i], NULL)) < 0 ||
            (rc = mp_process_start(w[i])) < 0) {
            fprintf(stderr, "worker: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    if ((rc = mp_process_new(&col, collector, results, NULL)) < 0 ||
        (rc = mp_process_start(col)) < 0) {
        fprintf(stderr, "collector: %s\n", mp_strerror(rc));
        return 1;
    }

    /* The reader: this process. */
    char line[128];
    for (int i = 0; i < LINES; i++) {
        int n = snprintf(line, sizeof line, "line %d has %s words", i, i % 2 ? "six" : "five or six");
        if ((rc = mp_queue_put(jobs, line, (size_t)n, MP_FOREVER)) < 0) {
            fprintf(stderr, "put: %s\n", mp_strerror(rc));
            break;
        }
    }
    int status = 0;
    rc = mp_queue_join(jobs, 60);
    if (rc == MP_EOWNERDEAD) {
        fprintf(stderr, "error: a worker died holding lines; the counts are incomplete\n");
        status = 1;
    } else if (rc < 0) {
        fprintf(stderr, "join: %s\n", mp_strerror(rc));
        status = 1;
    }
    /* Error or not, shut the queues down: blocked gets return MP_ECLOSED,
     * so the workers, then the collector, end (and exit does not wait
     * for children that would wait forever). */
    mp_queue_shutdown(jobs, true);
    for (int i = 0; i < WORKERS; i++) {
        mp_process_join(w[i], MP_FOREVER);
        int code;
        if (mp_process_exitcode(w[i], &code) == 0 && code != 0)
            fprintf(stderr, "worker %d ended with %d%s\n", i, code,
                    code == -SIGKILL ? " (killed)" : "");
        mp_process_free(w[i]);
    }
    mp_queue_close(results);
    mp_process_join(col, MP_FOREVER);
    mp_process_free(col);
    mp_queue_free(jobs);
    mp_queue_free(results);
    return status;
}
