#!/usr/bin/env python3
"""gen_sigma_events: a stream for bench/gen_sigma.py's rules, one Kafka topic per logsource.

    python3 bench/gen_sigma_events.py --rules DIR [--n 40000] [--seed 42] [--plant 0.01]
                                      [--probes 400] --out OUT

DIR is gen_sigma.py's output (its rules.json). Writes, in OUT:
  events.tsv           "TOPIC<TAB>JSON" per event, in time order (bench-detect reads it)
  TOPIC.jsonl          each topic's events (kx-produce reads them)
  probes.tsv           events that match a known rule, with a PROBE000000 marker that
                       bench-latency numbers as it sends them
  sigma.yaml           a klaxon config template: one input per topic, each with its logsource
  sigma-nols.yaml      the same inputs without logsource (the "no routing" rows)
The templates hold @BROKERS@ @GROUP@ @RULES@ @ALERTS@ @METRICS_PORT@ @PREFIX@ @PROPS@,
which bench/run.sh fills in.

Events are what the rules target: Sysmon process creation, registry, file, network and image
load records, PowerShell script blocks, Windows Security and System events, Linux process
creation and auditd, CloudTrail, Entra ID (Azure) sign-ins, Okta, proxy and web server logs,
as flat JSON (nested where the source nests: CloudTrail's userIdentity, Okta's
debugContext). Benign values are built from words without q, z or j, which every rule word
has, so benign events match nothing; a share --plant of events (1 %) is a benign event of a
rule's logsource overlaid with the values that rule's witness in rules.json says satisfy
it. How many really match is what bench-detect reports (a witness for a rule with several
selections on one field can miss).

The volume mix per topic is an assumption (process creation the largest, as in most
Windows fleets), not a measurement: see INPUTS. Deterministic for a seed; stdlib only.
"""
import argparse
import json
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_sigma  # noqa: E402

# topic, logsource, share of events, Windows/Sysmon EventID (None: not a Windows source)
INPUTS = [
    ("win-process", "windows//process_creation", 0.25, 1),
    ("win-registry", "windows//registry_set", 0.12, 13),
    ("win-file", "windows//file_event", 0.10, 11),
    ("win-network", "windows//network_connection", 0.09, 3),
    ("win-imageload", "windows//image_load", 0.08, 7),
    ("win-psscript", "windows//ps_script", 0.03, 4104),
    ("win-security", "windows/security/", 0.10, None),
    ("win-system", "windows/system/", 0.02, None),
    ("linux-process", "linux//process_creation", 0.05, None),
    ("linux-auditd", "linux/auditd/", 0.03, None),
    ("cloudtrail", "aws/cloudtrail/", 0.05, None),
    ("azure-signin", "azure/signinlogs/", 0.03, None),
    ("okta", "okta/okta/", 0.01, None),
    ("proxy", "//proxy", 0.03, None),
    ("webserver", "//webserver", 0.01, None),
]
START_MS = 1773100800000  # 2026-03-10T00:00:00Z


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def set_path(d, path, v):
    parts = path.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            return
    if v is None:
        d.pop(parts[-1], None)
    else:
        d[parts[-1]] = v


