"""Integration test harness: real processes on loopback, started and stopped by pid.

- RedisServer: the real redis-server on a free 127.0.0.1 port in a temp dir.
- Broker: kx-broker (librdkafka's mock cluster as a Kafka-protocol broker).
- HookReceiver: a small real HTTP server that records POST bodies and can fail on purpose.
- Klaxon: the real klaxon binary (run or replay).
Nothing here sleeps to synchronise: wait_for polls a condition against a deadline.
"""
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SRC = os.environ.get("KX_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.environ.get("KX_BINARY_DIR", os.path.join(SRC, "build"))
KLAXON = os.path.join(BIN, "klaxon")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port():
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        p = free_port()
        if p + 10000 > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            continue
    raise AssertionError("no free port pair for a cluster node")


def wait_for(cond, timeout=30.0, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class RedisServer:
    def __init__(self, tmp, persist=False, extra=(), auth=None):
        """extra: more redis-server arguments; auth: the (user, password) or (password,)
        the test's own commands authenticate with."""
        self.tmp = tmp
        self.port = free_port()
        self.persist = persist
        self.extra = list(extra)
        self.auth = auth
        self.proc = None

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.tmp,
                "--save", "", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 20, "redis-server to answer PING")
        return self

    def ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited with %s" % self.proc.returncode)
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args):
        """One RESP command (after AUTH when the server wants it); returns the raw reply
        bytes (enough for tests)."""
        def req(xs):
            return b"*%d\r\n" % len(xs) + b"".join(
                b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() if isinstance(x, str) else x for x in xs))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            if self.auth:
                s.sendall(req(("AUTH",) + tuple(self.auth)))
                if not s.recv(64).startswith(b"+OK"):
                    raise AssertionError("AUTH refused by the test redis")
            s.sendall(req(args))
            return s.recv(65536)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class RedisCluster:
    """A Redis Cluster of n masters (no replicas, append-only files) on loopback: n redis-servers with
    --cluster-enabled yes, joined by `redis-cli --cluster create`. .port is the first master
    (what klaxon is given); .nodes the RedisServers."""

    def __init__(self, tmp, n=3):
        self.tmp = tmp
        self.nodes = []
        for i in range(n):
            d = os.path.join(tmp, "node%d" % i)
            os.makedirs(d, exist_ok=True)
            # Persistent, as a cluster in production is: a master that restarts keeps its keys.
            node = RedisServer(d, persist=True, extra=["--cluster-enabled", "yes", "--cluster-config-file",
                                         os.path.join(d, "nodes.conf"), "--cluster-node-timeout", "5000"])
            node.port = free_cluster_port()
            self.nodes.append(node)
        self.port = None

    def start(self):
        for n in self.nodes:
            n.start()
        self.port = self.nodes[0].port
        r = subprocess.run(["redis-cli", "--cluster", "create"] +
                           ["127.0.0.1:%d" % n.port for n in self.nodes] +
                           ["--cluster-replicas", "0", "--cluster-yes"], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError("redis-cli --cluster create: %s" % r.stdout.decode(errors="replace")[-2000:])
        wait_for(self.ok, 30, "the cluster to be ok on every node")
        return self

    def ok(self):
        return all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes)

    def node_id(self, i):
        return self.nodes[i].command("CLUSTER", "MYID").split(b"\r\n")[1].decode()

    def slots_of(self, i):
        """How many slots master i serves."""
        reply = subprocess.run(["redis-cli", "-p", str(self.nodes[i].port), "CLUSTER", "NODES"],
                               capture_output=True, timeout=10).stdout.decode()
        for line in reply.splitlines():
            f = line.split()
            if "myself" in f[2]:
                total = 0
                for r in f[8:]:
                    if r.startswith("["):
                        continue
                    lo, _, hi = r.partition("-")
                    total += int(hi or lo) - int(lo) + 1
                return total
        return 0

    def reshard(self, src, dst, nslots):
        """Moves nslots slots (with their keys) from master src to master dst, as an operator
        would, while clients keep writing."""
        return subprocess.Popen(["redis-cli", "--cluster", "reshard", "127.0.0.1:%d" % self.port,
                                 "--cluster-from", self.node_id(src), "--cluster-to", self.node_id(dst),
                                 "--cluster-slots", str(nslots), "--cluster-yes", "--cluster-pipeline", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def keys_on(self, i, pattern):
        """The keys matching pattern on master i."""
        reply = subprocess.run(["redis-cli", "-p", str(self.nodes[i].port), "--scan", "--pattern", pattern],
                               capture_output=True, timeout=30).stdout.decode()
        return [k for k in reply.splitlines() if k]

    def keys(self, pattern):
        """The keys matching pattern on all masters."""
        return [k for i in range(len(self.nodes)) for k in self.keys_on(i, pattern)]

    def stop(self):
        for n in self.nodes:
            n.stop()


class Broker:
    def __init__(self, topics):
        self.topics = topics  # {"name": partitions}
        self.proc = None
        self.bootstrap = None

    def start(self):
        args = [os.path.join(BIN, "kx-broker")]
        for t, p in self.topics.items():
            args += ["--topic", "%s:%d" % (t, p)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("BOOTSTRAP "):
            self.stop()
            raise AssertionError("kx-broker printed %r" % line)
        self.bootstrap = line.split(" ", 1)[1]
        return self

    def produce(self, topic, path=None, data=None, partition=None):
        args = [os.path.join(BIN, "kx-produce"), "-b", self.bootstrap, "-t", topic]
        if partition is not None:
            args += ["-p", str(partition)]
        args.append(path if path else "-")
        r = subprocess.run(args, input=data, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError("kx-produce failed: %s" % r.stderr.decode(errors="replace"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class HookReceiver:
    """Records JSON bodies POSTed to it; fail_next makes the next N requests answer
    fail_status (503); hold() makes requests wait (unanswered) until release()."""

    def __init__(self):
        self.bodies = []
        self.requests = 0
        self.fail_next = 0
        self.fail_status = 503
        self.lock = threading.Lock()
        self.open = threading.Event()
        self.open.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.requests += 1
                outer.open.wait(120)
                with outer.lock:
                    fail = outer.fail_next > 0
                    if fail:
                        outer.fail_next -= 1
                    else:
                        outer.bodies.append(json.loads(body))
                self.send_response(outer.fail_status if fail else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def hold(self):
        self.open.clear()

    def release(self):
        self.open.set()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()


def write_config(path, brokers, store, metrics_port, sinks_yaml, routes_yaml, group="klaxon-test",
                 rules=None, alerting_extra="", kafka_properties=None):
    """The samples config with the test's broker, store, metrics port and sinks."""
    rules = rules or [os.path.join(SRC, "rules")]
    with open(os.path.join(SRC, "samples", "klaxon.yaml")) as f:
        base = f.read()
    head, _, tail = base.partition("\nalerting:")
    head = re.sub(r"(?m)^  brokers: .*$", "  brokers: \"%s\"" % brokers, head)
    # A short session timeout: the mock broker makes a group's next member wait for it.
    # Heartbeats well inside it: librdkafka's default heartbeat (3 s) equals such a session, and
    # the coordinator then expelled the member now and then ("Unknown member"), at random.
    props = {"session.timeout.ms": "3000", "heartbeat.interval.ms": "500"}
    props.update(kafka_properties or {})
    head = re.sub(r"(?m)^  group: .*$", "  group: %s\n  properties: {%s}" % (
        group, ", ".join("%s: \"%s\"" % kv for kv in props.items())), head)
    head = re.sub(r"(?m)^  store: .*$", "  store: \"%s\"" % store, head)
    head = head.replace("  - ../rules", "\n".join("  - %s" % r for r in rules))
    # The sample logs are from March 2026: with the default backfill_after (1h) a `run` would
    # treat every alert as backfill and the paging sinks under test would skip them.
    cfg = head + "\nalerting:\n  evidence: 5\n  backfill_after: 0\n" + alerting_extra + "  sinks:\n" + sinks_yaml + \
        "  routes:\n" + routes_yaml + \
        "metrics:\n  listen: 127.0.0.1:%d\n" % metrics_port
    with open(path, "w") as f:
        f.write(cfg)
    return path


class Klaxon:
    def __init__(self, config, log_path):
        self.config = config
        self.log_path = log_path
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([KLAXON, "run", "-c", self.config], stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        return self

    def metrics(self, port):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stop(self, timeout=30):
        """SIGTERM and wait; a klaxon that does not exit in time is killed (and the test
        fails on the returned code), so no process outlives its test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = "killed: no exit %ds after SIGTERM" % timeout
        self.log.close()
        return rc

    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        """SIGKILL: a crash, nothing flushed or committed on the way out."""
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def http_get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path, also for an error status."""
    import urllib.error
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def replay(args, stdin=None, timeout=120):
    r = subprocess.run([KLAXON, "replay"] + args, input=stdin, capture_output=True, timeout=timeout)
    return r


def alerts_of(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def tmpdir(tag):
    return tempfile.mkdtemp(prefix="klaxon-it-%s-" % tag)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run_tests(tests):
    """Runs test functions; prints a summary line ctest shows; exit code 1 on failure."""
    failed = 0
    for t in tests:
        name = t.__name__
        start = time.monotonic()
        try:
            t()
            print("PASS %s (%.1fs)" % (name, time.monotonic() - start), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)
            import traceback
            traceback.print_exc()
    print("%d passed, %d failed" % (len(tests) - failed, failed))
    sys.exit(1 if failed else 0)
