"""State limits through the real binary: a correlation's max_groups refuses new groups past
the cap (logged, the existing groups keep alerting), and an event later than the rule's
lateness is not counted and is logged, while one within it completes its window."""
import json
import os

from harness import alerts_of, check, replay, run_tests, tmpdir

RULES = """title: Failed logins from one source
id: corr-limits
correlation:
    type: event_count
    rules: [failed]
    group-by: [src_ip]
    timespan: 1m
    condition: {gte: 3}
    max_groups: 2
    lateness: 0s
---
title: Failed login
name: failed
logsource: {product: test}
detection:
    s: {outcome: failure}
    condition: s
"""


def ev(t, ip):
    # t: seconds after 2026-03-10T10:00:00Z
    return json.dumps({"@timestamp": "2026-03-10T10:%02d:%02dZ" % (t // 60, t % 60),
                       "outcome": "failure", "src_ip": ip})


def write(tag, events):
    d = tmpdir(tag)
    rules = os.path.join(d, "rules.yml")
    with open(rules, "w") as f:
        f.write(RULES)
    data = os.path.join(d, "events.jsonl")
    with open(data, "w") as f:
        f.write("\n".join(events) + "\n")
    cfg = os.path.join(d, "klaxon.yaml")
    with open(cfg, "w") as f:
        f.write("inputs:\n  - format: json\n    time_field: \"@timestamp\"\n"
                "    logsource: {product: test}\n")
    return rules, data, cfg


def degraded(alerts):
    return [a for a in alerts if a["category"] == "detection-degraded"]


def detections(alerts):
    return [a for a in alerts if a["category"] != "detection-degraded"]


def test_max_groups():
    # Three sources take turns, three failures each within a minute (need 3), max_groups 2.
    # The third source cannot make room: the first two are as active as it, then close to
    # firing. They alert; the third is refused (logged), and the rule's team is told once.
    events = [ev(0, "10.0.0.1"), ev(1, "10.0.0.2"), ev(2, "10.0.0.3"),
              ev(3, "10.0.0.1"), ev(4, "10.0.0.2"), ev(5, "10.0.0.3"),
              ev(6, "10.0.0.1"), ev(7, "10.0.0.2"), ev(8, "10.0.0.3")]
    rules, data, cfg = write("maxgroups", events)
    r = replay(["-c", cfg, "-r", rules, data])
    err = r.stderr.decode()
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, err))
    alerts = alerts_of(r.stdout.decode())
    groups = sorted(a["group"]["src_ip"] for a in detections(alerts))
    check(groups == ["10.0.0.1", "10.0.0.2"], "alerted groups: %r" % groups)
    check(all(a["count"] == 3 for a in detections(alerts)), "counts: %r" % [a["count"] for a in alerts])
    check("rule corr-limits, tenant default: 2 groups are active (max_groups) and none may make room" in err,
          "no cap log line in: %s" % err)
    d = degraded(alerts)
    check(len(d) == 1, "degraded alerts: %r" % d)
    d = d[0]
    check(d["rule"]["id"] == "corr-limits" and d["rule"]["title"] == "Detection degraded: Failed logins from one source"
          and d["tenant"] == "default" and d["group"] == {"max_groups": "2"} and d["count"] == 1 and
          d["status"] == "firing" and "1 new groups were refused" in d["description"],
          "degraded alert: %s" % d)


def write_rules(tag, events, rules_text, cfg_extra=""):
    rules, data, cfg = write(tag, events)
    with open(rules, "w") as f:
        f.write(rules_text)
    with open(cfg, "a") as f:
        f.write(cfg_extra)
    return rules, data, cfg


BRUTE = RULES.replace("    condition: {gte: 3}\n    max_groups: 2\n    lateness: 0s\n",
                      "    condition: {gte: 5}\n    max_groups: 100\n")