class Benign:
    """Benign values: a vocabulary with Zipf-like reuse, so common binaries repeat."""

    def __init__(self, r):
        self.r = r
        self.words = [gen_sigma.word(r, False) for _ in range(3000)]
        self.exes = ["C:\\Windows\\System32\\%s.exe" % w for w in self.words[:120]] + \
            ["C:\\Program Files\\%s\\%s.exe" % (gen_sigma.cap(a), b)
             for a, b in zip(self.words[120:200], self.words[200:280])]
        self.hosts = ["WS-%s-%02d" % (w.upper()[:5], i) for i, w in enumerate(self.words[300:340])]
        self.users = ["CORP\\%s" % w for w in self.words[340:420]]

    def w(self):
        r = self.r
        return self.words[int(len(self.words) * r.random() ** 4)]

    def exe(self):
        r = self.r
        return self.exes[int(len(self.exes) * r.random() ** 3)]

    def cmdline(self, img=None):
        r = self.r
        img = img or self.exe()
        args = []
        for _ in range(r.randint(0, 6)):
            k = r.random()
            if k < 0.4:
                args.append("-%s" % self.w())
            elif k < 0.6:
                args.append("/%s" % self.w())
            elif k < 0.8:
                args.append("C:\\Users\\%s\\AppData\\Local\\%s\\%s.dat" % (
                    self.w(), gen_sigma.cap(self.w()), self.w()))
            else:
                args.append("%s=%d" % (self.w(), r.randint(0, 9999)))
        return " ".join(['"%s"' % img] + args)

    def path(self):
        r = self.r
        return "C:\\Users\\%s\\%s\\%s.%s" % (self.w(), gen_sigma.cap(self.w()), self.w(),
                                             r.choice(["txt", "dat", "log", "tmp", "docx", "exe"]))

    def regkey(self):
        return "HKLM\\SOFTWARE\\%s\\%s\\%s" % (gen_sigma.cap(self.w()), gen_sigma.cap(self.w()),
                                               gen_sigma.cap(self.w()))

    def ip(self):
        r = self.r
        if r.random() < 0.6:
            return "10.%d.%d.%d" % (r.randint(0, 255), r.randint(0, 255), r.randint(1, 254))
        return "198.%d.%d.%d" % (r.randint(18, 19), r.randint(0, 255), r.randint(1, 254))

    def guid(self):
        return "{%s}" % uuid.UUID(int=self.r.getrandbits(128))

    def hashes(self):
        r = self.r
        return "SHA1=%040X,MD5=%032X,SHA256=%064X,IMPHASH=%032X" % (
            r.getrandbits(160), r.getrandbits(128), r.getrandbits(256), r.getrandbits(128))

    def value(self, field, kind):
        """A benign value for a field the rules test."""
        r = self.r
        if kind == "path":
            return self.exe() if r.random() < 0.7 else self.path()
        if kind == "cmdline":
            return self.cmdline()
        if kind == "registry":
            return self.regkey()
        if kind == "details":
            return r.choice(["DWORD (0x%08x)" % r.randint(0, 9), self.exe(), gen_sigma.cap(self.w())])
        if kind == "number":
            return r.choice([0, 1, 2, 3, 10, 200, 304, 404, 443, 80, 53, 4624, 4688, 7036])
        if kind == "ip":
            return self.ip()
        if kind == "hash":
            return self.hashes()
        if kind == "useragent":
            return "Mozilla/5.0 (Windows NT 10.0; Win64; x64) %s/%d.0" % (
                gen_sigma.cap(self.w()), r.randint(90, 130))
        if kind == "bool":
            return "false"
        if kind == "host":
            return "%s.%s.com" % (self.w(), self.w())
        return gen_sigma.cap(self.w())


