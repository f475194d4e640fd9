/* Coroutine context switch for aarch64 (AAPCS64).
 *
 * void mp__co_switch(void **save_sp, void *load_sp);
 * void mp__co_switch_ret(void **save_sp, void *load_sp);   (same here)
 *
 * Saves only what a call must preserve: x19-x28, fp (x29), lr (x30),
 * d8-d15 and FPCR; stores sp in *save_sp, loads load_sp, restores the same
 * set from there and returns through the restored lr.  A new coroutine's
 * frame holds lr = mp__co_trampoline, x19 = its argument, x20 = its entry
 * function (see coro.c). */
    .text

    .globl mp__co_switch
    .hidden mp__co_switch
    .type mp__co_switch, %function
    .p2align 4
mp__co_switch:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldr x9, [sp, #160]
    msr fpcr, x9
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #176
    ret
    .size mp__co_switch, .-mp__co_switch

    .globl mp__co_switch_ret
    .hidden mp__co_switch_ret
    .set mp__co_switch_ret, mp__co_switch

    .globl mp__co_trampoline
    .hidden mp__co_trampoline
    .type mp__co_trampoline, %function
    .p2align 4
mp__co_trampoline:
    mov x0, x19
    blr x20
    brk #0
    .size mp__co_trampoline, .-mp__co_trampoline

    .section .note.GNU-stack,"",%progbits
