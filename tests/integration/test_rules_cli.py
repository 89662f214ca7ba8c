"""klaxon rules lint|list|test through the real binary: lint reports every error of every
file, list prints the shipped rules as a table, Markdown and JSON, and test runs the rules'
tests through the replay engine -- the shipped rules' tests pass, a broken rule fails its
test, and stateful rules (a threshold window, absence, first_seen) are judged on the
events' own clock."""
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

from harness import KLAXON, SRC, check, run_tests, tmpdir

RULES = os.path.join(SRC, "rules")
SAMPLE_CFG = os.path.join(SRC, "samples", "klaxon.yaml")
IDS = ["7e1a4c9d-2b5f-4d8e-9c3a-6f0b8d2e4a05",
       "475ee5ca-5e00-47d6-9cd7-03e6595233ec",
       "5c332383-3a6f-43e5-a4a7-9892b74338d1",
       "939277bd-2ea0-45b9-8fc0-a455f1453f7f",
       "6a2c9d14-3e7f-4b8a-8c5d-2e9f0a1b3c02",
       "de33826a-48b5-4856-a6d9-75aef00fb0a3",
       "0d9b7f3e-5a21-4c68-b0e4-6a1f2c9d8e37",
       "a51897a5-2c61-4f89-b48e-0564991067af",
       "0f3b8e6c-5a1d-4c52-9a3e-7b6d2f1c8a01",
       "ca8e609c-be04-440a-a582-b66a453319f3",
       "51b612a6-1afa-4e6a-95ec-ee53d57de410",
       "f901edc3-c68b-458c-9f80-12fc092e4e7b",
       "e6f1a0c2-7b3d-4c8e-9a51-3f2d8b7c6e10",
       "3d8f2a6b-1c4e-4f9a-a7b2-8e0d6c4f1a04",
       "cb2e2473-7340-4e1c-95f8-98adc2f16319",
       "b34c39ad-01f4-4e47-844e-e83d541d24d7",
       "20f701a5-9947-4f0a-b416-cdd004647786",
       "9b4e1f70-8c2d-4a6b-b1e3-5d7f9a0c2e03",
       "88145d15-433b-4237-9ede-83711031588d"]


def klaxon(*args, cwd=None):
    return subprocess.run([KLAXON] + list(args), capture_output=True, timeout=120, cwd=cwd)


def write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_lint_every_error():
    d = tmpdir("lint-all")
    broken = write(d, "a_broken.yml", "title: [\n")
    multi = write(d, "b_multi.yml",
                  "title: a\nlogsource: {product: x}\ndetection:\n  sel: {a|contians: b}\n"
                  "  condition: sel\n---\n"
                  "title: b\nlogsource: {product: x}\ndetection:\n  sel: {a: b}\n"
                  "  condition: sel and nothere\n---\n"
                  "title: ok\nid: 11111111-0000-4000-8000-000000000001\nlogsource: {product: x}\n"
                  "detection:\n  sel: {a: b}\n  condition: sel\n")
    corr = write(d, "c_corr.yml",
                 "title: c\ncorrelation:\n    type: event_count\n    rules: [nosuchrule]\n"
                 "    group-by: [src_ip]\n    timespan: 5m\n    condition: {gte: 3}\n")
    dup = write(d, "d_dup.yml",
                "title: again\nid: 11111111-0000-4000-8000-000000000001\nlogsource: {product: x}\n"
                "detection:\n  sel: {a: c}\n  condition: sel\n")
    r = klaxon("rules", "lint", d)
    check(r.returncode == 2, "exit %d" % r.returncode)
    want = [
        "%s:2:1: YAML: did not find expected node content while parsing a flow node" % broken,
        '%s:4:9: unknown modifier "contians"' % multi,
        '%s:11:22: condition references unknown identifier "nothere"' % multi,
        '%s:2:5: duplicate rule id "11111111-0000-4000-8000-000000000001" (first defined at %s:13)'
        % (dup, multi),
        '%s:4:13: correlation references unknown rule "nosuchrule"' % corr,
        "5 errors, 0 warnings",
    ]
    got = r.stdout.decode().splitlines()
    check(got == want, "lint output:\n%s\nwant:\n%s" % ("\n".join(got), "\n".join(want)))
    r = klaxon("rules", "lint", "--json", d)
    check(r.returncode == 2, "exit %d" % r.returncode)
    j = json.loads(r.stdout)
    check(j["ok"] is False and j["rules"] is None and j["errors"] == 5 and j["warnings"] == 0,
          "summary %s" % {k: j[k] for k in ("ok", "rules", "errors", "warnings")})
    check([(p["level"], p["file"], p["line"], p["col"]) for p in j["problems"]] ==
          [("error", broken, 2, 1), ("error", multi, 4, 9), ("error", multi, 11, 22),
           ("error", dup, 2, 5), ("error", corr, 4, 13)], "problems %s" % j["problems"])
    check(j["problems"][4]["message"] == 'correlation references unknown rule "nosuchrule"',
          "message %r" % j["problems"][4]["message"])