def test_flood_then_attack():
    # 1,000 sources fail once each (noise, 10:00:00-10:00:16), then one source fails five
    # times (10:01:00-10:01:04). max_groups 100: the idle noise makes room; the attack alerts.
    noise = [json.dumps({"@timestamp": "2026-03-10T10:00:%02d.%03dZ" % (i // 60, (i % 60) * 16),
                         "outcome": "failure", "src_ip": "10.1.%d.%d" % (i // 250, i % 250)})
             for i in range(1000)]
    attack = [ev(60 + i, "203.0.113.66") for i in range(5)]
    rules, data, cfg = write_rules("flood", noise + attack, BRUTE)
    r = replay(["-c", cfg, "-r", rules, data])
    err = r.stderr.decode()
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, err))
    alerts = alerts_of(r.stdout.decode())
    got = [(a["group"]["src_ip"], a["count"]) for a in detections(alerts)]
    check(got == [("203.0.113.66", 5)], "alerts: %r" % got)
    d = degraded(alerts)
    check(len(d) == 1 and d[0]["count"] >= 1 and "groups far from the threshold were dropped" in d[0]["description"],
          "degraded alert: %r" % d)
    check("the group furthest from the threshold was dropped for a new one" in err, "no eviction log: %s" % err)


def test_tenants_apart():
    # Tenant noisy fills the rule's 100 groups with sources close to firing (3 of 5 failures
    # each); its own new source is refused. Tenant quiet's attack is not affected.
    def tev(t, ip, tenant):
        d = json.loads(ev(t, ip))
        d["tenant"] = tenant
        return json.dumps(d)
    events = []
    for k in range(3):
        events += [tev(k, "10.2.0.%d" % i, "noisy") for i in range(100)]
    events += [tev(10 + i, "198.51.100.1", "noisy") for i in range(5)]
    events += [tev(10 + i, "198.51.100.1", "quiet") for i in range(5)]
    rules, data, cfg = write_rules("tenants", events, BRUTE)
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(text.replace("    logsource: {product: test}\n", "    logsource: {product: test}\n    tenant_field: tenant\n"))
    r = replay(["-c", cfg, "-r", rules, data])
    err = r.stderr.decode()
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, err))
    alerts = alerts_of(r.stdout.decode())
    got = sorted((a["tenant"], a["group"]["src_ip"]) for a in detections(alerts))
    check(got == [("quiet", "198.51.100.1")], "alerts: %r" % got)
    d = degraded(alerts)
    check([a["tenant"] for a in d] == ["noisy"], "degraded alerts: %r" % d)


def test_max_keys():
    # state.max_keys caps the memory store's live keys (one per group here): with 2, the third
    # source's window is never kept; each of its events is logged as not counted.
    events = [ev(0, "10.0.0.1"), ev(1, "10.0.0.2"), ev(2, "10.0.0.3"),
              ev(3, "10.0.0.1"), ev(4, "10.0.0.2"), ev(5, "10.0.0.3"),
              ev(6, "10.0.0.1"), ev(7, "10.0.0.2"), ev(8, "10.0.0.3")]
    rules, data, cfg = write("maxkeys", events)
    with open(rules, "w") as f:
        f.write(RULES.replace("    max_groups: 2\n", ""))
    with open(cfg, "a") as f:
        f.write("state:\n  store: memory\n  max_keys: 2\n")
    r = replay(["-c", cfg, "-r", rules, data])
    err = r.stderr.decode()
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, err))
    groups = sorted(a["group"]["src_ip"] for a in alerts_of(r.stdout.decode()))
    check(groups == ["10.0.0.1", "10.0.0.2"], "alerted groups: %r" % groups)
    check("rule corr-limits: state key cap reached, event not counted" in err,
          "no cap log line in: %s" % err)


def test_lateness():
    # lateness 0s: the key keeps events back to (newest - 1m). 10.0.0.9 fails at 0:10 and
    # 2:00; an event at 0:30 arrives after the one at 2:00: 0:30 < 2:00 - 1:00, so it is late
    # beyond the limit: not counted, logged. Then 2:05 and 2:10 make three within [1:10, 2:10].
    events = [ev(10, "10.0.0.9"), ev(120, "10.0.0.9"), ev(30, "10.0.0.9"),
              ev(125, "10.0.0.9"), ev(130, "10.0.0.9")]
    rules, data, cfg = write("late", events)
    r = replay(["-c", cfg, "-r", rules, data])
    err = r.stderr.decode()
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, err))
    alerts = alerts_of(r.stdout.decode())
    check(len(alerts) == 1, "alerts: %r" % alerts)
    check(alerts[0]["first_seen"] == "2026-03-10T10:02:00.000Z", alerts[0]["first_seen"])
    check(alerts[0]["last_seen"] == "2026-03-10T10:02:10.000Z", alerts[0]["last_seen"])
    check(alerts[0]["count"] == 3, alerts[0]["count"])
    check("rule corr-limits: event at 2026-03-10T10:00:30.000Z is later than the allowed "
          "lateness for its group (0s after its window): not counted" in err,
          "no late log line in: %s" % err)
    # Within the lateness: the same event 40 s late (1:30 >= 2:00 - 1:00) is counted and
    # completes [1:30, 2:00] with 1:30, 2:00 ... only two: no alert until 2:05 makes three
    # in [1:05, 2:05].
    events = [ev(10, "10.0.0.9"), ev(120, "10.0.0.9"), ev(90, "10.0.0.9"), ev(125, "10.0.0.9")]
    rules, data, cfg = write("late2", events)
    r = replay(["-c", cfg, "-r", rules, data])
    alerts = alerts_of(r.stdout.decode())
    check(len(alerts) == 1, "alerts: %r" % alerts)
    check(alerts[0]["first_seen"] == "2026-03-10T10:01:30.000Z", alerts[0]["first_seen"])
    check(alerts[0]["last_seen"] == "2026-03-10T10:02:05.000Z", alerts[0]["last_seen"])
    check("later than the allowed lateness" not in r.stderr.decode(), r.stderr.decode())


if __name__ == "__main__":
    run_tests([test_max_groups, test_flood_then_attack, test_tenants_apart, test_max_keys, test_lateness])
