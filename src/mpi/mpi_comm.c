/* MPI pools: the state of this process's place in the MPI job, and the
 * messaging helpers rank 0's sender and the worker ranks share (the layer
 * under both). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "heap_int.h"
#include "mpi/mpi_int.h"
#include "os/os.h"

mpi_state mp__mpi = {.lock = PTHREAD_MUTEX_INITIALIZER};
#define M mp__mpi

void mp__mpi_nap(unsigned *idle, int64_t *ns)
{
    if (++*idle < SPIN_ROUNDS) {
        mp__yield();
        return;
    }
    mp__sleep_until(mp__now_ns() + *ns);
    if (*ns < NAP_MAX_NS)
        *ns *= 2;
}

void mp__mpi_wait_message(int src, int tag, MPI_Status *st)
{
    unsigned idle = 0;
    int64_t ns = NAP_MIN_NS;
    for (;;) {
        int flag = 0;
        MPI_Iprobe(src, tag, M.comm, &flag, st);
        if (flag)
            return;
        mp__mpi_nap(&idle, &ns);
    }
}

void *mp__mpi_receive(const MPI_Status *st, bool *heap, int *len)
{
    int n = 0;
    MPI_Get_count(st, MPI_BYTE, &n);
    size_t size = n > 0 ? (size_t)n : 1;
    void *buf = *heap ? mp__heap_alloc(size, NULL) : NULL;
    if (buf == NULL) {
        *heap = false;
        buf = malloc(size);
        if (buf == NULL)
            return NULL;
    }
    MPI_Recv(buf, n, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, M.comm, MPI_STATUS_IGNORE);
    *len = n;
    return buf;
}

void mp__mpi_release(void *buf, bool heap)
{
    if (heap)
        mp__heap_free(buf);
    else
        free(buf);
}

