/*
 * kafka source against a real Kafka-protocol broker (kx-broker, librdkafka's mock cluster in
 * its own process): every message exactly once through the libev loop, batch_done stores
 * offsets, stop commits them (checked with a separate client and with a second consumer of
 * the same group), pause/resume, the cooperative protocol, and config errors at line:col.
 *
 * The mock coordinator waits 3 s before the first rebalance of a group and about
 * session.timeout.ms - 1 s after its last member left, so the groups here use a short
 * session timeout.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ev.h>
#include <librdkafka/rdkafka.h>

#include "broker.h"
#include "klaxon/metrics.h"
#include "klaxon/source.h"
#include "klaxon/yaml.h"
#include "kx_test.h"

#define N_PER_PART 100
#define MAX_MSGS 1000
#define WAIT_MS 30000

static kx_test_broker g_broker;

typedef struct consumer {
    struct ev_loop *loop;
    kx_yaml_doc *doc;
    kx_source *src;
    bool auto_done;
    int seen[MAX_MSGS]; /* per payload index "m-<i>" */
    size_t received;
    size_t other; /* payloads that are not "m-<i>" */
    char last_other[64];
    size_t max_batch;
    size_t batches;
    bool batch_out;
    int64_t last_offset[8]; /* per partition, to check order */
    bool out_of_order;
} consumer;

static void on_batch(void *ud, const kx_msg *msgs, size_t n)
{
    consumer *c = ud;

    assert_false(c->batch_out);
    c->batches++;
    if (n > c->max_batch)
        c->max_batch = n;
    for (size_t i = 0; i < n; i++) {
        const kx_msg *m = &msgs[i];
        char buf[64];
        int idx;
        int used = 0;

        assert_non_null(m->topic);
        assert_true(m->partition >= 0 && m->partition < 8);
        assert_true(m->timestamp_ms > 0);
        assert_false(m->oversize);
        if (m->offset <= c->last_offset[m->partition])
            c->out_of_order = true;
        c->last_offset[m->partition] = m->offset;
        assert_true(m->len < sizeof(buf));
        memcpy(buf, m->payload, m->len);
        buf[m->len] = '\0';
        if (sscanf(buf, "m-%d%n", &idx, &used) == 1 && used == (int)m->len && idx >= 0 &&
            idx < MAX_MSGS) {
            c->seen[idx]++;
        } else {
            c->other++;
            snprintf(c->last_other, sizeof(c->last_other), "%s", buf);
        }
        c->received++;
    }
    c->batch_out = true;
    if (c->auto_done) {
        c->batch_out = false;
        kx_source_batch_done(c->src);
    }
}

static void consumer_init(consumer *c, struct ev_loop *loop, const char *group, size_t batch,
                          const char *extra_props, const char *topic)
{
    char yaml[2048];
    kx_err err;
    const char *topics[] = {topic};

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < KX_ARRAY_LEN(c->last_offset); i++)
        c->last_offset[i] = -1;
    c->loop = loop;
    c->auto_done = true;
    snprintf(yaml, sizeof(yaml),
             "brokers: \"%s\"\n"
             "group: %s\n"
             "batch: %zu\n"
             "properties:\n"
             "  session.timeout.ms: 3000\n"
             "  heartbeat.interval.ms: 500\n"
             "%s",
             g_broker.bootstrap, group, batch, extra_props ? extra_props : "");
    assert_int_equal(kx_yaml_load_mem("test.yaml", yaml, strlen(yaml), &c->doc, &err), 0);
    if (kx_kafka_source_create(loop, c->doc->root, "test.yaml", topics, 1, on_batch, c, &c->src,
                               &err) != 0)
        fail_msg("create: %s:%d:%d: %s", err.file, err.line, err.col, err.msg);
}

static void consumer_fini(consumer *c)
{
    kx_source_destroy(c->src);
    kx_yaml_free(c->doc);
    c->src = NULL;
    c->doc = NULL;
}

static size_t g_want;

static bool received_want(void *ud)
{
    return ((consumer *)ud)->received >= g_want;
}

static bool batch_is_out(void *ud)
{
    return ((consumer *)ud)->batch_out;
}

static void produce_lines(const char *topic, int partition, int from, int to)
{
    size_t cap = (size_t)(to - from) * 16 + 1;
    char *data = malloc(cap);
    size_t len = 0;

    for (int i = from; i < to; i++)
        len += (size_t)snprintf(data + len, cap - len, "m-%d\n", i);
    assert_int_equal(kx_test_produce(g_broker.bootstrap, topic, partition, data, len), 0);
    free(data);
}

