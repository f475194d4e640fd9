/* Crash reports: the worker's side (a handler for fatal signals that
 * writes the faulting thread's stack into shared memory) and the parent's
 * (naming those addresses).
 *
 * Why this is safe in a dying process:
 * - The handler runs on an alternate stack (sigaltstack), so a stack
 *   overflow still gets one; it writes only into the worker's record in
 *   the shared heap, with plain stores and one release store of the pid
 *   that says the record is whole.  A record whose pid is not the dead
 *   worker's is ignored, so a death inside the handler (a second fault)
 *   leaves at worst no report.
 * - backtrace() is not async-signal-safe the first time only: it loads
 *   the unwinder (libgcc_s) then.  mp__crash_prepare calls it once in the
 *   parent before the fork server is made, so every worker inherits it
 *   loaded; after that it only reads the stack and the unwind tables.
 * - The handler is installed with SA_RESETHAND and raises its signal
 *   again before returning: the worker dies of it as it would have
 *   (exit status, core dump), the report written first.
 *
 * Naming happens in the parent: workers are forks of it (through the fork
 * server), so a return address means the same code in both.  With
 * elfutils' libdw (opened on the first report, never linked: a program
 * that never sees a crash never loads it) frames get function, offset,
 * object and file:line; without it, dladdr's exported names. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "os/os.h"

#if defined(MP_HAVE_LIBDW)
#include <elfutils/libdwfl.h>
#endif

#define ALT_STACK (64 * 1024)

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP};

/* ---- the worker's side ---- */

static mp__crash_rec *armed_rec;

static uintptr_t context_pc(const void *uc)
{
    const ucontext_t *u = uc;
#if defined(__x86_64__)
    return (uintptr_t)u->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)u->uc_mcontext.pc;
#else
    (void)u;
    return 0;
#endif
}

static void on_fatal(int sig, siginfo_t *si, void *uc)
{
    mp__crash_rec *r = armed_rec;
    if (r) {
        void *f[MP__CRASH_FRAMES + 8];
        int n = backtrace(f, (int)(sizeof f / sizeof f[0]));
        uintptr_t pc = context_pc(uc);
        /* The first frames are this handler and the kernel's return
         * trampoline; the stack proper starts at the faulting pc. */
        int first = -1;
        for (int i = 0; i < n && i < 8 && first < 0; i++)
            if ((uintptr_t)f[i] == pc)
                first = i;
        uint32_t k = 0;
        if (first < 0) {
            if (pc)
                r->frames[k++] = pc;
        } else {
            for (int i = first; i < n && k < MP__CRASH_FRAMES; i++)
                r->frames[k++] = (uintptr_t)f[i];
        }
        r->nframes = k;
        r->signo = sig;
        /* si_addr means something only for a fault the kernel raised. */
        r->addr = sig != SIGABRT && si->si_code > 0 ? (uintptr_t)si->si_addr : 0;
        atomic_store_explicit(&r->pid, (int32_t)getpid(), memory_order_release);
    }
    raise(sig); /* (default action now: delivered once we return) */
}

static void prime_unwinder(void)
{
    void *f[2];
    (void)backtrace(f, 2);
}

void mp__crash_prepare(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, prime_unwinder);
}

int mp__crash_arm(mp__crash_rec *rec)
{
    void *stack = mmap(NULL, ALT_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED)
        return -errno;
    stack_t ss = {.ss_sp = stack, .ss_size = ALT_STACK};
    if (sigaltstack(&ss, NULL) < 0) {
        int e = errno;
        munmap(stack, ALT_STACK);
        return -e;
    }
    armed_rec = rec;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof fatal_signals / sizeof fatal_signals[0]; i++) {
        struct sigaction old;
        /* A handler the program set itself (before mp_pool_new) stays. */
        if (sigaction(fatal_signals[i], NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
            old.sa_handler == SIG_DFL)
            sigaction(fatal_signals[i], &sa, NULL);
    }
    return 0;
}

/* ---- the parent's side ---- */

/* Append to buf what fits of a line; false (nothing written) when the
 * whole line does not fit. */
static bool put_line(char *buf, size_t cap, size_t *len, const char *line)
{
    size_t n = strlen(line);
    if (*len + n + 1 > cap)
        return false;
    memcpy(buf + *len, line, n + 1);
    *len += n;
    return true;
}

static const char *base_name(const char *path)
{
    const char *s = path ? strrchr(path, '/') : NULL;
    return s ? s + 1 : (path ? path : "??");
}

#if defined(MP_HAVE_LIBDW)
/* libdw's calls, opened with dlopen on the first report. */
static struct {
    Dwfl *(*begin)(const Dwfl_Callbacks *);
    int (*proc_report)(Dwfl *, pid_t);
    void (*report_begin)(Dwfl *);
    int (*report_end)(Dwfl *, int (*)(Dwfl_Module *, void *, const char *, Dwarf_Addr, void *),
                      void *);
    Dwfl_Module *(*addrmodule)(Dwfl *, Dwarf_Addr);
    const char *(*addrinfo)(Dwfl_Module *, GElf_Addr, GElf_Off *, GElf_Sym *, GElf_Word *,
                            Elf **, Dwarf_Addr *);
    const char *(*module_info)(Dwfl_Module *, void ***, Dwarf_Addr *, Dwarf_Addr *,
                               Dwarf_Addr *, Dwarf_Addr *, const char **, const char **);
    Dwfl_Line *(*getsrc)(Dwfl_Module *, Dwarf_Addr);
    const char *(*lineinfo)(Dwfl_Line *, Dwarf_Addr *, int *, int *, Dwarf_Word *, Dwarf_Word *);
    Dwfl_Callbacks cb;
    Dwfl *dwfl;
    bool tried;
} dw;

