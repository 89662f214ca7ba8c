"""Correlation rules of every Sigma type through the real binary: `klaxon replay` over small
timestamped fixtures (tests/fixtures/correlations/), with the memory store, a real
redis-server and a real Redis Cluster of three masters, each checked against alerts worked
out by hand, and the three against each other.

Semantics under test (docs/rules.md, klaxon/store.h): windows are [e - timespan, e] on event
time, both ends inclusive; an alert fires when an added event makes a window satisfy the
condition (it holds with the event and not without it); a late event completes the window
it belongs to; a crossing window that overlaps [last alerted first_seen, last alerted
last_seen + suppress] is passed over (suppress defaults to the timespan); an event older
than (newest of its group - (timespan + lateness)) is not counted. count = events in the
crossed window, first_seen/last_seen = its first and last event times, value = the
aggregate (absent for event_count).

All times below are on 2026-05-04 (UTC); "10:00:30" means 2026-05-04T10:00:30.000Z.
"""
import json
import os
import shutil

from harness import SRC, RedisCluster, RedisServer, alerts_of, check, replay, run_tests, tmpdir

FIX = os.path.join(SRC, "tests", "fixtures", "correlations")
# "-log": the same Redis with state.windows: log (sliding windows as a log klaxon replays)
STORES = ("memory", "redis", "cluster", "redis-log", "cluster-log")
REDIS = None  # the RedisServer, started in main
CLUSTER = None  # a RedisCluster of three masters, started in main
_prefixes = [0]
LOGDIR = [None]  # where the "-log" stores' configs go (removed with the Redis dir)


def ts(hms):
    """'10:00:30' or '10:00:30.001' -> the alert time format."""
    if "." not in hms:
        hms += ".000"
    return "2026-05-04T%sZ" % hms


def fx(*parts):
    return os.path.join(FIX, *parts)


def run(store, rules, files, config=None, expect_rc=0):
    """Replays files through the rules; returns (alerts, raw stdout lines, stderr)."""
    args = ["--rules", rules, "--format", "json"]
    prefix = None
    if store.endswith("-log"):
        text = open(config).read() if config else ""
        _prefixes[0] += 1
        config = os.path.join(LOGDIR[0], "klaxon-log-%d.yaml" % _prefixes[0])
        with open(config, "w") as f:
            f.write(text + "\nstate:\n  windows: log\n")
        args += ["--config", config]
    elif config:
        args += ["--config", config]
    if store != "memory":
        # A fresh key prefix per replay: no state carries over from another run.
        _prefixes[0] += 1
        prefix = "kxct%d-%d:" % (os.getpid(), _prefixes[0])
        port = REDIS.port if store.startswith("redis") else CLUSTER.port
        args += ["--state", "redis://127.0.0.1:%d/%s" % (port, prefix)]
    r = replay(args + list(files), timeout=60)
    err = r.stderr.decode(errors="replace")
    check(r.returncode == expect_rc, "replay %s (%s) exit %d: %s" % (files, store, r.returncode, err[-2000:]))
    out = r.stdout.decode()
    lines = [l for l in out.splitlines() if l.strip()]
    if store.startswith("redis"):
        # The windows really were kept in Redis (not silently in memory).
        reply = REDIS.command("KEYS", prefix + "*")
        check(reply.startswith(b"*") and not reply.startswith(b"*0\r\n"),
              "no keys under %s in redis: %r" % (prefix, reply[:80]))
        if store == "redis-log" and not REDIS.command("KEYS", prefix + "*:l").startswith(b"*0\r\n"):
            LOGDIR.append(prefix)  # a window log was written
    else:
        check(store == "memory" or CLUSTER.keys(prefix + "*"), "no keys under %s in the cluster" % prefix)
    return alerts_of(out), lines, err


NOVALUE = "(no value)"


def summary(a):
    return (a["rule"]["id"], a["group"], a["count"], a.get("value", NOVALUE), a["first_seen"], a["last_seen"])


def sort_key(s):
    return (s[0], json.dumps(s[1], sort_keys=True), s[4], s[5])


def expect(alerts, want, what):
    got = sorted((summary(a) for a in alerts), key=sort_key)
    want = sorted(want, key=sort_key)
    check(len(alerts) == len(want) and got == want,
          "%s: %d alerts, want %d\n got  %s\n want %s" % (what, len(alerts), len(want), got, want))
    for a in alerts:
        check(len(a["dedup_key"]) == 32 and all(c in "0123456789abcdef" for c in a["dedup_key"]),
              "%s: dedup_key %r" % (what, a["dedup_key"]))


def same_alert(a):
    """An alert with its evidence as a sorted list: the store keeps evidence in the order
    updates reached it, and with Redis a chained correlation's alert reaches its parent after
    the events of the same batch (its update is issued from a store reply), so the two stores
    may list the same evidence in a different order."""
    b = dict(a)
    b["events"] = sorted(json.dumps(e, sort_keys=True) for e in a["events"])
    return b


