"""Alert delivery through the real binary with a spool directory: kx-broker, redis-server,
two real HTTP receivers (a pager for team secops, a chat for the others) and a file sink.

- A pager that hangs holds nothing else: every event is consumed, the file and the chat get
  their alerts, and the pager gets its own once it answers again.
- kill -9 while the pager fails: the alerts wait in the spool; a restart delivers each one
  to the pager exactly once, and events read again after the crash page nobody twice.
- A pager that refuses (400) dead-letters at once; `klaxon alerts dead` shows why and
  `klaxon alerts retry` has the running klaxon send them again.
"""
import json
import os
import subprocess
import urllib.request

from harness import (KLAXON, SRC, Broker, HookReceiver, Klaxon, RedisServer, check, free_port,
                     http_get, read_jsonl, run_tests, tmpdir, wait_for, write_config)
from test_run import AUTH, EXPECTED_ALL, N_AUTH, N_TRAIL, TRAIL, by_time

SECOPS = [a for a in EXPECTED_ALL if a[2] == "secops"]
OTHERS = [a for a in EXPECTED_ALL if a[2] != "secops"]


get = http_get


class Stack:
    def __init__(self, tag, pager_extra=", breaker_failures: 0"):
        self.d = tmpdir(tag)
        self.redis = RedisServer(self.d).start()
        self.broker = Broker({"auth": 3, "cloudtrail": 2}).start()
        self.pager = HookReceiver().start()
        self.chat = HookReceiver().start()
        self.alerts_file = os.path.join(self.d, "alerts.jsonl")
        self.spool = os.path.join(self.d, "spool")
        self.mport = free_port()
        # A pager timeout longer than the test holds it: no attempt is cut short.
        sinks = ("    file: {type: file, path: %s}\n"
                 "    pager: {type: webhook, url: \"http://127.0.0.1:%d/pd?token=S3CRET-T0KEN\", timeout: 60s, "
                 "backoff: 100ms, backoff_max: 500ms%s}\n"
                 "    chat: {type: webhook, url: \"http://127.0.0.1:%d/chat\", backoff: 100ms}\n"
                 % (self.alerts_file, self.pager.port, pager_extra, self.chat.port))
        routes = ("    - team: secops\n      sinks: [file, pager]\n"
                  "    - team: default\n      sinks: [file, chat]\n")
        self.cfg = write_config(os.path.join(self.d, "klaxon.yaml"), self.broker.bootstrap,
                                "redis://127.0.0.1:%d/klaxon:" % self.redis.port, self.mport, sinks,
                                routes, alerting_extra="  spool: {dir: %s}\n" % self.spool)
        self.klaxon = None

    def start_klaxon(self):
        self.klaxon = Klaxon(self.cfg, os.path.join(self.d, "klaxon.log")).start()
        wait_for(lambda: self.klaxon.metrics(self.mport) is not None or not self.klaxon.alive(), 30,
                 "the metrics endpoint")
        check(self.klaxon.alive(), "klaxon exited at start: %s" % self.log())
        return self.klaxon

    def metric(self, name):
        m = self.klaxon.metrics(self.mport) or {}
        return m.get(name, -1)

    def log(self):
        p = os.path.join(self.d, "klaxon.log")
        return open(p, errors="replace").read()[-4000:] if os.path.exists(p) else ""

    def produce_all(self):
        self.broker.produce("auth", AUTH, partition=0)
        self.broker.produce("cloudtrail", TRAIL)

    def close(self):
        if self.klaxon and self.klaxon.alive():
            self.klaxon.stop()
        self.pager.stop()
        self.chat.stop()
        self.broker.stop()
        self.redis.stop()


