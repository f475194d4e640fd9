/* Error names and messages.
 *
 * The library's own codes come from MP_ERRNO_MAP; negated errno values are
 * described with the C library's table (strerrordesc_np/strerrorname_np are
 * thread-safe and never format into a shared buffer, unlike strerror). */
#define _GNU_SOURCE
#include <string.h>

#include "mproc/error.h"

const char *mp_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define MP__ERR_MSG(name, value, msg) \
    case MP_##name:                   \
        return msg;
        MP_ERRNO_MAP(MP__ERR_MSG)
#undef MP__ERR_MSG
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        const char *s = strerrordesc_np(-code);
        if (s != NULL)
            return s;
    }
    return "unknown error";
}

const char *mp_errname(int code)
{
    switch (code) {
    case 0:
        return "OK";
#define MP__ERR_NAME(name, value, msg) \
    case MP_##name:                    \
        return "MP_" #name;
        MP_ERRNO_MAP(MP__ERR_NAME)
#undef MP__ERR_NAME
    case MP_ETIMEDOUT:
        return "MP_ETIMEDOUT";
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        const char *s = strerrorname_np(-code);
        if (s != NULL)
            return s;
    }
    return "UNKNOWN";
}
