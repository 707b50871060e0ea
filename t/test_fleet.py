"""Fleet-wide changes (`control = { redis = "main" }`): three real sluice
instances share their runtime changes through a real redis-server. A change
made on one instance is applied by the others within a second (seen in `ctl
show services` and in where their traffic goes); blue-green switches go
fleet-wide; one instance drives a rollout (a lease) while the others
contribute their counters, and another takes over when the driver is killed;
with Redis down every instance keeps serving with what it has and says so,
and when Redis is back they re-sync. Figures (propagation time, lease
takeover time) are printed, never asserted as performance."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, free_port, wait_until
from test_ratelimit import REDIS, Redis
from test_rollout import Traffic

pytestmark = pytest.mark.skipif(not REDIS, reason="redis-server is not installed")


class DurableRedis(Redis):
    """A redis-server that keeps its data across SIGKILL (append-only file,
    fsync per write), as a fleet's control Redis should be run."""

    def start(self):
        self.log = open(os.path.join(str(self.workdir), "redis-%d.log" % self.port), "ab")
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "yes", "--appendfsync", "always",
                                      "--dir", str(self.workdir), "--daemonize", "no"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(lambda: self._ping(), timeout=10, what="redis-server on %d" % self.port)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-fleet-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path):
    started = []

    def start(port=None):
        r = DurableRedis(tmp_path, port)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def ctl(sock, *args):
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock] + list(args), capture_output=True, text=True, timeout=15)
    return p.returncode, p.stdout + p.stderr


def ctl_ok(sock, *args):
    rc, out = ctl(sock, *args)
    assert rc == 0, (args, rc, out)
    return out


def ctl_json(sock, *args):
    return json.loads(ctl_ok(sock, "--json", *args))


def weights(gw):
    """{pool: weight} of service web, from `show services --json`."""
    svc = ctl_json(gw.sock, "show", "services", "web")["services"][0]
    return {p["pool"]: p["weight"] for p in svc["pools"]}


def control(gw):
    return ctl_json(gw.sock, "show", "control")["control"]


def rollout(gw):
    return ctl_json(gw.sock, "rollout", "status", "web")["rollouts"][0]


def served_by(gw, n=20):
    with RawConn(gw.port) as c:
        return [c.request("GET", "/f%d" % i).header("x-upstream") for i in range(n)]


def start_fleet(sluice, upstreams, sockdir, redis_port, names=("a", "b", "c"), lease="1s", tweak=None):
    blue, green = upstreams(2, names=["blue", "green"])
    fleet = []
    for nm in names:
        sock = os.path.join(sockdir, "%s.sock" % nm)
        cfg = base_config(free_port(), [blue.address], workers=2, admin={"socket": sock},
                          state_file=os.path.join(sockdir, "%s.state" % nm),
                          redis={"address": "127.0.0.1:%d" % redis_port},
                          control={"redis": "main", "prefix": "t-fleet", "instance": nm, "lease": lease})
        cfg["pools"] = {"blue": {"servers": [{"address": blue.address}]},
                        "green": {"servers": [{"address": green.address}]}}
        cfg["services"] = {"web": {"pools": {"blue": 100, "green": 0}}}
        if tweak:
            tweak(nm, cfg, blue, green)
        gw = sluice(cfg, name=nm)
        wait_until(lambda: os.path.exists(sock), what="admin socket of %s" % nm)
        gw.sock = sock
        gw.blue, gw.green = blue, green
        fleet.append(gw)
    for gw in fleet:
        wait_until(lambda: control(gw)["state"] == "up" and control(gw)["synced"], timeout=10,
                   what="%s in sync with redis" % gw.name)
    return fleet


def log_msgs(gw, msg):
    return [e for e in gw.log_entries() if e.get("msg", "").startswith(msg)]


