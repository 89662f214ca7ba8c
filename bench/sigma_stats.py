#!/usr/bin/env python3
"""sigma_stats: the statistics of a SigmaHQ checkout that matter for matching cost.

    python3 bench/sigma_stats.py /path/to/sigma [--json]

Walks rules*/ for *.yml detection rules (correlations are skipped) and prints, per rule and
per logsource: the logsource mix, the fields each logsource's rules test, selections per
rule, field entries per selection, values per entry, the modifier chains, value lengths, how
often one value is reused across rules (the rank-frequency curve), condition shapes, and the
rules with the most values. bench/gen_sigma.py carries the table this printed as constants;
--json prints the same figures in the shape of those constants.

Needs PyYAML (a measuring tool run by hand, not part of `make bench`; the generator itself
is stdlib only). Nothing from the corpus is copied anywhere: only counts and lengths.
"""
import argparse
import collections
import json
import os
import re
import sys

import yaml


def walk(root):
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith((".yml", ".yaml")):
                yield os.path.join(d, f)


def ls_key(ls):
    ls = ls or {}
    return "%s/%s/%s" % (ls.get("product", "") or "", ls.get("service", "") or "",
                         ls.get("category", "") or "")


def bucket(n, edges=(1, 2, 3, 5, 10, 20, 50, 100, 500, 1000000)):
    lo = 0
    for e in edges:
        if n <= e:
            return "%d-%d" % (lo + 1, e) if e != lo + 1 else str(e)
        lo = e
    return ">%d" % edges[-1]


