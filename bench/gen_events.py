#!/usr/bin/env python3
"""Deterministic synthetic security log stream for `make bench`.

Writes, into --out:
  auth.log          syslog lines (RFC 3164, as samples/klaxon.yaml's `auth` input expects)
  auth.pN.log       the same lines split by host over --auth-partitions files: a host's syslog
                    goes to one partition, in order (as a producer keyed by host would do)
  cloudtrail.jsonl  CloudTrail records, one compact JSON object per line (`cloudtrail` input)
  events.tsv        the whole stream in event-time order, "TOPIC<TAB>LINE" (in-memory benches)
and prints one summary line "generated N syslog=S cloudtrail=C ...".

The mix is mostly noise that matches nothing (sshd connection churn, cron, PAM sessions,
systemd, firewall drops; CloudTrail reads, S3 data events, AssumeRole, KMS) and a small
fraction that the shipped rules catch: bursts of failed passwords from a few attacker
addresses (ssh_failed_password -> ssh_bruteforce), a few legitimate mistyped passwords, sudo
to root, SSH logins outside office hours, and AttachUserPolicy with AdministratorAccess.
Same --seed and --n give byte-identical files.
"""
import argparse
import json
import time
import random
import uuid

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
START_S = 1773100800  # 2026-03-10T00:00:00Z, a Tuesday (the config pins the syslog year 2026)

HOSTS = ["web-%02d" % i for i in range(1, 21)] + ["db-%02d" % i for i in range(1, 5)] + [
    "bastion-01", "ci-runner-01", "ci-runner-02"]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "deploy", "backup"]
ADMINS = ["alice", "carol", "erin"]
INTERNAL = ["10.20.%d.%d" % (a, b) for a in range(0, 4) for b in range(10, 60)]
ATTACKERS = ["203.0.113.50", "203.0.113.77", "198.51.100.200", "192.0.2.99", "45.155.205.11"]
SCANNERS = ["45.155.205.%d" % i for i in range(20, 60)] + ["185.220.101.%d" % i for i in range(1, 40)]
BAD_USERS = ["admin", "root", "test", "oracle", "ubuntu", "pi", "user", "postgres", "git", "ftp"]
ACCOUNTS = ["111122223333", "444455556666", "777788889999"]
REGIONS = ["eu-west-1", "us-east-1", "eu-central-1"]
CRON_CMDS = [
    "(root) CMD (   cd / && run-parts --report /etc/cron.hourly)",
    "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "(root) CMD (/usr/local/bin/node_exporter_textfile.sh >/dev/null 2>&1)",
    "(backup) CMD (/usr/local/bin/backup-incremental --quiet)",
    "(www-data) CMD (php /srv/app/artisan schedule:run >> /dev/null 2>&1)",
]
ROOT_CMDS = ["/usr/bin/systemctl restart nginx", "/usr/bin/apt-get upgrade -y",
             "/usr/bin/journalctl -u sshd --since today", "/bin/cat /etc/shadow",
             "/usr/sbin/iptables -L -n", "/usr/bin/docker ps -a"]


def syslog_ts(t_ms):
    s = t_ms // 1000
    tm = time.gmtime(s)
    return "%s %2d %02d:%02d:%02d" % (MONTHS[tm.tm_mon - 1], tm.tm_mday, tm.tm_hour, tm.tm_min,
                                      tm.tm_sec)


def iso(t_ms):
    tm = time.gmtime(t_ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour,
                                               tm.tm_min, tm.tm_sec)