def propagation(fleet, check, timeout=3.0):
    """Seconds until check(gw) holds on every instance (polled)."""
    t0 = time.monotonic()
    pending = list(fleet)
    seen = {}
    while pending:
        for gw in list(pending):
            if check(gw):
                seen[gw.name] = time.monotonic() - t0
                pending.remove(gw)
        if pending and time.monotonic() - t0 > timeout:
            raise AssertionError("not applied on %s within %.1fs" % ([g.name for g in pending], timeout))
        time.sleep(0.01)
    return seen


@pytest.mark.timeout(90)
def test_weight_change_on_one_instance_is_applied_by_the_others(sluice, upstreams, sockdir, redis_server):
    r = redis_server()
    a, b, c = start_fleet(sluice, upstreams, sockdir, r.port)
    assert served_by(b, 5) == ["blue"] * 5

    ctl_ok(a.sock, "set", "service-weights", "web", "blue=0", "green=100")
    took = propagation([b, c], lambda gw: weights(gw) == {"blue": 0, "green": 100}, timeout=1.0)
    print("service-weights propagation from a: %s" % {k: "%.0f ms" % (v * 1000) for k, v in took.items()})
    assert served_by(b) == ["green"] * 20 and served_by(c) == ["green"] * 20

    # a drain on b reaches a and c; enable on c undoes it everywhere
    blue = a.blue.address
    ctl_ok(b.sock, "drain", "blue", blue)
    took = propagation([a, c], lambda gw: any(s["address"] == blue and s["state"] == "draining"
                                              for s in ctl_json(gw.sock, "show", "servers", "blue")["servers"]),
                       timeout=1.0)
    print("drain propagation from b: %s" % {k: "%.0f ms" % (v * 1000) for k, v in took.items()})
    ctl_ok(c.sock, "enable", "blue", blue)
    propagation([a, b], lambda gw: all(s["state"] == "active"
                                       for s in ctl_json(gw.sock, "show", "servers", "blue")["servers"]), timeout=1.0)
    # a server weight, then clear weight (a tombstone) from another instance
    ctl_ok(c.sock, "set", "weight", "blue", blue, "7")
    propagation([a, b], lambda gw: ctl_json(gw.sock, "show", "servers", "blue")["servers"][0]["weight"] == 7,
                timeout=1.0)
    ctl_ok(a.sock, "clear", "weight", "blue", blue)
    propagation([b, c], lambda gw: ctl_json(gw.sock, "show", "servers", "blue")["servers"][0]["weight"] == 1,
                timeout=1.0)

    # no echo, no flapping: the version stays where it is, every instance agrees
    v = control(a)["version"]
    time.sleep(2.5)
    for gw in (a, b, c):
        st = control(gw)
        assert st["version"] == v, (gw.name, st, v)
        assert st["unsynced"] == 0, (gw.name, st)
        assert weights(gw) == {"blue": 0, "green": 100}
    # an instance never applies its own change as a fleet change
    assert not [e for e in log_msgs(a, "fleet change applied") if e.get("entry", "").startswith("service-weight")]
    assert log_msgs(b, "fleet change applied")
    # and each applied change is in its own state file
    for gw in (b, c):
        assert "service-weight web green 100" in open(os.path.join(sockdir, "%s.state" % gw.name)).read()
    text = ctl_ok(b.sock, "show", "control")
    assert "state      up since" in text and "in sync" in text, text
    assert "fleet control: up since" in ctl_ok(c.sock, "show", "services"), ctl_ok(c.sock, "show", "services")


