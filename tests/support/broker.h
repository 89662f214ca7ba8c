/*
 * Test helper: runs kx-broker (librdkafka's mock cluster in its own process) and
 * kx-produce from C tests.
 *
 * kx_test_broker_start spawns the broker, reads its "BOOTSTRAP host:port,..." line (with a
 * deadline) and returns; kx_test_broker_stop sends SIGTERM to that pid and reaps it. The
 * broker is also told to die with the test process (PR_SET_PDEATHSIG), so a crashed test
 * leaves no broker behind.
 *
 * The _at variants take the binary's path; the short forms use KX_BINARY_DIR, which the
 * test build defines for every unit test.
 */
#ifndef KX_TEST_BROKER_H
#define KX_TEST_BROKER_H

#include <stddef.h>
#include <sys/types.h>

typedef struct kx_test_broker {
    pid_t pid;
    char bootstrap[512];
} kx_test_broker;

/* topics: "name:partitions" strings. Returns 0, or a negative errno (a message is printed
 * on stderr). */
int kx_test_broker_start_at(kx_test_broker *b, const char *exe, const char *const *topics,
                            size_t ntopics);
/* Idempotent. Returns the broker's exit status (0 = clean), or -1 if it had to be killed. */
int kx_test_broker_stop(kx_test_broker *b);

/* Runs kx-produce: each line of data becomes one message (partition < 0: the default
 * partitioner). Blocks until kx-produce exits; returns its exit status (0 = all delivered)
 * or a negative errno. */
int kx_test_produce_at(const char *exe, const char *bootstrap, const char *topic, int partition,
                       const char *data, size_t len);

#ifdef KX_BINARY_DIR
#define kx_test_broker_start(b, topics, n)                                                         \
    kx_test_broker_start_at((b), KX_BINARY_DIR "/kx-broker", (topics), (n))
#define kx_test_produce(bootstrap, topic, partition, data, len)                                    \
    kx_test_produce_at(KX_BINARY_DIR "/kx-produce", (bootstrap), (topic), (partition), (data),     \
                       (len))
#endif

#endif
