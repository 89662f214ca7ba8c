"""Redis as production runs it: a redis-server with requirepass and an ACL user. klaxon
authenticates with the password alone or with user and password, from the URL, the config,
the environment or a file, gives exactly the alerts of the memory store, and never shows
the password: not in errors, logs, metrics or /healthz. A wrong password is an error that
says so and a store that stays down (klaxon keeps asking: fixing the ACL heals it)."""
import os
import shutil
import subprocess
import time

from harness import (KLAXON, SRC, Broker, Klaxon, RedisServer, alerts_of, check, free_port, replay,
                     run_tests, tmpdir, wait_for, write_config)

FIX = os.path.join(SRC, "tests", "fixtures", "correlations", "04_suppress")
PASS = "Pw-3x@mple:with/odd%chars"   # needs percent-encoding in a URL
ACL_PASS = "acl-S3CRET-pw"
REDIS = None
D = None


def pct(s):
    return "".join(c if c.isalnum() or c in "-._~" else "%%%02X" % ord(c) for c in s)


def run_replay(url, cfg_extra="", env=None):
    cfg = os.path.join(D, "klaxon-%d.yaml" % time.monotonic_ns())
    with open(cfg, "w") as f:
        f.write("inputs:\n  - format: json\n    time_field: \"@timestamp\"\n"
                "state:\n  store: \"%s\"\n%s" % (url, cfg_extra))
    r = subprocess.run([KLAXON, "replay", "-c", cfg, "-r", os.path.join(FIX, "rules.yml"), "--format", "json",
                        os.path.join(FIX, "events.jsonl")], capture_output=True, timeout=60,
                       env=dict(os.environ, **(env or {})))
    return r, cfg


def expected():
    r = replay(["-r", os.path.join(FIX, "rules.yml"), "--format", "json", os.path.join(FIX, "events.jsonl")])
    check(r.returncode == 0, "memory replay: %s" % r.stderr)
    return sorted(a["dedup_key"] for a in alerts_of(r.stdout.decode()))


def test_password_and_acl_user():
    want = expected()
    check(len(want) == 35, "the fixture's alerts: %d" % len(want))
    pwfile = os.path.join(D, "redis-password")
    with open(pwfile, "w") as f:
        f.write(PASS + "\n")
    base = "redis://127.0.0.1:%d" % REDIS.port
    cases = [
        ("password in the url", "redis://:%s@127.0.0.1:%d/a:" % (pct(PASS), REDIS.port), "", None),
        ("password_file", base + "/b:", "  password_file: %s\n" % pwfile, None),
        ("password from the environment", base + "/c:", "  password: \"${KX_TEST_REDIS_PW}\"\n",
         {"KX_TEST_REDIS_PW": PASS}),
        ("ACL user in the url", "redis://klaxon:%s@127.0.0.1:%d/d:" % (ACL_PASS, REDIS.port), "", None),
        ("ACL user in the config", base + "/e:", "  username: klaxon\n  password: %s\n" % ACL_PASS, None),
    ]
    for what, url, extra, env in cases:
        r, _ = run_replay(url, extra, env)
        err = r.stderr.decode(errors="replace")
        check(r.returncode == 0, "%s: exit %d: %s" % (what, r.returncode, err))
        got = sorted(a["dedup_key"] for a in alerts_of(r.stdout.decode()))
        check(got == want, "%s: %d alerts, want the memory store's %d" % (what, len(got), len(want)))
        prefix = url.rsplit("/", 1)[1]
        keys = REDIS.command("KEYS", prefix + "*")
        check(keys.startswith(b"*") and not keys.startswith(b"*0\r\n"), "%s: no keys under %s" % (what, prefix))
        check(PASS not in err and ACL_PASS not in err and pct(PASS) not in err, "%s: a password in stderr" % what)