def both_stores(rules, files, want, what, config=None):
    """Runs the replay on each store, checks the expected alerts, and checks the two stores
    gave the same alerts (every key, dedup_key and id included; the
    evidence as a set)."""
    outs = {}
    for store in STORES:
        alerts, lines, err = run(store, rules, files, config)
        expect(alerts, want, "%s [%s]" % (what, store))
        outs[store] = (alerts, lines, err)
    # Sorted: with Redis a correlation alert is written when the store replies, after the
    # single-event alerts of later events in the same batch.
    mem = sorted((same_alert(a) for a in outs["memory"][0]), key=lambda b: sort_key(summary(b)))
    for store in STORES[1:]:
        red = sorted((same_alert(a) for a in outs[store][0]), key=lambda b: sort_key(summary(b)))
        check(mem == red, "%s: memory and %s alerts differ\n memory %s\n %s  %s" % (what, store, mem, store, red))
    return outs


# ---- 1. event_count window edges ----

EDGES = [
    # 192.0.2.1: failures at 10:00:00, 10:00:30, 10:01:00. The window ending at 10:01:00 is
    # [10:00:00, 10:01:00], both ends inclusive: 3 events, exactly a timespan apart -> fires
    # on the third, count 3.
    ("corr-edges", {"src_ip": "192.0.2.1"}, 3, NOVALUE, ts("10:00:00"), ts("10:01:00")),
    # 192.0.2.2: failures at 10:00:00 and 10:00:30 and a login_ok (no match): N-1 = 2 -> none.
    # 192.0.2.3: 10:00:00, 10:00:30, 10:01:00.001: the window ending at 10:01:00.001 starts at
    # 10:00:00.001, so it holds 2 -> none (spread over timespan + 1 ms).
]


def test_window_edges():
    both_stores(fx("01_window_edges", "rules.yml"), [fx("01_window_edges", "events.jsonl")], EDGES,
                "window edges")


# ---- 2. event_count out of order ----

def test_out_of_order():
    # Events (one src_ip) at 10:04:00, 10:05:00, 10:05:20, 10:05:40, 10:06:30; gte 3 in 1m.
    # Windows [e - 1m, e]: ending 10:04:00 -> {10:04:00} 1; 10:05:00 -> {10:04:00, 10:05:00} 2;
    # 10:05:20 -> [10:04:20, 10:05:20] = {10:05:00, 10:05:20} 2; 10:05:40 -> [10:04:40,
    # 10:05:40] = {10:05:00, 10:05:20, 10:05:40} 3; 10:06:30 -> [10:05:30, 10:06:30] =
    # {10:05:40, 10:06:30} 2. Only one window ever holds 3, so whatever the arrival order the
    # last of its three events completes it: one alert, 10:05:00-10:05:40, count 3, and the
    # same dedup_key (rule, group, window start). (lateness 5m: nothing is refused as late.)
    want = [("corr-ooo", {"src_ip": "198.51.100.9"}, 3, NOVALUE, ts("10:05:00"), ts("10:05:40"))]
    rules = fx("02_out_of_order", "rules.yml")
    seen = {}
    for name in ("in_order", "reversed", "shuffled"):
        outs = both_stores(rules, [fx("02_out_of_order", name + ".jsonl")], want, "out of order: " + name)
        a = outs["memory"][0][0]
        seen[name] = (a["dedup_key"], a["id"])
    check(len(set(seen.values())) == 1, "dedup_key/id differ between arrival orders: %s" % seen)


# ---- 3. late beyond the allowed lateness ----

def test_late_events():
    # h1 arrives 10:08:30, 10:10:00, then 10:08:59.999.
    #  corr-late0 (timespan 1m, lateness 0s): the key keeps 1m behind its newest event
    #   (10:10:00), so 10:08:59.999 < 10:09:00 is late: not counted, logged. No h1 alert
    #   (10:08:30 was pruned anyway when 10:10:00 came: older than 10:09:00).
    #  corr-late2m (lateness 2m): the key keeps 3m: 10:08:59.999 >= 10:07:00 is counted, and it
    #   completes [10:07:59.999, 10:08:59.999] = {10:08:30, 10:08:59.999}: count 2.
    # h2 arrives 10:10:00 then 10:09:00.000, exactly newest - timespan: not late for either
    #   rule; the window ending 10:10:00 is [10:09:00, 10:10:00] = 2 events: both rules fire.
    want = [
        ("corr-late0", {"host": "h2"}, 2, NOVALUE, ts("10:09:00"), ts("10:10:00")),
        ("corr-late2m", {"host": "h1"}, 2, NOVALUE, ts("10:08:30"), ts("10:08:59.999")),
        ("corr-late2m", {"host": "h2"}, 2, NOVALUE, ts("10:09:00"), ts("10:10:00")),
    ]
    outs = both_stores(fx("03_late", "rules.yml"), [fx("03_late", "events.jsonl")], want, "late")
    for store in STORES:
        err = outs[store][2]
        check("rule corr-late0: event at 2026-05-04T10:08:59.999Z is later than the allowed lateness" in err,
              "late log line missing [%s]: %s" % (store, err[-2000:]))
        check("rule corr-late2m: event at" not in err, "corr-late2m logged a late event [%s]: %s" % (store, err))
        check(err.count("later than the allowed lateness") == 1, "late lines [%s]: %s" % (store, err))


