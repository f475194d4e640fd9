/* Seed 004, "Pipes": a child sends a record on its end of a Pipe and
 * closes it; the parent receives and prints it.  Python pickles
 * [42, None, 'hello']; a C program sends a struct. */
#include <mproc.h>
#include <stdio.h>

typedef struct {
    int number;
    const char *nothing; /* None */
    char word[16];
} record;

static int f(void *arg)
{
    mp_conn *conn = arg;
    record r = {.number = 42, .nothing = NULL, .word = "hello"};
    int rc = mp_conn_send(conn, &r, sizeof r);
    mp_conn_free(conn); /* conn.close() */
    return rc == 0 ? 0 : 1;
}

int main(void)
{
    mp_conn *parent_conn, *child_conn;
    mp_process *p;
    int rc = mp_pipe_new(&parent_conn, &child_conn, true);
    if (rc == 0)
        rc = mp_process_new(&p, f, child_conn, NULL);
    if (rc == 0)
        rc = mp_process_start(p);
    if (rc < 0) {
        fprintf(stderr, "start: %s\n", mp_strerror(rc));
        return 1;
    }
    record r;
    size_t len;
    rc = mp_conn_recv(parent_conn, &r, sizeof r, &len, 10.0);
    if (rc < 0 || len != sizeof r) {
        fprintf(stderr, "recv: %s\n", mp_strerror(rc));
        return 1;
    }
    printf("[%d, %s, '%s']\n", r.number, r.nothing ? r.nothing : "None", r.word);
    mp_process_join(p, MP_FOREVER);
    mp_process_free(p);
    mp_conn_free(parent_conn);
    mp_conn_free(child_conn);
    return 0;
}