def alerts_cmd(*args):
    r = subprocess.run([KLAXON, "alerts"] + list(args), capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def keys(bodies):
    return sorted(b["dedup_key"] for b in bodies)


def test_hung_pager_holds_nothing_else():
    s = Stack("hung")
    try:
        s.pager.hold()
        s.start_klaxon()
        s.produce_all()
        # The stream, the file and the chat go on while every pager request hangs.
        wait_for(lambda: s.metric("klaxon_events_consumed_total") == N_AUTH + N_TRAIL, 60,
                 "every event consumed while the pager hangs")
        wait_for(lambda: len(read_jsonl(s.alerts_file)) >= len(EXPECTED_ALL), 60,
                 "every alert in the file while the pager hangs")
        wait_for(lambda: len(s.chat.bodies) >= len(OTHERS), 60, "the chat's alerts")
        # The pager's request may still be on its way (its own connection and retry timer):
        # wait for it rather than race it.
        wait_for(lambda: s.pager.requests >= 1, 30, "a pager request while it hangs")
        check(s.pager.bodies == [], "the pager answered while held")
        # The file acknowledges at its next group fdatasync (50 ms at most).
        wait_for(lambda: s.metric("klaxon_spool_pending_alerts") == len(SECOPS), 10,
                 "only the pager's alerts left in the spool")
        # What waits, seen by the operator beside the running klaxon.
        rc, out, err = alerts_cmd("list", "-c", s.cfg, "--json")
        check(rc == 0, "alerts list: %s" % err)
        listed = [json.loads(l) for l in out.splitlines()]
        check(len(listed) == len(SECOPS) and all(a["pending"] == ["pager"] and a["team"] == "secops"
                                                 for a in listed), "alerts list: %s" % out)
        rc, out, err = alerts_cmd("list", "-c", s.cfg)
        check(rc == 0 and out.startswith("SEQ ") and "%d alert(s) waiting" % len(SECOPS) in out,
              "alerts list table: %s" % out)
        s.pager.release()
        wait_for(lambda: len(s.pager.bodies) >= len(SECOPS), 60, "the pager's alerts after it answers")
        wait_for(lambda: s.metric("klaxon_spool_pending_alerts") == 0, 30, "an empty spool")
        check(s.klaxon.stop() == 0, "exit code")
        check(by_time(read_jsonl(s.alerts_file)) == EXPECTED_ALL, "file sink alerts")
        check(by_time(s.chat.bodies) == OTHERS, "chat alerts: %s" % by_time(s.chat.bodies))
        check(by_time(s.pager.bodies) == SECOPS, "pager alerts: %s" % by_time(s.pager.bodies))
        check(len(s.pager.bodies) == len(SECOPS), "pager got duplicates")
    finally:
        s.close()


def test_kill9_then_restart_delivers_once():
    s = Stack("kill9")
    try:
        s.pager.fail_next = 10 ** 9
        s.start_klaxon()
        s.produce_all()
        wait_for(lambda: s.metric("klaxon_events_consumed_total") == N_AUTH + N_TRAIL, 60, "all consumed")
        wait_for(lambda: len(read_jsonl(s.alerts_file)) >= len(EXPECTED_ALL), 60, "alerts in the file")
        wait_for(lambda: s.metric("klaxon_spool_pending_alerts") == len(SECOPS), 30,
                 "the pager's alerts waiting in the spool")
        check(s.pager.bodies == [], "pager accepted while failing")
        s.klaxon.kill9()
        segs = [f for f in os.listdir(s.spool) if f.endswith(".seg")]
        check(segs, "no spool segment after the crash")
        with s.pager.lock:
            s.pager.fail_next = 0
        s.start_klaxon()
        wait_for(lambda: len(s.pager.bodies) >= len(SECOPS), 60, "the pager's alerts after restart")
        # Events read again (their offsets may not have been committed before the kill) raise
        # the same alerts again: the spool's keep them from paging twice.
        wait_for(lambda: s.metric("klaxon_spool_pending_alerts") == 0, 30, "an empty spool")
        check(s.klaxon.stop() == 0, "exit code")
        check(keys(s.pager.bodies) == sorted(set(keys(s.pager.bodies))),
              "an incident paged twice: %s" % keys(s.pager.bodies))
        check(by_time(s.pager.bodies) == SECOPS, "pager alerts: %s" % by_time(s.pager.bodies))
        got = set(map(repr, by_time(read_jsonl(s.alerts_file))))
        check(got == set(map(repr, EXPECTED_ALL)), "file sink alerts: %s" % got)
        check("queued again" in s.log(), "no read-back logged: %s" % s.log())
        check([f for f in os.listdir(s.spool) if f.endswith(".seg")] == [],
              "segments left after everything was delivered")
    finally:
        s.close()


def test_two_processes_one_page():
    """Two klaxon processes read the same events (two consumer groups, one Redis): every
    incident raised by both reaches the pager once, claimed by one and seen as delivered by
    the other."""
    s = Stack("twoproc")
    other = None
    try:
        s.pager.hold()
        s.start_klaxon()
        cfg2 = os.path.join(s.d, "klaxon2.yaml")
        port2 = free_port()
        text = open(s.cfg).read()
        text = text.replace(s.spool, s.spool + "2").replace(s.alerts_file, s.alerts_file + "2")
        text = text.replace("127.0.0.1:%d\n" % s.mport, "127.0.0.1:%d\n" % port2)
        text = text.replace("group: klaxon-test", "group: klaxon-test-2")
        open(cfg2, "w").write(text)
        other = Klaxon(cfg2, os.path.join(s.d, "klaxon2.log")).start()
        wait_for(lambda: other.metrics(port2) is not None or not other.alive(), 30, "the second klaxon")
        s.produce_all()
        total = N_AUTH + N_TRAIL
        wait_for(lambda: s.metric("klaxon_events_consumed_total") == total and
                 (other.metrics(port2) or {}).get("klaxon_events_consumed_total") == total, 60,
                 "every event consumed by both")
        s.pager.release()

        def claims(m, outcome):
            return (m or {}).get('klaxon_sink_claims_total{sink="pager",outcome="%s"}' % outcome, 0)

        def settled():
            m1, m2 = s.klaxon.metrics(s.mport), other.metrics(port2)
            return (m1 or {}).get("klaxon_spool_pending_alerts") == 0 and \
                (m2 or {}).get("klaxon_spool_pending_alerts") == 0
        wait_for(settled, 60, "both spools empty")
        m1, m2 = s.klaxon.metrics(s.mport), other.metrics(port2)
        check(s.klaxon.stop() == 0, "exit code")
        check(other.stop() == 0, "exit code of the second")
        check(keys(s.pager.bodies) == sorted(set(keys(s.pager.bodies))),
              "an incident paged twice: %s" % keys(s.pager.bodies))
        check(by_time(s.pager.bodies) == SECOPS, "pager alerts: %s" % by_time(s.pager.bodies))
        taken = claims(m1, "taken") + claims(m2, "taken")
        skipped = claims(m1, "delivered_elsewhere") + claims(m2, "delivered_elsewhere")
        check(taken == len(SECOPS), "claims taken: %s + %s" % (claims(m1, "taken"), claims(m2, "taken")))
        raised1 = len([a for a in read_jsonl(s.alerts_file) if a["team"] == "secops"])
        raised2 = len([a for a in read_jsonl(s.alerts_file + "2") if a["team"] == "secops"])
        check(skipped == raised1 + raised2 - len(SECOPS),
              "skipped %d, raised %d + %d" % (skipped, raised1, raised2))
        check(skipped > 0, "the second process raised no pager alert the first had")
    finally:
        if other and other.alive():
            other.stop()
        s.close()


def test_refused_dead_letter_then_retry():
    s = Stack("retry")
    try:
        # The pager's key was revoked: 400 for every secops alert, not retried.
        s.pager.fail_next = 10 ** 9
        s.pager.fail_status = 400
        s.start_klaxon()
        s.produce_all()
        wait_for(lambda: s.metric("klaxon_alerts_failed_total") == len(SECOPS), 60,
                 "the pager's alerts dead-lettered")
        check(s.pager.requests == len(SECOPS), "a 400 was retried: %d requests" % s.pager.requests)
        rc, out, err = alerts_cmd("dead", "-c", s.cfg, "--json")
        check(rc == 0, "alerts dead: %s" % err)
        dead = [json.loads(l) for l in out.splitlines()]
        check(len(dead) == len(SECOPS), "dead letters: %s" % out)
        check(all(d["sink"] == "pager" and d["reason"] == "refused, not retried" and d["status"] == 400
                  and d["attempts"] == 1 and d["error"] == "HTTP 400" for d in dead), "dead: %s" % out)
        # The key is fixed; the operator sends them again; the running klaxon takes them.
        with s.pager.lock:
            s.pager.fail_next = 0
        rc, out, err = alerts_cmd("retry", "-c", s.cfg, "--sink", "pager")
        check(rc == 0 and out.startswith("%d dead letter(s) requeued" % len(SECOPS)), "retry: %s %s" % (out, err))
        wait_for(lambda: len(s.pager.bodies) >= len(SECOPS), 30, "the requeued alerts at the pager")
        check(by_time(s.pager.bodies) == SECOPS, "requeued alerts: %s" % by_time(s.pager.bodies))
        rc, out, err = alerts_cmd("dead", "-c", s.cfg)
        check(rc == 0 and "0 dead letter(s)" in out, "dead letters left: %s" % out)
        wait_for(lambda: os.listdir(os.path.join(s.spool, "requeue")) == [], 30, "the requeue file taken")
        check(s.klaxon.stop() == 0, "exit code")
    finally:
        s.close()


def test_health_and_metrics():
    s = Stack("health", pager_extra=", breaker_failures: 2")
    try:
        s.pager.fail_next = 10 ** 9
        s.start_klaxon()
        wait_for(lambda: get(s.mport, "/healthz")[0] == 200, 30, "healthy at start")
        check(get(s.mport, "/readyz") == (200, "ok\n"), "readyz at start")
        s.produce_all()
        wait_for(lambda: len(read_jsonl(s.alerts_file)) >= len(EXPECTED_ALL), 60, "alerts in the file")
        # The pager fails: its circuit opens, /healthz says so; /readyz does not care.
        wait_for(lambda: "sink pager: circuit open" in get(s.mport, "/healthz")[1], 30, "the open circuit")
        check(get(s.mport, "/healthz")[0] == 503, "healthz status with the circuit open")
        check(get(s.mport, "/readyz") == (200, "ok\n"), "readyz with a sink down")
        wait_for(lambda: len(s.chat.bodies) >= len(OTHERS), 30, "the chat's alerts")
        wait_for(lambda: s.metric('klaxon_sink_delivered_total{sink="file",type="file"}') == len(EXPECTED_ALL),
                 10, "the file's acknowledgements")
        m = s.klaxon.metrics(s.mport)
        check(m.get('klaxon_sink_delivered_total{sink="file",type="file"}') == len(EXPECTED_ALL),
              "file delivered: %s" % m.get('klaxon_sink_delivered_total{sink="file",type="file"}'))
        check(m.get('klaxon_sink_delivered_total{sink="chat",type="webhook"}') == len(OTHERS), "chat delivered")
        check(m.get('klaxon_sink_delivered_total{sink="pager",type="webhook"}') == 0, "pager delivered")
        check(m.get('klaxon_sink_retries_total{sink="pager",type="webhook"}', 0) >= 2, "pager retries")
        check(m.get('klaxon_sink_circuit_open{sink="pager",type="webhook"}') == 1, "pager circuit gauge")
        check(m.get('klaxon_sink_queue_depth{sink="pager",type="webhook"}') == len(SECOPS), "pager queue depth")
        check(m.get('klaxon_sink_delivery_seconds_count{sink="chat"}') == len(OTHERS), "chat latency count")
        check(m.get('klaxon_sink_delivery_seconds_bucket{sink="chat",le="+Inf"}') == len(OTHERS), "chat +Inf bucket")
        check(m.get('klaxon_build_info{version="0.1.0"}') == 1, "build info")
        check('klaxon_detection_matches_total' in m and 'klaxon_rule_matches_total' not in m,
              "the aggregate and per-rule families must not clash")
        wait_for(lambda: any(k.startswith("klaxon_kafka_consumer_lag{") for k in (s.klaxon.metrics(s.mport) or {})),
                 30, "consumer lag from the statistics")
        # The broker goes away: /healthz turns red and says why.
        s.broker.stop()
        wait_for(lambda: "kafka: no broker reachable" in get(s.mport, "/healthz")[1], 60,
                 "healthz to notice the broker is gone")
        check(get(s.mport, "/healthz")[0] == 503, "healthz status without a broker")
        check(s.klaxon.alive(), "klaxon died without its broker")
        # The pager's URL holds a token: never in the log, the metrics or the dead letters.
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % s.mport, timeout=5).read().decode()
        check("S3CRET-T0KEN" not in text, "the pager's token is in /metrics")
        whole = open(os.path.join(s.d, "klaxon.log"), errors="replace").read()
        check("S3CRET-T0KEN" not in whole and "sink pager" in whole, "the pager's token is in the log")
        rc = s.klaxon.stop(timeout=40)
        check(rc in (0, 1), "exit code without a broker: %s" % rc)
    finally:
        s.close()