def event(b, r, topic, ls, eid, t):
    """One benign event of a topic: the fields its rules test plus what the source carries."""
    e = {"EventTime": iso(t)}
    if eid is not None:
        e.update({"Computer": r.choice(b.hosts), "Channel": "Microsoft-Windows-Sysmon/Operational"
                  if eid < 4000 else "Microsoft-Windows-PowerShell/Operational", "EventID": eid,
                  "ProcessGuid": b.guid(), "ProcessId": r.randint(100, 60000)})
    if topic == "win-process":
        img = b.exe()
        parent = b.exe()
        e.update({"Image": img, "FileVersion": "10.0.%d.%d" % (r.randint(10000, 22000),
                                                                r.randint(1, 3000)),
                  "Description": gen_sigma.cap(b.w()), "Product": "Microsoft Windows",
                  "Company": "Microsoft Corporation",
                  "OriginalFileName": img.rsplit("\\", 1)[1], "CommandLine": b.cmdline(img),
                  "CurrentDirectory": "C:\\Windows\\system32\\", "User": r.choice(b.users),
                  "LogonGuid": b.guid(), "LogonId": "0x%x" % r.getrandbits(24),
                  "TerminalSessionId": r.randint(0, 3), "IntegrityLevel":
                  r.choice(["Medium", "High", "System"]), "Hashes": b.hashes(),
                  "ParentProcessGuid": b.guid(), "ParentProcessId": r.randint(100, 60000),
                  "ParentImage": parent, "ParentCommandLine": b.cmdline(parent),
                  "ParentUser": r.choice(b.users)})
    elif topic == "win-security":
        e.update({"Computer": r.choice(b.hosts), "Channel": "Security",
                  "EventID": r.choice([4624, 4625, 4634, 4648, 4672, 4688, 4663, 4656, 4768]),
                  "SubjectUserSid": "S-1-5-18", "SubjectUserName": b.w(),
                  "SubjectDomainName": "CORP", "SubjectLogonId": "0x3e7",
                  "TargetUserName": b.w(), "TargetDomainName": "CORP",
                  "LogonType": r.choice([2, 3, 5, 10]), "IpAddress": b.ip(), "IpPort":
                  r.randint(49152, 65535), "ProcessName": b.exe(), "ObjectName": b.path(),
                  "ObjectType": "File", "AccessMask": "0x%x" % r.choice([1, 2, 4, 0x100]),
                  "AccessList": "%%%%%d" % r.randint(1537, 1544), "ShareName": "\\\\*\\IPC$",
                  "RelativeTargetName": b.w(), "ServiceFileName": b.exe(),
                  "AttributeLDAPDisplayName": b.w()})
    elif topic == "win-system":
        e.update({"Computer": r.choice(b.hosts), "Channel": "System",
                  "EventID": r.choice([7036, 7040, 7045, 6005, 1074]),
                  "Provider_Name": "Service Control Manager", "ServiceName": gen_sigma.cap(b.w()),
                  "ImagePath": b.exe(), "param1": b.w(), "param2": "running"})
    elif topic == "linux-process":
        img = "/usr/bin/" + b.w()
        e.update({"host": r.choice(b.hosts).lower(), "ProcessId": r.randint(100, 60000),
                  "Image": img, "CommandLine": img + " " + " ".join(
                      "-" + b.w() for _ in range(r.randint(0, 4))),
                  "CurrentDirectory": "/home/" + b.w(), "User": b.w(),
                  "LogonId": r.randint(0, 9999), "ParentImage": "/bin/bash",
                  "ParentCommandLine": "-bash"})
    elif topic == "linux-auditd":
        e.update({"host": r.choice(b.hosts).lower(), "type": r.choice(["SYSCALL", "EXECVE",
                                                                       "PATH", "USER_CMD"]),
                  "msg": "audit(%d.%03d:%d)" % (t // 1000, t % 1000, r.randint(1, 10 ** 6)),
                  "SYSCALL": r.choice(["execve", "openat", "connect"]),
                  "a0": b.w(), "a1": "-" + b.w(), "a2": b.w(), "a3": b.w(),
                  "name": "/etc/" + b.w(), "exe": "/usr/bin/" + b.w(), "comm": b.w(),
                  "key": b.w(), "auid": r.randint(1000, 1100), "euid": 0})
    elif topic == "cloudtrail":
        acct = "%012d" % r.randint(10 ** 11, 10 ** 12 - 1)
        e.update({"eventVersion": "1.09", "userIdentity": {
            "type": r.choice(["IAMUser", "AssumedRole", "AWSService"]),
            "principalId": "AIDA%016X" % r.getrandbits(64),
            "arn": "arn:aws:iam::%s:user/%s" % (acct, b.w()), "accountId": acct},
            "eventSource": "%s.amazonaws.com" % r.choice(["ec2", "s3", "iam", "sts", "kms"]),
            "eventName": gen_sigma.cap(b.w()) + gen_sigma.cap(b.w()),
            "awsRegion": "eu-west-1", "sourceIPAddress": b.ip(),
            "userAgent": "aws-cli/2.15.%d Python/3.11.8" % r.randint(0, 40),
            "requestParameters": {"bucketName": b.w(), "key": b.path()},
            "responseElements": None, "requestID": str(uuid.UUID(int=r.getrandbits(128))),
            "eventID": str(uuid.UUID(int=r.getrandbits(128))), "readOnly": True,
            "eventType": "AwsApiCall", "recipientAccountId": acct})
    elif topic == "azure-signin":
        e.update({"ResultType": r.choice([0, 0, 0, 50126, 50074]),
                  "ResultDescription": gen_sigma.cap(b.w()),
                  "userPrincipalName": "%s@corp.example" % b.w(), "AppDisplayName":
                  gen_sigma.cap(b.w()), "IPAddress": b.ip(), "AuthenticationRequirement":
                  "singleFactorAuthentication", "Status": {"errorCode": 0},
                  "userAgent": b.value("userAgent", "useragent"),
                  "DeviceDetail": {"deviceId": "", "operatingSystem": "Windows10",
                                   "trusttype": r.choice(["", "Azure AD joined"])},
                  "conditionalAccessStatus": "notApplied", "RiskState": "none",
                  "correlationId": str(uuid.UUID(int=r.getrandbits(128)))})
    elif topic == "okta":
        e.update({"eventType": "user.%s.%s" % (b.w(), b.w()), "legacyEventType": b.w(),
                  "displayMessage": gen_sigma.cap(b.w()) + " " + b.w(),
                  "actor": {"id": "00u%017x" % r.getrandbits(68), "type": "User",
                            "alternateId": "%s@corp.example" % b.w()},
                  "outcome": {"result": "SUCCESS", "reason": None},
                  "client": {"ipAddress": b.ip(), "userAgent": {"rawUserAgent":
                                                                b.value("ua", "useragent")}},
                  "securityContext": {"isProxy": False},
                  "debugContext": {"debugData": {"requestUri": "/api/v1/%s" % b.w()}},
                  "target": [{"displayName": b.w(), "type": "AppInstance"}]})
    elif topic in ("proxy", "webserver"):
        host = "%s.%s.com" % (b.w(), b.w())
        path = "/%s/%s.%s" % (b.w(), b.w(), r.choice(["html", "js", "png", "php", "css"]))
        q = "?%s=%s" % (b.w(), b.w()) if r.random() < 0.5 else ""
        e.update({"c-ip": b.ip(), "cs-method": r.choice(["GET", "GET", "GET", "POST", "HEAD"]),
                  "sc-status": r.choice([200, 200, 200, 304, 404, 302]),
                  "cs-bytes": r.randint(100, 5000), "sc-bytes": r.randint(100, 10 ** 6)})
        if topic == "proxy":
            e.update({"cs-host": host, "c-uri": "https://%s%s%s" % (host, path, q),
                      "cs-uri": path + q, "c-uri-extension": path.rsplit(".", 1)[1],
                      "c-useragent": b.value("ua", "useragent"), "dst_ip": b.ip()})
        else:
            e.update({"cs-uri-stem": path, "cs-uri-query": q[1:] or "-",
                      "cs-user-agent": b.value("ua", "useragent"), "cs-referer": "-",
                      "cs-username": "-", "cs-host": host})
    # Every field the logsource's rules test, where the source above did not set it.
    for f, _ in gen_sigma.FIELDS.get(ls, []):
        cur = e
        for p in f.split(".")[:-1]:
            cur = cur.get(p, {}) if isinstance(cur, dict) else {}
        if not isinstance(cur, dict) or f.split(".")[-1] not in cur:
            set_path(e, f, b.value(f, gen_sigma.KIND.get(f, "name")))
    if topic == "win-registry":
        e["EventType"] = "SetValue"
    return e


def plant(e, wit):
    for f, v in wit.items():
        set_path(e, f, v)


CONFIG = """# klaxon config for the rule-set bench (bench/gen_sigma_events.py; run.sh fills the @...@).
rules:
  - @RULES@

kafka:
  brokers: @BROKERS@
  group: @GROUP@
  batch: 500
  properties: {session.timeout.ms: 6000, heartbeat.interval.ms: 500@PROPS@}

inputs:
%s
state:
  store: memory

alerting:
  evidence: 5
  dedup_window: 1h
  sinks:
    file: {type: file, path: @ALERTS@}
  routes:
    - team: default
      sinks: [file]

metrics:
  listen: 127.0.0.1:@METRICS_PORT@
"""


def config(with_ls):
    out = []
    for topic, ls, _, _ in INPUTS:
        out.append("  - topic: @PREFIX@%s" % topic)
        out.append("    format: json")
        out.append("    time_field: EventTime")
        if with_ls:
            p, s, c = ls.split("/")
            kv = ", ".join("%s: %s" % (k, v) for k, v in (("product", p), ("service", s),
                                                          ("category", c)) if v)
            out.append("    logsource: {%s}" % kv)
    return CONFIG % "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", required=True, help="gen_sigma.py's output directory")
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--plant", type=float, default=0.01, help="share of events planted to match")
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    man = json.load(open(os.path.join(a.rules, "rules.json")))
    r = random.Random(a.seed)
    b = Benign(r)
    by_ls = {}
    for i, m in enumerate(man["rules"]):
        by_ls.setdefault(m["logsource"], []).append(m)
    plantable = [m for m in man["rules"] if any(m["logsource"] == ls for _, ls, _, _ in INPUTS)]
    topic_of = {ls: (topic, eid) for topic, ls, _, eid in INPUTS}
    weights = [(i, s) for i, (_, _, s, _) in enumerate(INPUTS)]
    t = START_MS
    files = {topic: open(os.path.join(a.out, topic + ".jsonl"), "w") for topic, _, _, _ in INPUTS}
    planted = 0
    nbytes = 0
    with open(os.path.join(a.out, "events.tsv"), "w") as ft:
        for _ in range(a.n):
            t += r.randint(0, 20)
            if plantable and r.random() < a.plant:
                m = r.choice(plantable)
                topic, eid = topic_of[m["logsource"]]
                e = event(b, r, topic, m["logsource"], eid, t)
                plant(e, m["witness"])
                planted += 1
            else:
                topic, ls, _, eid = INPUTS[gen_sigma.pick(r, weights)]
                e = event(b, r, topic, ls, eid, t)
            line = json.dumps(e, separators=(",", ":"))
            nbytes += len(line)
            ft.write("%s\t%s\n" % (topic, line))
            files[topic].write(line + "\n")
    for f in files.values():
        f.close()
    # Probes: the first big rule (a single selection of command-line fragments) always has a
    # witness that matches; the marker goes first so it survives evidence truncation.
    big = [m for m in man["rules"] if m["logsource"] == "windows//process_creation" and
           m["values"] >= 500]
    with open(os.path.join(a.out, "probes.tsv"), "w") as fp:
        for i in range(a.probes if big else 0):
            e = {"BenchProbe": "PROBE000000"}
            e.update(event(b, r, "win-process", "windows//process_creation", 1, START_MS))
            plant(e, big[0]["witness"])
            fp.write("win-process\t%s\n" % json.dumps(e, separators=(",", ":")))
    for with_ls, name in ((True, "sigma.yaml"), (False, "sigma-nols.yaml")):
        with open(os.path.join(a.out, name), "w") as f:
            f.write(config(with_ls))
    sizes = {}
    for topic, _, _, _ in INPUTS:
        sizes[topic] = os.path.getsize(os.path.join(a.out, topic + ".jsonl"))
    print("gen_sigma_events: %d events (%d planted), %d topics, %.0f bytes/event, %s; "
          "topic bytes %s" % (a.n, planted, len(INPUTS), nbytes / max(1, a.n), a.out,
                              " ".join("%s=%d" % kv for kv in sizes.items())))


if __name__ == "__main__":
    main()
