/* Copies of a few bytes without a call: memcpy with a length known only
 * at run time is a call into the C library (a few ns), which costs more
 * than the copy for the small items and results that pools move one by
 * one.  Up to 32 bytes the copy is done with two overlapping moves of a
 * fixed size (each a load and a store), inside [src, src + n) and
 * [dst, dst + n) only; longer ones go to memcpy. */
#ifndef MPROC_COPY_INT_H
#define MPROC_COPY_INT_H

#include <stdint.h>
#include <string.h>

static inline void mp__copy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (n >= 16 && n <= 32) {
        unsigned char a[16], b[16];
        memcpy(a, s, 16);
        memcpy(b, s + n - 16, 16);
        memcpy(d, a, 16);
        memcpy(d + n - 16, b, 16);
    } else if (n >= 8 && n < 16) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n > 0 && n < 4) {
        unsigned char a = s[0], b = s[n / 2], c = s[n - 1];
        d[0] = a;
        d[n / 2] = b;
        d[n - 1] = c;
    } else if (n > 32) {
        memcpy(d, s, n);
    }
}

#endif
