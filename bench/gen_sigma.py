#!/usr/bin/env python3
"""gen_sigma: N synthetic Sigma detection rules of SigmaHQ's shape, for the rule-set bench.

    python3 bench/gen_sigma.py --n 3000 [--seed 42] --out DIR [--subsets 50,500]
    python3 bench/gen_sigma.py --sigma /path/to/sigma [--n N] --out DIR

Writes DIR/rules/NNNNN.yml (with their logsource), DIR/rules-nols/ (the same rules without
logsource: every rule applies to every event, the "no routing" rows), DIR/rules.json (what
bench/gen_sigma_events.py needs to plant events that match: each rule's logsource and one
set of field values that satisfies it) and, for each --subsets size S, DIR/rules-S/ and
DIR/rules-S-nols/ holding the first S rules (the big rules are placed so that every subset
has at least one).

What is reproduced is what costs time when matching: the logsource mix, the fields each
logsource's rules test, selections per rule, field entries per selection, values per entry,
the modifier chains, value lengths, how often one value is shared by many rules, condition
shapes (selection and not filter, 1 of selection_*, all of ...) and a few rules with about
a thousand values or more. The table below was measured, not copied: only counts and
lengths. Values are synthetic: words built from syllables, Windows paths, registry keys,
command-line fragments, hashes, addresses. Every word a rule uses contains one of q, z or j
and no word of the benign events does (bench/gen_sigma_events.py), so an event matches a
rule only where the event generator planted it.

--sigma DIR uses a real SigmaHQ checkout instead (its rules*/ folders, without the files
using the `expand` modifier, which klaxon refuses; --n keeps the first N files in path
order): nothing is generated, rules.json lists no plants.

Deterministic: the same --seed and --n give the same bytes. Python 3 standard library only.
"""
import argparse
import base64
import json
import os
import random
import shutil
import sys

# ---- measured: bench/sigma_stats.py /tmp/sigma, 2026-12-02, on a copy of SigmaHQ's
# rules/, rules-threat-hunting/, rules-emerging-threats/ and rules-compliance/: 3,757
# detection rules (no correlations), 12,447 field entries, 46,230 values (96 null, 964
# numeric), 1,900 filter selections. ----

# Rules per logsource (product/service/category), the 45 largest; 225 rules in 93 others.
LOGSOURCES = [
    ("windows//process_creation", 1415), ("windows//registry_set", 224),
    ("windows//file_event", 220), ("windows//ps_script", 178), ("windows/security/", 167),
    ("linux//process_creation", 144), ("windows//image_load", 125), ("//webserver", 86),
    ("windows/system/", 74), ("macos//process_creation", 70),
    ("windows//network_connection", 61), ("aws/cloudtrail/", 57), ("//proxy", 56),
    ("linux/auditd/", 54), ("azure/auditlogs/", 44), ("windows//registry_event", 41),
    ("azure/activitylogs/", 35), ("windows//ps_module", 34), ("windows/application/", 32),
    ("windows//process_access", 29), ("windows//dns_query", 28),
    ("opencanary//application", 24), ("okta/okta/", 23), ("windows//pipe_created", 20),
    ("azure/signinlogs/", 19), ("azure/riskdetection/", 19), ("linux//file_event", 18),
    ("windows/windefend/", 17), ("rpc_firewall//application", 17), ("linux//", 16),
    ("gcp/gcp.audit/", 16), ("windows//create_remote_thread", 15), ("github/audit/", 15),
    ("windows//file_delete", 14), ("bitbucket/audit/", 14), ("windows//file_access", 13),
    ("cisco/aaa/", 13), ("m365/threat_management/", 13), ("//dns", 11),
    ("windows//ps_classic_start", 11), ("windows/appxdeployment-server/", 10),
    ("kubernetes/audit/application", 10), ("windows/codeintegrity-operational/", 10),
    ("windows//driver_load", 10), ("windows//registry_delete", 10),
]
OTHER_LOGSOURCES = (225, 93)  # rules, logsources: generated as vendor products vendorNN

