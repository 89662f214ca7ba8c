/*
 * Test SMTP server (smtp_receiver.h): one accept thread serving one connection at a time,
 * which is all a client with one attempt in flight needs.
 */
#include "smtp_receiver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_MSGS 64

typedef struct msg {
    char *from, *rcpt, *data;
} msg;

struct kx_smtp_receiver {
    int lfd, port;
    pthread_t th;
    pthread_mutex_t mu;
    bool stopping;
    int refuse_code;
    unsigned refuse_left;
    msg msgs[MAX_MSGS];
    size_t n;
};

static void say(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len) {
        ssize_t w = send(fd, s, len, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        len -= (size_t)w;
    }
}

/* Reads one CRLF line into buf (without CRLF). False at EOF. */
static bool read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    char c;
    while (recv(fd, &c, 1, 0) == 1) {
        if (c == '\n') {
            if (n && buf[n - 1] == '\r')
                n--;
            buf[n] = '\0';
            return true;
        }
        if (n + 1 < cap)
            buf[n++] = c;
    }
    return false;
}

static void serve(kx_smtp_receiver *r, int fd)
{
    char line[8192];
    char *from = NULL;
    size_t rlen = 0;
    char *rcpt = calloc(1, 1);
    say(fd, "220 test ESMTP\r\n");
    while (read_line(fd, line, sizeof(line))) {
        if (!strncasecmp(line, "EHLO", 4) || !strncasecmp(line, "HELO", 4)) {
            say(fd, "250 test\r\n");
        } else if (!strncasecmp(line, "MAIL FROM:", 10)) {
            free(from);
            from = strdup(line + 10);
            say(fd, "250 ok\r\n");
        } else if (!strncasecmp(line, "RCPT TO:", 8)) {
            pthread_mutex_lock(&r->mu);
            int code = r->refuse_left ? (r->refuse_left--, r->refuse_code) : 250;
            pthread_mutex_unlock(&r->mu);
            if (code != 250) {
                char m[64];
                snprintf(m, sizeof(m), "%d refused on purpose\r\n", code);
                say(fd, m);
                continue;
            }
            size_t l = strlen(line + 8);
            char *p = realloc(rcpt, rlen + l + 2);
            if (p) {
                rcpt = p;
                if (rlen)
                    rcpt[rlen++] = ',';
                memcpy(rcpt + rlen, line + 8, l + 1);
                rlen += l;
            }
            say(fd, "250 ok\r\n");
        } else if (!strncasecmp(line, "DATA", 4)) {
            say(fd, "354 go on\r\n");
            size_t dl = 0, dc = 4096;
            char *data = malloc(dc);
            while (data && read_line(fd, line, sizeof(line)) && strcmp(line, ".")) {
                const char *l = line[0] == '.' ? line + 1 : line; /* dot-unstuffing */
                size_t ll = strlen(l);
                while (dl + ll + 3 > dc) {
                    dc *= 2;
                    char *p = realloc(data, dc);
                    if (!p) {
                        free(data);
                        data = NULL;
                        break;
                    }
                    data = p;
                }
                if (!data)
                    break;
                memcpy(data + dl, l, ll);
                dl += ll;
                data[dl++] = '\r';
                data[dl++] = '\n';
                data[dl] = '\0';
            }
            pthread_mutex_lock(&r->mu);
            if (r->n < MAX_MSGS && data) {
                r->msgs[r->n].from = from ? strdup(from) : strdup("");
                r->msgs[r->n].rcpt = strdup(rcpt);
                r->msgs[r->n].data = data;
                data = NULL;
                r->n++;
            }
            pthread_mutex_unlock(&r->mu);
            free(data);
            rlen = 0;
            rcpt[0] = '\0';
            say(fd, "250 queued\r\n");
        } else if (!strncasecmp(line, "QUIT", 4)) {
            say(fd, "221 bye\r\n");
            break;
        } else if (!strncasecmp(line, "RSET", 4) || !strncasecmp(line, "NOOP", 4)) {
            say(fd, "250 ok\r\n");
        } else {
            say(fd, "502 not implemented\r\n");
        }
    }
    free(from);
    free(rcpt);
}

static void *run(void *ud)
{
    kx_smtp_receiver *r = ud;
    for (;;) {
        int fd = accept(r->lfd, NULL, NULL);
        pthread_mutex_lock(&r->mu);
        bool stop = r->stopping;
        pthread_mutex_unlock(&r->mu);
        if (stop) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        if (fd < 0)
            continue;
        serve(r, fd);
        close(fd);
    }
}

int kx_smtp_receiver_start(kx_smtp_receiver **out)
{
    kx_smtp_receiver *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(r->lfd, 8) ||
        getsockname(r->lfd, (struct sockaddr *)&sa, &sl) || pthread_create(&r->th, NULL, run, r)) {
        if (r->lfd >= 0)
            close(r->lfd);
        free(r);
        return -EADDRNOTAVAIL;
    }
    r->port = ntohs(sa.sin_port);
    *out = r;
    return 0;
}

void kx_smtp_receiver_stop(kx_smtp_receiver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_mutex_unlock(&r->mu);
    /* Wake accept with a connection of our own. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0) {
        (void)connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
    }
    pthread_join(r->th, NULL);
    close(r->lfd);
    for (size_t i = 0; i < r->n; i++) {
        free(r->msgs[i].from);
        free(r->msgs[i].rcpt);
        free(r->msgs[i].data);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int kx_smtp_receiver_port(const kx_smtp_receiver *r)
{
    return r->port;
}

void kx_smtp_receiver_refuse_next(kx_smtp_receiver *r, int code, unsigned n)
{
    pthread_mutex_lock(&r->mu);
    r->refuse_code = code;
    r->refuse_left = n;
    pthread_mutex_unlock(&r->mu);
}

size_t kx_smtp_receiver_count(kx_smtp_receiver *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static char *get(kx_smtp_receiver *r, size_t i, int which)
{
    pthread_mutex_lock(&r->mu);
    char *s = NULL;
    if (i < r->n)
        s = strdup(which == 0 ? r->msgs[i].from : which == 1 ? r->msgs[i].rcpt : r->msgs[i].data);
    pthread_mutex_unlock(&r->mu);
    return s;
}

char *kx_smtp_receiver_from(kx_smtp_receiver *r, size_t i)
{
    return get(r, i, 0);
}

char *kx_smtp_receiver_rcpt(kx_smtp_receiver *r, size_t i)
{
    return get(r, i, 1);
}

char *kx_smtp_receiver_data(kx_smtp_receiver *r, size_t i)
{
    return get(r, i, 2);
}