def test_lint_shipped_rules():
    r = klaxon("rules", "lint", RULES)
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stdout))
    check(r.stdout == b"ok: 19 rules (12 detection, 7 correlation)\n", "stdout %r" % r.stdout)
    r = klaxon("rules", "lint", "--json", RULES)
    j = json.loads(r.stdout)
    check(j == {"ok": True, "rules": 19, "errors": 0, "warnings": 0, "problems": []}, "json %s" % j)
    r = klaxon("rules", "lint")
    check(r.returncode == 2 and r.stderr.startswith(b"usage: klaxon rules lint"), "no paths: %r" % r.stderr)


def test_list():
    r = klaxon("rules", "list", RULES)
    check(r.returncode == 0, "exit %d" % r.returncode)
    lines = r.stdout.decode().splitlines()
    check(lines[0].split() == ["ID", "TYPE", "LEVEL", "TEAM", "LOGSOURCE", "TESTS", "TITLE"],
          "header %r" % lines[0])
    check([l.split()[0] for l in lines[1:]] == IDS, "ids %s" % lines[1:])
    bi = IDS.index("6a2c9d14-3e7f-4b8a-8c5d-2e9f0a1b3c02")
    brute = lines[1 + bi].split(None, 6)
    check(brute[1:6] == ["event_count", "high", "secops", "rules:", "ssh_failed_password"] and
          brute[6].split(None, 1) == ["4", "SSH brute force - 5 failed passwords from one source in 5 minutes"],
          "brute force row %r" % lines[1 + bi])
    r = klaxon("rules", "list", "--format", "markdown", RULES)
    md = r.stdout.decode().splitlines()
    check(md[0] == "| id | title | type | level | team | logsource | tags | filters | tests |",
          "md %r" % md[0])
    check(md[2 + bi] == "| `6a2c9d14-3e7f-4b8a-8c5d-2e9f0a1b3c02` | SSH brute force - 5 failed passwords "
          "from one source in 5 minutes | event_count | high | secops | rules: ssh_failed_password | "
          "attack.credential-access, attack.t1110.001 |  | 4 |", "md row %r" % md[2 + bi])
    r = klaxon("rules", "list", "--json", RULES)
    j = json.loads(r.stdout)
    check([x["id"] for x in j] == IDS, "json ids")
    b = j[bi]
    check(b["type"] == "event_count" and b["name"] == "ssh_bruteforce" and
          b["rules"] == ["0f3b8e6c-5a1d-4c52-9a3e-7b6d2f1c8a01"] and b["tests"] == 4 and
          b["tags"] == ["attack.credential-access", "attack.t1110.001"] and
          b["file"].endswith("rules/linux/ssh_bruteforce.yml") and b["line"] == 1, "json row %s" % b)
    check(j[0]["logsource"] == {"product": "aws", "service": "cloudtrail", "category": None},
          "logsource %s" % j[0]["logsource"])
    r = klaxon("rules", "list", "--format", "yaml", RULES)
    check(r.returncode == 2, "bad format exit %d" % r.returncode)
    # docs/rule-catalogue.md is this command's output: it must not fall behind the rules.
    with open(os.path.join(SRC, "docs", "rule-catalogue.md")) as f:
        doc = f.read()
    table = klaxon("rules", "list", "--format", "markdown", "rules", cwd=SRC).stdout.decode()
    check(doc.endswith("\n\n" + table), "docs/rule-catalogue.md is out of date: regenerate it with "
          "`klaxon rules list --format markdown rules`")


def test_shipped_rules_pass():
    r = klaxon("rules", "test", "--coverage", RULES)
    out = r.stdout.decode()
    check(r.returncode == 0, "exit %d:\n%s%s" % (r.returncode, out, r.stderr.decode()))
    lines = out.splitlines()
    check(all(l.startswith("PASS  ") for l in lines[:38]), "results:\n%s" % out)
    check(lines[38:] == ["rules without tests: 0", "38 passed, 0 failed; 19 rules, 0 without tests"],
          "summary %s" % lines[38:])


def copy_ssh_rules(d):
    for name in ("ssh_failed_password", "ssh_bruteforce"):
        shutil.copy(os.path.join(RULES, "linux", name + ".yml"), d)
        with open(os.path.join(RULES, "linux", name + ".tests.yml")) as f:
            text = f.read().replace("../../samples/klaxon.yaml", SAMPLE_CFG)
        write(d, name + ".tests.yml", text)


def test_broken_rule_fails_its_test():
    d = tmpdir("broken-rule")
    copy_ssh_rules(d)
    path = os.path.join(d, "ssh_bruteforce.yml")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("gte: 5", "gte: 6"))  # the threshold an analyst mistyped
    junit = os.path.join(d, "junit.xml")
    r = klaxon("rules", "test", "--junit", junit, d)
    check(r.returncode == 1, "exit %d" % r.returncode)
    lines = r.stdout.decode().splitlines()
    want_fail = "FAIL  %s  five failed passwords from one source in five minutes page once" % path
    check(want_fail in lines, "no FAIL line:\n%s" % "\n".join(lines))
    i = lines.index(want_fail)
    check(lines[i + 1] == "      alert 1: count is 6, expected 5", "why %r" % lines[i + 1])
    check(lines[-1] == "4 passed, 1 failed; 2 rules, 0 without tests", "summary %r" % lines[-1])
    root = ET.parse(junit).getroot()
    check(root.tag == "testsuites" and root.get("tests") == "5" and root.get("failures") == "1",
          "junit %s" % root.attrib)
    failed = [tc for tc in root.iter("testcase") if tc.find("failure") is not None]
    check(len(failed) == 1 and failed[0].get("name") == want_fail.split("  ")[2] and
          failed[0].find("failure").get("message") == "alert 1: count is 6, expected 5",
          "junit failure %s" % [(tc.attrib, tc.find("failure").attrib) for tc in failed])