def test_config_check_and_route():
    s = Stack("check")
    try:
        r = subprocess.run([KLAXON, "config", "check", s.cfg], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and r.stdout.startswith("ok: %s: 19 rules, 2 inputs, 3 sinks, 2 routes" % s.cfg),
              "config check: %r %r" % (r.stdout, r.stderr))
        check(not os.path.exists(s.alerts_file), "config check created the alert file")
        check(not os.path.exists(s.spool), "config check created the spool")
        # A mistake in the routing table: refused with file:line:col, nothing started.
        bad = os.path.join(s.d, "bad.yaml")
        text = open(s.cfg).read().replace("    - team: default\n", "    - default: yes\n      when: {timezone: UTC}\n")
        open(bad, "w").write(text)
        line = text.splitlines().index("      when: {timezone: UTC}") + 1
        r = subprocess.run([KLAXON, "config", "check", bad], capture_output=True, text=True, timeout=60)
        check(r.returncode == 2 and r.stderr.strip() == "klaxon: %s:%d:13: route: the default route applies always" % (bad, line),
              "bad config: %r" % r.stderr)
        # Where alerts go.
        alert = {"rule": {"id": "x", "title": "t", "level": "high"}, "team": "secops", "severity": "error",
                 "tenant": "acme", "dedup_key": "0" * 32, "tags": []}
        other = dict(alert, team="netops")
        r = subprocess.run([KLAXON, "route", "-c", s.cfg], input=json.dumps(alert) + "\n" + json.dumps(other) + "\n",
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "route: %r" % r.stderr)
        lines = r.stdout.splitlines()
        check(lines[0] == "alert %s, rule x: team secops, severity error, tenant acme, status firing" % ("0" * 32)
              and lines[1].startswith("  route 1 (%s:" % s.cfg) and lines[2] == "  sinks: file, pager"
              and lines[4].startswith("  route 2 (") and lines[4].endswith(", the default: no other route took it")
              and lines[5] == "  sinks: file, chat", "route output:\n%s" % r.stdout)
    finally:
        s.close()