# Field entries per field, per logsource (top 14; the rest of a logsource's entries are
# spread over these in proportion).
FIELDS = {
    "windows//process_creation": [
        ("CommandLine", 2251), ("Image", 1407), ("OriginalFileName", 647), ("ParentImage", 469),
        ("ParentCommandLine", 110), ("Description", 77), ("Product", 55), ("Hashes", 44),
        ("IntegrityLevel", 30), ("User", 24), ("Company", 20), ("CurrentDirectory", 17),
        ("ParentUser", 5), ("LogonId", 4)],
    "windows//registry_set": [("TargetObject", 422), ("Details", 310), ("Image", 167),
                              ("User", 2)],
    "windows//file_event": [("TargetFilename", 464), ("Image", 176), ("CommandLine", 6),
                            ("ParentImage", 4)],
    "windows//ps_script": [("ScriptBlockText", 284), ("Path", 3)],
    "windows/security/": [
        ("EventID", 188), ("ProcessName", 44), ("ObjectName", 40), ("ServiceFileName", 38),
        ("ObjectType", 21), ("RelativeTargetName", 21), ("AccessList", 18), ("ShareName", 17),
        ("SubjectUserName", 17), ("TargetUserName", 16), ("AccessMask", 15), ("LogonType", 14),
        ("IpAddress", 12), ("AttributeLDAPDisplayName", 10)],
    "linux//process_creation": [("CommandLine", 238), ("Image", 189), ("ParentImage", 17),
                                ("ParentCommandLine", 11), ("User", 3), ("CurrentDirectory", 3)],
    "windows//image_load": [
        ("ImageLoaded", 240), ("Image", 220), ("Signed", 17), ("SignatureStatus", 11),
        ("OriginalFileName", 10), ("CommandLine", 8), ("Description", 8), ("Product", 4),
        ("Signature", 4), ("Company", 3), ("Hashes", 3)],
    "//webserver": [("cs-uri-query", 113), ("cs-method", 51), ("sc-status", 29),
                    ("cs-uri-stem", 17), ("cs-user-agent", 11), ("cs-referer", 5),
                    ("cs-username", 2)],
    "windows/system/": [("EventID", 74), ("Provider_Name", 71), ("ImagePath", 67),
                        ("ServiceName", 27), ("param1", 4), ("param2", 2)],
    "macos//process_creation": [("CommandLine", 112), ("Image", 86), ("ParentImage", 16)],
    "windows//network_connection": [
        ("Image", 244), ("Initiated", 49), ("DestinationIp", 32), ("DestinationHostname", 31),
        ("DestinationPort", 28), ("CommandLine", 12), ("Protocol", 8), ("ParentImage", 4),
        ("User", 3), ("SourcePort", 3), ("SourceIp", 2)],
    "aws/cloudtrail/": [("eventName", 56), ("eventSource", 51), ("errorCode", 9),
                        ("userAgent", 6), ("userIdentity.type", 4), ("userIdentity.arn", 3),
                        ("errorMessage", 2), ("sourceIPAddress", 1)],
    "//proxy": [("c-uri", 34), ("c-useragent", 29), ("cs-method", 24), ("cs-host", 18),
                ("cs-uri", 8), ("sc-status", 6), ("c-uri-extension", 3), ("dst_ip", 1)],
    "linux/auditd/": [("type", 70), ("a0", 41), ("a1", 37), ("a2", 15), ("name", 14),
                      ("a3", 8), ("SYSCALL", 7), ("exe", 7), ("key", 2), ("comm", 2)],
    "azure/auditlogs/": [("properties.message", 23), ("Category", 9), ("OperationName", 9),
                         ("operationName", 7), ("Status", 5), ("LoggedByService", 3)],
    "windows//registry_event": [("TargetObject", 64), ("Details", 14), ("Image", 12),
                                ("EventType", 7), ("NewName", 4)],
    "azure/activitylogs/": [("operationName", 33), ("CategoryValue", 2),
                            ("ResourceProviderValue", 2), ("ResourceId", 2)],
    "windows//ps_module": [("Payload", 43), ("ContextInfo", 35)],
    "windows/application/": [("Provider_Name", 32), ("EventID", 31), ("Data", 21),
                             ("AppName", 3), ("Level", 3)],
    "windows//process_access": [("SourceImage", 90), ("GrantedAccess", 43),
                                ("TargetImage", 42), ("CallTrace", 25)],
    "windows//dns_query": [("Image", 106), ("QueryName", 35)],
    "opencanary//application": [("logtype", 24)],
    "okta/okta/": [("eventType", 18), ("debugContext.debugData.requestUri", 2),
                   ("target.displayName", 2), ("securityContext.isProxy", 2),
                   ("displayMessage", 2), ("outcome.reason", 1), ("outcome.result", 1),
                   ("actor.alternateId", 1)],
    "windows//pipe_created": [("PipeName", 54), ("Image", 15)],
    "azure/signinlogs/": [("ResultType", 12), ("ResultDescription", 7),
                          ("AuthenticationRequirement", 5), ("Status", 4), ("userAgent", 3),
                          ("DeviceDetail.trusttype", 2), ("conditionalAccessStatus", 1),
                          ("RiskState", 1)],
}
# Logsources below the 25 largest: Windows ones test Sysmon-like fields, the rest generic ones.
FIELDS_WINDOWS_OTHER = [("Image", 50), ("CommandLine", 30), ("TargetFilename", 10),
                        ("Provider_Name", 5), ("EventID", 5)]
