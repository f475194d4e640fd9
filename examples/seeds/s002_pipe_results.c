/* Seed 002, "processes hand results back through a Pipe": three processes
 * send name.upper() on the child end; the parent joins them, then receives
 * three messages on its end.  Several senders on one end never mix their
 * messages. */
#include <ctype.h>
#include <mproc.h>
#include <stdio.h>
#include <string.h>

static mp_conn *parent_conn, *child_conn;

static int func(void *arg)
{
    const char *name = arg;
    char up[64];
    size_t n = strlen(name);
    if (n >= sizeof up)
        return 1;
    for (size_t i = 0; i <= n; i++)
        up[i] = (char)toupper((unsigned char)name[i]);
    printf("start process...\n");
    fflush(stdout);
    return mp_conn_send(child_conn, up, n) == 0 ? 0 : 1;
}

int main(void)
{
    int rc = mp_pipe_new(&parent_conn, &child_conn, true);
    if (rc < 0) {
        fprintf(stderr, "pipe: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_process *processes[3];
    for (int i = 0; i < 3; i++) {
        mp_process_opts o = {.name = "process"};
        if ((rc = mp_process_new(&processes[i], func, "kel", &o)) < 0 ||
            (rc = mp_process_start(processes[i])) < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 3; i++)
        mp_process_join(processes[i], MP_FOREVER);
    for (int i = 0; i < 3; i++) {
        char buf[64];
        size_t len;
        rc = mp_conn_recv(parent_conn, buf, sizeof buf, &len, 10.0);
        if (rc < 0) {
            fprintf(stderr, "recv: %s\n", mp_strerror(rc));
            return 1;
        }
        printf("%.*s\n", (int)len, buf);
        mp_process_free(processes[i]);
    }
    mp_conn_free(parent_conn);
    mp_conn_free(child_conn);
    return 0;
}
