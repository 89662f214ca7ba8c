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


def test_max_groups():
    # Three sources, three failures each within a minute. Only the first two sources to appear
    # are admitted (max_groups: 2); the third is refused, logged, and raises nothing.
    events = [ev(0, "10.0.0.1"), ev(1, "10.0.0.2"), ev(2, "10.0.0.3"),
              ev(3, "10.0.0.1"), ev(4, "10.0.0.2"), ev(5, "10.0.0.3"),
              ev(6, "10.0.0.1"), ev(7, "10.0.0.2"), ev(8, "10.0.0.3")]
    rules, data, cfg = write("maxgroups", events)
    r = replay(["-c", cfg, "-r", rules, data])
    err = r.stderr.decode()
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, err))
    alerts = alerts_of(r.stdout.decode())
    groups = sorted(a["group"]["src_ip"] for a in alerts)
    check(groups == ["10.0.0.1", "10.0.0.2"], "alerted groups: %r" % groups)
    check(all(a["count"] == 3 for a in alerts), "counts: %r" % [a["count"] for a in alerts])
    check("rule corr-limits: 2 groups are active (max_groups): a new group is not counted" in err,
          "no cap log line in: %s" % err)


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
    run_tests([test_max_groups, test_max_keys, test_lateness])