FIELDS_GENERIC = [("message", 40), ("action", 20), ("user", 10), ("src_ip", 5),
                  ("path", 15), ("event_type", 10)]

# Selections (search identifiers) per rule, as "lo-hi" buckets.
SELS_PER_RULE = [((1, 1), 1904), ((2, 2), 976), ((3, 3), 419), ((4, 5), 297), ((6, 10), 121),
                 ((11, 20), 34), ((21, 50), 6)]
# Kinds of selection: a map (AND of entries), a list of maps (OR of maps), keywords.
SEL_KINDS = [("map", 6809), ("list", 971), ("keywords", 107)]
# Field entries per map.
ENTRIES_PER_MAP = [((1, 1), 6552), ((2, 2), 1828), ((3, 3), 517), ((4, 5), 133), ((6, 10), 3)]
# Values per entry (the 8 entries with more than 500 are the big rules below).
VALUES_PER_ENTRY = [((1, 1), 7348), ((2, 2), 2420), ((3, 3), 879), ((4, 5), 727),
                    ((6, 10), 641), ((11, 20), 249), ((21, 50), 138), ((51, 100), 21),
                    ((101, 500), 16)]
# Modifier chains, per field entry. exists, cased, lt/gt/gte/lte and utf16 never occur in
# the corpus; the generator still gives exists (in filters) and cased 0.1 % each so those
# paths run.
MODIFIERS = [("", 3470), ("endswith", 3428), ("contains", 3326), ("contains|all", 1160),
             ("startswith", 567), ("re", 202), ("contains|windash", 108), ("cidr", 39),
             ("all", 21), ("base64offset|contains", 9), ("fieldref", 5), ("endswith|windash", 2),
             ("base64|contains", 1)]
# Value length by first modifier: count, p25, median, p90, max.
VALUE_LEN = {"contains": (28166, 6, 15, 45, 178), "endswith": (9711, 8, 12, 23, 136),
             "": (5805, 5, 11, 39, 176), "startswith": (1089, 15, 21, 47, 92),
             "cidr": (365, 10, 13, 18, 33), "re": (217, 15, 31, 60, 217)}
# Values with a * or ? wildcard, by first modifier.
WILDCARDS = {"contains": 164, "": 77, "endswith": 66, "startswith": 3}
NULL_VALUES = 96
# Condition shapes (S: a selection or selection_* pattern, F: a filter or filter_* pattern),
# the 12 commonest (3,507 of 3,757 rules); the rest are rarer mixes of the same parts.
CONDITIONS = [("S", 1903), ("all of S", 610), ("S and not 1 of F", 324), ("1 of S", 207),
              ("S and not F", 129), ("S and not 1 of F and not 1 of F", 105),
              ("all of S and not 1 of F", 83), ("S and 1 of S", 69), ("S and S", 24),
              ("1 of S and not 1 of F", 22), ("all of S and not 1 of F and not 1 of F", 16),
              ("S or all of S", 15)]
# Value reuse: 33,342 distinct (field, modifiers, lowercased value) in 44,758 uses; 28,719
# used by one rule only, 207 by 10 or more. Rules using the most shared values (the top is
# an `Image|endswith` of a well-known binary):
REUSE_TOP = [176, 163, 125, 101, 85, 79, 77, 75, 68, 67, 61, 53, 51, 50, 50, 48, 44, 40, 38,
             38, 38, 38, 37, 36, 35, 35, 35, 34, 33, 32]
REUSE_FRESH = 28719 / 44758  # share of uses that are a value no other rule has
# Without the big rules' ~11,000 values (all distinct) about half of the other uses are fresh;
# 0.4 here gives the measured top ranks and distinct share best (pools are per field kind).
REUSE_FRESH_SMALL = 0.4
# The big rules: values, logsource, what they are (a list of command-line fragments, with an
# Image|endswith beside it for the two "all of selection_*" ones; a list of driver hashes).
BIG_RULES = [(1000, "windows//process_creation", "cmdline"),
             (4432, "windows//driver_load", "hashes"),
             (1093, "linux//process_creation", "cmdline+image"),
             (1093, "windows//process_creation", "cmdline+image"),
             (994, "windows//process_creation", "cmdline"),
             (977, "windows//process_creation", "cmdline"),
             (789, "windows//driver_load", "hashes"),
             (745, "windows//process_creation", "cmdline")]
CORPUS_RULES = 3757

# ---- the shape of values, per kind of field (chosen by hand to give the mix above) ----

