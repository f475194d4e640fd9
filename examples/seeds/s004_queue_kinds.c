/* Seed 004, "three kinds of queue": first in first out with a size limit,
 * last in first out, and by priority (smaller first).  put/get with timeout
 * 0 are Python's put_nowait/get_nowait: MP_EFULL and MP_EEMPTY stand for
 * its Full and Empty exceptions. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

static int check(int rc, const char *what)
{
    if (rc < 0 && rc != MP_EFULL && rc != MP_EEMPTY) {
        fprintf(stderr, "%s: %s\n", what, mp_strerror(rc));
        return 1;
    }
    return 0;
}

int main(void)
{
    mp_queue *q, *q1, *q2;
    mp_queue_opts fifo2 = {.maxsize = 2, .order = MP_FIFO};
    mp_queue_opts lifo = {.order = MP_LIFO};
    mp_queue_opts prio = {.order = MP_PRIORITY};
    if (check(mp_queue_new(&q, &fifo2), "queue") || check(mp_queue_new(&q1, &lifo), "queue") ||
        check(mp_queue_new(&q2, &prio), "queue"))
        return 1;

    int v, rc;
    size_t len;
    for (int i = 1; i <= 2; i++)
        mp_queue_put(q, &i, sizeof i, 0);
    printf("q.full(): %s, q.qsize(): %zu\n", mp_queue_full(q) ? "True" : "False",
           mp_queue_qsize(q));
    int three = 3;
    rc = mp_queue_put(q, &three, sizeof three, 0);
    printf("q.put_nowait(3): %s\n", rc == MP_EFULL ? "Full" : mp_strerror(rc));
    while (mp_queue_get(q, &v, sizeof v, &len, 0) == 0)
        printf("q.get(): %d\n", v);
    rc = mp_queue_get(q, &v, sizeof v, &len, 0);
    printf("q.get_nowait(): %s, q.empty(): %s\n", rc == MP_EEMPTY ? "Empty" : mp_strerror(rc),
           mp_queue_empty(q) ? "True" : "False");

    for (int i = 1; i <= 3; i++)
        mp_queue_put(q1, &i, sizeof i, 0);
    while (mp_queue_get(q1, &v, sizeof v, &len, 0) == 0)
        printf("q1.get(): %d\n", v);

    mp_queue_put_prio(q2, 3, "cx", 2, 0);
    mp_queue_put_prio(q2, 1, "cc", 2, 0);
    char s[8];
    while (mp_queue_get(q2, s, sizeof s, &len, 0) == 0)
        printf("q2.get(): %.*s\n", (int)len, s);

    mp_queue_free(q);
    mp_queue_free(q1);
    mp_queue_free(q2);
    return 0;
}
