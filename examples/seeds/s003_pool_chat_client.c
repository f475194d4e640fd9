/* Seed 003, the chat client: send each line typed to the server on
 * 127.0.0.1:PORT (default 8080) and print its answer; ends at end of input. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        return 1;
    }
    char line[1024];
    for (;;) {
        printf(">>: ");
        fflush(stdout);
        if (fgets(line, sizeof line, stdin) == NULL)
            break;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        if (send(s, line, strlen(line), MSG_NOSIGNAL) < 0)
            break;
        ssize_t n = recv(s, line, sizeof line - 1, 0);
        if (n <= 0)
            break;
        line[n] = '\0';
        printf("%s\n", line);
    }
    printf("\n");
    close(s);
    return 0;
}
