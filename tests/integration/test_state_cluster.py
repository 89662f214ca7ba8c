"""klaxon on a real Redis Cluster (three masters on loopback, joined by `redis-cli --cluster
create`), resharded in the middle of a stream by `redis-cli --cluster reshard` as an
operator would: the alerts are exactly those of the memory store and of a single Redis,
the keys really are spread over the masters, and klaxon followed the slots that moved.
(Every correlation fixture also runs on a cluster: test_correlations.py.)"""
import os
import shutil
import subprocess
import time

from harness import (KLAXON, RedisCluster, RedisServer, alerts_of, check, replay, run_tests, tmpdir,
                     wait_for)

D = None
CLUSTER = None
REDIS = None

RULES = """title: Failed login
name: failed_login
detection:
    selection:
        action: login_failed
    condition: selection
---
title: Brute force (event_count)
id: cl-brute
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [src_ip]
    timespan: 2m
    condition:
        gte: 6
---
title: Spray (value_count)
id: cl-spray
correlation:
    type: value_count
    rules: [failed_login]
    group-by: [src_ip]
    timespan: 5m
    condition:
        field: user
        gte: 4
"""


def stream(n=12000, ips=600):
    """n failed logins from `ips` sources over virtual time (250 ms apart), with users and
    bursts chosen by a fixed pseudo-random sequence: many groups, some of which cross."""
    lines, x = [], 12345
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7fffffff
        ip = x % ips if i % 7 else (x % 40)  # a hot set of 40 sources crosses often
        user = "u%d" % ((x >> 8) % 9)
        t = 1777888800000 + i * 250  # 2026-05-04T10:00:00Z
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) + ".%03dZ" % (t % 1000)
        lines.append('{"@timestamp":"%s","action":"login_failed","src_ip":"10.1.%d.%d","user":"%s","seq":%d}\n'
                     % (ts, ip // 256, ip % 256, user, i))
    return lines


def read_back(f):
    f.seek(0)
    data = f.read()
    f.close()
    return data


def summaries(out):
    return sorted((a["rule"]["id"], a["dedup_key"], a["count"], a["first_seen"], a["last_seen"])
                  for a in alerts_of(out))


def reshard_mid_stream(log):
    """log: the windows kept as window logs (state.windows: log): XADD and XRANGE follow
    MOVED and ASK as the scripts do."""
    pfx = "cll:" if log else "cl:"
    conf = []
    if log:
        conf = ["--config", os.path.join(D, "log.yaml")]
        with open(conf[1], "w") as f:
            f.write("state:\n  windows: log\n")
    rules = os.path.join(D, "rules.yml")
    with open(rules, "w") as f:
        f.write(RULES)
    lines = stream()
    events = os.path.join(D, "events.jsonl")
    with open(events, "w") as f:
        f.writelines(lines)
    mem = replay(["-r", rules, "--format", "json", events])
    check(mem.returncode == 0, "memory replay: %s" % mem.stderr)
    want = summaries(mem.stdout.decode())
    check(len(want) > 100, "the stream raises alerts of both rules: %d" % len(want))
    one = replay(["-r", rules, "--format", "json", "--state", "redis://127.0.0.1:%d/one%s" % (REDIS.port, pfx),
                  events] + conf)
    check(one.returncode == 0 and summaries(one.stdout.decode()) == want, "single redis differs from memory")

    # The stream through stdin, slowly; a third of the way in, an operator moves a third of
    # master 0's slots to master 1. The last part is sent only once the reshard has ended.
    before = CLUSTER.slots_of(0)
    # Output to files: a pipe nobody reads while the test writes would stall klaxon.
    out_f, err_f = open(os.path.join(D, "cl.out"), "w+b"), open(os.path.join(D, "cl.err"), "w+b")
    p = subprocess.Popen([KLAXON, "replay", "-r", rules, "--format", "json", "--log-level", "info",
                          "--state", "redis://127.0.0.1:%d/%s" % (CLUSTER.port, pfx), "-"] + conf,
                         stdin=subprocess.PIPE, stdout=out_f, stderr=err_f)
    chunk = 100
    reshard = None
    for i in range(0, len(lines), chunk):
        if i == len(lines) // 3:
            reshard = CLUSTER.reshard(0, 1, before // 3)
        if i == len(lines) - len(lines) // 4:
            out = reshard.communicate(timeout=300)[0]
            check(reshard.returncode == 0, "reshard: %s" % out.decode(errors="replace")[-2000:])
        p.stdin.write("".join(lines[i:i + chunk]).encode())
        p.stdin.flush()
        time.sleep(0.04)
    p.communicate(timeout=120)
    out, err = read_back(out_f), read_back(err_f).decode(errors="replace")
    check(p.returncode == 0, "cluster replay exit %d: %s" % (p.returncode, err[-2000:]))
    after = CLUSTER.slots_of(0)
    check(after == before - before // 3, "master 0 serves %d slots after the reshard, had %d" % (after, before))
    got = summaries(out.decode())
    check(got == want, "cluster (resharded) gives %d alerts, memory %d; first differences: %s" % (
        len(got), len(want), sorted(set(got) ^ set(want))[:5]))
    check("redis cluster via 127.0.0.1:%d: connected to 3 masters" % CLUSTER.port in err, "no cluster: %s" % err[-1000:])
    # It followed the moved slots by MOVED, or (on a loaded machine a master busy migrating
    # may answer nothing for the whole command timeout) by reading the slot map again after
    # dropping that connection: the alerts above are exact either way.
    followed = "moved to 127.0.0.1:%d: following it" % CLUSTER.nodes[1].port in err
    remapped = "no answer in" in err and err.count("redis cluster via 127.0.0.1:%d: connected to 3 masters" % CLUSTER.port) >= 2
    check(followed or remapped, "klaxon never followed a moved slot: %s" % err[-1000:])
    # The state is on every master, under the prefix.
    per_node = [len(CLUSTER.keys_on(i, pfx + "*")) for i in range(3)]
    check(all(n > 0 for n in per_node), "keys per master: %s" % per_node)
    if log:
        check(CLUSTER.keys(pfx + "*:l"), "no window logs under %s" % pfx)


def test_reshard_mid_stream():
    reshard_mid_stream(False)


def test_reshard_mid_stream_log():
    reshard_mid_stream(True)


def test_master_down_pauses_and_resumes():
    """A master that stops: klaxon says the store is down and waits (no alert lost or
    doubled); once the master is back, the stream completes with the memory store's alerts."""
    rules = os.path.join(D, "rules.yml")
    lines = stream(3000, 200)
    events = os.path.join(D, "events-small.jsonl")
    with open(events, "w") as f:
        f.writelines(lines)
    mem = replay(["-r", rules, "--format", "json", events])
    want = summaries(mem.stdout.decode())
    out_f, err_f = open(os.path.join(D, "down.out"), "w+b"), open(os.path.join(D, "down.err"), "w+b")
    p = subprocess.Popen([KLAXON, "replay", "-r", rules, "--format", "json", "--log-level", "info",
                          "--state", "redis://127.0.0.1:%d/down:" % CLUSTER.port, "-"],
                         stdin=subprocess.PIPE, stdout=out_f, stderr=err_f)
    half = len(lines) // 2
    p.stdin.write("".join(lines[:half]).encode())
    p.stdin.flush()
    time.sleep(0.5)
    node = CLUSTER.nodes[2]
    node.stop()
    p.stdin.write("".join(lines[half:half + 200]).encode())
    p.stdin.flush()
    time.sleep(1.0)
    check(p.poll() is None, "klaxon exited while a master was down")
    node.start()
    wait_for(CLUSTER.ok, 30, "the cluster to be ok again")
    p.stdin.write("".join(lines[half + 200:]).encode())
    p.communicate(timeout=120)
    out, err = read_back(out_f), read_back(err_f).decode(errors="replace")
    check(p.returncode == 0, "exit %d: %s" % (p.returncode, err[-2000:]))
    check("127.0.0.1:%d: connection lost, reconnecting" % node.port in err, "no word of the lost master: %s" % err[-1500:])
    got = summaries(out.decode())
    check(got == want, "after a master outage: %d alerts, memory %d; differences: %s" % (
        len(got), len(want), sorted(set(got) ^ set(want))[:5]))


def main():
    global D, CLUSTER, REDIS
    D = tmpdir("cluster")
    REDIS = RedisServer(D).start()
    CLUSTER = RedisCluster(os.path.join(D, "cluster"))
    try:
        CLUSTER.start()
        run_tests([test_reshard_mid_stream, test_reshard_mid_stream_log, test_master_down_pauses_and_resumes])
    finally:
        CLUSTER.stop()
        REDIS.stop()
        shutil.rmtree(D, ignore_errors=True)


if __name__ == "__main__":
    main()
