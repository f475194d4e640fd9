/* libFuzzer target: the listener's side of the authentication handshake.
 * A raw client connects, sends the input instead of a proper answer and
 * hangs up; accept must fail cleanly (or succeed only if the input holds
 * the right HMAC, which a fuzzer cannot forge). */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static mp_listener *listener;
static struct sockaddr_un addr = {.sun_family = AF_UNIX};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 60000)
        return 0;
    if (listener == NULL) {
        char path[100];
        snprintf(path, sizeof path, "unix:/tmp/mproc-fuzz-%d.sock", (int)getpid());
        if (mp_listener_new(&listener, path, "key", 3) != 0)
            abort();
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path + 5);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        abort();
    if (size > 0 && write(fd, data, size) != (ssize_t)size)
        abort();
    shutdown(fd, SHUT_WR);
    mp_conn *c = NULL;
    int rc = mp_listener_accept(listener, &c, 5.0);
    if (rc == 0)
        abort(); /* authenticated without the key */
    if (rc != MP_EAUTH && rc != -EPROTO && rc != MP_ETIMEDOUT && rc != -ECONNRESET &&
        rc != -EPIPE)
        abort();
    close(fd);
    return 0;
}
