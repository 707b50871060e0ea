"""Redis Sentinel for the shared rate limits (docs/rate-limiting.md, "Redis
Sentinel"; runbook docs/runbooks/redis-failover.md): real redis-server
processes (a master and a replica) and three real redis-sentinel processes on
free loopback ports, two sluice instances sharing limits through the master
the sentinels name. A SENTINEL FAILOVER, and separately a killed master: each
sluice follows to the new master (the time is measured and printed), the
limits are shared again afterwards, and what was decided in between by
`on_failure` is counted (sluice_ratelimit_fallback_total)."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SLUICE_BIN, free_port, wait_until
from test_ratelimit import REDIS, Load, Redis, err_lines, get, totals

SENTINEL = shutil.which("redis-sentinel")

pytestmark = pytest.mark.skipif(not REDIS or not SENTINEL,
                                reason="redis-server and redis-sentinel are needed (scripts/install-deps)")

MASTER = "edge"


def resp(port, *args, timeout=3.0):
    """One command, the whole reply parsed (enough RESP for these tests)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = "*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(str(a).encode()), a) for a in args)
        s.sendall(out.encode())
        f = s.makefile("rb")

        def read():
            line = f.readline()
            if not line:
                raise OSError("closed")
            t, rest = line[:1], line[1:-2]
            if t in (b"+", b"-"):
                return rest.decode() if t == b"+" else RuntimeError(rest.decode())
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data.decode(errors="replace")
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise OSError("bad reply %r" % line)
        return read()


class Sentinel:
    """A redis-sentinel on a free port monitoring MASTER with short timeouts."""

    def __init__(self, workdir, master_port, idx, quorum=2, password=None):
        self.port = free_port()
        self.dir = os.path.join(str(workdir), "sentinel%d" % idx)
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\n"
                    "sentinel monitor %s 127.0.0.1 %d %d\n"
                    "sentinel down-after-milliseconds %s 1000\n"
                    "sentinel failover-timeout %s 4000\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (self.port, self.dir, MASTER, master_port, quorum, MASTER, MASTER, MASTER))
            if password:
                f.write("requirepass %s\n" % password)
        self.password = password
        self.log = open(os.path.join(self.dir, "sentinel.log"), "ab")
        self.proc = subprocess.Popen([SENTINEL, conf], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir)
        wait_until(self._ping, timeout=10, what="redis-sentinel on %d" % self.port)

    def _ping(self):
        try:
            r = resp(self.port, "PING")
            return r == "PONG" or isinstance(r, RuntimeError)  # NOAUTH: up, with a password
        except OSError:
            return False

    def master(self):
        try:
            a = resp(self.port, "SENTINEL", "get-master-addr-by-name", MASTER)
            return int(a[1]) if a else None
        except OSError:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class Node(Redis):
    """A redis-server in its own directory: a replica's sync writes dump.rdb
    there (not into the test's working directory, where every later
    redis-server started there would load it)."""

    def __init__(self, workdir, master_port=None):
        self.master_port = master_port
        super().__init__(workdir)

    def start(self):
        d = os.path.join(str(self.workdir), "redis-%d" % self.port)
        os.makedirs(d, exist_ok=True)
        self.log = open(os.path.join(str(self.workdir), "redis-%d.log" % self.port), "ab")
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", d]
        if self.master_port:
            args += ["--replicaof", "127.0.0.1", str(self.master_port)]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=d)
        wait_until(lambda: self._ping(), timeout=10, what="redis-server on %d" % self.port)


@pytest.fixture
def cluster(tmp_path):
    """A master, a replica in sync, three sentinels that know both and each other."""
    started = []
    try:
        master = Node(tmp_path)
        started.append(master)
        replica = Node(tmp_path, master.port)
        started.append(replica)
        wait_until(lambda: "master_link_status:up" in resp(replica.port, "INFO", "replication"),
                   timeout=15, what="replica in sync")
        sentinels = []
        for i in range(3):
            s = Sentinel(tmp_path, master.port, i)
            started.append(s)
            sentinels.append(s)

        def ready():
            for s in sentinels:
                try:
                    if len(resp(s.port, "SENTINEL", "replicas", MASTER)) < 1:
                        return False
                    if len(resp(s.port, "SENTINEL", "sentinels", MASTER)) < 2:
                        return False
                except OSError:
                    return False
            return True
        wait_until(ready, timeout=30, interval=0.2, what="sentinels know the replica and each other")
        yield master, replica, sentinels
    finally:
        for p in reversed(started):
            p.stop()


