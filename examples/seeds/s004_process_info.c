/* Seed 004, section 1.2.1: show the ids involved — the child prints its
 * module (program) name, its parent's pid and its own, then says hello. */
#include <mproc.h>
#include <stdio.h>

extern char *program_invocation_short_name; /* glibc: argv[0]'s base name */

static void info(const char *title)
{
    printf("%s\n", title);
    printf("module name: %s\n", program_invocation_short_name);
    printf("parent process: %d\n", (int)mp_getppid());
    printf("process id: %d\n", (int)mp_getpid());
    printf("\n\n\n");
}

static int f(void *name)
{
    info("\033[31;1m main Process line \033[0m");
    printf("hello %s\n", (const char *)name);
    return 0;
}

int main(void)
{
    mp_process *p;
    int rc = mp_process_new(&p, f, "bob", NULL);
    if (rc == 0)
        rc = mp_process_start(p);
    if (rc == 0)
        rc = mp_process_join(p, MP_FOREVER);
    mp_process_free(p);
    if (rc < 0) {
        fprintf(stderr, "process: %s\n", mp_strerror(rc));
        return 1;
    }
    return 0;
}
