#!/usr/bin/env bash
# make bench: klaxon's throughput, allocations and latency on this machine, all measured in
# one run (docs/performance.md explains every row).
#
#   bash bench/run.sh [BUILD_DIR]          (make bench: BUILD_DIR = build-release)
#
# It generates a deterministic synthetic stream (bench/gen_events.py), starts a Kafka-protocol
# broker (kx-broker, librdkafka's mock cluster) and a redis-server on free loopback ports in
# a temp dir, produces the stream once, checks that the broker kept every message, then times:
#   1. raw librdkafka consumption (bench-consume raw)        2. consume + decode (decode)
#   3. the real `klaxon run` end to end, memory and redis stores (bench-metrics on /metrics)
#   4. in memory: decode, klaxon detect, the naive regex loop, the pipeline without Kafka
#      (bench-detect), and allocations per event
#   5. produce -> alert-in-file latency of a running `klaxon run` (bench-latency)
#   6. the stateful path alone on redis-server, updates one by one and pre-aggregated, with
#      100 and 10,000 groups, on one redis-server and on a Redis Cluster of three masters
#      (bench-state): events/s, klaxon's and Redis' CPU, EVALSHA and Redis commands per
#      matching event; event_count and value_count again through the window log
#      (state.windows: log), and at 10,000 groups with 30 events per group both ways
#   7. SigmaHQ-shaped rule sets (bench/gen_sigma.py: 50, 500 and 3,000 rules) on a stream
#      with one topic per logsource (bench/gen_sigma_events.py): in memory with and without
#      logsource routing against the naive regex loop, load time and memory, allocations;
#      `klaxon run` with the 3,000 rules through kx-broker against raw consume; latency
#      at half the measured peak rate
#   8. the alert stage alone (bench-alerts): spool + router + a local HTTP sink, alerts/s and
#      latency beside a hung sink
#   9. (if perf works) a profile of one `klaxon run`
# Every figure is the median of BENCH_RUNS runs. It stops only what it started, by pid.
#
# Knobs: BENCH_EVENTS (200000), BENCH_RUNS (5), BENCH_LATENCY_EVENTS (200), BENCH_SEED (42),
# BENCH_STATE_EVENTS (50000), BENCH_STATE_STEADY_EVENTS (300000), BENCH_SIGMA_EVENTS (20000, through Kafka),
# BENCH_SIGMA_MEM_EVENTS (10000, in memory), BENCH_SIGMA_NAIVE_EVENTS (500),
# BENCH_SIGMA_RUNS (3), BENCH_SIGMA_RULES (3000), BENCH_SIGMA_DIR (a SigmaHQ checkout: its
# rules instead of generated ones), BENCH_PROFILE (1), BENCH_KEEP (0: keep the temp dir).
set -euo pipefail

BUILD=${1:-build-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/$BUILD"
N=${BENCH_EVENTS:-200000}
RUNS=${BENCH_RUNS:-5}
LAT_N=${BENCH_LATENCY_EVENTS:-200}
SEED=${BENCH_SEED:-42}
PROFILE=${BENCH_PROFILE:-1}
TMP=$(mktemp -d /tmp/klaxon-bench.XXXXXX)
RES="$TMP/results.txt"
OUT="$BIN/bench-results.txt"
PIDS=()
START=$SECONDS
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    echo "bench: $*" >&2
    exit 1
}

for b in klaxon kx-broker kx-produce bench-consume bench-metrics bench-detect bench-latency bench-state bench-alerts; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: build $BUILD first (make release)"
done
command -v python3 >/dev/null || die "python3 is needed (bench/gen_events.py)"
command -v redis-server >/dev/null || die "redis-server is needed"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds or time runs out.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
        sleep 0.05
    done
}

# stop PID: SIGTERM, wait, and forget it; returns the process's exit status.
stop() {
    local pid=$1 rc=0 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || rc=$?
    for p in "${PIDS[@]}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
    return $rc
}

