/* Seed 004, "生产者消费者模型": one producer thread puts twenty items at
 * random intervals; one consumer looks twenty times at random intervals and
 * eats what is there (or says there is nothing).  The seed's intervals are
 * 0-2 and 0-3 seconds; here a second is 0.05 s. */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define SECOND 0.05

static mp_queue *q;

static void nap(unsigned *seed, int upto) /* time.sleep(random.randrange(upto)) */
{
    double s = SECOND * (rand_r(seed) % upto);
    nanosleep(&(struct timespec){0, (long)(s * 1e9)}, NULL);
}

static int producer(void *arg)
{
    const char *name = arg;
    unsigned seed = 1;
    for (int count = 0; count < 20; count++) {
        nap(&seed, 3);
        mp_queue_put(q, &count, sizeof count, MP_FOREVER);
        printf("producer %s has produced %d 翔...\n", name, count);
        fflush(stdout);
    }
    return 0;
}

static int consumer(void *arg)
{
    const char *name = arg;
    unsigned seed = 2;
    for (int count = 0; count < 20; count++) {
        nap(&seed, 4);
        int data;
        size_t len;
        if (mp_queue_get(q, &data, sizeof data, &len, 0) == 0) {
            printf("%d\n", data);
            printf("\033[32;1m Consumer %s has eat %d 翔....\033[0m\n", name, data);
        } else {
            printf("-----no baozi anymore-----\n");
        }
        fflush(stdout);
    }
    return 0;
}

int main(void)
{
    int rc = mp_queue_new(&q, NULL);
    if (rc < 0) {
        fprintf(stderr, "queue: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_thread *p1, *c1;
    mp_thread_new(&p1, producer, "陈鑫", NULL);
    mp_thread_new(&c1, consumer, "白弘毅", NULL);
    mp_thread_start(p1);
    mp_thread_start(c1);
    mp_thread_join(p1, MP_FOREVER);
    mp_thread_join(c1, MP_FOREVER);
    mp_thread_free(p1);
    mp_thread_free(c1);
    mp_queue_free(q);
    return 0;
}
