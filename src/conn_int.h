/* Internal interface of connections, for the listener. */
#ifndef MPROC_CONN_INT_H
#define MPROC_CONN_INT_H

#include <stdbool.h>

#include "mproc/conn.h"

/* Wrap a connected stream socket (atomic_small: a Unix socket, on which
 * one small write is never split).  Returns 0, -ENOMEM, or the shared
 * heap's error; the fd is not closed on failure. */
int mp__conn_from_socket(int fd, bool atomic_small, mp_conn **out);

#endif