def test_resolve_auto_at_the_pager():
    """`resolve: auto` through `klaxon run` to a PagerDuty sink: a burst of failures
    triggers an incident; once a later event moves the watermark a timespan past the last
    time the condition held, the same dedup_key is resolved. Redis keeps the windows."""
    import time as _time
    d = tmpdir("resolve")
    redis = RedisServer(d).start()
    broker = Broker({"auth": 1, "cloudtrail": 1}).start()
    pd = HookReceiver().start()
    k = None
    try:
        mport = free_port()
        sinks = ("    pd: {type: pagerduty, routing_key: R0UTING-KEY, url: \"http://127.0.0.1:%d/v2/enqueue\", "
                 "backoff: 100ms}\n" % pd.port)
        cfg = write_config(os.path.join(d, "klaxon.yaml"), broker.bootstrap,
                           "redis://127.0.0.1:%d/kxres:" % redis.port, mport, sinks,
                           "    - default: true\n      sinks: [pd]\n",
                           rules=[os.path.join(SRC, "tests", "fixtures", "correlations", "16_resolve", "rules.yml")])
        k = Klaxon(cfg, os.path.join(d, "klaxon.log")).start()
        wait_for(lambda: k.metrics(mport) is not None or not k.alive(), 30, "the metrics endpoint")
        check(k.alive(), "klaxon exited at start")
        # Event times a few minutes ago (CloudTrail's eventTime): failures at +0, +10, +20 s
        # cross (gte 3 in 1m), +30 s keeps the condition met.
        t0 = (int(_time.time()) - 600) * 1000

        def ev(dt_s, ip):
            t = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime((t0 + dt_s * 1000) // 1000)) + "Z"
            return json.dumps({"eventTime": t, "action": "login_failed", "src_ip": ip})
        burst = "\n".join(ev(s_, "198.51.100.1") for s_ in (0, 10, 20, 30)) + "\n"
        broker.produce("cloudtrail", data=burst.encode())
        wait_for(lambda: len(pd.bodies) >= 1, 30, "the trigger")
        trig = pd.bodies[0]
        check(trig["event_action"] == "trigger" and trig["routing_key"] == "R0UTING-KEY" and
              trig["payload"]["severity"] == "error", "trigger: %s" % trig)
        # Another source, 3 minutes later: the watermark (newest - lateness 1m) passes 30 s +
        # the timespan; the incident is resolved (if the partition's quiet time has not done it
        # already).
        broker.produce("cloudtrail", data=(ev(180, "198.51.100.9") + "\n").encode())
        wait_for(lambda: len(pd.bodies) >= 2, 30, "the resolve")
        _time.sleep(0.5)
        check(len(pd.bodies) == 2, "one trigger and one resolve: %s" % pd.bodies)
        res = pd.bodies[1]
        check(res == {"routing_key": "R0UTING-KEY", "event_action": "resolve", "dedup_key": trig["dedup_key"]},
              "resolve: %s (trigger %s)" % (res, trig))
        check(k.stop() == 0, "exit code")
        check("R0UTING-KEY" not in open(os.path.join(d, "klaxon.log"), errors="replace").read(),
              "the routing key in the log")
    finally:
        if k and k.alive():
            k.stop()
        pd.stop()
        broker.stop()
        redis.stop()


def test_deploy_config_checks():
    """The shipped production config is valid (paths and secrets pointed at a temp dir)."""
    d = tmpdir("deploy")
    text = open(os.path.join(SRC, "deploy", "klaxon.yaml")).read()
    for a, b in (("/etc/klaxon/rules", os.path.join(SRC, "rules")),
                 ("/etc/klaxon/decoders", os.path.join(SRC, "decoders")), ("/var/lib/klaxon", d),
                 ("/var/log/klaxon", d), ("/etc/klaxon", d)):
        text = text.replace(a, b)
    cfg = os.path.join(d, "klaxon.yaml")
    open(cfg, "w").write(text)
    for name in ("kafka-password", "slack-webhook-url", "redis-password"):
        open(os.path.join(d, name), "w").write("https://hooks.example/x\n")
    env = dict(os.environ, PD_KEY_SECOPS="k1", PD_KEY_CLOUD="k2", SOAR_HMAC_KEY="k3")
    r = subprocess.run([KLAXON, "config", "check", cfg], capture_output=True, text=True, env=env,
                       timeout=60)
    check(r.returncode == 0 and "7 sinks, 6 routes" in r.stdout, "deploy config: %r %r" % (r.stdout, r.stderr))
    check(not os.path.exists(os.path.join(d, "alerts.jsonl")), "config check created a file")
    del env["PD_KEY_SECOPS"]
    r = subprocess.run([KLAXON, "config", "check", cfg], capture_output=True, text=True, env=env,
                       timeout=60)
    check(r.returncode == 2 and "environment variable PD_KEY_SECOPS is not set" in r.stderr,
          "missing secret: %r" % r.stderr)


if __name__ == "__main__":
    run_tests([test_hung_pager_holds_nothing_else, test_kill9_then_restart_delivers_once,
               test_two_processes_one_page,
               test_refused_dead_letter_then_retry, test_health_and_metrics,
               test_config_check_and_route, test_resolve_auto_at_the_pager, test_deploy_config_checks])