def test_bad_tests_file():
    d = tmpdir("bad-tests")
    copy_ssh_rules(d)
    t = write(d, "ssh_bruteforce.tests.yml",
              "tests:\n  - name: x\n    events: ['a line']\n    alerts: [{rule: no_such_rule}]\n")
    r = klaxon("rules", "test", d)
    check(r.returncode == 2, "exit %d" % r.returncode)
    check(r.stderr.decode() == 'klaxon: %s:4:21: no loaded rule has the id, name or title '
          '"no_such_rule"\n' % t, "stderr %r" % r.stderr)
    write(d, "ssh_bruteforce.tests.yml", "tests:\n  - name: x\n    events: ['a line']\n")
    r = klaxon("rules", "test", d)
    check(r.returncode == 2 and b"a test needs alerts (what must fire), must_not, or both" in r.stderr,
          "no expectation: %d %r" % (r.returncode, r.stderr))
    write(d, "ssh_bruteforce.tests.yml",
          "tests:\n  - name: x\n    topic: auth\n    events: ['a line']\n    alerts: []\n")
    r = klaxon("rules", "test", d)
    check(r.returncode == 2 and r.stderr.decode() == 'klaxon: %s:3:12: topic "auth" needs a config '
          "(the tests file's `config:`)\n" % t, "topic without config: %d %r" % (r.returncode, r.stderr))
    write(d, "ssh_bruteforce.tests.yml",
          "tests:\n  - name: x\n    input: {format: xml}\n    events: ['a line']\n    alerts: []\n")
    r = klaxon("rules", "test", d)
    check(r.returncode == 2 and r.stderr.decode().startswith("klaxon: %s:3:21: " % t),
          "bad input: %d %r" % (r.returncode, r.stderr))


def test_lint_details():
    """One mistake is one error; every bad reference is named; warnings are counted; a tests
    file named among the rule files is not read as a rule."""
    d = tmpdir("lint-details")
    a = write(d, "a.yml",
              "title: one\nname: same\nlogsource: {product: x}\ndetection:\n  sel: {a: b}\n"
              "  timeframe: 5m\n  condition: sel\n---\n"
              "title: two\nname: same\nlogsource: {product: x}\ndetection:\n  sel: {a: c}\n"
              "  condition: sel\n---\n"
              "title: corr\nid: 33333333-0000-4000-8000-000000000001\ncorrelation:\n"
              "  type: event_count\n  rules: [nope1, nope2]\n  group-by: [h]\n  timespan: 5m\n"
              "  condition: {gte: 2}\n")
    t = write(d, "a.tests.yml", "tests: []\n")
    r = klaxon("rules", "lint", a, t)
    want = ['%s:6:3: warning: "timeframe" is ignored' % a,
            '%s:10:7: duplicate rule name "same" (first defined at %s:1)' % (a, a),
            '%s:20:11: correlation references unknown rule "nope1"' % a,
            '%s:20:18: correlation references unknown rule "nope2"' % a,
            "3 errors, 1 warning"]
    got = r.stdout.decode().splitlines()
    check(r.returncode == 2 and got == want, "lint %d:\n%s" % (r.returncode, "\n".join(got)))
    b = write(d, "b.yml", "title: ok\nlogsource: {product: x}\n"
              "detection:\n  sel: {a: b}\n  slow: {c|re: '(a+)+\\1'}\n  timeframe: 1h\n"
              "  condition: sel or slow\n")
    r = klaxon("rules", "lint", b)
    check(r.returncode == 0 and r.stdout.decode().splitlines() == [
        '%s:5:16: warning: this regular expression is not answered in linear time: it runs on PCRE2 '
        'under limits and may be given up on long values (docs/rules.md, "Regular expressions")' % b,
        '%s:6:3: warning: "timeframe" is ignored' % b,
        "ok: 1 rules (1 detection, 0 correlation), 2 warnings"], "warnings only: %r" % r.stdout)
    check(r.stderr == b"", "the warning was logged as well: %r" % r.stderr)