KIND = {}
for _f in ("Image", "ParentImage", "TargetFilename", "ImageLoaded", "SourceImage", "TargetImage",
           "ImagePath", "ServiceFileName", "ProcessName", "exe", "Path", "CurrentDirectory",
           "path", "RelativeTargetName", "cs-uri-stem"):
    KIND[_f] = "path"
for _f in ("CommandLine", "ParentCommandLine", "ScriptBlockText", "Payload", "ContextInfo",
           "cs-uri-query", "c-uri", "cs-uri", "a0", "a1", "a2", "a3", "properties.message",
           "Data", "message", "CallTrace", "errorMessage", "displayMessage", "param1", "param2",
           "debugContext.debugData.requestUri", "SourceCommandLine", "ResultDescription"):
    KIND[_f] = "cmdline"
for _f in ("TargetObject", "ObjectName", "NewName"):
    KIND[_f] = "registry"
KIND["Details"] = "details"
for _f in ("EventID", "DestinationPort", "LogonType", "sc-status", "ResultType", "SourcePort"):
    KIND[_f] = "number"
for _f in ("DestinationIp", "IpAddress", "SourceIp", "sourceIPAddress", "dst_ip", "src_ip"):
    KIND[_f] = "ip"
KIND["Hashes"] = "hash"
for _f in ("c-useragent", "cs-user-agent", "userAgent"):
    KIND[_f] = "useragent"
for _f in ("Initiated", "Signed", "securityContext.isProxy"):
    KIND[_f] = "bool"
for _f in ("DestinationHostname", "cs-host", "QueryName", "cs-referer"):
    KIND[_f] = "host"

MODS_BY_KIND = {
    "path": [("endswith", 70), ("contains", 15), ("startswith", 7), ("", 5), ("re", 1),
             ("contains|all", 2)],
    "cmdline": [("contains", 50), ("contains|all", 30), ("contains|windash", 3),
                ("startswith", 3), ("endswith", 4), ("re", 3), ("", 2),
                ("base64offset|contains", 0.3), ("endswith|windash", 0.06),
                ("base64|contains", 0.03)],
    "registry": [("contains", 45), ("endswith", 45), ("startswith", 5), ("", 5)],
    "details": [("", 45), ("contains", 40), ("startswith", 15), ("endswith", 5)],
    "number": [("", 100)],
    "ip": [("cidr", 45), ("", 35), ("startswith", 20)],
    "hash": [("contains", 80), ("", 20)],
    "useragent": [("contains", 60), ("", 20), ("startswith", 20)],
    "bool": [("", 100)],
    "host": [("endswith", 45), ("contains", 35), ("", 20)],
    "name": [("", 80), ("contains", 10), ("startswith", 5), ("endswith", 5), ("all", 0.6)],
}

# ---- words ----

VOWELS = "aeiou"
BENIGN_CONS = "bcdfghklmnprstvw"  # benign events' words: never q, z or j
RULE_MARKS = "qzj"  # every rule word has one of these


def word(r, rule, lo=4, hi=9):
    n = r.randint(lo, hi)
    s = []
    while len(s) < n:
        s.append(r.choice(BENIGN_CONS))
        s.append(r.choice(VOWELS))
    s = s[:n]
    if rule:
        s[r.randrange(n)] = r.choice(RULE_MARKS)
    return "".join(s)


def cap(w):
    return w[:1].upper() + w[1:]


