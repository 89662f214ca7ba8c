#!/usr/bin/env python3
"""Follows a JSON Lines alert file and prints each alert as one line a person reads at a
glance: time, severity, rule, team, tenant, group, count. Stops when the DONE file exists
and the alert file is fully read. Used by `make demo`."""
import json
import os
import sys
import time

path, done = sys.argv[1], sys.argv[2]
COLORS = {"critical": "\033[1;31m", "error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"}
tty = sys.stdout.isatty()
print("%-19s  %-8s  %-14s  %-12s  %-56s  %s" % ("EVENT TIME (UTC)", "SEVERITY", "TEAM", "TENANT", "RULE", "GROUP / COUNT"))
pos = 0
buf = b""
while True:
    finished = os.path.exists(done)
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            chunk = f.read()
            pos += len(chunk)
    except FileNotFoundError:
        chunk = b""
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        if not line.strip():
            continue
        a = json.loads(line)
        group = ", ".join("%s=%s" % kv for kv in a["group"].items()) or "-"
        sev = a["severity"]
        sev_txt = (COLORS.get(sev, "") + "%-8s" % sev + "\033[0m") if tty else "%-8s" % sev
        print("%-19s  %s  %-14s  %-12s  %-56s  %s  x%d" % (
            a["last_seen"][:19].replace("T", " "), sev_txt, a["team"], a["tenant"],
            a["rule"]["title"][:56], group, a["count"]))
    if finished and not chunk:
        break
    time.sleep(0.05)
