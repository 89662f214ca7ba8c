#!/usr/bin/env bash
# Writes the seed corpus of one fuzz target into OUTDIR, made from the repo's own content
# (sample logs and configs, shipped rules, test fixtures) plus the few hand-written seeds in
# fuzz/seeds/TARGET/ that reach what the content does not. Generated rather than committed so
# the seeds follow the samples and rules as they change. Each seed is named after where it
# came from (path, and line for line-based content), so a finding is easy to trace back.
#
# usage: fuzz/seeds.sh TARGET OUTDIR      (TARGET: fuzz_json, fuzz_syslog, ...)
set -euo pipefail

target=$1
out=$2
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"

# samples/auth.log -> samples_auth.log
seed_name() {
    local rel=${1#"$src"/}
    printf '%s' "${rel//\//_}"
}

# One seed per non-empty line (a Kafka message or a file line, without its newline). One awk
# per file: a process per line would take seconds on a busy machine.
lines() {
    local f
    for f in "$@"; do
        awk -v base="$out/$(seed_name "$f")" \
            'length($0) > 0 { f = base "-" FNR; printf "%s", $0 > f; close(f) }' "$f"
    done
}

# One seed per file.
files() {
    local f
    for f in "$@"; do
        cp "$f" "$out/$(seed_name "$f")"
    done
}

shopt -s nullglob globstar
case "$target" in
fuzz_json)
    lines "$src"/samples/*.jsonl "$src"/tests/fixtures/**/*.jsonl
    ;;
fuzz_syslog | fuzz_extract)
    lines "$src"/samples/*.log "$src"/tests/fixtures/**/*.log
    ;;
fuzz_rules)
    files "$src"/rules/**/*.yml "$src"/tests/fixtures/**/*.yml
    ;;
fuzz_config)
    files "$src"/samples/*.yaml "$src"/deploy/*.yaml "$src"/tests/fixtures/**/*.yaml
    ;;
*)
    echo "seeds.sh: unknown target $target" >&2
    exit 2
    ;;
esac
files "$src"/fuzz/seeds/"$target"/*