def test_refusals_never_show_the_password():
    # A user without a password, and a URL klaxon cannot use: refused, the password masked.
    r, cfg = run_replay("redis://127.0.0.1:%d" % REDIS.port, "  username: klaxon\n")
    err = r.stderr.decode()
    check(r.returncode == 2 and "username: a Redis ACL user needs a password" in err, "user alone: %r" % err)
    r, _ = run_replay("redis://klaxon:%s@redis.internal:6379/x:" % ACL_PASS)
    err = r.stderr.decode()
    check(r.returncode == 2 and "redis://klaxon:***@redis.internal:6379/x:" in err and ACL_PASS not in err,
          "masked url: %r" % err)
    # A wrong password under `klaxon run`: the store stays down and /healthz says so; the log
    # says authentication was refused, and the password is nowhere.
    broker = Broker({"auth": 1, "cloudtrail": 1}).start()
    k = None
    try:
        mport = free_port()
        cfg = write_config(os.path.join(D, "run.yaml"), broker.bootstrap,
                           "redis://klaxon:WRONG-%s@127.0.0.1:%d/r:" % (ACL_PASS, REDIS.port), mport,
                           "    out: {type: stdout}\n", "    - default: true\n      sinks: [out]\n")
        log = os.path.join(D, "run.log")
        k = Klaxon(cfg, log).start()
        wait_for(lambda: k.metrics(mport) is not None or not k.alive(), 30, "the metrics endpoint")

        def refused():
            return "authentication refused for user klaxon: WRONGPASS" in open(log, errors="replace").read()
        wait_for(refused, 30, "the refusal in the log")
        import urllib.error
        import urllib.request
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/healthz" % mport, timeout=5)
            check(False, "healthz answered 200 with the store refusing klaxon")
        except urllib.error.HTTPError as e:
            body = e.read().decode()
            check(e.code == 503 and "state store unreachable" in body, "healthz: %d %r" % (e.code, body))
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5).read().decode()
        check(k.stop() == 0, "exit code")
        text = open(log, errors="replace").read()
        for secret in (ACL_PASS, PASS):
            check(secret not in text and secret not in metrics, "a password in the log or metrics")
    finally:
        if k and k.alive():
            k.stop()
        broker.stop()


def test_tls_through_stunnel():
    """TLS to Redis as docs/scaling.md describes it: a redis-server that speaks only TLS
    (plain port 0) with a certificate for 127.0.0.1, and stunnel in client mode on loopback
    that verifies it and gives klaxon a plain port. AUTH goes through the tunnel."""
    d = tmpdir("tls")
    cert, key = os.path.join(d, "redis.pem"), os.path.join(d, "redis.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    tls_port, plain_port = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(tls_port), "--bind", "127.0.0.1",
                              "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
                              "--tls-auth-clients", "no", "--requirepass", PASS, "--dir", d, "--save", "",
                              "--appendonly", "no", "--loglevel", "warning"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = os.path.join(d, "stunnel.conf")
    with open(conf, "w") as f:
        f.write("foreground = yes\npid =\n[redis]\nclient = yes\naccept = 127.0.0.1:%d\n"
                "connect = 127.0.0.1:%d\nCAfile = %s\nverifyChain = yes\ncheckIP = 127.0.0.1\n"
                % (plain_port, tls_port, cert))
    tunnel = subprocess.Popen(["stunnel4", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        through = RedisServer(d, auth=(PASS,))
        through.port, through.proc = plain_port, tunnel
        wait_for(through.ping, 20, "PING through stunnel to the TLS redis")
        r, _ = run_replay("redis://127.0.0.1:%d/tls:" % plain_port, "  password: \"${KX_TEST_REDIS_PW}\"\n",
                          {"KX_TEST_REDIS_PW": PASS})
        check(r.returncode == 0, "replay through stunnel: %s" % r.stderr.decode(errors="replace"))
        got = sorted(a["dedup_key"] for a in alerts_of(r.stdout.decode()))
        check(got == expected(), "through TLS: %d alerts" % len(got))
        keys = through.command("KEYS", "tls:*")
        check(not keys.startswith(b"*0\r\n"), "no keys in the TLS redis")
    finally:
        for p in (tunnel, redis):
            p.terminate()
            p.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def main():
    global REDIS, D
    D = tmpdir("state-auth")
    # requirepass sets the default user's password; klaxon is an ACL user with the rights
    # docs/scaling.md gives it (its key prefixes; scripts run with the caller's rights).
    REDIS = RedisServer(D, extra=["--requirepass", PASS, "--user", "klaxon", "on", ">" + ACL_PASS,
                                  "~d:*", "~e:*", "~r:*", "+@read", "+@write", "+@scripting", "+ping",
                                  "-@dangerous"], auth=(PASS,)).start()
    try:
        run_tests([test_password_and_acl_user, test_refusals_never_show_the_password, test_tls_through_stunnel])
    finally:
        REDIS.stop()
        shutil.rmtree(D, ignore_errors=True)


if __name__ == "__main__":
    main()