static bool dw_open(void)
{
    if (dw.tried)
        return dw.dwfl != NULL;
    dw.tried = true;
    void *h = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return false;
#define SYM(field, name) (*(void **)&dw.field = dlsym(h, name)) != NULL
    bool ok = SYM(begin, "dwfl_begin") && SYM(proc_report, "dwfl_linux_proc_report") &&
              SYM(report_begin, "dwfl_report_begin") && SYM(report_end, "dwfl_report_end") &&
              SYM(addrmodule, "dwfl_addrmodule") && SYM(addrinfo, "dwfl_module_addrinfo") &&
              SYM(module_info, "dwfl_module_info") && SYM(getsrc, "dwfl_module_getsrc") &&
              SYM(lineinfo, "dwfl_lineinfo") &&
              SYM(cb.find_elf, "dwfl_linux_proc_find_elf") &&
              SYM(cb.find_debuginfo, "dwfl_standard_find_debuginfo");
#undef SYM
    if (!ok)
        return false; /* (h stays open: harmless) */
    dw.dwfl = dw.begin(&dw.cb);
    if (dw.dwfl == NULL)
        return false;
    dw.report_begin(dw.dwfl);
    dw.proc_report(dw.dwfl, getpid());
    dw.report_end(dw.dwfl, NULL, NULL);
    return true;
}

/* One frame through libdw; false if it knows no module there. */
static bool dw_frame(unsigned n, uintptr_t addr, uintptr_t look, char *line, size_t cap)
{
    Dwfl_Module *m = dw.addrmodule(dw.dwfl, look);
    if (m == NULL) {
        /* Loaded since we looked (dlopen): look again, once a frame. */
        dw.report_begin(dw.dwfl);
        dw.proc_report(dw.dwfl, getpid());
        dw.report_end(dw.dwfl, NULL, NULL);
        if ((m = dw.addrmodule(dw.dwfl, look)) == NULL)
            return false;
    }
    const char *mod = dw.module_info(m, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    GElf_Off off = 0;
    GElf_Sym sym;
    const char *fn = dw.addrinfo(m, look, &off, &sym, NULL, NULL, NULL);
    int k;
    if (fn)
        k = snprintf(line, cap, "#%u %s+0x%lx (%s)", n, fn, (unsigned long)(off + (addr - look)),
                     base_name(mod));
    else
        k = snprintf(line, cap, "#%u ?? %#lx (%s)", n, (unsigned long)addr, base_name(mod));
    Dwfl_Line *l = dw.getsrc(m, look);
    int lineno = 0;
    const char *file = l ? dw.lineinfo(l, NULL, &lineno, NULL, NULL, NULL) : NULL;
    if (file && k > 0 && (size_t)k < cap)
        snprintf(line + k, cap - (size_t)k, " %s:%d", base_name(file), lineno);
    return true;
}
#endif

static void dl_frame(unsigned n, uintptr_t addr, uintptr_t look, char *line, size_t cap)
{
    Dl_info di;
    if (dladdr((void *)look, &di) && di.dli_fname) {
        if (di.dli_sname)
            snprintf(line, cap, "#%u %s+0x%lx (%s)", n, di.dli_sname,
                     (unsigned long)(addr - (uintptr_t)di.dli_saddr), base_name(di.dli_fname));
        else
            snprintf(line, cap, "#%u ?? +0x%lx (%s)", n,
                     (unsigned long)(addr - (uintptr_t)di.dli_fbase), base_name(di.dli_fname));
    } else {
        snprintf(line, cap, "#%u ?? %#lx", n, (unsigned long)addr);
    }
}

void mp__crash_describe(const mp__crash_rec *rec, char *text, size_t cap)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    if (cap == 0)
        return;
    text[0] = '\0';
    uint32_t nf = rec->nframes < MP__CRASH_FRAMES ? rec->nframes : MP__CRASH_FRAMES;
    size_t len = 0;
    pthread_mutex_lock(&lock); /* (libdw's handle is not thread-safe) */
#if defined(MP_HAVE_LIBDW)
    bool have_dw = dw_open();
#endif
    for (uint32_t i = 0; i < nf; i++) {
        uintptr_t addr = rec->frames[i];
        /* Past frame 0 an address is where a call returns to: the call
         * itself (its function, its line) is the byte before. */
        uintptr_t look = i > 0 && addr > 0 ? addr - 1 : addr;
        char line[256];
        bool done = false;
#if defined(MP_HAVE_LIBDW)
        if (have_dw)
            done = dw_frame(i, addr, look, line, sizeof line - 1);
#endif
        if (!done)
            dl_frame(i, addr, look, line, sizeof line - 1);
        strcat(line, "\n");
        if (!put_line(text, cap, &len, line))
            break;
    }
    pthread_mutex_unlock(&lock);
}