def test_expectation_values():
    """Alert fields from events are strings: an expected number matches its text, a string
    its number; YAML words that are no JSON number (nan, 0x10) stay strings."""
    d = tmpdir("values")
    write(d, "r.yml", "title: Port seen\nid: 44444444-0000-4000-8000-000000000001\n"
          "logsource: {product: app}\ndetection:\n  sel: {action: connect}\n  condition: sel\n"
          "fields: [port, user, code]\nlevel: low\n")
    write(d, "r.tests.yml", """input: {format: json, logsource: {product: app}}
tests:
  - name: numbers and strings
    events:
      - {time: "2026-03-01T09:00:00Z", action: connect, port: "22", user: bob, code: 7}
    alerts:
      - {rule: Port seen, fields: {port: 22, user: bob, code: "7"}}
  - name: nan is a word
    events:
      - {time: "2026-03-01T09:00:00Z", action: connect, port: "22", user: bob}
    alerts:
      - {rule: Port seen, fields: {user: nan}}
  - name: hex is a word
    events:
      - {time: "2026-03-01T09:00:00Z", action: connect, port: "16", user: bob}
    alerts:
      - {rule: Port seen, fields: {port: 0x10}}
""")
    r = klaxon("rules", "test", "--json", d)
    j = json.loads(r.stdout)
    check(r.returncode == 1 and [x["ok"] for x in j["results"]] == [True, False, False],
          "results %d %s" % (r.returncode, j["results"]))
    check(j["results"][1]["why"] == 'alert 1: fields.user is "bob", expected "nan"\n' and
          j["results"][2]["why"] == 'alert 1: fields.port is "16", expected "0x10"\n',
          "why %s" % [x["why"] for x in j["results"]])


def test_filter_silences_a_shipped_rule():
    """A team's Sigma filter beside the shipped sudo rule: its tests show the agent's sudo no
    longer alerts while everyone else's still does; list shows the filter on the rule."""
    d = tmpdir("filter")
    shutil.copy(os.path.join(RULES, "linux", "sudo_to_root.yml"), d)
    shutil.copy(os.path.join(RULES, "lists", "admins.list"), d)
    write(d, "mf_backup_agent.yml",
          "title: Backups run as root by the backup agent\n"
          "logsource: {product: linux, service: sudo}\n"
          "filter:\n  rules: [9b4e1f70-8c2d-4a6b-b1e3-5d7f9a0c2e03]\n"
          "  agent: {user: backup-agent}\n  condition: not agent\n")
    write(d, "sudo_to_root.tests.yml", """config: %s
tests:
  - name: the backup agent's sudo to root is silenced
    topic: auth
    events:
      - "Mar 10 02:00:01 db-1 sudo: backup-agent : TTY=unknown ; PWD=/ ; USER=root ; COMMAND=/usr/bin/pg_dumpall"
    alerts: []
  - name: alice's still alerts
    topic: auth
    events:
      - "Mar 10 08:15:40 web-01 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id"
    alerts:
      - {rule: sudo command run as root, fields: {user: alice}}
""" % SAMPLE_CFG)
    r = klaxon("rules", "test", d)
    check(r.returncode == 0, "exit %d:\n%s%s" % (r.returncode, r.stdout.decode(), r.stderr.decode()))
    check(r.stdout.decode().splitlines()[-1] == "2 passed, 0 failed; 1 rules, 0 without tests",
          "summary %r" % r.stdout)
    j = json.loads(klaxon("rules", "list", "--json", d).stdout)
    check(j[0]["filters"] == ["Backups run as root by the backup agent"], "filters %s" % j[0]["filters"])
    # Without the filter the first test fails: the filter is what silences it.
    os.remove(os.path.join(d, "mf_backup_agent.yml"))
    r = klaxon("rules", "test", d)
    check(r.returncode == 1 and "expected 0 alerts of the rule file, got 1" in r.stdout.decode(),
          "without the filter: %d %r" % (r.returncode, r.stdout))


def test_list_of_terminated_users():
    """A rule over a list (the control "activity by a terminated employee"): rules test
    shows it firing for a listed user only; the list changes the result without touching the
    rule; lint names a missing list."""
    d = tmpdir("lists")
    os.mkdir(os.path.join(d, "lists"))
    lst = write(os.path.join(d, "lists"), "terminated_users.list", "# HR offboarding\nmallory\n")
    write(d, "terminated.yml", "title: Activity by a terminated employee\nname: terminated_activity\n"
          "logsource: {product: app}\ndetection:\n  sel: {actor|expand: '%terminated_users%'}\n"
          "  condition: sel\nlevel: high\n")
    write(d, "terminated.tests.yml", """input: {format: json, logsource: {product: app}}
tests:
  - name: a listed user alerts, others do not
    events:
      - {time: "2026-03-01T09:00:00Z", actor: alice, action: login}
      - {time: "2026-03-01T09:05:00Z", actor: mallory, action: login}
    alerts:
      - {rule: terminated_activity, first_seen: "2026-03-01T09:05:00.000Z"}
""")
    r = klaxon("rules", "test", d)
    check(r.returncode == 0, "exit %d:\n%s%s" % (r.returncode, r.stdout.decode(), r.stderr.decode()))
    with open(lst, "w") as f:
        f.write("alice\n")
    r = klaxon("rules", "test", d)
    check(r.returncode == 1 and "alert 1: first_seen is \"2026-03-01T09:00:00.000Z\", expected "
          "\"2026-03-01T09:05:00.000Z\"" in r.stdout.decode(), "after the list changed: %r" % r.stdout)
    os.remove(lst)
    r = klaxon("rules", "lint", d)
    check(r.returncode == 2 and r.stdout.decode().splitlines()[0] ==
          "%s:5:23: placeholder %%terminated_users%% names no list (a file terminated_users.list in "
          "the rules tree)" % os.path.join(d, "terminated.yml"), "lint: %r" % r.stdout)