def cond_shape(cond, names):
    """Normalises a condition: each identifier or pattern becomes its role (sel, filter)."""
    if isinstance(cond, list):
        return " | ".join(cond_shape(c, names) for c in cond)
    s = str(cond)
    s = re.sub(r"\b(filter\w*\*?)", "F", s)
    s = re.sub(r"\b(?!and\b|or\b|not\b|of\b|them\b|all\b|F\b)([A-Za-z_][\w*]*)", "S", s)
    s = re.sub(r"\s+", " ", s).strip()
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sigma")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    nrules = 0
    logsources = collections.Counter()
    fields = collections.defaultdict(collections.Counter)  # logsource -> field -> entries
    sels_per_rule = collections.Counter()
    entries_per_sel = collections.Counter()
    values_per_entry = collections.Counter()
    mods = collections.Counter()  # modifier chain -> entries
    mod_values = collections.Counter()  # modifier chain -> values
    val_len = collections.defaultdict(list)  # modifier chain (first) -> value lengths
    reuse = collections.Counter()  # (field, mods, value) -> rules using it
    conds = collections.Counter()
    sel_kinds = collections.Counter()  # map, list of maps, keywords
    filters = 0
    total_entries = 0
    total_values = 0
    nulls = 0
    numbers = 0
    big = []
    wild = collections.Counter()  # first modifier -> values with * or ? wildcards
    for path in walk(a.sigma):
        try:
            docs = list(yaml.safe_load_all(open(path, encoding="utf-8")))
        except Exception as e:  # noqa: BLE001 - a broken file is reported, not fatal
            print("skip %s: %s" % (path, e), file=sys.stderr)
            continue
        for doc in docs:
            if not isinstance(doc, dict) or "detection" not in doc:
                continue
            nrules += 1
            ls = ls_key(doc.get("logsource"))
            logsources[ls] += 1
            det = doc["detection"]
            names = [k for k in det if k not in ("condition", "timeframe")]
            sels_per_rule[bucket(len(names))] += 1
            conds[cond_shape(det.get("condition", ""), names)] += 1
            seen = set()
            rule_values = 0
            for name in names:
                sel = det[name]
                if name.startswith("filter"):
                    filters += 1
                maps = []
                if isinstance(sel, dict):
                    sel_kinds["map"] += 1
                    maps = [sel]
                elif isinstance(sel, list) and sel and all(isinstance(x, dict) for x in sel):
                    sel_kinds["list-of-maps"] += 1
                    maps = sel
                else:
                    sel_kinds["keywords"] += 1
                    vals = sel if isinstance(sel, list) else [sel]
                    values_per_entry[bucket(len(vals))] += 1
                    rule_values += len(vals)
                    total_values += len(vals)
                    total_entries += 1
                    mods["(keywords)"] += 1
                    mod_values["(keywords)"] += len(vals)
                    continue
                for m in maps:
                    entries_per_sel[bucket(len(m))] += 1
                    for key, v in m.items():
                        key = str(key)
                        field, _, chain = key.partition("|")
                        chain = chain or "(equals)"
                        fields[ls][field] += 1
                        vals = v if isinstance(v, list) else [v]
                        mods[chain] += 1
                        mod_values[chain] += len(vals)
                        values_per_entry[bucket(len(vals))] += 1
                        total_entries += 1
                        total_values += len(vals)
                        rule_values += len(vals)
                        for x in vals:
                            if x is None:
                                nulls += 1
                                continue
                            if isinstance(x, (int, float)) and not isinstance(x, bool):
                                numbers += 1
                            s = str(x)
                            if not chain.startswith("re") and re.search(r"(?<!\\)[*?]", s):
                                wild[chain.split("|")[0]] += 1
                            val_len[chain.split("|")[0]].append(len(s))
                            k = (field, chain, s.lower())
                            if k not in seen:
                                seen.add(k)
                                reuse[k] += 1
            big.append((rule_values, ls, doc.get("title", "?")))

    def pct(c, n):
        return 100.0 * c / n if n else 0.0

    def table(title, counter, n, top=None):
        print("\n%s" % title)
        for k, c in counter.most_common(top):
            print("  %-60s %6d  %5.1f %%" % (k, c, pct(c, n)))

    out = {}
    print("sigma_stats: %s: %d detection rules, %d field entries, %d values (%d null, %d "
          "numeric), %d filter selections" % (a.sigma, nrules, total_entries, total_values,
                                              nulls, numbers, filters))
    table("logsource (product/service/category): rules", logsources, nrules, 45)
    out["logsources"] = logsources.most_common()
    table("selections per rule", sels_per_rule, nrules)
    out["sels_per_rule"] = sels_per_rule.most_common()
    table("selection kinds", sel_kinds, sum(sel_kinds.values()))
    table("field entries per map", entries_per_sel, sum(entries_per_sel.values()))
    out["entries_per_map"] = entries_per_sel.most_common()
    table("values per entry", values_per_entry, total_entries)
    out["values_per_entry"] = values_per_entry.most_common()
    table("modifier chains: entries", mods, total_entries, 40)
    out["mods"] = mods.most_common(40)
    print("\nvalue length by first modifier: n, median, p90, max")
    out["val_len"] = {}
    for k, ls_ in sorted(val_len.items(), key=lambda kv: -len(kv[1])):
        ls_.sort()
        n = len(ls_)
        print("  %-20s %6d %5d %5d %6d" % (k, n, ls_[n // 2], ls_[int(n * 0.9)], ls_[-1]))
        out["val_len"][k] = [n, ls_[n // 4], ls_[n // 2], ls_[int(n * 0.9)], ls_[-1]]
    print("\nvalues with a * or ? wildcard, by first modifier: %s" % ", ".join(
        "%s %d" % kv for kv in wild.most_common()))
    out["wildcards"] = wild.most_common()
    table("condition shapes (S = selection, F = filter)", conds, nrules, 30)
    out["conds"] = conds.most_common(30)
    print("\nfields per logsource (entries), top 25 logsources, top 14 fields each")
    out["fields"] = {}
    for ls, _ in logsources.most_common(25):
        tot = sum(fields[ls].values())
        print("  %s (%d entries): %s" % (ls, tot, ", ".join(
            "%s %d" % (f, c) for f, c in fields[ls].most_common(14))))
        out["fields"][ls] = fields[ls].most_common(14)
    rf = sorted(reuse.values(), reverse=True)
    distinct = len(rf)
    occ = sum(rf)
    print("\nvalue reuse: %d distinct (field, modifiers, value) in %d rule uses; used by 1 rule: "
          "%d; by >= 10 rules: %d; top ranks: %s" % (
              distinct, occ, sum(1 for x in rf if x == 1), sum(1 for x in rf if x >= 10),
              " ".join(str(x) for x in rf[:30])))
    print("  top shared values (field|mods: count; values not printed)")
    for (f, ch, _), c in reuse.most_common(10):
        print("    %s|%s: %d" % (f, ch, c))
    out["reuse_top"] = rf[:200]
    out["reuse_distinct"] = distinct
    out["reuse_uses"] = occ
    big.sort(reverse=True)
    print("\nrules with the most values: %s" % ", ".join(
        "%d (%s)" % (n, ls) for n, ls, _ in big[:12]))
    print("rules with >= 100 values: %d, >= 500: %d, >= 1000: %d" % (
        sum(1 for b in big if b[0] >= 100), sum(1 for b in big if b[0] >= 500),
        sum(1 for b in big if b[0] >= 1000)))
    out["big"] = [n for n, _, _ in big[:40]]
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
