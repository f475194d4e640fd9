/* Seed 004, "simple producer and consumer": a producer thread puts ten
 * bones on a queue and waits (join) until every one has been marked eaten
 * (task_done); the main thread eats them.  The eater stops when no bone
 * comes for half a second, rather than when qsize() happens to be 0 (which
 * in Python works only if the producer is quick enough). */
#include <mproc.h>
#include <stdio.h>

static mp_queue *q;

static int producer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        char bone[32];
        int n = snprintf(bone, sizeof bone, "骨头 %d", i);
        if (mp_queue_put(q, bone, (size_t)n, MP_FOREVER) != 0)
            return 1;
    }
    printf("开始等待所有的骨头被吃掉。。。。\n");
    fflush(stdout);
    if (mp_queue_join(q, MP_FOREVER) != 0) /* q.join() */
        return 1;
    printf("所有的骨头被吃完...\n");
    fflush(stdout);
    return 0;
}

static void consumer(const char *n)
{
    char bone[32];
    size_t len;
    while (mp_queue_get(q, bone, sizeof bone, &len, 0.5) == 0) {
        printf("%s 正在吃 %.*s\n", n, (int)len, bone);
        fflush(stdout);
        mp_queue_task_done(q); /* tell the producer this one is done */
    }
}

int main(void)
{
    mp_thread *p;
    int rc = mp_queue_new(&q, NULL);
    if (rc == 0)
        rc = mp_thread_new(&p, producer, NULL, NULL);
    if (rc == 0)
        rc = mp_thread_start(p);
    if (rc < 0) {
        fprintf(stderr, "start: %s\n", mp_strerror(rc));
        return 1;
    }
    consumer("司家勇");
    mp_thread_join(p, MP_FOREVER);
    int code = 1;
    mp_thread_result(p, &code);
    mp_thread_free(p);
    mp_queue_free(q);
    return code;
}