def gw_config(port, sock, sentinels, on_failure="local", extra=""):
    sl = ", ".join('"127.0.0.1:%d"' % s.port for s in sentinels)
    return """return {
  workers = 2,
  listeners = { { name = "public", address = "127.0.0.1:%d" } },
  pools = { web = { servers = { { address = "%%s" } } } },
  admin = { socket = "%s" },
  rate_limits = {
    per_client = { key = "header:x-client", rate = 20, per = "1s", burst = 40, shared = true },
    tight = { key = "header:x-tight", rate = 1, per = "1h", burst = 10, shared = true },
  },
  redis = { sentinels = { %s }, master = "%s", timeout = "250ms", connect_timeout = "300ms",
            on_failure = "%s"%s },
  routes = {
    { match = { path_prefix = "/t/" }, pool = "web", rate_limit = "tight" },
    { match = { path_prefix = "/" }, pool = "web", rate_limit = "per_client" },
  },
  access_log = { path = "stdout" },
}
""" % (port, sock, sl, MASTER, on_failure, extra)


def ctl(sock, *args):
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock] + list(args), capture_output=True, text=True, timeout=15)
    return p.returncode, p.stdout, p.stderr


def start_two(sluice, upstreams, sentinels, sockdir):
    (u,) = upstreams(1)
    gws = []
    for i in range(2):
        port = free_port()
        sock = os.path.join(sockdir, "admin%d.sock" % i)
        gw = sluice(gw_config(port, sock, sentinels) % u.address, ports=[port], name="gw%d" % i)
        gw.sock = sock
        gws.append(gw)
    for gw in gws:
        wait_until(lambda: sum(1 for e in err_lines(gw) if e.get("msg") == "ratelimit: redis connected") >= 2,
                   timeout=10, what="both workers connected to the master")
    return gws


def shared_check(gws, key):
    """A limit of 10 per hour: 20 requests to the first instance admit 10 (a
    local fallback would admit half), then the second instance admits none."""
    a = [get(gws[0].port, "/t/x", {"X-Tight": key})[0] for _ in range(20)]
    b = [get(gws[1].port, "/t/x", {"X-Tight": key})[0] for _ in range(5)]
    assert a.count(200) == 10 and a.count(429) == 10, a
    assert b == [429] * 5, b


def fallback_registry(gw):
    """sluice_ratelimit_fallback_total from `ctl show counters` (the registry /metrics reads)."""
    rc, out, err = ctl(gw.sock, "--json", "show", "counters")
    assert rc == 0, (out, err)
    for fam in json.loads(out)["counters"]:
        if fam["name"] == "sluice_ratelimit_fallback_total":
            return sum(int(x["value"]) for x in fam["series"])
    raise AssertionError("no sluice_ratelimit_fallback_total in show counters")


def followed(gws, port):
    """Every worker of every instance reports the shared limits up on 127.0.0.1:port."""
    want = "127.0.0.1:%d" % port
    for gw in gws:
        ev = err_lines(gw)
        last = {}
        for e in ev:
            if e.get("msg", "").startswith("ratelimit: redis"):
                last[e.get("worker")] = e
        if len(last) < 2:
            return False
        for e in last.values():
            if e["msg"] == "ratelimit: redis unavailable, shared limits fall back" or e.get("server") != want:
                return False
    return True


def switch_seen_at(sentinels):
    """When the first sentinel logged +switch-master (its log's wall clock, seconds)."""
    import datetime
    first = None
    for s in sentinels:
        with open(os.path.join(s.dir, "sentinel.log"), errors="replace") as f:
            for ln in f:
                if "+switch-master" in ln:
                    # "PID:X 06 Dec 2026 03:30:26.408 # +switch-master ..."
                    stamp = " ".join(ln.split()[1:5])
                    t = datetime.datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f").timestamp()
                    first = t if first is None else min(first, t)
    return first


def resumed_at(gws):
    """When the last worker of all instances logged the shared limits back (wall clock, seconds)."""
    import datetime
    last = 0.0
    for gw in gws:
        for e in err_lines(gw):
            if e.get("msg") == "ratelimit: redis available again, shared limits resumed":
                t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                last = max(last, t)
    return last


