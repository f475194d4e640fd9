/* The first frame of a coroutine on aarch64: the register layout that
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
    /* x19 = arg, x20 = entry, ..., x30 = trampoline, ..., fpcr. */
    uint64_t *sp = (uint64_t *)(top - 176);
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    memset(sp, 0, 176);
    sp[0] = (uint64_t)(uintptr_t)arg;
    sp[1] = (uint64_t)(uintptr_t)entry;
    sp[11] = (uint64_t)(uintptr_t)mp__co_trampoline;
    sp[20] = fpcr;
    return sp;
}
