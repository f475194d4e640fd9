/* mproc — Python's multiprocessing, threading and queue toolkit as a C11
 * library for Linux (5.10 or later).  Include this one header; link with
 * `pkg-config --cflags --libs mproc`.  Anything not declared through it is
 * not part of the API. */
#ifndef MPROC_H
#define MPROC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <mproc/common.h>
#include <mproc/error.h>
#include <mproc/process.h>
#include <mproc/shm.h>
#include <mproc/sync.h>
#include <mproc/queue.h>
#include <mproc/conn.h>
#include <mproc/thread.h>
#include <mproc/dict.h>
#include <mproc/pool.h>
#include <mproc/coro.h>

#endif
