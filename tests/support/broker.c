/*
 * Spawns and stops kx-broker / kx-produce for tests. See broker.h.
 *
 * fork+exec rather than posix_spawn because the child must set PR_SET_PDEATHSIG before it
 * execs: a test that crashes or is killed by ctest's timeout then takes its broker along.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KX_BROKER_START_TIMEOUT_MS 10000
#define KX_BROKER_STOP_TIMEOUT_MS 10000
#define KX_BROKER_MAX_TOPICS 16

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* In the child after fork: die with the parent, then exec. Only async-signal-safe calls. */
static void child_exec(const char *exe, char *const argv[])
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    execv(exe, argv);
    _exit(127);
}

/* Waits for pid to exit, up to timeout_ms; returns its exit status, or -1 (and kills it)
 * when it does not exit in time or died from a signal. */
static int reap(pid_t pid, int timeout_ms)
{
    long long deadline = mono_ms() + timeout_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (mono_ms() > deadline) {
            fprintf(stderr, "broker helper: pid %d did not exit, killing it\n", (int)pid);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        /* A short pause between polls of the exit status; this is the deadline loop. */
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int kx_test_broker_start_at(kx_test_broker *b, const char *exe, const char *const *topics,
                            size_t ntopics)
{
    char *argv[2 + 2 * KX_BROKER_MAX_TOPICS + 1];
    size_t argc = 0;
    char line[sizeof(b->bootstrap) + 32];
    size_t len = 0;
    int fds[2];
    pid_t pid;
    long long deadline;

    b->pid = 0;
    b->bootstrap[0] = '\0';
    if (ntopics > KX_BROKER_MAX_TOPICS)
        return -EINVAL;
    argv[argc++] = (char *)exe;
    for (size_t i = 0; i < ntopics; i++) {
        argv[argc++] = (char *)"--topic";
        argv[argc++] = (char *)topics[i];
    }
    argv[argc] = NULL;

    if (pipe2(fds, O_CLOEXEC) != 0)
        return -errno;
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        child_exec(exe, argv);
    }
    close(fds[1]);

    /* Read up to the first newline against a deadline; EOF means the broker failed. */
    deadline = mono_ms() + KX_BROKER_START_TIMEOUT_MS;
    for (;;) {
        long long left = deadline - mono_ms();
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        ssize_t n;

        if (left <= 0 || len == sizeof(line) - 1) {
            fprintf(stderr, "broker helper: no BOOTSTRAP line from %s\n", exe);
            goto fail;
        }
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            goto fail;
        if (!(pfd.revents & (POLLIN | POLLHUP)))
            continue;
        n = read(fds[0], line + len, sizeof(line) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "broker helper: %s exited before printing BOOTSTRAP\n", exe);
            goto fail;
        }
        len += (size_t)n;
        if (line[len - 1] == '\n')
            break;
    }
    line[len - 1] = '\0';
    close(fds[0]);
    if (strncmp(line, "BOOTSTRAP ", 10) != 0 || strlen(line + 10) >= sizeof(b->bootstrap)) {
        fprintf(stderr, "broker helper: unexpected line \"%s\"\n", line);
        kill(pid, SIGTERM);
        reap(pid, KX_BROKER_STOP_TIMEOUT_MS);
        return -EPROTO;
    }
    snprintf(b->bootstrap, sizeof(b->bootstrap), "%s", line + 10);
    b->pid = pid;
    return 0;

fail:
    close(fds[0]);
    kill(pid, SIGTERM);
    reap(pid, KX_BROKER_STOP_TIMEOUT_MS);
    return -EIO;
}

int kx_test_broker_stop(kx_test_broker *b)
{
    int rc;

    if (b->pid <= 0)
        return 0;
    kill(b->pid, SIGTERM);
    rc = reap(b->pid, KX_BROKER_STOP_TIMEOUT_MS);
    b->pid = 0;
    return rc;
}

int kx_test_produce_at(const char *exe, const char *bootstrap, const char *topic, int partition,
                       const char *data, size_t len)
{
    char part[16];
    char *argv[] = {(char *)exe,  (char *)"-b",  (char *)bootstrap,
                    (char *)"-t", (char *)topic, partition >= 0 ? (char *)"-p" : NULL,
                    part,         NULL};
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    int fds[2];
    pid_t pid;
    int rc = 0;

    snprintf(part, sizeof(part), "%d", partition);
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -errno;
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (pid == 0) {
        dup2(fds[0], STDIN_FILENO);
        child_exec(exe, argv);
    }
    close(fds[0]);

    /* kx-produce may die early; a write to its closed stdin must fail, not kill us. */
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old);
    while (len > 0) {
        ssize_t n = write(fds[1], data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = -EPIPE;
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    close(fds[1]);
    sigaction(SIGPIPE, &old, NULL);

    /* kx-produce waits for delivery reports itself (up to 30 s). */
    int st = reap(pid, 60000);
    return rc ? rc : st;
}
