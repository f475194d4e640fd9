/* Coroutine context switch for x86_64 (System V ABI).
 *
 * void mp__co_switch(void **save_sp, void *load_sp);
 * void mp__co_switch_ret(void **save_sp, void *load_sp);
 *
 * Saves only what a call must preserve: rbx, rbp, r12-r15, the MXCSR and
 * the x87 control word; stores the stack pointer in *save_sp, loads
 * load_sp and restores the same set from there.  The two entry points
 * differ in how they resume: mp__co_switch pops the return address and
 * jumps to it (an indirect jump the branch predictor learns), while
 * mp__co_switch_ret ends in `ret`.  Two contexts that switch from
 * different places (bench/bench_coro.c's bare switch) favour the jump:
 * the `ret` is predicted to return where this context called from.  The
 * scheduler uses mp__co_switch_ret: its coroutines switch from the same
 * places (park, yield), so the `ret` and the returns after it are
 * predicted as deep as the two call stacks agree, while after the jump
 * the return-stack buffer holds one stale entry and every return
 * misses (a yield between two coroutines: 21-25 ns with the jump, 12-13
 * with `ret`).  bench/bench_coro.c measures both bare switches.
 *
 * A new coroutine's stack is laid out as if it had called the switch from
 * mp__co_trampoline with r12 = its argument and r13 = its entry function
 * (see coro.c). */
    .text

/* Pop the callee-saved set at rsp (its return address stays on top). */
.macro LOAD_SET
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
.endm

/* Push the callee-saved set, store rsp in *save_sp (rdi), load rsp from
 * load_sp (rsi) and pop the set saved there (its return address stays on
 * top). */
.macro SWITCH_STACKS
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    LOAD_SET
.endm

    .globl mp__co_switch
    .hidden mp__co_switch
    .type mp__co_switch, @function
    .p2align 4
mp__co_switch:
    SWITCH_STACKS
    popq %rcx
    jmpq *%rcx
    .size mp__co_switch, .-mp__co_switch

    .globl mp__co_switch_ret
    .hidden mp__co_switch_ret
    .type mp__co_switch_ret, @function
    .p2align 4
mp__co_switch_ret:
    SWITCH_STACKS
    ret
    .size mp__co_switch_ret, .-mp__co_switch_ret

/* First code a coroutine runs: entry(arg).  An entry that returns (the
 * scheduler's, when its coroutine has ended) returns the stack of the
 * context to resume: the trampoline loads it and returns into it, as
 * that context's own switch would have.  A coroutine's last switch is
 * thus made from its first frame, where the return-stack predictor holds
 * what it held when the coroutine was entered (by mp__co_switch, which
 * leaves it alone): the `ret` below and the returns after it in the
 * resumed context are predicted (coro_int.h, CO_EXIT_BY_RETURN). */
    .globl mp__co_trampoline
    .hidden mp__co_trampoline
    .type mp__co_trampoline, @function
    .p2align 4
mp__co_trampoline:
    movq %r12, %rdi
    callq *%r13
    movq %rax, %rsp
    LOAD_SET
    ret
    .size mp__co_trampoline, .-mp__co_trampoline

    .section .note.GNU-stack,"",@progbits