def test_generic_rule_through_the_shipped_mapping():
    """A generic Sigma rule in the taxonomy's names (User, SourceIp) runs on the sshd events the
    sample extractor decodes (user, src_ip) through rules/mappings/linux.yml."""
    d = tmpdir("mapping")
    shutil.copy(os.path.join(RULES, "mappings", "linux.yml"), d)
    write(d, "root_login.yml", "title: Root login over SSH from outside\nname: root_login\n"
          "logsource: {product: linux, service: sshd}\n"
          "detection:\n  sel: {User: root, outcome: Accepted}\n"
          "  internal: {SourceIp|cidr: 10.0.0.0/8}\n  condition: sel and not internal\n"
          "level: high\n")
    write(d, "root_login.tests.yml", """config: %s
tests:
  - name: root from the internet
    topic: auth
    events:
      - "Mar 10 09:15:02 web-01 sshd[20587]: Accepted password for root from 203.0.113.9 port 61022 ssh2"
      - "Mar 10 09:16:02 web-01 sshd[20588]: Accepted password for root from 10.1.2.3 port 61023 ssh2"
      - "Mar 10 09:17:02 web-01 sshd[20589]: Accepted password for bob from 203.0.113.9 port 61024 ssh2"
    alerts:
      - {rule: root_login, first_seen: "2026-03-10T09:15:02.000Z"}
""" % SAMPLE_CFG)
    r = klaxon("rules", "test", d)
    check(r.returncode == 0, "exit %d:\n%s%s" % (r.returncode, r.stdout.decode(), r.stderr.decode()))
    os.remove(os.path.join(d, "linux.yml"))
    r = klaxon("rules", "test", d)
    check(r.returncode == 1 and "expected 1 alert of the rule file, got 0" in r.stdout.decode(),
          "without the mapping: %d %r" % (r.returncode, r.stdout))


EXPLAIN_RULES = """title: Download and run
id: 55555555-0000-4000-8000-000000000001
detection:
  sel_curl:
    cmd|contains|all: [curl, '| sh']
  sel_wget:
    cmd|contains: wget
  admin:
    user: [root, admin]
  condition: 1 of sel_* and not admin
level: high
---
title: Any download
name: any_download
logsource: {product: app}
detection:
  sel:
    cmd|contains: curl
  condition: sel
---
title: Downloads per user
id: 55555555-0000-4000-8000-000000000002
correlation:
  type: event_count
  rules: [any_download]
  group-by: [user]
  timespan: 1h
  condition: {gte: 3}
"""

EXPLAIN_BOB = """event 1: {"cmd": "curl http://x | sh", "user": "bob"}
  time 2026-03-01T09:00:00.000Z  logsource -/-/-
  fields: cmd="curl http://x | sh" user="bob"
  rule "Download and run" (55555555-0000-4000-8000-000000000001): MATCH
    logsource -/-/-: fits
    sel_curl: true
      cmd|contains|all: true  values ["curl","| sh"]  event ["curl http://x | sh"]
    sel_wget: false
      cmd|contains: false  values ["wget"]  event ["curl http://x | sh"]
    admin: false
      user: false  values ["root","admin"]  event ["bob"]
    condition:
      and => true
        1 of (sel_curl, sel_wget) => true
        not => true
          admin => false
"""

EXPLAIN_CORR_EVENTS = "".join(
    '{"cmd": "%s", "user": "%s", "t": "2026-03-01T09:%s:00Z"}\n' % e
    for e in [("curl -O x", "bob", "00"), ("wget y", "bob", "05"), ("curl -O z", "alice", "10"),
              ("curl -O x", "bob", "20"), ("curl -O w", "bob", "30")])

