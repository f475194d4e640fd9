/* The fork server: a small single-threaded process, forked by the
 * supervisor thread when a process pool starts, that forks the pool's
 * workers on request, so that a worker is never forked from the
 * multi-threaded parent.  It reaps them (SIGCHLD) and reports each exit. */
#ifndef MPROC_POOL_FORKSERVER_H
#define MPROC_POOL_FORKSERVER_H

#include <stdint.h>
#include <sys/types.h>

#include "pool/core.h"

/* Messages on the server's socket (parent <-> server). */
enum { SRV_SPAWN = 1, SRV_SPAWNED, SRV_EXITED, SRV_FAILED, SRV_STOP, SRV_KILL };
typedef struct { int32_t op, slot, pid, status; } srv_msg;
/*   SPAWN slot       (parent) fork a worker for slot; its control socket
 *                    comes with the message
 *   SPAWNED slot pid (server) done: its pidfd comes along (if one could be
 *                    had)
 *   FAILED slot err  (server) the fork failed
 *   EXITED slot pid status  (server) it exited (status, or -signal)
 *   KILL slot pid    (parent) SIGKILL it (a worker whose pidfd was lost)
 *   STOP             (parent) kill every worker and exit */

/* Fork the server (on the supervisor thread, so that it dies with it);
 * its pid, and the parent's end of its socket in *sock; or -errno.  drop:
 * descriptors of the parent's the server closes. */
pid_t mp__forkserver_start(pool_shm *s, int *sock, const int *drop, int ndrop);

#endif