/* Committed offsets of group/topic partitions 0..nparts-1, read with a client of our own. */
static void committed(const char *group, const char *topic, int nparts, int64_t *out)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    rd_kafka_t *rk;

    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", g_broker.bootstrap, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    assert_non_null(rk);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    assert_int_equal(rd_kafka_committed(rk, l, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int p = 0; p < nparts; p++)
        out[p] = l->elems[p].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static int group_setup(void **state)
{
    const char *topics[] = {"events:3", "paused:1", "coop:3"};

    (void)state;
    return kx_test_broker_start(&g_broker, topics, 3);
}

static int group_teardown(void **state)
{
    (void)state;
    return kx_test_broker_stop(&g_broker) == 0 ? 0 : -1;
}

static void test_exactly_once_and_commit(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    consumer *c = calloc(1, sizeof(*c));
    int64_t offs[3];

    (void)state;
    kx_metrics_reset();
    for (int p = 0; p < 3; p++)
        produce_lines("events", p, p * N_PER_PART, (p + 1) * N_PER_PART);

    consumer_init(c, loop, "g-once", 50, NULL, "events");
    kx_source_start(c->src);
    g_want = 3 * N_PER_PART;
    assert_true(kx_test_run_until(loop, received_want, c, WAIT_MS));
    assert_int_equal(c->received, 3 * N_PER_PART);
    assert_int_equal(c->other, 0);
    for (int i = 0; i < 3 * N_PER_PART; i++)
        assert_int_equal(c->seen[i], 1);
    assert_false(c->out_of_order);
    assert_true(c->max_batch <= 50);
    assert_int_equal(kx_source_offsets_stored(c->src), 3 * N_PER_PART);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_CONSUMED), 3 * N_PER_PART);
    assert_int_equal(kx_metric_get(KX_M_OFFSETS_COMMITTED), 3 * N_PER_PART);

    kx_source_stop(c->src);
    kx_source_stop(c->src); /* idempotent */
    consumer_fini(c);
    assert_int_equal(ev_run(loop, EVRUN_NOWAIT), 0);

    /* The stop committed offset+1 of the last message of every partition. */
    committed("g-once", "events", 3, offs);
    for (int p = 0; p < 3; p++)
        assert_int_equal(offs[p], N_PER_PART);

    /* A new member of the same group starts from the commit: it sees only what came later. */
    consumer_init(c, loop, "g-once", 50, NULL, "events");
    kx_source_start(c->src);
    assert_int_equal(kx_test_produce(g_broker.bootstrap, "events", 1, "after-stop\n", 11), 0);
    g_want = 1;
    assert_true(kx_test_run_until(loop, received_want, c, WAIT_MS));
    assert_int_equal(c->received, 1);
    assert_int_equal(c->other, 1);
    assert_string_equal(c->last_other, "after-stop");
    kx_source_stop(c->src);
    consumer_fini(c);
    assert_int_equal(ev_run(loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(loop);
    free(c);
}

static void test_pause_resume(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    consumer *c = calloc(1, sizeof(*c));

    (void)state;
    kx_metrics_reset();
    produce_lines("paused", 0, 0, 40);
    consumer_init(c, loop, "g-pause", 10, NULL, "paused");
    c->auto_done = false;
    kx_source_start(c->src);

    /* Pause while the first batch is out (the store went down mid-batch), then finish it. */
    /* The first batch holds what the first fetch brought: 1 to 10 messages, depending on how
     * the broker's response was split (CI once saw 1), so the test asserts the range. */
    assert_true(kx_test_run_until(loop, batch_is_out, c, WAIT_MS));
    int first = c->received;
    assert_in_range(first, 1, 10);
    kx_source_pause(c->src);
    c->batch_out = false;
    kx_source_batch_done(c->src);
    assert_int_equal(kx_source_offsets_stored(c->src), first);
    assert_int_equal(kx_metric_get(KX_M_SOURCE_PAUSES), 1);

    /* Paused: the rest is available, none is delivered. */
    assert_false(kx_test_run_until(loop, batch_is_out, c, 1500));
    assert_int_equal(c->received, first);

    kx_source_resume(c->src);
    c->auto_done = true;
    if (c->batch_out) {
        c->batch_out = false;
        kx_source_batch_done(c->src);
    }
    g_want = 40;
    assert_true(kx_test_run_until(loop, received_want, c, WAIT_MS));
    assert_int_equal(c->received, 40);
    for (int i = 0; i < 40; i++)
        assert_int_equal(c->seen[i], 1);
    assert_false(c->out_of_order);
    assert_int_equal(kx_source_offsets_stored(c->src), 40);

    kx_source_stop(c->src);
    consumer_fini(c);
    assert_int_equal(ev_run(loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(loop);
    free(c);
}

static void test_cooperative(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    consumer *c = calloc(1, sizeof(*c));
    int64_t offs[3];

    (void)state;
    for (int p = 0; p < 3; p++)
        produce_lines("coop", p, p * 10, (p + 1) * 10);
    consumer_init(c, loop, "g-coop", 7, "  partition.assignment.strategy: cooperative-sticky\n",
                  "coop");
    kx_source_start(c->src);
    g_want = 30;
    assert_true(kx_test_run_until(loop, received_want, c, WAIT_MS));
    assert_int_equal(c->received, 30);
    for (int i = 0; i < 30; i++)
        assert_int_equal(c->seen[i], 1);
    assert_true(c->max_batch <= 7);
    kx_source_stop(c->src);
    consumer_fini(c);
    committed("g-coop", "coop", 3, offs);
    for (int p = 0; p < 3; p++)
        assert_int_equal(offs[p], 10);
    assert_int_equal(ev_run(loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(loop);
    free(c);
}

static void count_batch(void *ud, const kx_msg *msgs, size_t n)
{
    (void)msgs;
    *(size_t *)ud += n;
}

static bool never(void *ud)
{
    (void)ud;
    return false;
}

/* No broker at all: librdkafka retries in the background, nothing is delivered, and stop
 * (commit + close) still returns promptly with the loop left empty. */
static void test_unreachable_broker(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    const char *yaml = "brokers: 127.0.0.1:1\n";
    const char *topics[] = {"events"};
    kx_yaml_doc *doc;
    kx_source *src;
    kx_err err;
    size_t received = 0;
    int64_t t0;

    (void)state;
    assert_int_equal(kx_yaml_load_mem("k.yaml", yaml, strlen(yaml), &doc, &err), 0);
    assert_int_equal(kx_kafka_source_create(loop, doc->root, "k.yaml", topics, 1, count_batch,
                                            &received, &src, &err),
                     0);
    kx_source_start(src);
    assert_false(kx_test_run_until(loop, never, NULL, 1500));
    t0 = kx_mono_ms();
    kx_source_stop(src);
    kx_source_destroy(src);
    assert_true(kx_mono_ms() - t0 < 10000);
    assert_int_equal(received, 0);
    assert_int_equal(ev_run(loop, EVRUN_NOWAIT), 0);
    kx_yaml_free(doc);
    ev_loop_destroy(loop);
}

/* Loads yaml and expects kx_kafka_source_create to fail with exactly this position/message. */
static void expect_cfg_error(const char *yaml, int line, int col, const char *msg)
{
    struct ev_loop *loop = ev_default_loop(0);
    const char *topics[] = {"events"};
    kx_yaml_doc *doc;
    kx_source *src = (kx_source *)1;
    kx_err err;

    assert_int_equal(kx_yaml_load_mem("k.yaml", yaml, strlen(yaml), &doc, &err), 0);
    assert_int_equal(
        kx_kafka_source_create(loop, doc->root, "k.yaml", topics, 1, on_batch, NULL, &src, &err),
        -EINVAL);
    assert_null(src);
    assert_string_equal(err.file, "k.yaml");
    assert_string_equal(err.msg, msg);
    assert_int_equal(err.line, line);
    assert_int_equal(err.col, col);
    kx_yaml_free(doc);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_cfg_error("brokers: 127.0.0.1:1\ngrup: x\n", 2, 1, "kafka: unknown key \"grup\"");
    expect_cfg_error("group: x\n", 1, 1, "kafka: missing key \"brokers\"");
    expect_cfg_error("brokers: 127.0.0.1:1\nbatch: 0\n", 2, 8, "0 is out of range [1, 100000]");
    expect_cfg_error("brokers: 127.0.0.1:1\nproperties:\n  no.such.thing: 1\n", 3, 3,
                     "kafka: No such configuration property: \"no.such.thing\"");
    expect_cfg_error("brokers: 127.0.0.1:1\nproperties:\n  fetch.wait.max.ms: soon\n", 3, 3,
                     "kafka: Invalid value for configuration property \"fetch.wait.max.ms\"");
    expect_cfg_error("brokers: 127.0.0.1:1\nproperties:\n  enable.auto.offset.store: true\n", 3, 3,
                     "kafka.properties: \"enable.auto.offset.store\" is set by klaxon and cannot "
                     "be overridden");
    expect_cfg_error("- a\n", 1, 1, "kafka: expected a map");
    ev_loop_destroy(ev_default_loop(0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_unreachable_broker),
        cmocka_unit_test(test_exactly_once_and_commit),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_cooperative),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