@pytest.mark.timeout(90)
def test_switch_and_switch_back_fleet_wide(sluice, upstreams, sockdir, redis_server):
    r = redis_server()
    a, b, c = start_fleet(sluice, upstreams, sockdir, r.port)
    ctl_ok(b.sock, "switch", "web", "green")
    propagation([a, c], lambda gw: weights(gw) == {"blue": 0, "green": 100}, timeout=1.0)
    for gw in (a, c):
        assert served_by(gw) == ["green"] * 20
        svc = ctl_json(gw.sock, "show", "services", "web")["services"][0]
        assert svc["switched"] is True, svc
    # --back on a third instance restores the split everywhere (the memory went with the switch)
    ctl_ok(c.sock, "switch", "web", "--back")
    propagation([a, b], lambda gw: weights(gw) == {"blue": 100, "green": 0}, timeout=1.0)
    for gw in (a, b, c):
        assert served_by(gw) == ["blue"] * 20
        assert ctl_json(gw.sock, "show", "services", "web")["services"][0]["switched"] is False


@pytest.mark.timeout(150)
def test_rollout_driven_by_one_with_fleet_counters_and_takeover(sluice, upstreams, sockdir, redis_server):
    r = redis_server()
    a, b, c = start_fleet(sluice, upstreams, sockdir, r.port, lease="1s")
    # traffic only through b and c: a judges on the fleet's counters or never moves
    tb, tc = Traffic(b.port), Traffic(c.port)
    try:
        ctl_ok(a.sock, "rollout", "start", "web", "--to", "green", "--steps", "5,10,15,20,25,30,40,50,60,80,100",
               "--interval", "1s", "--max-error-rate", "5%", "--min-requests", "10")
        wait_until(lambda: rollout(a)["step"] >= 3, timeout=30, what="a promotes on b's and c's traffic")
        st = rollout(a)
        assert st["driver"].startswith("this instance (a#"), st
        assert st["last_interval"]["canary_requests"] >= 10, st
        # the others follow the driver's progress and name it
        wait_until(lambda: rollout(b)["step"] >= 3 and rollout(c)["step"] >= 3, timeout=5, what="b, c follow")
        sb = rollout(b)
        assert sb["driver"].startswith("instance a#"), sb
        assert any(h["event"].startswith("fleet: promoted to step") for h in sb["history"]), sb
        lease = r.cmd("GET", "t-fleet:lease:web")
        assert lease.startswith("a#"), lease

        # the driver dies mid-rollout: b or c takes the lease and carries on
        step_at_kill = rollout(b)["step"]
        a.stop(sig=signal.SIGKILL)
        killed = time.monotonic()

        def new_driver():
            for gw in (b, c):
                if rollout(gw)["driver"].startswith("this instance"):
                    return gw
            return None
        wait_until(lambda: new_driver() is not None, timeout=15, what="another instance takes the lease")
        takeover = time.monotonic() - killed
        d = new_driver()
        print("lease takeover after SIGKILL of the driver: %.2f s (lease 1s), by %s" % (takeover, d.name))
        wait_until(lambda: rollout(d)["state"] == "completed", timeout=60, what="rollout completed by %s" % d.name)
        assert rollout(d)["step"] > step_at_kill
    finally:
        tb.stop()
        tc.stop()
    for gw in (b, c):
        wait_until(lambda: rollout(gw)["state"] == "completed", timeout=5, what="%s sees completion" % gw.name)
        assert weights(gw) == {"blue": 0, "green": 1000}
        assert served_by(gw, 10) == ["green"] * 10
    assert all(s == 200 for _, _, s in tb.results + tc.results)
    # the lease goes once the rollout stops
    wait_until(lambda: r.cmd("EXISTS", "t-fleet:lease:web") == ":0", timeout=5, what="lease released")