# field KEY LINE: the value of KEY=value in a "k=v k=v" line.
field() {
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

median() {
    tr ' ' '\n' <<<"$*" | sed '/^$/d' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

minmax() {
    tr ' ' '\n' <<<"$*" | sed '/^$/d' | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'
}

echo "== klaxon bench: $N events, $RUNS runs per row, build $BUILD, $(nproc) cores"

# ---- the stream ----
AUTH_PARTS=8
python3 "$ROOT/bench/gen_events.py" --n "$N" --seed "$SEED" --auth-partitions $AUTH_PARTS \
    --out "$TMP" | tee "$TMP/gen.txt"
NAUTH=$(wc -l <"$TMP/auth.log")
NCT=$(wc -l <"$TMP/cloudtrail.jsonl")
[ $((NAUTH + NCT)) = "$N" ] || die "generator wrote $((NAUTH + NCT)) events, not $N"

# The Sigma-shaped rule sets and their stream (row 7): one topic per logsource, partitions
# sized to keep each under ~2 MiB (the mock's 5 MiB limit, as above); slat*-* (klaxon) and
# rlat*-* (the raw consumer) for latency, 8 partitions each: row 7f's readers stay near the
# head, so the mock drops only what was read, unless one lags by seconds (librdkafka then
# logs "offset reset ... Offset out of range" and the run fails on missing probes). More
# partitions would make that rarer but cost every fetch more: with up to 35 per topic
# klaxon's p99 was several times worse.
SIG_N=${BENCH_SIGMA_EVENTS:-20000}
SIG_RULES=${BENCH_SIGMA_RULES:-3000}
SG="$TMP/sigma"
mkdir -p "$SG/ev"
if [ -n "${BENCH_SIGMA_DIR:-}" ]; then
    python3 "$ROOT/bench/gen_sigma.py" --sigma "$BENCH_SIGMA_DIR" --subsets 50,500 --out "$SG" |
        tee "$TMP/gen-sigma.txt"
else
    python3 "$ROOT/bench/gen_sigma.py" --n "$SIG_RULES" --seed "$SEED" --subsets 50,500 \
        --out "$SG" | tee "$TMP/gen-sigma.txt"
fi
python3 "$ROOT/bench/gen_sigma_events.py" --rules "$SG" --n "$SIG_N" --seed "$SEED" \
    --out "$SG/ev" | tee "$TMP/gen-sigma-events.txt"
SIG_TOPICS=()
SIG_BROKER_ARGS=()
for f in "$SG"/ev/*.jsonl; do
    t=$(basename "$f" .jsonl)
    SIG_TOPICS+=("$t")
    parts=$(($(stat -c %s "$f") / 2097152 + 1))
    SIG_BROKER_ARGS+=(--topic "sig-$t:$parts")
    for tag in half low; do
        SIG_BROKER_ARGS+=(--topic "slat$tag-$t:8" --topic "rlat$tag-$t:8")
    done
done

# ---- broker and redis ----
# Partitions: the mock keeps ~5 MiB per partition and silently drops the oldest data past it
# (docs/internals/source.md). ~14 MiB of syslog over 8 and ~64 MiB of CloudTrail over 32
# keep every partition near 2 MiB; `bench-consume check` proves nothing was dropped.
"$BIN/kx-broker" --topic auth:$AUTH_PARTS --topic cloudtrail:32 --topic lat1-auth:1 \
    --topic lat1-cloudtrail:1 --topic lat2-auth:1 --topic lat2-cloudtrail:1 \
    "${SIG_BROKER_ARGS[@]}" >"$TMP/broker.out" 2>"$TMP/broker.log" &
PIDS+=($!)
wait_until 20 "kx-broker" grep -q '^BOOTSTRAP ' "$TMP/broker.out"
BROKERS=$(sed -n 's/^BOOTSTRAP //p' "$TMP/broker.out")

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP" --save "" --appendonly no \
    --daemonize no --loglevel warning >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
wait_until 20 "redis-server" redis-cli -p "$REDIS_PORT" ping
echo "   kx-broker $BROKERS, redis-server 127.0.0.1:$REDIS_PORT"

# Syslog: each host's lines to one partition, in order (what a producer keyed by host does).
# CloudTrail: unkeyed, spread at random per message (no sticky batches) so partitions fill
# evenly.
t0=$(date +%s.%N)
for p in $(seq 0 $((AUTH_PARTS - 1))); do
    "$BIN/kx-produce" -b "$BROKERS" -t auth -p "$p" -X linger.ms=50 "$TMP/auth.p$p.log" \
        2>"$TMP/produce-auth.log" || die "kx-produce auth failed: $(cat "$TMP/produce-auth.log")"
done
"$BIN/kx-produce" -b "$BROKERS" -t cloudtrail -X linger.ms=50 -X sticky.partitioning.linger.ms=0 \
    "$TMP/cloudtrail.jsonl" 2>"$TMP/produce-ct.log" ||
    die "kx-produce cloudtrail failed: $(cat "$TMP/produce-ct.log")"
t1=$(date +%s.%N)
echo "   produced $N events in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"
"$BIN/bench-consume" check -b "$BROKERS" -n "$N" auth cloudtrail 2>"$TMP/check.log" ||
    die "the broker does not hold all $N events: $(cat "$TMP/check.log")"

# ---- configs: samples/klaxon.yaml with the bench's broker, group, store, sink, ports ----
# make_config FILE GROUP STORE_URL METRICS_PORT ALERTS_FILE TOPIC_PREFIX EXTRA_PROPERTIES
# Throughput runs pass THROUGHPUT_PROPS: the mock answers a fetch that finds no data only after
# fetch.wait.max.ms (500 ms by default) even if data arrives meanwhile, where a real broker
# answers at once; a partition that runs dry for a moment would stall a run for half a second.
THROUGHPUT_PROPS=", fetch.wait.max.ms: 10"
make_config() {
    local file=$1 group=$2 store=$3 mport=$4 alerts=$5 prefix=$6 extra=$7
    sed -e "s|^  brokers: .*|  brokers: $BROKERS|" \
        -e "s|^  group: .*|  group: $group|" \
        -e "s|^  batch: 500.*|  batch: 500\n  properties: {session.timeout.ms: 6000, heartbeat.interval.ms: 500$extra}|" \
        -e "s|^  - ../rules|  - $ROOT/rules|" \
        -e "s|^  store: .*|  store: \"$store\"|" \
        -e "s|^  listen: .*|  listen: 127.0.0.1:$mport|" \
        -e "s|^    console: {type: stdout}|    console: {type: file, path: $alerts}|" \
        -e "s|^  - topic: auth |  - topic: ${prefix}auth |" \
        -e "s|^  - topic: cloudtrail |  - topic: ${prefix}cloudtrail |" \
        "$ROOT/samples/klaxon.yaml" >"$file"
    local want
    for want in "brokers: $BROKERS" "group: $group" "batch: 500" "session.timeout.ms" \
        "$ROOT/rules" "store: \"$store\"" "listen: 127.0.0.1:$mport" "path: $alerts" \
        "topic: ${prefix}auth" "topic: ${prefix}cloudtrail"; do
        grep -qF -- "$want" "$file" ||
            die "samples/klaxon.yaml changed shape: could not set \"$want\" in the bench config"
    done
}

# ---- rows 1-3, round-robin (run i of every row, then run i+1) so that a slow spell of the
# machine hits every row alike ----
make_config "$TMP/consume.yaml" unused memory 1 "$TMP/unused.jsonl" "" "$THROUGHPUT_PROPS"

# klaxon_run NAME STORE_URL: one timed run of the real `klaxon run` over the whole stream.
klaxon_run() {
    local name=$1 store=$2 mport cfg line rc=0
    mport=$(free_port)
    cfg="$TMP/$name.yaml"
    make_config "$cfg" "bench-$name" "$store" "$mport" "$TMP/alerts-$name.jsonl" "" \
        "$THROUGHPUT_PROPS"
    "$BIN/klaxon" run -c "$cfg" >/dev/null 2>"$TMP/klaxon-$name.log" &
    local kpid=$!
    PIDS+=($kpid)
    line=$("$BIN/bench-metrics" -p "$mport" -n "$N" -P "$kpid" -t 240) || rc=$?
    stop "$kpid" || die "klaxon run ($name) exited non-zero: $(tail -5 "$TMP/klaxon-$name.log")"
    [ $rc = 0 ] || die "klaxon run ($name) did not process $N events: $line"
    [ "$(field malformed "$line")" = 0 ] || die "klaxon run ($name): malformed events: $line"
    echo "$line"
}

declare -A RATES ALERTS CPU
for i in $(seq 1 "$RUNS"); do
    for mode in raw decode; do
        line=$("$BIN/bench-consume" $mode -b "$BROKERS" -g "bench-$mode-$i" -n "$N" \
            -c "$TMP/consume.yaml" 2>>"$TMP/consume.log") ||
            die "bench-consume $mode run $i failed: $line $(tail -3 "$TMP/consume.log")"
        RATES[consume-$mode]="${RATES[consume-$mode]:-} $(field rate "$line")"
        CPU[consume-$mode]="${CPU[consume-$mode]:-} $(field cpu_us_per_event "$line")"
    done
    for store in memory redis; do
        url=memory
        [ $store = redis ] && url="redis://127.0.0.1:$REDIS_PORT/bench$i:"
        line=$(klaxon_run "run-$store-$i" "$url")
        RATES[klaxon-$store]="${RATES[klaxon-$store]:-} $(field rate "$line")"
        CPU[klaxon-$store]="${CPU[klaxon-$store]:-} $(field cpu_us_per_event "$line")"
        ALERTS[klaxon-$store]="${ALERTS[klaxon-$store]:-} $(field alerts "$line")"
    done
    echo "   round $i/$RUNS: raw ${RATES[consume-raw]##* }" \
        "decode ${RATES[consume-decode]##* } memory ${RATES[klaxon-memory]##* }" \
        "redis ${RATES[klaxon-redis]##* } events/s"
done
for row in consume-raw consume-decode klaxon-memory klaxon-redis; do
    extra=""
    [ -n "${ALERTS[$row]:-}" ] && extra=" alerts=$(minmax ${ALERTS[$row]})"
    echo "row=$row runs=$RUNS median=$(median ${RATES[$row]}) range=$(minmax ${RATES[$row]})" \
        "cpu_us_per_event=$(median ${CPU[$row]})$extra" | tee -a "$RES"
done

# ---- row 4: in memory (decode, detect, naive regexes, pipeline without Kafka, allocations) ----
make_config "$TMP/inproc.yaml" unused memory 1 "$TMP/alerts-inproc.jsonl" "" ""
# In-memory passes are short (about a second each): twice the runs, plus one, for the median.
MEM_RUNS=$((2 * RUNS + 1))
"$BIN/bench-detect" -c "$TMP/inproc.yaml" -e "$TMP/events.tsv" -r "$MEM_RUNS" | tee -a "$RES"

# ---- row 5: latency, produce -> alert line in the file sink ----
# fetch.wait.max.ms: the mock answers an empty fetch only after this long even when data
# arrives meanwhile (a real broker answers at once), so the default 500 ms would measure the
# mock. 1 ms bounds that artefact; a short run with the default shows its effect.
# latency_run NAME TOPIC_PREFIX EVENTS EXTRA_PROPERTIES (each run has topics of its own).
latency_run() {
    local name=$1 prefix=$2 n=$3 extra=$4 mport cfg line rc=0
    mport=$(free_port)
    cfg="$TMP/$name.yaml"
    make_config "$cfg" "bench-$name" memory "$mport" "$TMP/alerts-$name.jsonl" "$prefix" "$extra"
    : >"$TMP/alerts-$name.jsonl"
    "$BIN/klaxon" run -c "$cfg" >/dev/null 2>"$TMP/klaxon-$name.log" &
    local kpid=$!
    PIDS+=($kpid)
    line=$("$BIN/bench-latency" -b "$BROKERS" -t "${prefix}auth" -f "$TMP/alerts-$name.jsonl" \
        -n "$n" -w 5 -g 20 2>"$TMP/latency-$name.log") || rc=$?
    stop "$kpid" || die "klaxon run ($name) exited non-zero: $(tail -5 "$TMP/klaxon-$name.log")"
    [ $rc = 0 ] || die "latency run $name failed: $(cat "$TMP/latency-$name.log")"
    echo "row=$name $line" | tee -a "$RES"
}
latency_run latency lat1- "$LAT_N" ", fetch.wait.max.ms: 1"
latency_run latency-default-fetch-wait lat2- 20 ""

# ---- row 6: the stateful path alone (kx_pipeline + correlation rules on redis-server), every
# event matching (event_count, value_count, first_seen, baseline, absence, at_most), updates one by one (-p 0) and
# pre-aggregated per key and batch (-p 1), with 100 and 10,000 groups; then pre-aggregated on a Redis Cluster of three masters (the CPU and
# commands of all three counted) ----
STATE_N=${BENCH_STATE_EVENTS:-50000}
for t in event_count value_count first_seen baseline absence at_most; do
    for g in 100 10000; do
        for pa in 0 1; do
            line=$("$BIN/bench-state" -s "redis://127.0.0.1:$REDIS_PORT" -n "$STATE_N" -g "$g" \
                -b 1000 -r "$RUNS" -t "$t" -p "$pa") || die "bench-state $t -g $g -p $pa failed"
            echo "${line/row=state/row=state-$t-g$g-$pa}" | tee -a "$RES"
        done
    done
done
# The same through the window log (state.windows: log: -l), pre-aggregated; at 10,000 groups
# also with 30 events per group (STATE_STEADY_N), where creating each group's stream no longer
# dominates, for both ways of keeping the windows.
STATE_STEADY_N=${BENCH_STATE_STEADY_EVENTS:-300000}
for t in event_count value_count; do
    for g in 100 10000; do
        line=$("$BIN/bench-state" -s "redis://127.0.0.1:$REDIS_PORT" -n "$STATE_N" -g "$g" \
            -b 1000 -r "$RUNS" -t "$t" -p 1 -l) || die "bench-state -l $t -g $g failed"
        echo "${line/row=state/row=state-log-$t-g$g-1}" | tee -a "$RES"
    done
    for l in "" -l; do
        line=$("$BIN/bench-state" -s "redis://127.0.0.1:$REDIS_PORT" -n "$STATE_STEADY_N" -g 10000 \
            -b 1000 -r "$RUNS" -t "$t" -p 1 $l) || die "bench-state steady $t $l failed"
        echo "${line/row=state/row=state-steady${l:+-log}-$t-g10000-1}" | tee -a "$RES"
    done
done
# A cluster port: its bus (port + 10000) must be free too.
cluster_port() {
    local p
    while :; do
        p=$(free_port)
        [ $((p + 10000)) -le 65535 ] || continue
        python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$((p + 10000))))" \
            2>/dev/null && { echo "$p"; return; }
    done
}
CL_PORTS=()
for i in 0 1 2; do
    p=$(cluster_port)
    mkdir -p "$TMP/cluster$i"
    redis-server --port "$p" --bind 127.0.0.1 --dir "$TMP/cluster$i" --save "" --appendonly no \
        --cluster-enabled yes --cluster-config-file "$TMP/cluster$i/nodes.conf" \
        --daemonize no --loglevel warning >"$TMP/cluster$i.log" 2>&1 &
    PIDS+=($!)
    wait_until 20 "cluster redis-server $p" redis-cli -p "$p" ping
    CL_PORTS+=("$p")
done
redis-cli --cluster create "${CL_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$TMP/cluster-create.log" 2>&1 || die "redis-cli --cluster create: $(tail -3 "$TMP/cluster-create.log")"
cluster_ok() {
    local p
    for p in "${CL_PORTS[@]}"; do
        redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || return 1
    done
}
wait_until 30 "the cluster" cluster_ok
for t in event_count value_count first_seen baseline absence at_most; do
    for g in 100 10000; do
        line=$("$BIN/bench-state" -s "redis://127.0.0.1:${CL_PORTS[0]}" -x "${CL_PORTS[1]},${CL_PORTS[2]}" \
            -n "$STATE_N" -g "$g" -b 1000 -r "$RUNS" -t "$t" -p 1) || die "bench-state cluster $t -g $g failed"
        echo "${line/row=state/row=state-cluster-$t-g$g-1}" | tee -a "$RES"
    done
done
for t in event_count value_count; do
    for g in 100 10000; do
        line=$("$BIN/bench-state" -s "redis://127.0.0.1:${CL_PORTS[0]}" -x "${CL_PORTS[1]},${CL_PORTS[2]}" \
            -n "$STATE_N" -g "$g" -b 1000 -r "$RUNS" -t "$t" -p 1 -l) || die "bench-state cluster -l $t -g $g failed"
        echo "${line/row=state/row=state-cluster-log-$t-g$g-1}" | tee -a "$RES"
    done
done

# ---- row 7: SigmaHQ-shaped rule sets ----
# sigma_config FILE TEMPLATE RULES_DIR GROUP ALERTS METRICS_PORT TOPIC_PREFIX PROPS
sigma_config() {
    sed -e "s|@RULES@|$3|" -e "s|@BROKERS@|$BROKERS|" -e "s|@GROUP@|$4|" -e "s|@ALERTS@|$5|" \
        -e "s|@METRICS_PORT@|$6|" -e "s|@PREFIX@|$7|g" -e "s|@PROPS@|$8|" "$2" >"$1"
    grep -q '@[A-Z_]*@' "$1" && die "$2: a placeholder was left in $1"
    return 0
}
SIG_MEM_N=${BENCH_SIGMA_MEM_EVENTS:-10000}
SIG_NAIVE_N=${BENCH_SIGMA_NAIVE_EVENTS:-500}
SIG_RUNS=${BENCH_SIGMA_RUNS:-3}
head -n "$SIG_MEM_N" "$SG/ev/events.tsv" >"$SG/mem.tsv"
# 7a-c in memory: each set with its logsource (inputs route events to their rules) and
# without (no logsource anywhere: every rule is evaluated on every event).
for size in 50 500 all; do
    dir="$SG/rules"
    [ $size = all ] || dir="$SG/rules-$size"
    [ -d "$dir" ] || continue
    for routing in routed nols; do
        tmpl="$SG/ev/sigma.yaml"
        rdir="$dir"
        [ $routing = nols ] && tmpl="$SG/ev/sigma-nols.yaml" && rdir="$dir-nols"
        sigma_config "$TMP/sig-mem.yaml" "$tmpl" "$rdir" unused "$TMP/unused.jsonl" 1 "" ""
        modes=detect,naive
        [ $size = 50 ] && [ $routing = routed ] && modes=decode,detect,naive
        "$BIN/bench-detect" -c "$TMP/sig-mem.yaml" -e "$SG/mem.tsv" -r "$SIG_RUNS" -m $modes \
            -n "$SIG_NAIVE_N" >"$TMP/sig-$size-$routing.txt" ||
            die "bench-detect on the $size-rule Sigma set ($routing) failed"
        sed -n -e "s/^row=/row=sigma-$size-$routing-/p" \
            -e "s/^info /sinfo set=sigma-$size-$routing /p" \
            -e "s/^allocs path=detect /sallocs set=sigma-$size-$routing /p" \
            -e "s/^warmup /swarm set=sigma-$size-$routing /p" \
            "$TMP/sig-$size-$routing.txt" | tee -a "$RES" | cut -c1-160
    done
done

# 7d-e through kx-broker: raw consume and `klaxon run` with the whole set, round-robin.
for t in "${SIG_TOPICS[@]}"; do
    "$BIN/kx-produce" -b "$BROKERS" -t "sig-$t" -X linger.ms=50 -X sticky.partitioning.linger.ms=0 \
        "$SG/ev/$t.jsonl" 2>"$TMP/produce-sig.log" ||
        die "kx-produce sig-$t failed: $(cat "$TMP/produce-sig.log")"
done
SIG_TOPIC_NAMES=()
for t in "${SIG_TOPICS[@]}"; do SIG_TOPIC_NAMES+=("sig-$t"); done
"$BIN/bench-consume" check -b "$BROKERS" -n "$SIG_N" "${SIG_TOPIC_NAMES[@]}" 2>"$TMP/check-sig.log" ||
    die "the broker does not hold all $SIG_N Sigma events: $(cat "$TMP/check-sig.log")"
sigma_config "$TMP/sig-consume.yaml" "$SG/ev/sigma.yaml" "$SG/rules" unused "$TMP/unused.jsonl" \
    1 sig- "$THROUGHPUT_PROPS"
declare -A SRATES SCPU
for i in $(seq 1 "$SIG_RUNS"); do
    line=$("$BIN/bench-consume" raw -b "$BROKERS" -g "bench-sig-raw-$i" -n "$SIG_N" \
        -c "$TMP/sig-consume.yaml" 2>>"$TMP/consume.log") ||
        die "bench-consume raw (Sigma topics) run $i failed: $line"
    SRATES[raw]="${SRATES[raw]:-} $(field rate "$line")"
    SCPU[raw]="${SCPU[raw]:-} $(field cpu_us_per_event "$line")"
    mport=$(free_port)
    sigma_config "$TMP/sig-run-$i.yaml" "$SG/ev/sigma.yaml" "$SG/rules" "bench-sig-run-$i" \
        "$TMP/alerts-sig-$i.jsonl" "$mport" sig- "$THROUGHPUT_PROPS"
    "$BIN/klaxon" run -c "$TMP/sig-run-$i.yaml" >/dev/null 2>"$TMP/klaxon-sig-$i.log" &
    kpid=$!
    PIDS+=($kpid)
    rc=0
    line=$("$BIN/bench-metrics" -p "$mport" -n "$SIG_N" -P "$kpid" -t 600) || rc=$?
    stop "$kpid" || die "klaxon run (Sigma set) exited non-zero: $(tail -5 "$TMP/klaxon-sig-$i.log")"
    [ $rc = 0 ] || die "klaxon run (Sigma set) did not process $SIG_N events: $line"
    [ "$(field malformed "$line")" = 0 ] || die "klaxon run (Sigma set): malformed events: $line"
    SRATES[klaxon]="${SRATES[klaxon]:-} $(field rate "$line")"
    SCPU[klaxon]="${SCPU[klaxon]:-} $(field cpu_us_per_event "$line")"
    SALERTS="${SALERTS:-} $(field alerts "$line")"
    echo "   sigma round $i/$SIG_RUNS: raw ${SRATES[raw]##* } klaxon ${SRATES[klaxon]##* } events/s"
done
for row in raw klaxon; do
    extra=""
    [ $row = klaxon ] && extra=" alerts=$(minmax $SALERTS)"
    echo "row=sigma-kafka-$row runs=$SIG_RUNS events=$SIG_N median=$(median ${SRATES[$row]})" \
        "range=$(minmax ${SRATES[$row]}) cpu_us_per_event=$(median ${SCPU[$row]})$extra" |
        tee -a "$RES"
done

# 7f latency under load: background at half the median `klaxon run` rate just measured,
# probes (events of a known rule) every 0-20 ms, alert line in the file sink; the same load
# read by a plain consumer (bench-latency -f -) first, the transport's own latency. 200
# warm-up probes (~2 s): in the first second or so of the load klaxon's loop runs at 90-100 %
# of a core (page faults as its tables fill) and may lag by 100-450 ms before it catches up;
# the raw reader shows a smaller blip. The rows give the steady state after it.
# A real SigmaHQ checkout (BENCH_SIGMA_DIR) comes without known matching events: no probes.
# sigma_latency TAG RATE: row sigma-latency-TAG-raw (the plain consumer) and -klaxon, on
# topics rlatTAG-* and slatTAG-*. A run that loses probes is recorded as failed, not fatal:
# at tens of thousands of events/s the producer, the mock broker and the reader share these
# 2 cores, and a reader that lags by seconds loses data the mock dropped (see above).
sigma_latency() {
    local tag=$1 rate=$2 rc=0 line
    line=$("$BIN/bench-latency" -b "$BROKERS" -f - -R "$rate" -e "$SG/ev/events.tsv" \
        -p "$SG/ev/probes.tsv" -x "rlat$tag-" -n "$LAT_N" -w 200 -g 10 \
        2>"$TMP/latency-sig-raw-$tag.log") || rc=$?
    [ $rc = 0 ] || line="failed=$(tail -1 "$TMP/latency-sig-raw-$tag.log" | tr ' ' '_')"
    echo "row=sigma-latency-$tag-raw target_rate=$rate $line" | tee -a "$RES"
    local mport
    mport=$(free_port)
    sigma_config "$TMP/sig-lat-$tag.yaml" "$SG/ev/sigma.yaml" "$SG/rules" "bench-sig-lat-$tag" \
        "$TMP/alerts-sig-lat-$tag.jsonl" "$mport" "slat$tag-" ", fetch.wait.max.ms: 1"
    : >"$TMP/alerts-sig-lat-$tag.jsonl"
    "$BIN/klaxon" run -c "$TMP/sig-lat-$tag.yaml" >/dev/null 2>"$TMP/klaxon-sig-lat-$tag.log" &
    kpid=$!
    PIDS+=($kpid)
    rc=0
    line=$("$BIN/bench-latency" -b "$BROKERS" -f "$TMP/alerts-sig-lat-$tag.jsonl" -R "$rate" \
        -e "$SG/ev/events.tsv" -p "$SG/ev/probes.tsv" -x "slat$tag-" -n "$LAT_N" -w 200 -g 10 \
        2>"$TMP/latency-sig-$tag.log") || rc=$?
    stop "$kpid" ||
        die "klaxon run (Sigma latency) exited non-zero: $(tail -5 "$TMP/klaxon-sig-lat-$tag.log")"
    [ $rc = 0 ] || line="failed=$(tail -1 "$TMP/latency-sig-$tag.log" | tr ' ' '_')"
    echo "row=sigma-latency-$tag-klaxon target_rate=$rate $line" | tee -a "$RES"
}
SIG_RATE=$(awk -v r="$(median ${SRATES[klaxon]})" 'BEGIN {printf "%d", r / 2}')
SIG_LOW_RATE=${BENCH_SIGMA_LAT_LOW_RATE:-20000}
if [ ! -s "$SG/ev/probes.tsv" ]; then
    echo "row=sigma-latency skipped=no-probes" | tee -a "$RES"
else
    echo "row=sigma-latency rate=$SIG_RATE low_rate=$SIG_LOW_RATE" | tee -a "$RES"
    sigma_latency half "$SIG_RATE"
    sigma_latency low "$SIG_LOW_RATE"
fi

# ---- row 8: the alert stage alone (bench-alerts) ----
# Spool + router + a webhook sink posting to a local HTTP receiver, in one process: alerts/s
# and the loop thread's CPU per alert, with a spool directory and without, and with the spool
# and incident claims in the redis-server (one page across processes); then the latency
# from kx_router_send to the receiver for one team while another team's sink hangs.
ALERTS_N=${BENCH_ALERTS:-20000}
"$BIN/bench-alerts" -n "$ALERTS_N" -r "$RUNS" -l 300 -R 200 -S "$REDIS_PORT" >"$TMP/alerts.txt" ||
    die "bench-alerts failed: $(cat "$TMP/alerts.txt")"
tee -a "$RES" <"$TMP/alerts.txt"

# ---- profile: one klaxon run (memory store) under perf ----
if [ "$PROFILE" = 1 ] && command -v perf >/dev/null && perf record -o /dev/null -q true 2>/dev/null; then
    mport=$(free_port)
    make_config "$TMP/profile.yaml" bench-profile memory "$mport" "$TMP/alerts-profile.jsonl" "" \
        "$THROUGHPUT_PROPS"
    "$BIN/klaxon" run -c "$TMP/profile.yaml" >/dev/null 2>"$TMP/klaxon-profile.log" &
    kpid=$!
    PIDS+=($kpid)
    perf record -F 999 -g -p "$kpid" -o "$TMP/perf.data" -q 2>"$TMP/perf.log" &
    ppid=$!
    PIDS+=($ppid)
    "$BIN/bench-metrics" -p "$mport" -n "$N" -P "$kpid" -t 240 >"$TMP/profile-run.txt" ||
        die "profiled klaxon run failed: $(cat "$TMP/profile-run.txt")"
    kill -INT "$ppid"
    stop "$ppid" || true
    stop "$kpid" || die "profiled klaxon run exited non-zero"
    {
        echo "profile klaxon run (memory store), perf cpu-clock samples, all threads:"
        echo "-- by shared object (self):"
        perf report -i "$TMP/perf.data" --no-children --sort dso --stdio 2>/dev/null |
            awk '/^ +[0-9.]+%/ && n++ < 8'
        echo "-- by function (self):"
        perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
            awk '/^ +[0-9.]+%/ && n++ < 15'
    } >"$TMP/profile.txt"
else
    echo "profile skipped (BENCH_PROFILE=0 or perf unavailable)" >"$TMP/profile.txt"
fi

# ---- the table ----
python3 - "$RES" "$TMP/gen.txt" "$N" "$RUNS" "$(nproc)" "$BUILD" "$((SECONDS - START))" \
    "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$TMP/gen-sigma.txt" \
    "$TMP/gen-sigma-events.txt" <<'EOF' | tee "$OUT"
import sys, datetime
res, gen, n, runs, cores, build, elapsed, load0, load1, sgen, sevgen = sys.argv[1:]
rows, allocs, info, sinfo, sallocs, swarm = {}, {}, {}, {}, {}, {}
for line in open(res):
    kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
    if line.startswith("row="):
        rows[kv["row"]] = kv
    elif line.startswith("allocs ") and "path" in kv:
        allocs[kv["path"]] = kv
    elif line.startswith("info "):
        info = kv
    elif line.startswith("sinfo "):
        sinfo[kv["set"]] = kv
    elif line.startswith("sallocs "):
        sallocs[kv["set"]] = kv
    elif line.startswith("swarm "):
        swarm[kv["set"]] = kv

def r(name, label, base, note=""):
    kv = rows[name]
    med = float(kv["median"])
    rng = kv.get("range") or "%s-%s" % (kv["min"], kv["max"])
    lo, hi = (float(x) for x in rng.split("-"))
    print("  %-58s %11s  %21s  %7.2f  %6.2f  %s" % (label, "{:,.0f}".format(med),
          "{:,.0f} - {:,.0f}".format(lo, hi), float(kv["cpu_us_per_event"]),
          med / float(rows[base]["median"]), note))

print()
print("klaxon benchmark  %s  %s cores  %s build  %s events  (bench took %s s)" % (
    datetime.date.today().isoformat(), cores, build, "{:,}".format(int(n)), elapsed))
print("stream: %s" % open(gen).read().split(" ", 2)[2].strip())
print("load average before: %s  after: %s  (other work on the machine skews the figures)" % (load0, load1))
print("CPU us = CPU time per event of the measuring process, all its threads (klaxon's for row 3;")
print("the broker's and redis-server's CPU is not included)")
print()
print("  %-58s %11s  %21s  %7s  %6s" % ("through kx-broker, median of %s runs" % rows["consume-raw"]["runs"],
                                     "events/s", "min - max", "CPU us", "x row 1"))
r("consume-raw", "1  raw librdkafka consume (baseline)", "consume-raw")
r("consume-decode", "2  consume + kx_decode", "consume-raw")
r("klaxon-memory", "3a klaxon run end to end, memory store", "consume-raw",
  "alerts %s" % rows["klaxon-memory"]["alerts"])
r("klaxon-redis", "3b klaxon run end to end, redis store", "consume-raw",
  "alerts %s" % rows["klaxon-redis"]["alerts"])
print()
print("  %-58s %11s  %21s  %7s  %6s" % ("in memory, no Kafka, median of %s runs" % rows["detect"]["runs"],
                                     "events/s", "min - max", "CPU us", "x 4c"))
r("naive", "4a naive: every rule's regexes on each raw line (JIT)", "detect",
  "%s rule matches" % rows["naive"]["matches"])
r("naive-nojit", "4b naive, PCRE2 interpreter (no JIT)", "detect")
r("detect", "4c klaxon detect: kx_decode + kx_ruleset_match", "detect",
  "%s rule matches" % rows["detect"]["matches"])
r("decode", "   kx_decode only", "detect")
for k in sorted(rows):
    if k.startswith("decode-"):
        r(k, "     %s events only" % k[7:], "detect")
r("pipeline", "   decode+detect+state+alert (kx_pipeline, memory store)", "detect",
  "alerts %s" % rows["pipeline"]["alerts"])
print()
d, p = allocs.get("detect", {}), allocs.get("pipeline", {})
print("  allocations per event, steady state (malloc+calloc+realloc, whole process):")
for k in sorted(d):
    if k.endswith("_per_event") and "jansson" not in k and k != "all_per_event":
        t = k[: -len("_per_event")]
        print("    detect path, %-12s %8s  (of which jansson %s)" % (t, d[k], d.get(t + "_jansson_per_event", "?")))
print("    detect path, all events  %8s" % d.get("all_per_event", "?"))
print("    full pipeline, all events %7s  (%s alerts in the run)" % (p.get("all_per_event", "?"), p.get("alerts", "?")))
print()
print("  latency, produce -> alert line in the file sink (klaxon run, memory store):")
for name, label in (("latency", "fetch.wait.max.ms=1"),
                    ("latency-default-fetch-wait", "default fetch.wait.max.ms=500 (mock artefact)")):
    kv = rows[name]
    print("    %-46s n=%-4s p50 %7s ms  p90 %7s ms  p99 %7s ms  max %7s ms" % (
        label, kv["n"], kv["p50_ms"], kv["p90_ms"], kv["p99_ms"], kv["max_ms"]))
print()
print("  stateful path alone (kx_pipeline, every event matching; %s events, batches of 1000), median" % rows["state-event_count-g100-0"]["events"])
print("  of %s runs; CPU us = klaxon's, Redis us = redis-server's (INFO cpu, all masters of the cluster):" % rows["state-event_count-g100-0"]["runs"])
print("    %-52s %11s  %21s  %7s  %8s  %9s  %9s" % ("", "events/s", "min - max", "CPU us", "Redis us", "EVALSHA/ev", "cmds/ev"))
for store in ("", "cluster-"):
    for t in ("event_count", "value_count", "first_seen", "baseline", "absence", "at_most"):
        for g in ("100", "10000"):
            for pa, label in (("0", "one by one"), ("1", "pre-aggregated")):
                kv = rows.get("state-%s%s-g%s-%s" % (store, t, g, pa))
                if not kv:
                    continue
                print("    %-52s %11s  %21s  %7.2f  %8.2f  %9s  %9s" % (
                      "%s%s, %s groups, %s" % ("cluster: " if store else "", t, g, label),
                      "{:,.0f}".format(float(kv["median"])),
                      "{:,.0f} - {:,.0f}".format(float(kv["min"]), float(kv["max"])),
                      float(kv["cpu_us_per_event"]), float(kv["redis_cpu_us_per_event"]),
                      kv["evalsha_per_event"], kv["redis_cmds_per_event"]))

print("  SigmaHQ-shaped rule sets: %s" % open(sgen).read().strip().split(": ", 1)[1])
print("  stream: %s" % open(sevgen).read().strip().split(": ", 1)[1].split("; topic bytes")[0])
raw = rows["sigma-kafka-raw"]
rawrate = float(raw["median"])
anyrow = next(v for k, v in rows.items() if k.endswith("-detect") and k.startswith("sigma-"))
print("  in memory, first %s events, median of %s runs; x raw = events/s over row 7d's raw consume;" % (
    "{:,}".format(int(anyrow["events"])), anyrow["runs"]))
print("  x naive = naive CPU / detect CPU (naive on the first %s events; > 1: klaxon is faster)" %
      next(v for v in sinfo.values())["naive_events"])
print("  load ms: kx_ruleset_load; 1st ms: the first detect pass over the events (not in the rows);")
print("  RSS: resident memory added by the rule set, after that first pass")
print("    %-5s %-7s %10s %9s %7s %11s %7s %9s %9s %8s %8s %8s" % (
    "rules", "routing", "CPU us/ev", "events/s", "x raw", "naive us/ev", "x naive", "matched", "allocs/ev",
    "load ms", "1st ms", "RSS MiB"))
if "sigma-50-routed-decode" in rows:
    d = rows["sigma-50-routed-decode"]
    print("    %-13s %10.2f %9s %7.3f   (kx_decode alone)" % (
        "decode", float(d["cpu_us_per_event"]), "{:,.0f}".format(float(d["median"])),
        float(d["median"]) / rawrate))
for size in ("50", "500", "all"):
    for routing in ("routed", "nols"):
        key = "sigma-%s-%s" % (size, routing)
        if key + "-detect" not in rows:
            continue
        d, nv, si = rows[key + "-detect"], rows.get(key + "-naive"), sinfo.get(key, {})
        al = sallocs.get(key, {}).get("all_per_event", "?")
        print("    %-5s %-7s %10.2f %9s %7.3f %11s %7s %9s %9s %8.0f %8.0f %8.1f" % (
            si.get("rules", size), "yes" if routing == "routed" else "no",
            float(d["cpu_us_per_event"]), "{:,.0f}".format(float(d["median"])),
            float(d["median"]) / rawrate,
            "%.1f" % float(nv["cpu_us_per_event"]) if nv else "-",
            "%.1f" % (float(nv["cpu_us_per_event"]) / float(d["cpu_us_per_event"])) if nv else "-",
            d.get("matched_events", "?"), al, float(si.get("load_ms", 0)),
            float(swarm.get(key, {}).get("first_detect_pass_ms", 0)),
            float(swarm.get(key, {}).get("rules_rss_after_first_pass_kib",
                                         si.get("rules_rss_kib", 0))) / 1024))
print()
print("  through kx-broker, %s events, median of %s runs:" % ("{:,}".format(int(raw["events"])), raw["runs"]))
r("sigma-kafka-raw", "7d raw librdkafka consume of the Sigma topics", "sigma-kafka-raw")
r("sigma-kafka-klaxon", "7e klaxon run end to end, %s rules, routed" % sinfo.get("sigma-all-routed", {}).get("rules", "?"),
  "sigma-kafka-raw", "alerts %s" % rows["sigma-kafka-klaxon"]["alerts"])
kv = rows["sigma-latency"]
print()
if "skipped" in kv:
    print("  7f latency skipped: no probe events (a real SigmaHQ checkout has no known matches)")
else:
    print("  7f latency, produce -> read (transport) or alert line (klaxon), fetch.wait.max.ms=1:")
    for tag, label in (("half", "half of 7e"), ("low", "fixed")):
        for who in ("raw", "klaxon"):
            kv = rows["sigma-latency-%s-%s" % (tag, who)]
            name = "%s events/s (%s), %s" % (kv["target_rate"], label,
                                             "plain consumer" if who == "raw" else "klaxon")
            if "failed" in kv:
                print("    %-44s FAILED: %s" % (name, kv["failed"].replace("_", " ")))
            else:
                print("    %-44s n=%-4s p50 %7s ms  p90 %7s ms  p99 %7s ms  max %7s ms" % (
                    name, kv["n"], kv["p50_ms"], kv["p90_ms"], kv["p99_ms"], kv["max_ms"]))
print()
print("  alert stage alone (bench-alerts: spool + router + webhook to a local HTTP receiver,")
print("  one process; CPU = the loop thread's), median of %s runs:" % rows["alerts-spool"]["runs"])
for k, label in (("alerts-spool", "8a alerts/s, spool directory (durable)"),
                 ("alerts-memory", "8b alerts/s, no spool directory"),
                 ("alerts-claims", "8e alerts/s, spool + claims in redis")):
    kv = rows[k]
    print("    %-44s %9s   %s - %s   CPU %6s us/alert" % (label, "{:,.0f}".format(float(kv["median"])),
          "{:,.0f}".format(float(kv["min"])), "{:,.0f}".format(float(kv["max"])), kv["cpu_us_per_alert"]))
for k, label in (("alert-latency-healthy-only", "8c send -> receiver, healthy sink only"),
                 ("alert-latency-with-hung-sink", "8d the same, another team's sink hung")):
    kv = rows[k]
    print("    %-44s n=%-4s p50 %6s ms  p90 %6s ms  p99 %6s ms  max %6s ms" % (
        label, kv["n"], kv["p50_ms"], kv["p90_ms"], kv["p99_ms"], kv["max_ms"]))
EOF
echo
cat "$TMP/profile.txt"
echo
echo "bench: done in $((SECONDS - START)) s; table saved to $OUT"
