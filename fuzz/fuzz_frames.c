/* libFuzzer target: the frame decoder.  The input is written raw into one
 * end of a socket pair, as a hostile peer would; the other end must turn it
 * into messages or clean errors, never crash, leak or over-allocate. */
#include <mproc.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 100000)
        return 0; /* must fit in the socket buffer: we write before reading */
    mp_conn *a, *b;
    if (mp_pipe_new(&a, &b, true) != 0)
        abort();
    /* Small limit, so claimed sizes above it take the refusal path and
     * those below it the growth path. */
    mp_conn_set_max_msg(a, 1 << 16);
    if (size > 0 && write(mp_conn_fileno(b), data, size) != (ssize_t)size)
        abort();
    mp_conn_free(b); /* the stream ends after the input */
    unsigned char buf[256];
    for (int round = 0; round < 10000; round++) {
        size_t len;
        void *p;
        int fd;
        int rc;
        switch (round % 3) {
        case 0:
            rc = mp_conn_recv(a, buf, sizeof buf, &len, 0);
            if (rc == MP_ETOOBIG && len <= sizeof buf)
                abort(); /* too big for a buffer it fits in */
            if (rc == MP_ETOOBIG)
                continue;
            break;
        case 1:
            rc = mp_conn_recv_alloc(a, &p, &len, 0);
            if (rc == 0)
                free(p);
            break;
        default:
            rc = mp_conn_recv_fd(a, &fd, 0);
            if (rc == 0)
                abort(); /* no descriptor was ever sent */
            break;
        }
        if (rc == MP_ECLOSED || rc == -EPROTO || rc == -EMSGSIZE || rc == MP_ETIMEDOUT)
            break;
        if (rc != 0 && rc != -EBADMSG)
            abort();
    }
    mp_conn_free(a);
    return 0;
}