class Values:
    """Value factory: fresh values, or shared ones drawn with a Zipf-like weight so that a few
    values are used by a hundred rules and most by one."""

    POOL = 800
    ZIPF = 0.95

    def __init__(self, r):
        self.r = r
        self.pools = {}
        w = [1.0 / (i + 1) ** self.ZIPF for i in range(self.POOL)]
        tot = sum(w)
        self.cum = []
        acc = 0.0
        for x in w:
            acc += x / tot
            self.cum.append(acc)

    def get(self, kind, mod, lenient=True):
        r = self.r
        if not lenient or r.random() < REUSE_FRESH_SMALL:
            return self.make(kind, mod)
        pool = self.pools.setdefault((kind, mod), [])
        u = r.random()
        lo, hi = 0, self.POOL - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cum[mid] < u:
                lo = mid + 1
            else:
                hi = mid
        while len(pool) <= lo:
            pool.append(self.make(kind, mod))
        return pool[lo]

    def make(self, kind, mod):
        """A fresh value of a realistic length for this kind of field and modifier."""
        r = self.r
        w = lambda: word(r, True)  # noqa: E731
        if mod == "re":
            return "%s.{0,%d}%s" % (w(), r.randint(10, 40), r.choice(["", "\\s+"]) + w())
        if kind == "number":
            return r.randint(5000, 5999)
        if kind == "bool":
            return "true"
        if kind == "ip":
            if mod == "cidr":
                bits = r.choice([8, 16, 16, 24, 24, 24, 32])
                a = [100, r.randint(64, 127), r.randint(0, 255), r.randint(0, 255)]
                if bits == 8:
                    return "100.64.0.0/10"
                keep = bits // 8
                return ".".join(str(x if i < keep else 0) for i, x in enumerate(a)) + "/%d" % bits
            ip = "100.%d.%d.%d" % (r.randint(64, 127), r.randint(0, 255), r.randint(1, 254))
            return ip if mod != "startswith" else ip.rsplit(".", 1)[0] + "."
        if kind == "hash":
            if r.random() < 0.5:
                return "IMPHASH=%032X" % r.getrandbits(128)
            return "SHA256=%064X" % r.getrandbits(256)
        if kind == "path":
            if mod == "endswith":
                return "\\" + (cap(w()) + "\\" if r.random() < 0.3 else "") + w() + r.choice(
                    [".exe", ".exe", ".exe", ".dll", ".sys", ".ps1"])
            if mod == "startswith":
                return r.choice(["C:\\Users\\Public\\", "C:\\Windows\\Temp\\",
                                 "C:\\ProgramData\\", "\\\\"]) + cap(w()) + "\\"
            if mod == "":
                return "C:\\Windows\\System32\\" + w() + ".exe"
            return "\\" + cap(w()) + "\\" + (w() + "\\" if r.random() < 0.4 else "")
        if kind == "registry":
            parts = [cap(w()) for _ in range(r.randint(1, 3))]
            if mod == "startswith" or mod == "":
                return "HKLM\\SOFTWARE\\" + "\\".join(parts)
            return "\\" + "\\".join(parts) + ("\\" if mod == "contains" and r.random() < 0.3 else "")
        if kind == "useragent":
            return cap(w()) + "/" + "%d.%d" % (r.randint(1, 9), r.randint(0, 20))
        if kind == "host":
            return "." + w() + r.choice([".com", ".net", ".io", ".xyz"])
        if kind == "details":
            return r.choice(["DWORD (0x%08x)" % r.randint(16, 255), cap(w()), "%s\\%s.exe" % (
                cap(w()), w())])
        if kind == "name":
            if mod == "":
                return r.choice([w() + ".exe", cap(w()) + " " + cap(w()), cap(w()),
                                 " ".join(cap(w()) for _ in range(r.randint(3, 5)))])
            return cap(w())
        # cmdline and anything else: flags, fragments, sometimes a longer phrase
        x = r.random()
        if "windash" in mod:
            return " -" + w()
        if x < 0.35:
            return " -" + w() + " "
        if x < 0.55:
            return " /" + w()
        if x < 0.8:
            return w() + " " + w()
        if x < 0.92:
            return "%s %s %s %s" % (w(), w(), w(), w())
        return "%s://%s.%s/%s" % (r.choice(["http", "https"]), w(), w(), w())


def pick(r, table):
    tot = sum(c for _, c in table)
    u = r.random() * tot
    for v, c in table:
        u -= c
        if u < 0:
            return v
    return table[-1][0]


def pick_range(r, table, lo_min=1):
    t = [((max(lo, lo_min), hi), c) for (lo, hi), c in table if hi >= lo_min]
    lo, hi = pick(r, t)
    return r.randint(lo, hi)


def ls_fields(ls):
    if ls in FIELDS:
        return FIELDS[ls]
    return FIELDS_WINDOWS_OTHER if ls.startswith("windows/") else FIELDS_GENERIC


# ---- one rule ----

