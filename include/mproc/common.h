/* mproc — definitions shared by every public header. */
#ifndef MPROC_COMMON_H
#define MPROC_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define MP_VERSION_MAJOR 0
#define MP_VERSION_MINOR 1
#define MP_VERSION_PATCH 0
#define MP_VERSION "0.1.0"
/* MP_VERSION_NUM: comparable number, e.g. 0.1.0 -> 100. */
#define MP_VERSION_NUM \
    (MP_VERSION_MAJOR * 10000 + MP_VERSION_MINOR * 100 + MP_VERSION_PATCH)

#if defined(MP_BUILDING) && defined(__GNUC__)
#define MP_API __attribute__((visibility("default")))
#else
#define MP_API
#endif

/* Timeouts are seconds as a double: MP_FOREVER (or +infinity) blocks, 0
 * never blocks; NaN is rejected with -EINVAL. */
#define MP_FOREVER (-1.0)

#ifdef __cplusplus
#define MP_BEGIN_DECLS extern "C" {
#define MP_END_DECLS }
#else
#define MP_BEGIN_DECLS
#define MP_END_DECLS
#endif

#endif