@pytest.mark.timeout(120)
def test_redis_down_keeps_state_then_resyncs(sluice, upstreams, sockdir, redis_server):
    r = redis_server()
    a, b, c = start_fleet(sluice, upstreams, sockdir, r.port)
    ctl_ok(a.sock, "set", "service-weights", "web", "blue=0", "green=100")
    propagation([b, c], lambda gw: weights(gw) == {"blue": 0, "green": 100}, timeout=1.0)

    port = r.port
    r.kill()
    for gw in (a, b, c):
        wait_until(lambda: control(gw)["state"] != "up", timeout=10, what="%s notices redis is down" % gw.name)
    time.sleep(3)  # several reconnect attempts
    for gw in (a, b, c):
        st = control(gw)
        assert st["state"] in ("down", "connecting"), st
        assert "REDIS DOWN" in st["status"] or "connecting" in st["status"], st
        text = ctl_ok(gw.sock, "show", "services")
        assert "fleet control: REDIS DOWN" in text or "fleet control: connecting" in text, text
        # it keeps what it has and keeps serving
        assert weights(gw) == {"blue": 0, "green": 100}
        assert served_by(gw, 10) == ["green"] * 10
        # logged once, not per reconnect attempt
        assert len(log_msgs(gw, "fleet control: Redis unreachable")) == 1, log_msgs(gw, "fleet control")

    # a change while Redis is away applies here and waits to be written
    ctl_ok(b.sock, "set", "service-weights", "web", "blue=50", "green=50")
    assert weights(b) == {"blue": 50, "green": 50}
    assert control(b)["unsynced"] >= 1
    assert weights(a) == {"blue": 0, "green": 100}

    r2 = redis_server(port=port)  # same data (append-only file)
    took = propagation([a, c], lambda gw: weights(gw) == {"blue": 50, "green": 50}, timeout=10)
    print("re-sync after redis came back: %s" % {k: "%.1f s" % v for k, v in took.items()})
    for gw in (a, b, c):
        wait_until(lambda: control(gw)["state"] == "up" and control(gw)["unsynced"] == 0, timeout=5,
                   what="%s in sync" % gw.name)
        assert len(log_msgs(gw, "fleet control: Redis reachable again")) == 1
    assert r2.cmd("HGET", "t-fleet:state", "service-weight web green").strip().endswith("service-weight web green 50")


@pytest.mark.timeout(90)
def test_newer_redis_state_wins_at_start_and_own_changes_survive(sluice, upstreams, sockdir, redis_server):
    """An instance that was down while the fleet changed takes the fleet's
    newer state at start over its state file; one restarted with a change
    the fleet never saw writes it (its state file is newer)."""
    r = redis_server()
    a, b = start_fleet(sluice, upstreams, sockdir, r.port, names=("a", "b"))
    b.stop()
    ctl_ok(a.sock, "set", "service-weights", "web", "blue=20", "green=80")
    b2 = sluice(b.config, name="b2")
    b2.sock = b.sock
    wait_until(lambda: os.path.exists(b2.sock), what="admin socket")
    wait_until(lambda: weights(b2) == {"blue": 20, "green": 80}, timeout=5, what="b takes the newer fleet state")
    assert "service-weight web green 80" in open(os.path.join(sockdir, "b.state")).read()