EXPLAIN_CORR = """event 1: {"cmd": "curl -O x", "user": "bob", "t": "2026-03-01T09:00:00Z"}
  fields: cmd="curl -O x" user="bob" t="2026-03-01T09:00:00Z"
  rule "Downloads per user" (55555555-0000-4000-8000-000000000002, event_count): the event counts
    in group {"user":"bob"}
    rule "Any download" (any_download): MATCH
      logsource app/-/-: fits
      sel: true
        cmd|contains: true  matched "curl"  event ["curl -O x"]
      condition:
        sel => true
    window of group {"user":"bob"}: 1 event(s) from 2026-03-01T09:00:00.000Z to 2026-03-01T09:00:00.000Z; condition event_count >= 3: not met
event 2: {"cmd": "wget y", "user": "bob", "t": "2026-03-01T09:05:00Z"}
  fields: cmd="wget y" user="bob" t="2026-03-01T09:05:00Z"
  rule "Downloads per user" (55555555-0000-4000-8000-000000000002, event_count): the event counts for none of its rules
    rule "Any download" (any_download): no match
      logsource app/-/-: fits
      sel: false
        cmd|contains: false  values ["curl"]  event ["wget y"]
      condition:
        sel => false
event 3: {"cmd": "curl -O z", "user": "alice", "t": "2026-03-01T09:10:00Z"}
  fields: cmd="curl -O z" user="alice" t="2026-03-01T09:10:00Z"
  rule "Downloads per user" (55555555-0000-4000-8000-000000000002, event_count): the event counts
    in group {"user":"alice"}
    rule "Any download" (any_download): MATCH
      logsource app/-/-: fits
      sel: true
        cmd|contains: true  matched "curl"  event ["curl -O z"]
      condition:
        sel => true
    window of group {"user":"alice"}: 1 event(s) from 2026-03-01T09:10:00.000Z to 2026-03-01T09:10:00.000Z; condition event_count >= 3: not met
event 4: {"cmd": "curl -O x", "user": "bob", "t": "2026-03-01T09:20:00Z"}
  fields: cmd="curl -O x" user="bob" t="2026-03-01T09:20:00Z"
  rule "Downloads per user" (55555555-0000-4000-8000-000000000002, event_count): the event counts
    in group {"user":"bob"}
    rule "Any download" (any_download): MATCH
      logsource app/-/-: fits
      sel: true
        cmd|contains: true  matched "curl"  event ["curl -O x"]
      condition:
        sel => true
    window of group {"user":"bob"}: 2 event(s) from 2026-03-01T09:00:00.000Z to 2026-03-01T09:20:00.000Z; condition event_count >= 3: not met
event 5: {"cmd": "curl -O w", "user": "bob", "t": "2026-03-01T09:30:00Z"}
  fields: cmd="curl -O w" user="bob" t="2026-03-01T09:30:00Z"
  rule "Downloads per user" (55555555-0000-4000-8000-000000000002, event_count): the event counts
    in group {"user":"bob"}
    rule "Any download" (any_download): MATCH
      logsource app/-/-: fits
      sel: true
        cmd|contains: true  matched "curl"  event ["curl -O w"]
      condition:
        sel => true
    window of group {"user":"bob"}: 3 event(s) from 2026-03-01T09:00:00.000Z to 2026-03-01T09:30:00.000Z; condition event_count >= 3: met -- fires
    ALERT group {"user":"bob"} count 3, 2026-03-01T09:00:00.000Z to 2026-03-01T09:30:00.000Z
"""

EXPLAIN_ABSENCE = """title: Backups done
name: backup_done
logsource: {product: app}
detection:
  sel: {job: backup, result: ok}
  condition: sel
---
title: No backup in a day
id: 55555555-0000-4000-8000-000000000003
correlation:
  type: absence
  rules: [backup_done]
  group-by: [host]
  timespan: 1d
"""


def explain_stdin(args, events):
    """klaxon rules explain ARGS... - with events on stdin."""
    return subprocess.run([KLAXON, "rules", "explain"] + args + ["-"],
                          input=events if isinstance(events, bytes) else events.encode(),
                          capture_output=True, timeout=60)