def quote(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


class Rule:
    def __init__(self, idx, ls):
        self.idx = idx
        self.ls = ls
        self.sels = []  # (name, kind, body): map -> [(key, [values])], list -> [map], kw -> [v]
        self.cond = "selection"
        self.need = []  # selection names that must hold for the rule to match
        self.needs_one = []  # groups of names of which one must hold

    def yaml(self, with_ls):
        p, s, c = self.ls.split("/")
        out = ["title: Synthetic %s rule %05d" % (self.ls.replace("//", "/").strip("/"),
                                                  self.idx),
               "id: 00000000-0000-4000-8000-%012d" % self.idx,
               "status: test",
               "description: Generated by bench/gen_sigma.py (SigmaHQ's shape, synthetic values).",
               "author: klaxon bench", "date: 2026-12-02"]
        if with_ls:
            out.append("logsource:")
            for k, v in (("product", p), ("service", s), ("category", c)):
                if v:
                    out.append("    %s: %s" % (k, v))
        out.append("detection:")

        def entry(ind, key, vals):
            if len(vals) == 1:
                return ["%s%s: %s" % (ind, key, quote(vals[0]))]
            return ["%s%s:" % (ind, key)] + ["%s    - %s" % (ind, quote(v)) for v in vals]

        for name, kind, body in self.sels:
            out.append("    %s:" % name)
            if kind == "map":
                for key, vals in body:
                    out += entry("        ", key, vals)
            elif kind == "list":
                for m in body:
                    first = True
                    for key, vals in m:
                        lines = entry("          ", key, vals)
                        if first:
                            lines[0] = "        - " + lines[0].lstrip()
                            first = False
                        out += lines
            else:
                out += ["        - %s" % quote(v) for v in body]
        out.append("    condition: %s" % self.cond)
        out.append("level: %s" % ("high" if self.idx % 3 else "medium"))
        return "\n".join(out) + "\n"


def witness_value(r, mod, vals):
    """One string for which `field|mod: vals` holds (None: the field must be absent)."""
    if "all" in mod.split("|"):
        pieces = [str(v) for v in vals]
    else:
        v = r.choice(vals)
        if v is None:
            return None
        pieces = [str(v)]
    m = mod.split("|")
    if "exists" in m:
        return "present"
    out = []
    for p in pieces:
        if "re" in m:
            a, rest = p.split(".{", 1)
            b = rest.split("}", 1)[1]
            p = a + " x " + b
        elif "cidr" in m:
            net, bits = p.split("/")
            o = [int(x) for x in net.split(".")]
            if int(bits) < 32:
                o[3] = r.randint(1, 254)
            if int(bits) <= 16:
                o[2] = r.randint(0, 255)
            if int(bits) <= 10:
                o[1] = r.randint(64, 127)
            p = ".".join(str(x) for x in o)
        elif "base64offset" in m or "base64" in m:
            p = base64.b64encode(p.encode()).decode()
        out.append(p.replace("*", "W").replace("?", "Q"))
    s = " ".join(out)
    if "contains" in m or "all" in m and "contains" in m:
        return "C:\\x " + s + " y"
    if "endswith" in m:
        return "C:\\Program Files\\x" + s
    if "startswith" in m:
        return s + "x.exe"
    return s


def make_rule(r, vals, idx, ls, big=None):
    """One rule for logsource ls; big = (values, what) for one of the big rules."""
    rule = Rule(idx, ls)
    fields = ls_fields(ls)

    def entry(used, is_filter=False):
        for _ in range(20):
            f = pick(r, fields)
            if f not in used:
                break
        used.add(f)
        kind = KIND.get(f, "name")
        mod = pick(r, MODS_BY_KIND[kind])
        u = r.random()
        if u < 0.001 and is_filter:  # alone in a selection it would match every event
            mod = "exists"
        elif u < 0.002 and mod in ("contains", "endswith", "startswith"):
            mod += "|cased"
        if mod == "exists":
            return f + "|exists", [True]
        if is_filter and r.random() < 0.05:
            return f, [None]
        n = pick_range(r, VALUES_PER_ENTRY)
        if "all" in mod.split("|"):
            n = max(2, min(n, 5))
        if kind in ("bool",):
            n = 1
        out = []
        for _ in range(n):
            v = vals.get(kind, mod.split("|")[0])
            if isinstance(v, str) and mod.split("|")[0] in WILDCARDS and "re" not in mod and \
                    r.random() < 0.008 and len(v) > 6:
                k = r.randint(2, len(v) - 3)
                v = v[:k] + "*" + v[k + 1:]
            if v not in out:
                out.append(v)
        key = f + ("|" + mod if mod else "")
        return key, out

    def selection(name, is_filter=False):
        kind = pick(r, SEL_KINDS)
        if kind == "keywords" and not is_filter:
            body = [vals.get("cmdline", "contains") for _ in range(pick_range(r, VALUES_PER_ENTRY))]
            return (name, "keywords", list(dict.fromkeys(body)))
        if kind == "list":
            maps = []
            for _ in range(r.randint(2, 4)):
                used = set()
                maps.append([entry(used, is_filter) for _ in range(pick_range(r, ENTRIES_PER_MAP[:2]))])
            return (name, "list", maps)
        used = set()
        return (name, "map", [entry(used, is_filter) for _ in range(pick_range(r, ENTRIES_PER_MAP))])

    if big:
        n, what = big
        if what == "hashes":
            body = [("Hashes|contains", [vals.make("hash", "contains") for _ in range(n)])]
        else:
            body = [("CommandLine|contains", [vals.make("cmdline", "contains")
                                              for _ in range(n - ("image" in what))])]
        if "image" in what:
            rule.sels = [("selection_img", "map", [("Image|endswith", [vals.make("path", "endswith")])]),
                         ("selection_cli", "map", body)]
            rule.cond = "all of selection_*"
            rule.need = ["selection_img", "selection_cli"]
        else:
            rule.sels = [("selection", "map", body)]
            rule.need = ["selection"]
        return rule

    shape = pick(r, CONDITIONS)
    nsel = pick_range(r, SELS_PER_RULE)
    w = lambda: word(r, True, 3, 6)  # noqa: E731
    if shape == "S":
        rule.sels = [selection("selection")]
        rule.need = ["selection"]
        if rule.sels[0][1] == "keywords":
            rule.sels = [("keywords",) + rule.sels[0][1:]]
            rule.need = ["keywords"]
        rule.cond = rule.need[0]
    elif shape in ("all of S", "1 of S"):
        k = pick_range(r, SELS_PER_RULE, 2)
        names = ["selection_%s" % w() for _ in range(k)]
        rule.sels = [selection(n) for n in names]
        rule.cond = shape.replace("S", "selection_*")
        if shape.startswith("all"):
            rule.need = names
        else:
            rule.needs_one = [names]
    elif shape in ("S and S", "S and 1 of S", "S or all of S"):
        k = pick_range(r, SELS_PER_RULE, 2) - 1
        names = ["selection_alt_%s" % w() for _ in range(k)]
        rule.sels = [selection("selection_main")] + [selection(n) for n in names]
        if shape == "S and S":
            rule.sels = rule.sels[:2]
            rule.cond = "selection_main and %s" % names[0]
            rule.need = ["selection_main", names[0]]
        elif shape == "S and 1 of S":
            rule.cond = "selection_main and 1 of selection_alt_*"
            rule.need = ["selection_main"]
            rule.needs_one = [names]
        else:
            rule.cond = "selection_main or all of selection_alt_*"
            rule.need = ["selection_main"]
    else:
        head, _, tail = shape.partition(" and not ")
        nf = pick_range(r, SELS_PER_RULE, 2) - 1
        if head == "S":
            rule.sels = [selection("selection")]
            rule.need = ["selection"]
            hc = "selection"
        else:
            names = ["selection_%s" % w() for _ in range(2)]
            rule.sels = [selection(n) for n in names]
            hc = head.replace("S", "selection_*")
            if head.startswith("all"):
                rule.need = names
            else:
                rule.needs_one = [names]
        conds = [hc]
        groups = tail.split(" and not ")
        for gi, g in enumerate(groups):
            if g == "F":
                rule.sels.append(selection("filter", True))
                conds.append("not filter")
            else:
                prefix = "filter_main" if gi == 0 else "filter_optional"
                for _ in range(max(1, nf // len(groups))):
                    rule.sels.append(selection("%s_%s" % (prefix, w()), True))
                conds.append("not 1 of %s_*" % prefix)
        rule.cond = " and ".join(conds)
    # Names must be unique (random words can repeat).
    seen = set()
    for i, (n, k, b) in enumerate(rule.sels):
        while n in seen:
            n += "x"
        seen.add(n)
        rule.sels[i] = (n, k, b)
    return rule


def witness(r, rule):
    """Field values that make the rule match: every needed selection, one of each group."""
    names = list(rule.need) + [r.choice(g) for g in rule.needs_one]
    parts = {}
    absent = set()
    kw = []
    for n, kind, body in rule.sels:
        if n not in names:
            continue
        if kind == "keywords":
            kw.append(r.choice(body))
            continue
        maps = [r.choice(body)] if kind == "list" else [body]
        for m in maps:
            for key, vs in m:
                f, _, mod = key.partition("|")
                v = witness_value(r, mod, vs)
                if v is None:
                    absent.add(f)
                elif isinstance(vs[0], int) and not isinstance(vs[0], bool):
                    parts.setdefault(f, []).append(int(v))
                else:
                    parts.setdefault(f, []).append(v)
    out = {}
    for f, ps in parts.items():
        out[f] = ps[0] if len(ps) == 1 or not isinstance(ps[0], str) else " ".join(ps)
    for f in absent:
        out[f] = None
    if kw:
        out["Message"] = " ".join(kw)
    return out


def logsource_plan(r, n):
    """The logsource of each of n rules, in the measured proportions (largest remainder)."""
    table = list(LOGSOURCES)
    nother, kinds = OTHER_LOGSOURCES
    for i in range(kinds):
        table.append(("vendor%02d//" % i, nother / kinds))
    tot = sum(c for _, c in table)
    want = [(ls, n * c / tot) for ls, c in table]
    got = {ls: int(x) for ls, x in want}
    rest = n - sum(got.values())
    for ls, x in sorted(want, key=lambda t: -(t[1] - int(t[1])))[:rest]:
        got[ls] += 1
    plan = [ls for ls, c in got.items() for _ in range(c)]
    r.shuffle(plan)
    return plan


def big_positions(n, subsets):
    """Where the big rules go: scaled to the corpus' 8 in 3,757 rules, at least one in every
    subset (the first one at index 7)."""
    nbig = max(1, round(n * len(BIG_RULES) / CORPUS_RULES))
    pos = [7]
    step = n // nbig
    while len(pos) < nbig:
        pos.append(pos[-1] + step)
    return dict(zip(pos, BIG_RULES[:nbig]))


def strip_logsource(text):
    out, skip = [], False
    for line in text.splitlines(True):
        if line.startswith("logsource:"):
            skip = True
            continue
        if skip and (line.startswith(" ") or line.startswith("\t") or not line.strip()):
            continue
        skip = False
        out.append(line)
    return "".join(out)


def from_sigma(a):
    files = []
    for top in sorted(os.listdir(a.sigma)):
        if not top.startswith("rules"):
            continue
        for d, _, fs in os.walk(os.path.join(a.sigma, top)):
            files += [os.path.join(d, f) for f in fs if f.endswith((".yml", ".yaml"))]
    files.sort()
    # klaxon refuses `expand` (placeholders need values from the deployment); such rules
    # would make the whole set fail to load, so they are left out and counted.
    kept = [f for f in files if "|expand" not in open(f, encoding="utf-8").read()]
    skipped = len(files) - len(kept)
    files = kept
    if a.n:
        files = files[: a.n]
    sizes = [len(files)] + [s for s in a.subsets if s < len(files)]
    for s in sizes:
        suffix = "" if s == len(files) else "-%d" % s
        for nols in (False, True):
            d = os.path.join(a.out, "rules%s%s" % (suffix, "-nols" if nols else ""))
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            for i, f in enumerate(files[:s]):
                text = open(f, encoding="utf-8").read()
                with open(os.path.join(d, "%05d.yml" % i), "w", encoding="utf-8") as o:
                    o.write(strip_logsource(text) if nols else text)
    with open(os.path.join(a.out, "rules.json"), "w") as o:
        json.dump({"source": a.sigma, "rules": []}, o)
    print("gen_sigma: %d rule files from %s, %d with |expand left out (no plants: events "
          "match only by chance)" % (len(files), a.sigma, skipped))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=0, help="rules (default 3000; --sigma: all)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True)
    ap.add_argument("--subsets", default="", help="comma-separated smaller sizes, e.g. 50,500")
    ap.add_argument("--sigma", help="a SigmaHQ checkout: use its rules instead")
    a = ap.parse_args()
    a.subsets = [int(x) for x in a.subsets.split(",") if x]
    os.makedirs(a.out, exist_ok=True)
    if a.sigma:
        return from_sigma(a)
    n = a.n or 3000
    r = random.Random(a.seed)
    vals = Values(r)
    plan = logsource_plan(r, n)
    bigs = big_positions(n, a.subsets)
    rules = []
    for i in range(n):
        big = bigs.get(i)
        ls = big[1] if big else plan[i]
        rules.append(make_rule(r, vals, i, ls, (big[0], big[2]) if big else None))
    manifest = []
    for rule in rules:
        manifest.append({"file": "%05d.yml" % rule.idx, "logsource": rule.ls,
                         "witness": witness(r, rule),
                         "values": sum(len(v) for _, k, b in rule.sels
                                       for v in ([x for _, x in b] if k == "map" else
                                                 [x for m in b for _, x in m] if k == "list"
                                                 else [b]))})
    sizes = [n] + [s for s in a.subsets if s < n]
    for s in sizes:
        suffix = "" if s == n else "-%d" % s
        for nols in (False, True):
            d = os.path.join(a.out, "rules%s%s" % (suffix, "-nols" if nols else ""))
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            for rule in rules[:s]:
                with open(os.path.join(d, "%05d.yml" % rule.idx), "w") as o:
                    o.write(rule.yaml(not nols))
    with open(os.path.join(a.out, "rules.json"), "w") as o:
        json.dump({"seed": a.seed, "n": n, "rules": manifest}, o, separators=(",", ":"))
    tv = sum(m["values"] for m in manifest)
    print("gen_sigma: %d rules, %d values, big rules at %s, in %s" % (
        n, tv, ",".join("%d(%d)" % (i, b[0]) for i, b in sorted(bigs.items())), a.out))


if __name__ == "__main__":
    sys.exit(main())
