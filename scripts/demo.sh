#!/usr/bin/env bash
# make demo: the real pipeline on local parts. Starts a Kafka-protocol broker (kx-broker, on
# librdkafka's mock cluster) and a redis-server on free loopback ports in a temp dir,
# produces the sample logs, runs `klaxon run` with the shipped rules and shows the alerts
# as they fire. Stops only the processes it started (by pid) and removes its temp dir.
set -euo pipefail

BUILD=${1:-build-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/$BUILD"
TMP=$(mktemp -d /tmp/klaxon-demo.XXXXXX)
exec 3>&2 # diagnostics from inside wait_until, whose command output is discarded
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds or time runs out.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "demo: timed out waiting for $what" >&2
            [ -f "$TMP/klaxon.log" ] && tail -20 "$TMP/klaxon.log" >&2
            exit 1
        fi
        sleep 0.1
    done
}

echo "== klaxon demo: Kafka (mock cluster) -> decode -> Sigma rules -> Redis windows -> alerts"

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP" --save "" --appendonly no \
    --daemonize no --loglevel warning >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
wait_until 20 "redis-server" redis-cli -p "$REDIS_PORT" ping
echo "   redis-server   127.0.0.1:$REDIS_PORT (pid ${PIDS[0]})"

"$BIN/kx-broker" --topic auth:3 --topic cloudtrail:2 >"$TMP/broker.out" 2>"$TMP/broker.log" &
PIDS+=($!)
wait_until 20 "kx-broker" grep -q '^BOOTSTRAP ' "$TMP/broker.out"
BROKERS=$(sed -n 's/^BOOTSTRAP //p' "$TMP/broker.out")
echo "   kx-broker      $BROKERS (pid ${PIDS[1]})"

METRICS_PORT=$(free_port)
sed -e "s|  brokers: 127.0.0.1:9092.*|  brokers: \"$BROKERS\"|" \
    -e "s|  store: memory.*|  store: \"redis://127.0.0.1:$REDIS_PORT/klaxon-demo:\"|" \
    -e "s|  listen: 127.0.0.1:9464|  listen: \"127.0.0.1:$METRICS_PORT\"|" \
    -e "s|  - ../rules|  - \"$ROOT/rules\"|" \
    -e "s|  spool: {dir: /tmp/klaxon-spool}|  spool: {dir: \"$TMP/spool\"}|" \
    "$ROOT/samples/klaxon.yaml" >"$TMP/klaxon.yaml"

# Syslog of one host goes to one partition (in production: keyed by host), keeping order.
"$BIN/kx-produce" -b "$BROKERS" -t auth -p 0 "$ROOT/samples/auth.log" 2>>"$TMP/produce.log" ||
    { cat "$TMP/produce.log" >&2; exit 1; }
"$BIN/kx-produce" -b "$BROKERS" -t cloudtrail "$ROOT/samples/cloudtrail.jsonl" 2>>"$TMP/produce.log" ||
    { cat "$TMP/produce.log" >&2; exit 1; }
TOTAL=$(($(wc -l <"$ROOT/samples/auth.log") + $(wc -l <"$ROOT/samples/cloudtrail.jsonl")))
echo "   produced       $TOTAL sample events (samples/auth.log -> auth, samples/cloudtrail.jsonl -> cloudtrail)"
echo

"$BIN/klaxon" run -c "$TMP/klaxon.yaml" 2>"$TMP/klaxon.log" >"$TMP/alerts.jsonl" &
KLAXON_PID=$!
PIDS+=($KLAXON_PID)

# Show alerts as they fire, one line each.
python3 -u "$ROOT/scripts/show_alerts.py" "$TMP/alerts.jsonl" "$TMP/done" &
SHOW_PID=$!
PIDS+=($SHOW_PID)

metric() {
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v k="$1" '$1 == k {print $2}'
}
all_consumed() {
    if ! kill -0 "$KLAXON_PID" 2>/dev/null; then
        echo "demo: klaxon exited early:" >&3
        cat "$TMP/klaxon.log" >&3
        exit 1
    fi
    [ "$(metric klaxon_events_consumed_total)" = "$TOTAL" ] &&
        [ "$(metric klaxon_alerts_raised_total)" = "$(metric klaxon_alerts_delivered_total)" ]
}
wait_until 90 "klaxon to process the samples" all_consumed
MALFORMED=$(metric klaxon_events_malformed_total)
RAISED=$(metric klaxon_alerts_raised_total)

kill -TERM "$KLAXON_PID"
wait "$KLAXON_PID"
touch "$TMP/done"
wait "$SHOW_PID"
echo
echo "   $TOTAL events consumed, $MALFORMED malformed, $RAISED alerts; offsets committed; klaxon exited 0."
echo "   Each line above is one alert record (JSON, see docs/alerts.md); the rules are in rules/,"
echo "   the logs in samples/. Replay them without Kafka or Redis:"
echo "   $BUILD/klaxon replay --config samples/klaxon.yaml --topic auth samples/auth.log"