def test_control_config_errors(tmp_path):
    """Bad control sections are refused with the path and how to fix it."""
    def check(text):
        p = tmp_path / "c.lua"
        p.write_text(text)
        return subprocess.run([SLUICE_BIN, "check", "-c", str(p)], capture_output=True, text=True, timeout=15)

    head = ('return { listeners = { { name = "p", address = "127.0.0.1:%d" } },\n'
            '  pools = { web = { servers = { { address = "127.0.0.1:1" } } } },\n'
            '  routes = { { name = "r", match = { path_prefix = "/" }, pool = "web" } },\n' % free_port())
    p = check(head + ' control = { redis = "main" } }')
    assert p.returncode == 1 and "control.redis" in p.stderr and "there is none" in p.stderr, p.stderr
    p = check(head + ' redis = { address = "127.0.0.1:6379" }, control = { redis = "rl" } }')
    assert p.returncode == 1 and "unknown redis block \"rl\"" in p.stderr, p.stderr
    # fleet control follows Sentinel (t/test_fleet_sentinel.py): "main" may use it, and so may its own block
    p = check(head + ' redis = { sentinels = { "127.0.0.1:26379" }, master = "m" }, control = { redis = "main" } }')
    assert p.returncode == 0, p.stderr
    p = check(head + ' control = { redis = { sentinels = { "127.0.0.1:26379" }, master = "m" } } }')
    assert p.returncode == 0, p.stderr
    p = check(head + ' control = { redis = { sentinels = { "127.0.0.1:26379" } } } }')
    assert p.returncode == 1 and "control.redis.master: missing" in p.stderr, p.stderr
    p = check(head + ' control = { } }')
    assert p.returncode == 1 and "control.redis: missing" in p.stderr, p.stderr
    p = check(head + ' control = { redis = { address = "127.0.0.1:6379" }, prefix = "a b", lease = "10ms" } }')
    assert p.returncode == 1 and "control.prefix" in p.stderr and "control.lease" in p.stderr, p.stderr
    p = check(head + ' control = { redis = { address = "127.0.0.1:6379", pasword_file = "x" } } }')
    assert p.returncode == 1 and "pasword_file" in p.stderr, p.stderr
    p = check(head + ' redis = { address = "127.0.0.1:6379" }, control = { redis = "main", prefix = "eu-1" } }')
    assert p.returncode == 0, p.stderr
    p = check(head + ' control = { redis = { address = "127.0.0.1:6379", db = 2 }, instance = "gw-1" } }')
    assert p.returncode == 0, p.stderr


@pytest.mark.timeout(90)
def test_redis_restarted_empty_gets_the_state_back(sluice, upstreams, sockdir, tmp_path):
    """A control Redis without persistence comes back empty: the instances
    notice (its version is behind theirs), write their state back, and
    changes flow again with versions above the old ones."""
    r = Redis(tmp_path)
    try:
        a, b = start_fleet(sluice, upstreams, sockdir, r.port, names=("a", "b"))
        ctl_ok(a.sock, "set", "service-weights", "web", "blue=40", "green=60")
        propagation([b], lambda gw: weights(gw) == {"blue": 40, "green": 60}, timeout=1.0)
        before = control(a)["version"]
        port = r.port
        r.stop()
        for gw in (a, b):
            wait_until(lambda: control(gw)["state"] != "up", timeout=10, what="%s notices" % gw.name)
        r = Redis(tmp_path, port)
        for gw in (a, b):
            wait_until(lambda: control(gw)["state"] == "up" and control(gw)["unsynced"] == 0, timeout=10,
                       what="%s in sync again" % gw.name)
            assert weights(gw) == {"blue": 40, "green": 60}
        assert r.cmd("HGET", "t-fleet:state", "service-weight web green").strip().endswith("green 60")
        assert int(r.cmd("GET", "t-fleet:version").split("\r\n")[0]) > before
        # the first to reconnect noticed and wrote back; the other read it
        assert log_msgs(a, "fleet control: Redis holds an older") or log_msgs(b, "fleet control: Redis holds an older")
        ctl_ok(b.sock, "switch", "web", "blue")
        propagation([a], lambda gw: weights(gw) == {"blue": 100, "green": 0}, timeout=1.0)
    finally:
        r.stop()


