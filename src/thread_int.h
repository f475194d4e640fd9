/* The thread module's private interface, for the process module. */
#ifndef MPROC_THREAD_INT_H
#define MPROC_THREAD_INT_H

/* Block until every non-daemon thread of this process has returned (a
 * pending Timer is one), less the calling thread if it is one of them:
 * the wait that exit() makes.  A child started by mp_process_start makes
 * it after its target returns, since it ends with _exit. */
void mp__thread_wait_nondaemon(void);

#endif