def test_explain():
    """explain pinned: a selection, a condition with not and 1 of, a correlation (the rule it
    counts and the group); exit 0 only when every event matches; --json."""
    d = tmpdir("explain")
    write(d, "r.yml", EXPLAIN_RULES)
    cfg = write(tmpdir("explain-cfg"), "c.yaml", "inputs:\n  - topic: app\n    format: json\n    logsource: {product: app}\n"
                "    time_field: t\n")
    r = klaxon("rules", "explain", "--config", cfg, "--topic", "app", "--rules", d,
               "Download and run", '{"cmd": "curl http://x | sh", "user": "bob"}')
    out = r.stdout.decode()  # (the event's logsource is the input's; the rule has none: fits)
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    want = EXPLAIN_BOB
    got = "\n".join(l for l in out.splitlines() if not l.startswith("  time ")) + "\n"
    want = "\n".join(l for l in want.splitlines() if not l.startswith("  time ")) + "\n"
    check(got == want, "explain:\n%s\nwant:\n%s" % (got, want))
    r = klaxon("rules", "explain", "--config", cfg, "--topic", "app", "--rules", d,
               "Download and run", '{"cmd": "curl http://x | sh", "user": "root"}')
    check(r.returncode == 1 and "          admin => true" in r.stdout.decode() and
          "): no match" in r.stdout.decode(), "root: %d %s" % (r.returncode, r.stdout.decode()))
    # A correlation: the counted rule, then the window of the event's group after each event
    # and the alert, from run's engine on the events' own time; exit 1 (event 2 counts not).
    r = explain_stdin(["--config", cfg, "--topic", "app", "--rules", d,
                        "Downloads per user"], EXPLAIN_CORR_EVENTS)
    got = "\n".join(l for l in r.stdout.decode().splitlines() if not l.startswith("  time ")) + "\n"
    check(r.returncode == 1 and got == EXPLAIN_CORR, "correlation %d:\n%s" % (r.returncode, got))
    r = explain_stdin(["--config", cfg, "--topic", "app", "--rules", d,
                        "--json", "Downloads per user"], EXPLAIN_CORR_EVENTS)
    js = [json.loads(l) for l in r.stdout.decode().splitlines()]
    check([len(j["windows"]) for j in js] == [1, 0, 1, 1, 1] and
          js[4]["windows"][0] == {"group": {"user": "bob"}, "time": "2026-03-01T09:30:00.000Z",
                                  "count": 3, "first": "2026-03-01T09:00:00.000Z",
                                  "last": "2026-03-01T09:30:00.000Z", "condition_met": True,
                                  "fired": True} and
          js[4]["alerts"] == [{"group": {"user": "bob"}, "count": 3,
                               "first_seen": "2026-03-01T09:00:00.000Z",
                               "last_seen": "2026-03-01T09:30:00.000Z"}] and js[3]["alerts"] == [],
          "correlation json: %s" % js)
    # An absence is judged as the events' time passes: db1's day ends before event 3.
    ab = tmpdir("explain-absence")
    write(ab, "r.yml", EXPLAIN_ABSENCE)
    r = explain_stdin(["--config", cfg, "--topic", "app", "--rules", ab,
                        "No backup in a day"], b'{"job": "backup", "result": "ok", "host": "db1", "t": "2026-03-01T01:00:00Z"}\n'
                             b'{"job": "backup", "result": "ok", "host": "db2", "t": "2026-03-02T01:00:00Z"}\n'
                             b'{"job": "other", "host": "db2", "t": "2026-03-02T12:00:00Z"}\n')
    out = r.stdout.decode()
    check(out.endswith("        sel => false\n"
                       "    ALERT group {\"host\":\"db1\"} count 0, 2026-03-01T01:00:00.000Z to "
                       "2026-03-01T01:00:00.000Z\n") and out.count("ALERT") == 1, "absence:\n%s" % out)
    # Within the allowed lateness of its end, it is judged at the end of the events (replay's
    # rule: by the last event's time), and said so.
    r = explain_stdin(["--config", cfg, "--topic", "app", "--rules", ab,
                        "No backup in a day"], b'{"job": "backup", "result": "ok", "host": "db1", "t": "2026-03-01T01:00:00Z"}\n'
                             b'{"job": "other", "host": "db2", "t": "2026-03-02T01:00:30Z"}\n')
    out = r.stdout.decode()
    check(out.endswith("        sel => false\nat the end of the events:\n"
                       "    ALERT group {\"host\":\"db1\"} count 0, 2026-03-01T01:00:00.000Z to "
                       "2026-03-01T01:00:00.000Z\n"), "absence at the end:\n%s" % out)
    # Without the config the JSON event has no logsource: the rule's product does not fit.
    r = klaxon("rules", "explain", "--rules", d, "--json", "any_download", '{"cmd": "curl"}')
    j = json.loads(r.stdout)
    check(r.returncode == 1 and j["logsource_fits"] is False and j["match"] is False and
          j["searches"][0]["value"] is True and j["condition"] == {"op": "id", "value": True,
                                                                   "searches": ["sel"]},
          "json %d %s" % (r.returncode, j))
    # A regex given up: the answer is the engine's (regex_budget fail_closed for high) and says so.
    slow = tmpdir("explain-slow")
    write(slow, "r.yml", "title: slow\nid: 66666666-0000-4000-8000-000000000001\nlevel: high\n"
          "detection:\n  s: {msg|re: '^(a|aa)+\\1$'}\n  condition: s\n")
    r = explain_stdin(["--rules", slow, "--json", "slow"], ('{"msg": "%sb"}\n' % ("a" * 60)))
    j = json.loads(r.stdout)
    check(r.returncode == 0 and j["match"] is True and
          j["degraded"] == "regex match limit reached in msg|re", "degraded: %d %s" % (r.returncode, j))
    r = klaxon("rules", "explain", "--rules", d, "nope", "{}")
    check(r.returncode == 2 and b'no rule has the id, name or title "nope"' in r.stderr,
          "unknown rule %d %r" % (r.returncode, r.stderr))


STATEFUL_RULES = """title: backup done
name: backup_done
logsource: {product: backup}
detection:
  sel: {event: completed}
  condition: sel
---
title: Backup missing
id: 22222222-0000-4000-8000-000000000001
correlation:
  type: absence
  rules: [backup_done]
  group-by: [host]
  timespan: 26h
level: high
---
title: admin login
name: admin_login
logsource: {product: app}
detection:
  sel: {action: login}
  condition: sel
---
title: Login from a new country
id: 22222222-0000-4000-8000-000000000002
correlation:
  type: first_seen
  rules: [admin_login]
  group-by: [user]
  field: country
  timespan: 30d
level: medium
"""