# ---- 4. suppression ----

def test_suppress():
    # One failure every 30 s from 10:00:00 (k = 0..59, t_k = 30k s, last 10:29:30); gte 3 in
    # 1m. The window ending at t_k is [t_k - 60, t_k] = {t_k-2, t_k-1, t_k}: exactly 3, and 2
    # without t_k, so every event from k = 2 on crosses, window (30(k-2), 30k). A crossing is
    # passed over when first <= last_alerted_last + suppress (and last >= last_alerted_first,
    # always true here).
    def alerts_for(rule, ks):
        def hms(s):
            return "10:%02d:%02d" % (s // 60, s % 60)
        return [(rule, {"src_ip": "203.0.113.50"}, 3, NOVALUE, ts(hms(30 * (k - 2))), ts(hms(30 * k)))
                for k in ks]
    # default suppress = 1m: after (0, 60) the next first must be > 120 -> k = 7 (150, 210);
    # then > 270 -> k = 12; ... k = 2 + 5j <= 59: j = 0..11, 12 alerts.
    default = [2, 7, 12, 17, 22, 27, 32, 37, 42, 47, 52, 57]
    # suppress 10m: (0, 60), next first > 660 -> 30(k-2) > 660 -> k = 25 (690, 750); next
    # first > 1350 -> k = 48 (1380, 1440); next first > 2040 -> k = 71 > 59. 3 alerts.
    ten = [2, 25, 48]
    # suppress 0s: the next first must be > the previous last, 30k: 30(k'-2) > 30k -> k' = k + 3
    # (windows that do not overlap): k = 2, 5, ..., 59, 20 alerts.
    zero = list(range(2, 60, 3))
    check(len(default) == 12 and len(ten) == 3 and len(zero) == 20, "hand counts")
    want = alerts_for("corr-sup-default", default) + alerts_for("corr-sup-10m", ten) + \
        alerts_for("corr-sup-0", zero)
    outs = both_stores(fx("04_suppress", "rules.yml"), [fx("04_suppress", "events.jsonl")], want,
                       "suppress")
    # Each alert after the first says how many events kept the condition met since the one
    # before without raising one (absent when 0): every event between two alerts here.
    for store in STORES:
        for rule, ks in (("corr-sup-default", default), ("corr-sup-10m", ten), ("corr-sup-0", zero)):
            got = [a.get("suppressed", 0) for a in sorted(
                (a for a in outs[store][0] if a["rule"]["id"] == rule), key=lambda a: a["first_seen"])]
            wanted = [0] + [ks[i] - ks[i - 1] - 1 for i in range(1, len(ks))]
            check(got == wanted, "%s suppressed [%s]: %s, want %s" % (rule, store, got, wanted))


# ---- 5. value_count ----

SPRAY = [
    # 198.51.100.7: alice 10:00:00, bob 10:00:20, alice 10:00:40 (repeat), bob 10:01:00
    # (repeat), carol 10:01:20: distinct users 1, 2, 2, 2, 3 -> carol crosses gte 3 (without
    # her: 2). The window [09:56:20, 10:01:20] holds 5 events: count 5, value 3. dave 10:01:40
    # makes 4, but 3 without him already held: no second alert.
    ("corr-spray", {"src_ip": "198.51.100.7"}, 5, 3, ts("10:00:00"), ts("10:01:20")),
    # 198.51.100.8: alice four times -> 1 distinct. 198.51.100.9: alice, bob, bob -> 2. None.
]


def test_value_count():
    both_stores(fx("05_value_count", "rules.yml"), [fx("05_value_count", "events.jsonl")], SPRAY,
                "value_count")


# ---- 6. temporal and temporal_ordered, with aliases ----

TEMPORAL = [
    # rules: vpn_login (field user), role_granted admin (field account); alias who; 5m.
    # temporal (both rules, any order):
    #  eve: grant 10:00:00, vpn 10:01:00 -> 2 distinct at 10:01:00: count 2, value 2.
    ("corr-temporal", {"who": "eve"}, 2, 2, ts("10:00:00"), ts("10:01:00")),
    #  mallory: grant 10:00:00, vpn 10:01:00 -> fires at 10:01:00; the second grant 10:02:00
    #   holds without itself too: no second alert.
    ("corr-temporal", {"who": "mallory"}, 2, 2, ts("10:00:00"), ts("10:01:00")),
    #  trent: vpn 10:00:00, grant 10:03:00.
    ("corr-temporal", {"who": "trent"}, 2, 2, ts("10:00:00"), ts("10:03:00")),
    #  oscar: vpn 10:00:00, grant 10:05:00.001: [10:00:00.001, 10:05:00.001] misses the vpn.
    #  peggy: vpn 10:00:30 and a grant of role viewer (not matched).
    # temporal_ordered (vpn_login then role_granted):
    #  eve: grant then vpn: the reverse order, no vpn before a grant -> 1 of 2, none.
    #  mallory: grant 10:00:00, vpn 10:01:00, grant 10:02:00 -> in order at 10:02:00 (without
    #   it: 1). The window [09:57:00, 10:02:00] holds all three events: count 3, value 2.
    ("corr-ordered", {"who": "mallory"}, 3, 2, ts("10:00:00"), ts("10:02:00")),
    #  trent: vpn then grant.
    ("corr-ordered", {"who": "trent"}, 2, 2, ts("10:00:00"), ts("10:03:00")),
    #  oscar, peggy: none, as above.
]


def test_temporal():
    both_stores(fx("06_temporal", "rules.yml"), [fx("06_temporal", "events.jsonl")], TEMPORAL, "temporal")


# ---- 7. value_sum and value_avg ----

SUM_AVG = [
    # value_sum bytes gt 1000000 in 10m:
    #  db1: 400000 (10:00), "300000" (10:02, a number in a string) -> 700000; "n/a" (10:03) and
    #   no bytes (10:05) are skipped; 350000 (10:04) -> 1050000, without it 700000: fires.
    #   The window [09:54, 10:04] counts the 3 numeric events.
    ("corr-sum", {"host": "db1"}, 3, 1050000, ts("10:00:00"), ts("10:04:00")),
    #   100 at 10:06 -> 1050100, held without it: no second alert.
    #  db2: 100 (10:00), 2000001 (10:01) -> 2000101.
    ("corr-sum", {"host": "db2"}, 2, 2000101, ts("10:00:00"), ts("10:01:00")),
    # value_avg bytes gte 500000 in 10m:
    #  db1: 400000, 350000, 350000, then (1050000 + 100) / 4 = 262525: never.
    #  db2: 100, then (100 + 2000001) / 2 = 1000050.5 (without 2000001: 100): fires.
    ("corr-avg", {"host": "db2"}, 2, 1000050.5, ts("10:00:00"), ts("10:01:00")),
]


def test_value_sum_avg():
    outs = both_stores(fx("07_value_sum_avg", "rules.yml"), [fx("07_value_sum_avg", "events.jsonl")],
                       SUM_AVG, "value_sum/value_avg")
    for store in STORES:
        err = outs[store][2]
        check('field "bytes" missing or not a number: event not counted' in err,
              "skipped-value log missing [%s]: %s" % (store, err[-2000:]))


# ---- 8. value_percentile ----

RARE = [
    # ws1: svchost.exe at 10:00..10:08 (9 starts, each 100 % of its window), then mimikatz.exe
    # at 10:09: [09:09, 10:09] holds 10 starts, 1 of them mimikatz = 10 % <= 10: fires, count
    # 10, value 10.
    ("corr-rare", {"host": "ws1"}, 10, 10, ts("10:00:00"), ts("10:09:00")),
    # ws1 svchost 10:10: 10/11. ws1 psexec.exe 10:20: 1/12 = 8.3 % holds, but its window
    # (10:00-10:20) overlaps the alerted one (10:00-10:09 + 1h suppress): passed over.
    # ws2: svchost x4 then rare.exe: 1/5 = 20 % > 10: none.
]


def test_value_percentile():
    both_stores(fx("08_value_percentile", "rules.yml"), [fx("08_value_percentile", "events.jsonl")], RARE,
                "value_percentile")


# ---- 9. chaining (the Sigma specification's example) ----

OUTER = "b180ead8-d58f-40b2-ae54-c8940995b9b6"
INNER = "a8418a5a-5fc4-46b5-b23b-6c73beb19d41"
SUCCESS = "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8"
# admin: failures (4625) every 30 s from 10:00:00; the 10th, 10:04:30, brings [09:54:30,
# 10:04:30] to 10: the inner event_count fires (10:00:00-10:04:30, count 10); the 11th
# (10:05:00) held without itself. The inner alert enters the outer temporal_ordered at its
# last_seen, 10:04:30, as rule 0; the success (4624) at 10:06:00 is rule 1: [09:56:00,
# 10:06:00] holds 0 then 1 -> value 2, count 2 (the inner alert and the success).
CHAIN_OUTER = (OUTER, {"User": "admin"}, 2, 2, ts("10:04:30"), ts("10:06:00"))
# bob: success at 10:00:00, then failures 10:01:00..10:05:30: the inner fires at the 10th
# (10:01:00-10:05:30, count 10), but the success came before it: the outer sees 1 then 0 -> 1
# of 2, none. guest: 3 failures (529) and a success (528): the inner never fires.
CHAIN_INNER = [(INNER, {"User": "admin"}, 10, NOVALUE, ts("10:00:00"), ts("10:04:30")),
               (INNER, {"User": "bob"}, 10, NOVALUE, ts("10:01:00"), ts("10:05:30"))]
# With generate: true on the outer, the rules it references raise their own alerts: the
# inner correlation (above) and the successful_login detection rule, once per success:
# admin 10:06:00, bob 10:00:00, guest 10:02:00 (single-event alerts: group {}, count 1).
# failed_login is referenced only by the inner, which does not say generate: still silent.
CHAIN_SUCCESS = [(SUCCESS, {}, 1, NOVALUE, ts("10:06:00"), ts("10:06:00")),
                 (SUCCESS, {}, 1, NOVALUE, ts("10:00:00"), ts("10:00:00")),
                 (SUCCESS, {}, 1, NOVALUE, ts("10:02:00"), ts("10:02:00"))]


def test_chaining():
    cfg, events = fx("09_chain", "klaxon.yaml"), [fx("09_chain", "events.jsonl")]
    both_stores(fx("09_chain", "rules.yml"), events, [CHAIN_OUTER], "chain (generate false)", config=cfg)
    both_stores(fx("09_chain", "rules_generate.yml"), events, [CHAIN_OUTER] + CHAIN_INNER + CHAIN_SUCCESS,
                "chain (generate true)", config=cfg)


# ---- 10. idempotent replay ----

def test_same_file_twice():
    """The same file given twice in one replay: every event is already in its window the
    second time (same identity: content, time, line number), so nothing new is counted; a
    window completed again is the same window with the same dedup_key, and the router drops
    it. Exactly the alerts of one pass."""
    cases = [
        ("01_window_edges", "rules.yml", "events.jsonl", None, EDGES),
        ("03_late", "rules.yml", "events.jsonl", None, None),
        ("04_suppress", "rules.yml", "events.jsonl", None, None),
        ("05_value_count", "rules.yml", "events.jsonl", None, SPRAY),
        ("06_temporal", "rules.yml", "events.jsonl", None, TEMPORAL),
        ("07_value_sum_avg", "rules.yml", "events.jsonl", None, SUM_AVG),
        ("08_value_percentile", "rules.yml", "events.jsonl", None, RARE),
        ("09_chain", "rules_generate.yml", "events.jsonl", "klaxon.yaml", None),
    ]
    for d, rules, events, cfg, want in cases:
        ev = fx(d, events)
        config = fx(d, cfg) if cfg else None
        for store in STORES:
            once, once_lines, _ = run(store, fx(d, rules), [ev], config)
            twice, twice_lines, _ = run(store, fx(d, rules), [ev, ev], config)
            what = "%s twice [%s]" % (d, store)
            if want is not None:
                expect(twice, want, what)
            check(len(twice_lines) == len(once_lines),
                  "%s: %d output lines, once gives %d" % (what, len(twice_lines), len(once_lines)))
            keys1 = [a["dedup_key"] for a in once]
            keys2 = [a["dedup_key"] for a in twice]
            check(len(set(keys2)) == len(keys2), "%s: duplicate dedup_key in output" % what)
            check(set(keys1) == set(keys2), "%s: dedup keys differ" % what)
            if store == "memory":
                check(once_lines == twice_lines, "%s: alerts differ from one pass" % what)
            else:
                # Redis: the order of correlation alerts and of evidence follows store replies.
                norm = [sorted((same_alert(a) for a in x), key=lambda b: sort_key(summary(b))) for x in (once, twice)]
                check(norm[0] == norm[1], "%s: alerts differ from one pass" % what)


# ---- 11. load errors ----

# ---- 12. first_seen (klaxon extension) ----

def day(d, hms):
    return "2026-05-%02dT%sZ" % (d, hms if "." in hms else hms + ".000")


FIRST_SEEN = [
    # alice from 203.0.113.1 at 10:00: never seen for alice -> alert (one event, no value).
    ("corr-new-ip", {"user": "alice", "src_ip": "203.0.113.1"}, 1, NOVALUE, day(4, "10:00:00"), day(4, "10:00:00")),
    # 10:05 same address: known. bob from the same address: new for bob (groups are apart).
    ("corr-new-ip", {"user": "bob", "src_ip": "203.0.113.1"}, 1, NOVALUE, day(4, "10:10:00"), day(4, "10:10:00")),
    ("corr-new-ip", {"user": "alice", "src_ip": "198.51.100.2"}, 1, NOVALUE, day(4, "11:00:00"), day(4, "11:00:00")),
    # 11:30 without src_ip: not counted (logged). A failed login does not match.
    # 05-05 10:00 203.0.113.1: last seen 23h55m before -> known. 05-05 11:00 198.51.100.2:
    # last seen exactly 1d before -> known (inclusive).
    # 05-06 11:00:00.001 203.0.113.1: last seen 25h before -> new again.
    ("corr-new-ip", {"user": "alice", "src_ip": "203.0.113.1"}, 1, NOVALUE, day(6, "11:00:00.001"), day(6, "11:00:00.001")),
    # 05-06 11:00:01 198.51.100.2: last seen 1d + 1s before -> new again.
    ("corr-new-ip", {"user": "alice", "src_ip": "198.51.100.2"}, 1, NOVALUE, day(6, "11:00:01"), day(6, "11:00:01")),
]


def test_first_seen():
    outs = both_stores(fx("12_first_seen", "rules.yml"), [fx("12_first_seen", "events.jsonl")], FIRST_SEEN,
                       "first_seen")
    for store, (alerts, _, err) in outs.items():
        check('field "src_ip" missing' in err, "%s: the event without src_ip was not logged: %s" % (store, err))
        for a in alerts:
            check(len(a["events"]) == 1 and a["events"][0]["fields"]["src_ip"] == a["group"]["src_ip"],
                  "%s: evidence of a first_seen alert: %s" % (store, a["events"]))
    # The stream twice in one run (one state): nothing new the second time. Every value is
    # known, and an introducing event replayed reports its alert again with the same
    # dedup_key, which the router drops.
    for store in STORES:
        alerts, _, _ = run(store, fx("12_first_seen", "rules.yml"), [fx("12_first_seen", "events.jsonl")] * 2)
        expect(alerts, FIRST_SEEN, "first_seen, the stream twice [%s]" % store)


# ---- 13. baseline (klaxon extension) ----

BASELINE = [
    # web-1: one failure a minute 10:00..10:03, then five in 10:04. Interval 1m, lateness 1m
    # (the default): at 10:04:04 intervals 10:00-10:02 are closed and 10:03 is open (taken as
    # it stands): history {1, 1, 1, 1}, EWMA alpha 2/(3+1): mean 0.9375, stddev 0.242. The
    # fourth failure of 10:04 meets gte 4 and 4 > 0.9375 + 2 * 0.242: alert, once for the
    # interval; first_seen is the interval's start.
    ("corr-baseline", {"host": "web-1"}, 4, 0.9375, ts("10:04:00"), ts("10:04:04")),
    # web-2: five a minute for five minutes: history {5, 5, 5} gives mean 4.375, stddev 1.65:
    # 5 is not above 7.68 -> a busy host at its usual rate raises nothing.
    # web-3: six in one minute with no history (warm-up: 3 intervals) -> none.
]


def test_baseline():
    both_stores(fx("13_baseline", "rules.yml"), [fx("13_baseline", "events.jsonl")], BASELINE, "baseline")


# ---- 14. absence (klaxon extension) ----

# (status, host, first_seen, last_seen): first_seen is the last sighting before the silence,
# last_seen the same for "firing" and the returning event for "resolved". timespan 1h,
# lateness 1m (the default), so the watermark is the newest event time - 1m.
ABSENCE = [
    # db-1: 10:00, then 11:30 (1h30 later). No event moved the watermark past 11:00 before
    # 11:30 arrived, so the silence is found on arrival: reported, then resolved at once.
    ("firing", "db-1", ts("10:00:00"), ts("10:00:00")),
    ("resolved", "db-1", ts("10:00:00"), ts("11:30:00")),
    # db-3: 10:00, 11:00 (exactly 1h later: in time), 11:59. The heartbeat at 13:00 puts
    # the watermark at 12:59, which reaches 11:59 + 1h but does not pass it (not due). Its
    # next backup, 13:00:30, is 1h01m30s after 11:59: the silence is found on arrival.
    ("firing", "db-3", ts("11:59:00"), ts("11:59:00")),
    ("resolved", "db-3", ts("11:59:00"), ts("13:00:30")),
    # db-2: 10:00, 10:50, then silent: the heartbeat at 13:00 moves the watermark to 12:59,
    # past 11:50: reported once, never resolved (the input ends).
    ("firing", "db-2", ts("10:50:00"), ts("10:50:00")),
    # db-1 again: 11:30 + 1h = 12:30 < 12:59: silent since 11:30.
    ("firing", "db-1", ts("11:30:00"), ts("11:30:00")),
]


def absence_summary(a):
    return (a.get("status"), a["group"]["host"], a["first_seen"], a["last_seen"])


def test_absence():
    outs = {}
    for store in STORES:
        alerts, _, _ = run(store, fx("14_absence", "rules.yml"), [fx("14_absence", "events.jsonl")])
        got = sorted(absence_summary(a) for a in alerts)
        check(got == sorted(ABSENCE), "absence [%s]:\n got  %s\n want %s" % (store, got, sorted(ABSENCE)))
        for a in alerts:
            check(a["rule"]["id"] == "corr-absence" and a["count"] == 0 and a["window"] == 3600 and
                  "value" not in a and len(a["events"]) == 1,
                  "absence alert fields [%s]: %s" % (store, a))
            # A firing alert shows the last sighting; a resolve shows the event that came back.
            ev_time = a["events"][0]["time"]
            want_time = a["first_seen"] if a["status"] == "firing" else a["last_seen"]
            check(ev_time == want_time, "absence evidence [%s]: %s, want the event at %s" %
                  (store, a["events"][0], want_time))
        keys = {}
        for a in alerts:
            keys.setdefault((a["group"]["host"], a["first_seen"]), set()).add((a["status"], a["dedup_key"], a["id"]))
        for k, v in keys.items():
            check(len({d for _, d, _ in v}) == 1 and len({i for _, _, i in v}) == len(v),
                  "absence %s [%s]: firing and resolve share the dedup_key, not the id: %s" % (k, store, v))
        outs[store] = sorted((a["dedup_key"], a["id"]) for a in alerts)
    for store in STORES[1:]:
        check(outs["memory"] == outs[store], "absence: memory and %s alerts differ" % store)
    # The stream twice in one run: the second pass changes nothing (older sightings), and
    # its arrival raises no new absence.
    for store in STORES:
        alerts, _, _ = run(store, fx("14_absence", "rules.yml"), [fx("14_absence", "events.jsonl")] * 2)
        got = sorted(absence_summary(a) for a in alerts)
        check(got == sorted(ABSENCE), "absence, the stream twice [%s]:\n got  %s" % (store, got))


# ---- 15. "at most N" (event_count lt/lte): judged when a window closes ----

AT_MOST = [
    # Tumbling 10-minute windows per host, judged once the watermark (last event time at the
    # end of the input, else newest - lateness) passes their end. Windows without any
    # heartbeat are never judged (that is absence's job).
    # web-1: 10:00, 10:03, 10:06 -> 3, not < 3. 10:12, 10:15 -> 2 in [10:10, 10:20).
    ("corr-at-most", {"host": "web-1"}, 2, NOVALUE, ts("10:10:00"), ts("10:19:59.999")),
    # web-2: one heartbeat in [10:00, 10:10) (its login does not count).
    ("corr-at-most", {"host": "web-2"}, 1, NOVALUE, ts("10:00:00"), ts("10:09:59.999")),
    # web-3: 4 in [10:00, 10:10); its 10:25 window has not closed when the input ends.
]


def test_at_most():
    both_stores(fx("15_at_most", "rules.yml"), [fx("15_at_most", "events.jsonl")], AT_MOST, "at most")
    # The stream twice in one run: the second copy's events are the same events (identity),
    # counted once; nothing new is raised. (Events of a window already judged are refused as
    # late: tests/unit/test_store.c test_close_windows.)
    for store in STORES:
        alerts, _, _ = run(store, fx("15_at_most", "rules.yml"), [fx("15_at_most", "events.jsonl")] * 2)
        expect(alerts, AT_MOST, "at most, the stream twice [%s]" % store)


# ---- 16. resolve: auto (klaxon extension) ----

RESOLVE = [
    # (status, src_ip, count, first_seen, last_seen). gte 3 in 1m, suppress 1m (default).
    # .1: 10:00:00, :10, :20 cross (first 10:00:00); :30 and :40 keep it met; silent a minute
    # after 10:00:40: resolved, last_seen = the last time it held. A second burst at 10:10.
    ("firing", "198.51.100.1", 3, ts("10:00:00"), ts("10:00:20")),
    ("resolved", "198.51.100.1", 3, ts("10:00:00"), ts("10:00:40")),
    ("firing", "198.51.100.1", 3, ts("10:10:00"), ts("10:10:20")),
    ("resolved", "198.51.100.1", 3, ts("10:10:00"), ts("10:10:20")),
    # .2: one failure every 20 s from 10:00:00 to 10:04:00, never below the condition. It
    # alerts at 10:00:40 and again (a window starting after 10:00:40 + suppress) at 10:03:00,
    # [10:02:00, 10:03:00], 4 events: the new incident resolves the open one (held until
    # 10:02:40) at once, and is resolved a minute after 10:04:00.
    ("firing", "198.51.100.2", 3, ts("10:00:00"), ts("10:00:40")),
    ("resolved", "198.51.100.2", 3, ts("10:00:00"), ts("10:02:40")),
    ("firing", "198.51.100.2", 4, ts("10:02:00"), ts("10:03:00")),
    ("resolved", "198.51.100.2", 4, ts("10:02:00"), ts("10:04:00")),
    # .3: two failures: never.
    # .4: 10:30:00, :06, :12 cross; 10:31:06, :12 and 10:32:00 keep it met (the windows start
    # within the suppress period); 10:32:18 does not. The late 10:31:18 completes the window
    # [10:31:18, 10:32:18], which starts after 10:30:12 + suppress: a new incident whose last
    # time is 10:32:18, though the earliest window the late event makes hold ends before the
    # open incident's last (10:32:00). It replaces (resolves) the open one and resolves itself
    # once the watermark passes (.5's one event at 10:40:00 moves it there).
    ("firing", "198.51.100.4", 3, ts("10:30:00"), ts("10:30:12")),
    ("resolved", "198.51.100.4", 3, ts("10:30:00"), ts("10:32:00")),
    ("firing", "198.51.100.4", 3, ts("10:31:18"), ts("10:32:18")),
    ("resolved", "198.51.100.4", 3, ts("10:31:18"), ts("10:32:18")),
]


def resolve_summary(a):
    return (a["status"], a["group"]["src_ip"], a["count"], a["first_seen"], a["last_seen"])


def test_resolve():
    rules, events = fx("16_resolve", "rules.yml"), fx("16_resolve", "events.jsonl")
    outs = {}
    for store in STORES:
        for copies in (1, 2):  # the stream twice: the same incidents, resolved once each
            alerts, _, _ = run(store, rules, [events] * copies)
            got = sorted(resolve_summary(a) for a in alerts)
            check(got == sorted(RESOLVE), "resolve x%d [%s]:\n got  %s\n want %s" %
                  (copies, store, got, sorted(RESOLVE)))
            by_incident = {}
            for a in alerts:
                check(a["rule"]["id"] == "corr-resolve" and a["window"] == 60 and a["severity"] == "error",
                      "resolve fields [%s]: %s" % (store, a))
                if a["status"] == "resolved":
                    check("value" not in a and a["events"] == [] and "suppressed" not in a,
                          "a resolve carries no value, evidence or suppressed count [%s]: %s" % (store, a))
                by_incident.setdefault((a["group"]["src_ip"], a["first_seen"]), []).append(a)
            for k, v in by_incident.items():
                check(len(v) == 2 and len({a["dedup_key"] for a in v}) == 1 and len({a["id"] for a in v}) == 2,
                      "resolve %s [%s]: firing and resolve share the dedup_key, not the id: %s" % (k, store, v))
            if copies == 1:
                outs[store] = sorted((a["dedup_key"], a["id"], a["status"]) for a in alerts)
    for store in STORES[1:]:
        check(outs["memory"] == outs[store], "resolve: memory and %s alerts differ" % store)


def test_log_was_used():
    """The "-log" stores really kept their sliding windows as window logs."""
    check(len(LOGDIR) > 20, "window logs written in %d replays" % (len(LOGDIR) - 1))


def test_load_errors():
    cases = [
        # line 19 "    rules: [no_backup]": the name at column 13
        ("absence_chained.yml", 19, 13, '"no_backup" is an absence rule: its alerts cannot feed another correlation'),
        # line 15 "        gte: 1": the condition map starts there
        ("absence_condition.yml", 15, 9, "absence takes no condition: a group silent for longer than the timespan alerts"),
        # line 16 "        gte: 1" (first_seen takes no threshold)
        ("first_seen_condition.yml", 16, 9, "first_seen takes no condition operator (only field)"),
        # line 14 "    history: 0"
        ("baseline_history.yml", 14, 14, "0 is out of range [1, 10000]"),
        # line 13 "    deviations: 3"
        ("deviations_not_baseline.yml", 13, 17, '"deviations" applies to baseline only'),
        # line 15 "        field: user": the condition mapping starts at column 9
        ("lt_value_count.yml", 15, 9,
         "this condition holds for an empty window (lt, lte, neq or a range from 0): klaxon judges "
         "such conditions when windows close for event_count only; use event_count, or value_avg / "
         "value_percentile"),
        # line 14 "    condition: {gte: 3}": the flow mapping starts at column 16
        ("value_count_no_field.yml", 14, 16, 'value_count needs a "field" in its condition'),
        # line 20 "        ip:": the alias names rule_a only, the correlation lists rule_b too
        ("alias_missing_rule.yml", 20, 9, 'alias "ip" gives no field for rule "rule_b"'),
        # line 14 "    lateness: soon": the value at column 15
        ("bad_lateness.yml", 14, 15, 'expected a duration like 30s, 5m, 2h, 1d or 500ms, got "soon"'),
        # line 14 "    resolve: auto" (an absence resolves on its own)
        ("resolve_absence.yml", 14, 14,
         "resolve: auto applies to sliding-window thresholds (event_count at least N, value_count, "
         "temporal, temporal_ordered, value_sum, value_avg); an absence resolves on its own"),
        # line 14 "    resolve: yes"
        ("resolve_value.yml", 14, 14, 'resolve must be "auto"'),
    ]
    events = fx("01_window_edges", "events.jsonl")
    for name, line, col, msg in cases:
        path = fx("11_load_errors", name)
        r = replay(["--rules", path, "--format", "json", events], timeout=60)
        err = r.stderr.decode(errors="replace")
        check(r.returncode == 2, "%s: exit %d, want 2: %s" % (name, r.returncode, err))
        want = "klaxon: %s:%d:%d: %s\n" % (path, line, col, msg)
        check(err == want, "%s: stderr\n got  %r\n want %r" % (name, err, want))
        check(r.stdout == b"", "%s: alerts written despite a bad rule" % name)


def main():
    global REDIS, CLUSTER
    d = tmpdir("corr-redis")
    LOGDIR[0] = d
    REDIS = RedisServer(d).start()
    CLUSTER = RedisCluster(os.path.join(d, "cluster"))
    try:
        CLUSTER.start()
        run_tests([test_window_edges, test_out_of_order, test_late_events, test_suppress, test_value_count,
                   test_temporal, test_value_sum_avg, test_value_percentile, test_chaining, test_first_seen, test_baseline, test_absence, test_at_most,
                   test_resolve, test_same_file_twice, test_load_errors, test_log_was_used])
    finally:
        REDIS.stop()
        CLUSTER.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
