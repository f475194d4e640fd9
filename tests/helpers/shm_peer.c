/* A program unrelated to the test process (started by exec): opens a named
 * segment, checks the creator's greeting and writes an answer.
 * Usage: shm_peer NAME; exit 0 on success. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    mp_shm *s;
    int rc = mp_shm_open(&s, argv[1]);
    if (rc < 0) {
        fprintf(stderr, "shm_peer: open %s: %s\n", argv[1], mp_strerror(rc));
        return 3;
    }
    char *p = mp_shm_data(s);
    if (mp_shm_size(s) < 128 || strcmp(p, "hello from the creator") != 0)
        return 4;
    strcpy(p + 64, "hello from the peer");
    mp_shm_free(s);
    return 0;
}