STATEFUL_TESTS = """tests:
  - name: a host silent for more than 26 hours is reported, and resolved when it comes back
    input: {format: json, logsource: {product: backup}}
    events:
      - {time: "2026-03-01T02:00:00Z", host: db1, event: completed}
      - {time: "2026-03-01T02:00:00Z", host: db2, event: completed}
      - {time: "2026-03-02T01:00:00Z", host: db2, event: completed}
      - {time: "2026-03-02T03:00:00Z", host: db2, event: completed}
      - {time: "2026-03-03T05:00:00Z", host: db2, event: completed}
      - {time: "2026-03-03T06:00:00Z", host: db1, event: completed}
    alerts:
      - {rule: Backup missing, group: {host: db1}, status: firing, count: 0,
         first_seen: "2026-03-01T02:00:00.000Z"}
      - {rule: Backup missing, group: {host: db1}, status: resolved,
         first_seen: "2026-03-01T02:00:00.000Z", last_seen: "2026-03-03T06:00:00.000Z"}
  - name: a host that reports within 26 hours is never missing
    input: {format: json, logsource: {product: backup}}
    events:
      - {time: "2026-03-01T02:00:00Z", host: db1, event: completed}
      - {time: "2026-03-02T04:00:00Z", host: db1, event: completed}
      - {time: "2026-03-03T06:00:00Z", host: db1, event: completed}
    alerts: []
  - name: a country new for a user alerts once, and again only after 30 days without it
    input: {format: json, logsource: {product: app}}
    events:
      - {time: "2026-03-01T09:00:00Z", user: ana, action: login, country: ES}
      - {time: "2026-03-02T09:00:00Z", user: ana, action: login, country: ES}
      - {time: "2026-03-03T09:00:00Z", user: ana, action: login, country: BR}
      - {time: "2026-03-20T09:00:00Z", user: ana, action: login, country: BR}
      - {time: "2026-05-01T09:00:00Z", user: ana, action: login, country: ES}
    alerts:
      - {rule: Login from a new country, group: {user: ana}, first_seen: "2026-03-01T09:00:00.000Z"}
      - {rule: Login from a new country, group: {user: ana}, first_seen: "2026-03-03T09:00:00.000Z"}
      - {rule: Login from a new country, group: {user: ana}, first_seen: "2026-05-01T09:00:00.000Z"}
"""


def test_stateful_rules_on_event_time():
    d = tmpdir("stateful")
    write(d, "stateful.yml", STATEFUL_RULES)
    write(d, "stateful.tests.yml", STATEFUL_TESTS)
    r = klaxon("rules", "test", d)
    out = r.stdout.decode()
    check(r.returncode == 0, "exit %d:\n%s%s" % (r.returncode, out, r.stderr.decode()))
    check(out.splitlines()[-1] == "3 passed, 0 failed; 4 rules, 0 without tests", "summary:\n%s" % out)
    # The same tests against a first_seen that forgets after 1 day: its third test must fail.
    write(d, "stateful.yml", STATEFUL_RULES.replace("timespan: 30d", "timespan: 1d"))
    r = klaxon("rules", "test", "--json", d)
    check(r.returncode == 1, "exit %d" % r.returncode)
    j = json.loads(r.stdout)
    check([x["ok"] for x in j["results"]] == [True, True, False], "results %s" % j["results"])
    check(j["results"][2]["why"].startswith("expected 3 alerts of the rule file, got 4\n"),
          "why %r" % j["results"][2]["why"])


def test_decoders_as_content():
    """The shipped decoders pass their samples; a sample that no longer matches fails with
    the field that differs; and the shipped rules see fields with no config at all: the
    decoders are content, loaded by default."""
    r = klaxon("decoders", "test", "--quiet")
    out = r.stdout.decode()
    check(r.returncode == 0 and out.endswith(" 0 failed; %d decoders, 0 without samples\n" %
                                             len([f for _, _, fs in os.walk(os.path.join(SRC, "decoders"))
                                                  for f in fs if f.endswith(".yml")])),
          "shipped decoders: %d %s %s" % (r.returncode, out, r.stderr))
    d = tmpdir("decoders")
    shutil.copytree(os.path.join(SRC, "decoders"), os.path.join(d, "decoders"))
    sshd = os.path.join(d, "decoders", "linux", "sshd.yml")
    with open(sshd) as f:
        text = f.read()
    with open(sshd, "w") as f:
        f.write(text.replace("fields: {outcome: Failed, auth_method: password, user: bob,",
                             "fields: {outcome: Failed, auth_method: password, user: alice,"))
    r = klaxon("decoders", "test", "--quiet", os.path.join(d, "decoders"))
    out = r.stdout.decode()
    check(r.returncode == 1 and "FAIL  %s:22  OpenSSH server (sshd) sample 2\n" % sshd in out and
          'field user is "bob", want "alice"' in out, "broken sample: %d %s" % (r.returncode, out))
    # README's "rules only" replay of a syslog file: the decoders give the rules their fields
    r = klaxon("replay", "--rules", os.path.join(SRC, "rules"), "--format", "syslog",
               os.path.join(SRC, "samples", "auth.log"))
    rules = sorted(json.loads(l)["rule"]["title"] for l in r.stdout.decode().splitlines())
    check(r.returncode == 0 and len(rules) == 11 and rules.count("sudo command run as root") == 2,
          "replay without a config: %s %s" % (rules, r.stderr))
    r = klaxon("replay", "--rules", os.path.join(SRC, "rules"), "--format", "syslog", "--no-decoders",
               os.path.join(SRC, "samples", "auth.log"))
    check(r.returncode == 0 and r.stdout == b"", "--no-decoders: %s" % r.stdout)


if __name__ == "__main__":
    run_tests([test_lint_every_error, test_lint_shipped_rules, test_list, test_shipped_rules_pass,
               test_broken_rule_fails_its_test, test_bad_tests_file, test_stateful_rules_on_event_time,
               test_lint_details, test_expectation_values, test_filter_silences_a_shipped_rule,
               test_list_of_terminated_users, test_explain, test_generic_rule_through_the_shipped_mapping,
               test_decoders_as_content])