def promote_replica(cluster, how):
    """A `SENTINEL FAILOVER` (how "failover") or the master SIGKILLed (how
    "kill"), until every sentinel names the replica: when it began
    (time.monotonic()) and how long the sentinels took (printed by the
    callers, never asserted)."""
    master, replica, sentinels = cluster
    t0 = time.monotonic()
    if how == "failover":
        assert resp(sentinels[0].port, "SENTINEL", "FAILOVER", MASTER) == "OK"
    else:
        master.kill(signal.SIGKILL)
    wait_until(lambda: all(s.master() == replica.port for s in sentinels), timeout=30, interval=0.05,
               what="the sentinels promoted the replica")
    return t0, time.monotonic() - t0


def run_failover(sluice, upstreams, cluster, sockdir, how):
    master, replica, sentinels = cluster
    gws = start_two(sluice, upstreams, sentinels, sockdir)
    # shared through the master
    shared_check(gws, "before")
    assert resp(master.port, "EXISTS", "sluice:rl:tight:before") == 1
    rc, out, _ = ctl(gws[0].sock, "show", "redis")
    assert rc == 0 and "mode        sentinel" in out and "127.0.0.1:%d" % master.port in out, out
    # steady load on both instances through the failover
    ld = Load([g.port for g in gws], "/api/f", rate=60, seconds=12.0, headers={"X-Client": "fo"}).start()
    time.sleep(2.0)
    t0, t_switch = promote_replica(cluster, how)
    wait_until(lambda: followed(gws, replica.port), timeout=20, interval=0.02,
               what="both sluice instances on the new master")
    t_follow = time.monotonic() - t0
    # the sentinels' log and sluice's log share the machine's clock: the follow time itself
    sw = switch_seen_at(sentinels)
    follow_ms = (resumed_at(gws) - sw) * 1000 if sw else float("nan")
    print("%s: sentinels switched after %.2f s; every sluice worker on the new master after %.2f s "
          "(from the sentinels' +switch-master to the last worker back: %.0f ms)"
          % (how, t_switch, t_follow, follow_ms))
    ld.join()
    statuses = [s for s, _, _ in ld.results]
    assert all(s in (200, 429) for s in statuses), [s for s in statuses if s not in (200, 429)][:5]
    # the switch is logged once per process, naming both masters
    for gw in gws:
        sw = [e for e in err_lines(gw) if e.get("msg") == "redis: master switched"]
        assert len(sw) == 1, sw
        assert sw[0]["from"] == "127.0.0.1:%d" % master.port and sw[0]["to"] == "127.0.0.1:%d" % replica.port
        rc, out, _ = ctl(gw.sock, "--json", "show", "redis")
        d = json.loads(out)
        assert d["master"] == "127.0.0.1:%d" % replica.port and d["switches"] == 1, d
    # shared again, through the new master
    shared_check(gws, "after")
    assert resp(replica.port, "EXISTS", "sluice:rl:tight:after") == 1
    # dump-state finds the master through the sentinels too (rs_connect)
    rc, out, err = ctl(gws[0].sock, "dump-state")
    assert rc == 0, (out, err)
    doc = json.loads(out)
    assert doc["redis"]["mode"] == "sentinel" and doc["redis"]["server"] == "127.0.0.1:%d" % replica.port, doc
    assert any(k.get("key") == "sluice:rl:tight:after" for k in doc["redis"]["keys"]), doc["redis"]["keys"]
    # what on_failure decided is counted, in the registry as in the totals line
    fallback = []
    for gw in gws:
        reg = fallback_registry(gw)
        gw.stop()
        t = totals(gw)
        assert t["fallback"] == reg, (t, reg)
        # per worker: each recovery line's fallback_while_down is what was
        # decided by on_failure since its "unavailable" line, and the last
        # transition line's running count is the worker's whole share
        last, down_at = {}, {}
        for e in err_lines(gw):
            if not e.get("msg", "").startswith("ratelimit: redis"):
                continue
            w = e["worker"]
            if e["msg"] == "ratelimit: redis unavailable, shared limits fall back":
                down_at[w] = e["fallback"]
            elif e["msg"] == "ratelimit: redis available again, shared limits resumed":
                assert e["fallback_while_down"] == e["fallback"] - down_at[w], (e, down_at)
            last[w] = e["fallback"]
        fallback.append((reg, sum(last.values())))
    total_requests = len(ld.results) + 2 * 25
    print("%s: fallback decisions %s of %d requests" % (how, fallback, total_requests))
    return fallback, t_follow, t_switch


