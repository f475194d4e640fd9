/* Seed 004, "协程" (coroutines), the classic example of the idea: a
 * producer hands each item to a consumer coroutine and gets its answer
 * back, switching on one thread, no locks.  Python does it with a
 * generator and send(); here two rendezvous channels carry the item and
 * the answer. */
#include <mproc.h>
#include <mproc/coro.h>
#include <stdio.h>
#include <string.h>

static mp_chan *items, *answers;

static void consumer(void *arg)
{
    int n;
    while (mp_chan_recv(items, &n, MP_FOREVER) == 0) { /* n = yield r */
        printf("[CONSUMER] Consuming %d...\n", n);
        char r[16] = "200 OK";
        mp_chan_send(answers, r, MP_FOREVER);
    }
}

static void produce(void *arg)
{
    for (int n = 1; n <= 5; n++) {
        printf("[PRODUCER] Producing %d...\n", n);
        char r[16];
        mp_chan_send(items, &n, MP_FOREVER); /* c.send(n) */
        mp_chan_recv(answers, r, MP_FOREVER);
        printf("[PRODUCER] Consumer return: %s\n", r);
    }
    mp_chan_close(items); /* c.close() */
}

int main(void)
{
    int rc;
    if ((rc = mp_chan_new(&items, sizeof(int), 0)) < 0 ||
        (rc = mp_chan_new(&answers, 16, 0)) < 0 ||
        (rc = mp_co_spawn(NULL, consumer, NULL, 0)) < 0 ||
        (rc = mp_co_spawn(NULL, produce, NULL, 0)) < 0 || (rc = mp_co_run()) < 0) {
        fprintf(stderr, "coroutines: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_chan_free(items);
    mp_chan_free(answers);
    return 0;
}
