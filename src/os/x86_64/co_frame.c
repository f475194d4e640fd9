/* The first frame of a coroutine on x86_64: the register layout that
 * co_switch.S, beside it, pops. */
#include <stdint.h>
#include <string.h>

void mp__co_trampoline(void);
void *mp__co_frame(char *top, void (*entry)(void *), void *arg);

/* Lay out a frame below top (16-byte aligned) such that switching to the
 * returned stack pointer calls entry(arg) through mp__co_trampoline, as if
 * mp__co_switch had been called from there.  (Also used by the bare-switch
 * benchmark.) */
void *mp__co_frame(char *top, void (*entry)(void *), void *arg)
{
    /* mxcsr+fpucw, r15, r14, r13 = entry, r12 = arg, rbx, rbp, return
     * address: after the switch pops them, rsp = top - 16 (aligned). */
    uint64_t *sp = (uint64_t *)(top - 80);
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    memset(sp, 0, 80);
    memcpy(&sp[0], &mxcsr, sizeof mxcsr);
    memcpy((char *)&sp[0] + 4, &fpucw, sizeof fpucw);
    sp[3] = (uint64_t)(uintptr_t)entry;
    sp[4] = (uint64_t)(uintptr_t)arg;
    sp[7] = (uint64_t)(uintptr_t)mp__co_trampoline;
    return sp;
}