@pytest.mark.timeout(90)
def test_change_for_a_server_another_instance_lacks(sluice, upstreams, sockdir, redis_server):
    """Mid config rollout, instances differ: a change for a server one
    instance does not have is logged there, not applied, and never undone by
    it; changes it can apply keep flowing."""
    def tweak(name, cfg, blue, green):
        if name == "a":
            cfg["pools"]["blue"]["servers"].append({"address": green.address})
    r = redis_server()
    a, b = start_fleet(sluice, upstreams, sockdir, r.port, names=("a", "b"), tweak=tweak)
    extra = a.green.address
    ctl_ok(a.sock, "drain", "blue", extra)
    wait_until(lambda: log_msgs(b, "fleet control: change not applied here"), timeout=3, what="b logs the skip")
    skip = log_msgs(b, "fleet control: change not applied here")[0]
    assert skip["entry"] == "drain blue %s" % extra, skip
    time.sleep(1.5)
    assert control(b)["unsynced"] == 0, control(b)
    assert r.cmd("HGET", "t-fleet:state", "drain blue %s" % extra).strip().endswith("drain blue %s" % extra)
    assert [s["state"] for s in ctl_json(a.sock, "show", "servers", "blue")["servers"]
            if s["address"] == extra] == ["draining"]
    ctl_ok(b.sock, "set", "weight", "blue", a.blue.address, "5")
    propagation([a], lambda gw: ctl_json(gw.sock, "show", "servers", "blue")["servers"][0]["weight"] == 5,
                timeout=1.0)
    assert [s["state"] for s in ctl_json(a.sock, "show", "servers", "blue")["servers"]
            if s["address"] == extra] == ["draining"]


def redis_as(port, password, *args):
    """AUTH password, then one command on the same connection: the second reply's first line."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        out = ""
        for cmd in (("AUTH", password), args):
            out += "*%d\r\n" % len(cmd) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a) for a in cmd)
        s.sendall(out.encode())
        data = b""
        while data.count(b"\r\n") < 2:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode().split("\r\n")[1]


@pytest.mark.timeout(90)
def test_wrong_control_redis_password_is_one_clear_error(sluice, upstreams, sockdir, redis_server, tmp_path):
    """A wrong password for the control Redis: the link never counts as up
    (no "connected" / "reachable again" / "unreachable" flapping, no
    re-sync each retry), one error line says what, where and how to fix it,
    `sluice ctl` keeps answering; once Redis takes the password the instance
    connects and syncs."""
    r = redis_server()
    assert r.cmd("CONFIG", "SET", "requirepass", "right-pw") == "+OK"
    pw = tmp_path / "control.pw"
    pw.write_text("wrong-pw\n")
    (u,) = upstreams(1)
    sock = os.path.join(sockdir, "pw.sock")
    gw = sluice(base_config(free_port(), [u.address], admin={"socket": sock},
                            control={"redis": {"address": "127.0.0.1:%d" % r.port, "password_file": str(pw)},
                                     "prefix": "t-pw", "instance": "pw"}), name="pw")
    gw.sock = sock
    wait_until(lambda: log_msgs(gw, "fleet control: Redis refused"), timeout=10, what="the refusal logged")
    time.sleep(3)  # about three retries
    refused = log_msgs(gw, "fleet control: Redis refused")
    assert len(refused) == 1, refused
    e = refused[0]
    assert e["level"] == "error", e
    assert e["config"] == "control.redis" and e["redis"] == "127.0.0.1:%d" % r.port, e
    assert "WRONGPASS" in e["why"] and "AUTH" in e["why"], e
    assert "control.redis.password_file" in e["fix"], e
    for flap in ("fleet control: connected to Redis", "fleet control: Redis reachable again",
                 "fleet control: Redis unreachable"):
        assert log_msgs(gw, flap) == [], (flap, log_msgs(gw, "fleet control"))
    assert "wrong-pw" not in gw.stderr() and "right-pw" not in gw.stderr()
    st = control(gw)
    assert st["state"] in ("down", "connecting") and not st["synced"], st
    assert "WRONGPASS" in st["status"], st
    assert "fleet control:" in ctl_ok(sock, "show", "services")

    # Redis takes the instance's password: connected, in sync, said once
    assert redis_as(r.port, "right-pw", "CONFIG", "SET", "requirepass", "wrong-pw") == "+OK"
    wait_until(lambda: control(gw)["state"] == "up" and control(gw)["synced"], timeout=10, what="up with the password")
    assert len(log_msgs(gw, "fleet control: Redis reachable again")) == 1, log_msgs(gw, "fleet control")
    assert len(log_msgs(gw, "fleet control: Redis refused")) == 1