def office_hours(t_ms):
    # Europe/Madrid is UTC+1 before the last Sunday of March: 08:00-19:00 local.
    h = (t_ms // 1000 // 3600 + 1) % 24
    return 8 <= h < 19


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.session = 1000

    def pid(self):
        return self.r.randint(300, 65000)

    def line(self, t, host, prog, msg, pid=True):
        p = "%s[%d]" % (prog, self.pid()) if pid else prog
        return "%s %s %s: %s" % (syslog_ts(t), host, p, msg)

    def failed(self, t, ip, user, invalid):
        inv = "invalid user " if invalid else ""
        return self.line(t, self.r.choice(HOSTS[:8] + ["bastion-01"]), "sshd",
                         "Failed password for %s%s from %s port %d ssh2" %
                         (inv, user, ip, self.r.randint(30000, 65000)))

    def syslog(self, t):
        r = self.r
        host = r.choice(HOSTS)
        k = r.random()
        if k < 0.25:
            return "noise", self.line(t, host, "CRON", r.choice(CRON_CMDS))
        if k < 0.40:
            return "noise", self.line(t, host, "CRON", "pam_unix(cron:session): session opened "
                                      "for user root(uid=0) by (uid=0)")
        if k < 0.55:
            return "noise", self.line(t, host, "CRON",
                                      "pam_unix(cron:session): session closed for user root")
        if k < 0.62:
            return "noise", self.line(t, host, "sshd", "Connection closed by %s port %d [preauth]"
                                      % (r.choice(SCANNERS), r.randint(30000, 65000)))
        if k < 0.66:
            return "noise", self.line(t, host, "sshd", "Invalid user %s from %s port %d" %
                                      (r.choice(BAD_USERS), r.choice(SCANNERS),
                                       r.randint(30000, 65000)))
        if k < 0.70:
            u = r.choice(USERS)
            return "noise", self.line(t, host, "sshd", "Received disconnect from %s port %d:11: "
                                      "disconnected by user" % (r.choice(INTERNAL),
                                                                r.randint(30000, 65000)))
        if k < 0.75:
            u = r.choice(USERS)
            which = r.choice(["opened for user %s(uid=%d) by (uid=0)" %
                              (u, 1000 + USERS.index(u)), "closed for user %s" % u])
            return "noise", self.line(t, host, "sshd", "pam_unix(sshd:session): session " + which)
        if k < 0.76:
            # Successful logins, mostly in office hours; the rest trip ssh_login_off_hours.
            if not office_hours(t) and r.random() < 0.8:
                return "noise", self.line(t, host, "systemd", "Started Daily apt download "
                                          "activities.", pid=False)
            u = r.choice(USERS)
            return ("offhours" if not office_hours(t) else "noise",
                    self.line(t, host, "sshd", "Accepted publickey for %s from %s port %d ssh2: "
                              "ED25519 SHA256:%s" % (u, r.choice(INTERNAL), r.randint(30000, 65000),
                                                     "%043x" % r.getrandbits(172))))
        if k < 0.765:
            # Mistyped passwords from inside: counted per source, rarely 5 in 5 minutes.
            return "mistype", self.failed(t, r.choice(INTERNAL), r.choice(USERS), False)
        if k < 0.769:
            u = r.choice(ADMINS)
            return "sudo_root", self.line(t, host, "sudo", "   %s : TTY=pts/%d ; PWD=/home/%s ; "
                                          "USER=root ; COMMAND=%s" % (u, r.randint(0, 5), u,
                                                                      r.choice(ROOT_CMDS)),
                                          pid=False)
        if k < 0.79:
            return "noise", self.line(t, host, "sudo", "  deploy : PWD=/srv/app ; USER=www-data ; "
                                      "COMMAND=/usr/bin/php /srv/app/artisan queue:restart",
                                      pid=False)
        if k < 0.80:
            u = r.choice(ADMINS)
            return "noise", self.line(t, host, "sudo", "pam_unix(sudo:session): session opened for "
                                      "user root(uid=0) by %s(uid=%d)" % (u, 1000 + USERS.index(u)),
                                      pid=False)
        if k < 0.84:
            self.session += 1
            u = r.choice(USERS)
            msg = r.choice(["New session %d of user %s." % (self.session, u),
                            "Removed session %d." % (self.session - 7)])
            return "noise", self.line(t, host, "systemd-logind", msg)
        if k < 0.89:
            msg = r.choice(["Started Session %d of User %s." % (self.session, r.choice(USERS)),
                            "Starting Daily apt upgrade and clean activities...",
                            "logrotate.service: Succeeded.", "Finished Rotate log files."])
            return "noise", self.line(t, host, "systemd", msg, pid=False)
        return "noise", self.line(
            t, host, "kernel", "[%d.%06d] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:%02x:%02x:%02x "
            "SRC=%s DST=10.20.0.%d LEN=40 TOS=0x00 PREC=0x00 TTL=%d ID=%d PROTO=TCP SPT=%d "
            "DPT=%d WINDOW=1024 RES=0x00 SYN URGP=0" %
            (r.randint(1000, 999999), r.randint(0, 999999), r.randint(0, 255), r.randint(0, 255),
             r.randint(0, 255), r.choice(SCANNERS), r.randint(2, 250), r.randint(30, 250),
             r.randint(1, 65535), r.randint(1024, 65535), r.choice([23, 2323, 3389, 5900, 445])),
            pid=False)

    def ct(self, t):
        r = self.r
        acct = r.choice(ACCOUNTS)
        user = r.choice(USERS)
        ident = {"type": "IAMUser", "principalId": "AIDA%016X" % r.getrandbits(64),
                 "arn": "arn:aws:iam::%s:user/%s" % (acct, user), "accountId": acct,
                 "accessKeyId": "AKIA%016X" % r.getrandbits(64), "userName": user}
        rec = {"eventVersion": "1.09", "userIdentity": ident, "eventTime": iso(t)}
        k = r.random()
        kind = "noise"
        if k < 0.25:
            src, name, ro = "ec2.amazonaws.com", "DescribeInstances", True
            req = {"instancesSet": {}, "filterSet": {"items": [
                {"name": "tag:team", "valueSet": {"items": [{"value": "platform"}]}}]}}
        elif k < 0.50:
            src, name, ro = "s3.amazonaws.com", "GetObject", True
            bucket = r.choice(["app-assets", "logs-archive", "backups-eu", "data-lake-raw"])
            key = "%04d/%02d/part-%05d.parquet" % (2026, 3, r.randint(0, 99999))
            req = {"bucketName": bucket, "Host": "%s.s3.eu-west-1.amazonaws.com" % bucket,
                   "key": key}
            rec["additionalEventData"] = {"SignatureVersion": "SigV4", "CipherSuite":
                                          "ECDHE-RSA-AES128-GCM-SHA256",
                                          "bytesTransferredIn": 0,
                                          "bytesTransferredOut": r.randint(100, 10 ** 7),
                                          "x-amz-id-2": "%x" % r.getrandbits(200)}
            rec["resources"] = [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::%s/%s" % (bucket, key)},
                                {"accountId": acct, "type": "AWS::S3::Bucket",
                                 "ARN": "arn:aws:s3:::%s" % bucket}]
        elif k < 0.65:
            src, name, ro = "sts.amazonaws.com", "AssumeRole", False
            role = r.choice(["terraform", "ci-deployer", "readonly-audit", "app-runtime"])
            rec["userIdentity"] = {"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}
            req = {"roleArn": "arn:aws:iam::%s:role/%s" % (acct, role),
                   "roleSessionName": "i-%017x" % r.getrandbits(68), "durationSeconds": 3600}
            rec["responseElements"] = {"credentials": {
                "accessKeyId": "ASIA%016X" % r.getrandbits(64),
                "sessionToken": "%x" % r.getrandbits(400), "expiration": "Mar 10, 2026, 11:00:00 PM"},
                "assumedRoleUser": {"assumedRoleId": "AROA%016X:%s" % (r.getrandbits(64), role),
                                    "arn": "arn:aws:sts::%s:assumed-role/%s/x" % (acct, role)}}
        elif k < 0.75:
            src, name, ro = "kms.amazonaws.com", "Decrypt", True
            req = {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "encryptionContext": {
                "aws:lambda:FunctionArn": "arn:aws:lambda:eu-west-1:%s:function:api" % acct}}
            rec["resources"] = [{"accountId": acct, "type": "AWS::KMS::Key", "ARN":
                                 "arn:aws:kms:eu-west-1:%s:key/%s" % (acct, uuid.UUID(int=r.getrandbits(128)))}]
        elif k < 0.78:
            src, name, ro = "signin.amazonaws.com", "ConsoleLogin", False
            req = None
            rec["responseElements"] = {"ConsoleLogin": r.choice(["Success"] * 9 + ["Failure"])}
            rec["additionalEventData"] = {"LoginTo": "https://console.aws.amazon.com/console/home",
                                          "MobileVersion": "No", "MFAUsed": "Yes"}
        elif k < 0.88:
            src, name, ro = "iam.amazonaws.com", r.choice(["ListRoles", "GetRole", "ListPolicies",
                                                           "GetUser"]), True
            req = {"roleName": r.choice(["terraform", "app-runtime"])} if name == "GetRole" else None
        elif k < 0.95:
            src, name, ro = "s3.amazonaws.com", "PutObject", False
            bucket = r.choice(["logs-archive", "backups-eu"])
            req = {"bucketName": bucket, "Host": "%s.s3.amazonaws.com" % bucket,
                   "key": "dump-%08d.tar.zst" % r.randint(0, 10 ** 8)}
        elif k < 0.975:
            src, name, ro = "iam.amazonaws.com", "AttachRolePolicy", False
            req = {"roleName": "app-runtime", "policyArn":
                   "arn:aws:iam::%s:policy/app-runtime-s3" % acct}
        elif k < 0.9985:
            src, name, ro = "iam.amazonaws.com", "AttachUserPolicy", False
            req = {"userName": r.choice(USERS), "policyArn":
                   "arn:aws:iam::aws:policy/ReadOnlyAccess"}
        else:
            src, name, ro = "iam.amazonaws.com", "AttachUserPolicy", False
            req = {"userName": r.choice(USERS), "policyArn":
                   "arn:aws:iam::aws:policy/AdministratorAccess"}
            kind = "admin_attach"
        rec["eventSource"] = src
        rec["eventName"] = name
        rec["awsRegion"] = r.choice(REGIONS)
        rec["sourceIPAddress"] = r.choice(INTERNAL) if r.random() < 0.8 else "198.51.100.23"
        rec["userAgent"] = r.choice(["aws-cli/2.15.30 Python/3.11.8 Linux/6.1 botocore/2.4.5",
                                     "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux",
                                     "APN/1.0 HashiCorp/1.0 Terraform/1.7.5"])
        rec["requestParameters"] = req
        rec.setdefault("responseElements", None)
        rec["requestID"] = str(uuid.UUID(int=r.getrandbits(128), version=4))
        rec["eventID"] = str(uuid.UUID(int=r.getrandbits(128), version=4))
        rec["readOnly"] = ro
        rec["eventType"] = "AwsApiCall" if name != "ConsoleLogin" else "AwsConsoleSignIn"
        rec["managementEvent"] = src != "s3.amazonaws.com"
        rec["recipientAccountId"] = acct
        rec["eventCategory"] = "Management" if rec["managementEvent"] else "Data"
        return kind, json.dumps(rec, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200000, help="total events")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--syslog-share", type=float, default=0.65)
    ap.add_argument("--auth-partitions", type=int, default=8)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    g = Gen(a.seed)
    r = g.r
    # Brute-force bursts: ~1% of the stream, 8-25 attempts a few seconds apart.
    attacks = []
    span_ms = a.n * 400  # mean gap 0.4 s
    while len(attacks) < a.n // 100:
        ip = r.choice(ATTACKERS)
        t = START_S * 1000 + r.randint(0, span_ms)
        for _ in range(r.randint(8, 25)):
            t += r.randint(1000, 8000)
            attacks.append((t, "auth", "attack", g.failed(t, ip, r.choice(BAD_USERS), True)))
    attacks = attacks[: a.n // 100]
    base = []
    t = START_S * 1000
    for _ in range(a.n - len(attacks)):
        t += r.randint(0, 800)
        if r.random() < a.syslog_share:
            kind, line = g.syslog(t)
            base.append((t, "auth", kind, line))
        else:
            kind, line = g.ct(t)
            base.append((t, "cloudtrail", kind, line))
    events = sorted(base + attacks, key=lambda e: e[0])

    counts = {}
    parts = [open("%s/auth.p%d.log" % (a.out, p), "w") for p in range(a.auth_partitions)]
    with open("%s/auth.log" % a.out, "w") as fa, open("%s/cloudtrail.jsonl" % a.out, "w") as fc, \
            open("%s/events.tsv" % a.out, "w") as ft:
        for _, topic, kind, line in events:
            assert "\t" not in line and "\n" not in line
            (fa if topic == "auth" else fc).write(line + "\n")
            if topic == "auth":
                host = line.split()[3]
                parts[HOSTS.index(host) % a.auth_partitions].write(line + "\n")
            ft.write("%s\t%s\n" % (topic, line))
            counts[topic] = counts.get(topic, 0) + 1
            counts[kind] = counts.get(kind, 0) + 1
    for f in parts:
        f.close()
    print("generated %d syslog=%d cloudtrail=%d failed_pw_attack=%d failed_pw_mistype=%d "
          "sudo_root=%d offhours_login=%d admin_attach=%d" %
          (len(events), counts.get("auth", 0), counts.get("cloudtrail", 0),
           counts.get("attack", 0), counts.get("mistype", 0), counts.get("sudo_root", 0),
           counts.get("offhours", 0), counts.get("admin_attach", 0)))


if __name__ == "__main__":
    main()
