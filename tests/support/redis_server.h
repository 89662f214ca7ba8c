/*
 * A real redis-server for tests: /usr/bin/redis-server on a free 127.0.0.1 port, data dir in
 * a fresh temp dir, no persistence unless a test asks for SAVE, run in the foreground as our
 * child and stopped by pid. Readiness is "PING answers PONG", polled against a deadline.
 *
 *   kx_test_redis r;
 *   assert_int_equal(kx_test_redis_start(&r), 0);   // r.port is the port
 *   ... kx_test_redis_halt(&r);                      // outage: SIGTERM + waitpid, dir kept
 *   ... kx_test_redis_restart(&r);                   // same port, same dir (dump.rdb if any)
 *   kx_test_redis_stop(&r);                          // halt if running + remove the dir
 */
#ifndef KX_TEST_REDIS_SERVER_H
#define KX_TEST_REDIS_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct kx_test_redis {
    int port;
    pid_t pid;     /* 0 when not running */
    char dir[256]; /* temp dir: redis.log, dump.rdb */
} kx_test_redis;

/* Starts a new server. 0 or -errno (message on stderr; the dir is removed on failure). */
int kx_test_redis_start(kx_test_redis *r);
/* Stops the process (SIGTERM, waitpid; SIGKILL after 10 s) and keeps port and dir. */
int kx_test_redis_halt(kx_test_redis *r);
/* Starts the server again on the same port and dir; waits for PING. */
int kx_test_redis_restart(kx_test_redis *r);
/* Halts if running and removes the dir. Safe to call twice. */
void kx_test_redis_stop(kx_test_redis *r);
/* One blocking PING on 127.0.0.1:port with a timeout; true if PONG came back. */
bool kx_test_redis_ping(int port, int timeout_ms);

#endif
