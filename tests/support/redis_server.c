/*
 * Runs /usr/bin/redis-server as a child for tests (see redis_server.h). The child gets
 * PR_SET_PDEATHSIG so a crashed test never leaves a server behind; its output goes to
 * DIR/redis.log, which is printed when the server fails to come up.
 */
#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kx_test.h"
#include "klaxon/common.h"

#define REDIS_BIN "/usr/bin/redis-server"
#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 10000
#define POLL_INTERVAL_MS 5

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    int port = -EADDRNOTAVAIL;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

bool kx_test_redis_ping(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && write(fd, "PING\r\n", 6) == 6) {
        char buf[16];
        size_t got = 0;
        ssize_t n;
        while (got < 7 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
            got += (size_t)n;
        ok = got >= 7 && memcmp(buf, "+PONG\r\n", 7) == 0;
    }
    close(fd);
    return ok;
}

static void dump_log(const kx_test_redis *r)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/redis.log", r->dir);
    char *log = kx_test_read_file(path, NULL);
    fprintf(stderr, "redis-server on port %d did not come up; its log:\n%s\n", r->port,
            log ? log : "(none)");
    free(log);
}

/* Forks the server on r->port in r->dir and waits until PING answers. */
static int spawn(kx_test_redis *r)
{
    char port[16], logpath[300];
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(logpath, sizeof(logpath), "%s/redis.log", r->dir);
    char *argv[] = {REDIS_BIN,      "--port", port,    "--bind", "127.0.0.1",   "--save", "",
                    "--appendonly", "no",     "--dir", r->dir,   "--daemonize", "no",     NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(REDIS_BIN, argv);
        _exit(127);
    }
    r->pid = pid;
    int64_t deadline = kx_mono_ms() + START_TIMEOUT_MS;
    while (kx_mono_ms() <= deadline) {
        if (kx_test_redis_ping(r->port, 200))
            return 0;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            r->pid = 0;
            return -ECHILD; /* exited: port taken, or bad arguments */
        }
        poll(NULL, 0, POLL_INTERVAL_MS);
    }
    kx_test_redis_halt(r);
    return -ETIMEDOUT;
}

int kx_test_redis_start(kx_test_redis *r)
{
    memset(r, 0, sizeof(*r));
    char *dir = kx_test_tmpdir("redis");
    if (!dir)
        return -errno;
    if (strlen(dir) >= sizeof(r->dir)) {
        kx_test_rmrf(dir);
        free(dir);
        return -ENAMETOOLONG;
    }
    strcpy(r->dir, dir);
    free(dir);
    int rc = -EADDRINUSE;
    /* Another process may take the port between our probe and the server's bind: retry. */
    for (int attempt = 0; attempt < 5 && rc != 0; attempt++) {
        r->port = free_port();
        if (r->port < 0) {
            rc = r->port;
            break;
        }
        rc = spawn(r);
    }
    if (rc != 0) {
        dump_log(r);
        kx_test_rmrf(r->dir);
        r->dir[0] = '\0';
    }
    return rc;
}

int kx_test_redis_halt(kx_test_redis *r)
{
    if (r->pid <= 0)
        return 0;
    kill(r->pid, SIGTERM);
    int64_t deadline = kx_mono_ms() + STOP_TIMEOUT_MS;
    int status;
    for (;;) {
        pid_t got = waitpid(r->pid, &status, WNOHANG);
        if (got == r->pid || (got < 0 && errno != EINTR))
            break;
        if (kx_mono_ms() > deadline) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &status, 0);
            break;
        }
        poll(NULL, 0, POLL_INTERVAL_MS);
    }
    r->pid = 0;
    return 0;
}

int kx_test_redis_restart(kx_test_redis *r)
{
    kx_test_redis_halt(r);
    int rc = spawn(r);
    if (rc)
        dump_log(r);
    return rc;
}

void kx_test_redis_stop(kx_test_redis *r)
{
    kx_test_redis_halt(r);
    if (r->dir[0]) {
        kx_test_rmrf(r->dir);
        r->dir[0] = '\0';
    }
}