@pytest.fixture
def sockdir(tmp_path):
    import tempfile
    d = tempfile.mkdtemp(prefix="sluice-sent-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.timeout(180)
def test_sentinel_failover_followed(sluice, upstreams, cluster, sockdir):
    run_failover(sluice, upstreams, cluster, sockdir, "failover")


@pytest.mark.timeout(180)
def test_master_killed_followed(sluice, upstreams, cluster, sockdir):
    fallback, _, _ = run_failover(sluice, upstreams, cluster, sockdir, "kill")
    # the dead master left a gap (down-after-milliseconds 1 s at least): decided
    # by on_failure, counted, the registry's count is the workers' logged ones
    assert sum(reg for reg, _ in fallback) > 0, fallback
    assert all(reg == logged for reg, logged in fallback), fallback


@pytest.mark.timeout(60)
def test_no_sentinel_answers_falls_back(sluice, upstreams, sockdir):
    """Every sentinel down: the shared limits fall back (local), the log says
    why, and nothing waits."""
    (u,) = upstreams(1)

    class Dead:
        def __init__(self):
            self.port = free_port()
    dead = [Dead(), Dead()]
    port = free_port()
    gw = sluice(gw_config(port, os.path.join(sockdir, "a.sock"), dead) % u.address, ports=[port])
    wait_until(lambda: any(e.get("msg") == "ratelimit: redis unavailable, shared limits fall back"
                           for e in err_lines(gw)), what="fallback logged")
    down = [e for e in err_lines(gw) if e.get("msg") == "ratelimit: redis unavailable, shared limits fall back"][0]
    assert "no sentinel gave the master of edge" in down["error"], down
    st = [get(port, "/t/x", {"X-Tight": "k"})[0] for _ in range(12)]
    # local fallback: the limit of 10 for one instance
    assert st.count(200) == 10, st
    gw.stop()
    assert totals(gw)["fallback"] == 12


def test_sentinel_config_errors(tmp_path):
    def check(redis_block):
        p = tmp_path / "c.lua"
        p.write_text("""return {
  listeners = { { name = "public", address = "127.0.0.1:%d" } },
  pools = { web = { servers = { { address = "127.0.0.1:9" } } } },
  rate_limits = { l = { key = "client_ip", rate = 1, per = "1s", shared = true } },
  redis = %s,
  routes = { { match = { path_prefix = "/" }, pool = "web", rate_limit = "l" } },
}
""" % (free_port(), redis_block))
        r = subprocess.run([SLUICE_BIN, "check", "-c", str(p)], capture_output=True, text=True, timeout=15)
        return r.returncode, r.stdout + r.stderr

    rc, out = check('{ sentinels = { "127.0.0.1:26379" }, master = "edge" }')
    assert rc == 0, out
    rc, out = check('{ address = "127.0.0.1:6379", sentinels = { "127.0.0.1:26379" }, master = "edge" }')
    assert rc != 0 and "`address` and `sentinels` exclude each other" in out, out
    rc, out = check('{ sentinels = { "127.0.0.1:26379" } }')
    assert rc != 0 and "redis.master" in out and "missing" in out, out
    rc, out = check('{ address = "127.0.0.1:6379", master = "edge" }')
    assert rc != 0 and "only with `sentinels`" in out, out
    rc, out = check('{ sentinels = { } , master = "edge" }')
    assert rc != 0 and "empty" in out, out
    rc, out = check('{ sentinels = { "127.0.0.1:26379", "127.0.0.1:26379" }, master = "edge" }')
    assert rc != 0 and "listed twice" in out, out
    rc, out = check('{ sentinels = { "127.0.0.1:26379" }, master = "a b" }')
    assert rc != 0 and "no spaces" in out, out
    rc, out = check('{ sentinels = { "127.0.0.1:26379" }, master = "edge", sentinel_password_file = "nope" }')
    assert rc != 0 and "sentinel password" in out, out
    rc, out = check('{ }')
    assert rc != 0 and "redis.address" in out and "sentinels" in out, out


@pytest.mark.timeout(60)
def test_sentinel_password(sluice, upstreams, sockdir, tmp_path):
    """sentinel_password_file: AUTH to the sentinels (the query and the
    subscription); a wrong password is said in the log and falls back."""
    master = Node(tmp_path)
    sen = Sentinel(tmp_path, master.port, 0, quorum=1, password="s3cret")
    try:
        (u,) = upstreams(1)
        good = tmp_path / "good.pw"
        good.write_text("s3cret\n")
        bad = tmp_path / "bad.pw"
        bad.write_text("nope\n")
        port = free_port()
        gw = sluice(gw_config(port, os.path.join(sockdir, "p.sock"), [sen],
                              extra=', sentinel_password_file = "%s"' % good) % u.address, ports=[port], name="good")
        wait_until(lambda: sum(1 for e in err_lines(gw) if e.get("msg") == "ratelimit: redis connected") >= 2,
                   what="connected through the password-protected sentinel")
        assert [get(port, "/t/x", {"X-Tight": "pw"})[0] for _ in range(12)].count(200) == 10
        assert resp(master.port, "EXISTS", "sluice:rl:tight:pw") == 1
        port2 = free_port()
        gw2 = sluice(gw_config(port2, os.path.join(sockdir, "q.sock"), [sen],
                               extra=', sentinel_password_file = "%s"' % bad) % u.address, ports=[port2], name="bad")
        wait_until(lambda: any(e.get("msg") == "ratelimit: redis unavailable, shared limits fall back"
                               for e in err_lines(gw2)), what="fallback logged")
        down = [e for e in err_lines(gw2) if e.get("msg") == "ratelimit: redis unavailable, shared limits fall back"]
        assert "AUTH refused" in down[0]["error"], down[0]
        assert "nope" not in gw2.stderr() and "s3cret" not in gw.stderr() + gw2.stderr()
    finally:
        sen.stop()
        master.stop()


class StaleSentinel:
    """A fake sentinel that always names one (stale) master and never
    publishes +switch-master: what a partitioned or lagging sentinel does."""

    def __init__(self, master_port):
        import socket
        import threading
        self.answer = str(master_port)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line.startswith(b"*"):
                    return
                args = []
                for _ in range(int(line[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2].decode().upper())
                if args[0] == "SENTINEL":
                    out = "*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(self.answer), self.answer)
                elif args[0] == "SUBSCRIBE":
                    out = "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n"
                else:
                    out = "+OK\r\n"
                c.sendall(out.encode())
        except (OSError, ValueError):
            return

    def stop(self):
        self.srv.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.mark.timeout(120)
def test_stale_sentinel_first_and_no_switch_message(sluice, upstreams, cluster, sockdir):
    """The first sentinel listed is stale and the subscription (on it) never
    hears of the failover: the demoted master's READONLY (or the dropped
    connection) makes the worker ask again, ROLE refuses the stale answer, and
    the next sentinel names the new master."""
    master, replica, sentinels = cluster
    stale = StaleSentinel(master.port)
    try:
        (u,) = upstreams(1)
        port = free_port()
        sock = os.path.join(sockdir, "st.sock")
        gw = sluice(gw_config(port, sock, [stale] + sentinels) % u.address, ports=[port], name="stale")
        gw.sock = sock
        wait_until(lambda: sum(1 for e in err_lines(gw) if e.get("msg") == "ratelimit: redis connected") >= 2,
                   what="connected (the stale sentinel is right for now)")
        ld = Load([port], "/api/s", rate=40, seconds=8.0, headers={"X-Client": "st"}).start()
        time.sleep(1.0)
        t0 = time.monotonic()
        assert resp(sentinels[0].port, "SENTINEL", "FAILOVER", MASTER) == "OK"
        wait_until(lambda: followed([gw], replica.port), timeout=30, interval=0.05,
                   what="sluice on the new master without the +switch-master message")
        print("stale sentinel first, no switch message: on the new master %.2f s after SENTINEL FAILOVER"
              % (time.monotonic() - t0))
        ld.join()
        assert all(s in (200, 429) for s, _, _ in ld.results)
        errors = [e.get("error", "") for e in err_lines(gw)
                  if e.get("msg") == "ratelimit: redis unavailable, shared limits fall back"]
        # how the worker noticed, and that the stale answer was refused by ROLE or never used again
        assert any("READONLY" in x or "connection lost" in x or "not the master" in x for x in errors), errors
        assert not any("switched the master" in x for x in errors), errors
        shared = [get(port, "/t/x", {"X-Tight": "stale"})[0] for _ in range(12)]
        assert shared.count(200) == 10, shared
        assert resp(replica.port, "EXISTS", "sluice:rl:tight:stale") == 1
    finally:
        stale.stop()
