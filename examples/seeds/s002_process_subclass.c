/* Seed 002, part 2: "how do I get a process's return value?"  The seed
 * subclasses Process and stores func's result in self.res inside run; but
 * run executes in the child, so the parent's objects keep res = '' and it
 * prints three empty lines.  This program does the same to show why; the
 * answer is a Queue, a Pipe, shared memory or a pool (s002_queue_results,
 * s002_pipe_results, s002_pool_map_imap). */
#include <ctype.h>
#include <mproc.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *arg;
    char res[16];     /* set in the child only */
    mp_process *proc;
} my_process;

static void func(const char *name, char *out)
{
    printf("start process...\n");
    for (size_t i = 0; i <= strlen(name); i++)
        out[i] = (char)toupper((unsigned char)name[i]);
}

static int run(void *arg)
{
    my_process *self = arg;
    func(self->arg, self->res);
    printf("%s\n", self->name);
    printf("%s\n", self->res);
    fflush(stdout);
    return 0;
}

int main(void)
{
    my_process processes[3];
    for (int i = 0; i < 3; i++) {
        processes[i] = (my_process){.name = "process", .arg = "kel"};
        if (mp_process_new(&processes[i].proc, run, &processes[i], NULL) < 0)
            return 1;
    }
    for (int i = 0; i < 3; i++)
        mp_process_start(processes[i].proc);
    for (int i = 0; i < 3; i++)
        mp_process_join(processes[i].proc, MP_FOREVER);
    for (int i = 0; i < 3; i++) {
        printf("%s\n", processes[i].res); /* still empty: the child's copy changed */
        mp_process_free(processes[i].proc);
    }
    return 0;
}
