"""Reload: `sluice ctl reload` and SIGHUP re-read the config file; a valid one
is published to every worker while requests run, an invalid one changes
nothing. In-flight requests (a slow upstream response, an HTTP/2 stream) finish
on the snapshot they started on; new ones, also on a keep-alive connection
opened before, use the new one. Idle upstream connections to a server that is
still configured are reused across the reload; runtime state set by deployers
survives by name and is dropped (and logged) when its server goes."""

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import h2.events
import pytest

from conftest import SLUICE_BIN, RawConn, config_to_lua, free_port, wait_until
from test_admin_http import http_get
from test_h2 import H2Client
from test_ratelimit import redis  # noqa: F401  (fixture)
from test_res_admin import ctl, ctl_ok, sockdir  # noqa: F401  (fixture)
from test_tls import peer_cert_text
from test_tls_certs import certs, tls_config  # noqa: F401  (fixture)


def two_pool_config(port, sock, blue, green, route_pool, workers=2, extra_routes=(), h2c=True, **pool_extra):
    """Pools "blue" and "green" (one server each); "/" goes to route_pool; extra routes first."""
    routes = list(extra_routes) + [{"name": "main", "match": {"path_prefix": "/"}, "pool": route_pool}]
    cfg = {
        "workers": workers,
        "listeners": [{"name": "public", "address": "127.0.0.1:%d" % port, "h2c": h2c}],
        "pools": {
            "blue": dict({"servers": [{"address": blue}]}, **pool_extra),
            "green": dict({"servers": [{"address": green}]}, **pool_extra),
        },
        "routes": routes,
        "access_log": {"path": "stdout"},
        "drain_timeout": "5s",
        "admin": {"socket": sock},
    }
    return cfg


def start(sluice, upstreams, sockdir, route_pool="blue", **kw):
    ups = upstreams(2, ["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    port = free_port()
    cfg = two_pool_config(port, sock, ups[0].address, ups[1].address, route_pool, **kw)
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock, gw.ups, gw.cfg = sock, ups, cfg
    return gw


def rewrite(gw, cfg):
    gw.conf_path.write_text(config_to_lua(cfg))


def server_of(gw, path="/x", conn=None):
    if conn is not None:
        r = conn.request("GET", path)
    else:
        with RawConn(gw.port) as c:
            r = c.request("GET", path)
    assert r.status == 200, r
    return r.json()["server"]


RELOADED = re.compile(r"^reloaded: generation (\d+), (\d+) routes, (\d+) pools, (\d+) services in (\d+) ms\n$")


def refused(port):
    """Whether a connection to port on 127.0.0.1 is refused (nobody listens)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def reload_ok(gw):
    rc, out, err = ctl(gw.sock, "reload")
    assert rc == 0, (rc, out, err)
    m = RELOADED.match(out)
    assert m, out
    return int(m.group(1))


@pytest.mark.timeout(90)
def test_reload_in_flight_requests_finish_on_the_old_snapshot(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir, route_pool="blue")
    assert server_of(gw) == "blue"
    keep = RawConn(gw.port, timeout=10)
    assert server_of(gw, conn=keep) == "blue"

    # a slow HTTP/1.1 response and an HTTP/2 stream, both started on generation 1
    slow = {}

    def slow_request():
        with RawConn(gw.port, timeout=10) as c:
            r = c.request("GET", "/delay/1500")
            slow["status"], slow["server"] = r.status, r.json()["server"]

    t = threading.Thread(target=slow_request)
    t.start()
    h2c = H2Client(gw.port)
    sid = h2c.get("/delay/1500")
    wait_until(lambda: gw.ups[0].stats()["requests"] >= 3, what="the slow requests to reach blue")

    cfg2 = dict(gw.cfg)
    cfg2["routes"] = [{"name": "main", "match": {"path_prefix": "/"}, "pool": "green"},
                      {"name": "extra", "match": {"path": "/never"}, "respond": {"status": 204}}]
    rewrite(gw, cfg2)
    assert reload_ok(gw) == 2

    # every request after the reload's return uses the new routing, also on the old connection
    assert server_of(gw) == "green"
    assert server_of(gw, conn=keep) == "green"
    h2c_new = h2c.get("/after")

    t.join(10)
    assert slow == {"status": 200, "server": "blue"}
    evs = h2c.events_until(lambda g: sum(isinstance(e, h2.events.StreamEnded) for e in g) >= 2)
    bodies = {}
    for e in evs:
        if isinstance(e, h2.events.DataReceived):
            bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
    assert json.loads(bodies[sid])["server"] == "blue"
    assert json.loads(bodies[h2c_new])["server"] == "green"
    h2c.close()
    keep.close()

    out = ctl_ok(gw.sock, "show", "config")
    assert re.search(r"^generation\s+2$", out, re.M), out
    assert re.search(r"^loaded\s+.* by ctl reload, uid %d$" % os.geteuid(), out, re.M), out
    log = gw.access_log()
    assert {e["upstream"] for e in log if e.get("target") == "/delay/1500"} == {gw.ups[0].address}


@pytest.mark.timeout(60)
def test_idle_upstream_connections_survive_a_reload(sluice, upstreams, sockdir):
    # one worker: the idle connection and the next request meet on it
    gw = start(sluice, upstreams, sockdir, route_pool="blue", workers=1)
    with RawConn(gw.port) as c:
        for _ in range(3):
            assert server_of(gw, conn=c) == "blue"
    before = gw.ups[0].stats()["accepted"]
    cfg2 = dict(gw.cfg)
    # a different snapshot (a new route, green's keepalive changed), blue's server unchanged
    cfg2["routes"] = [{"name": "health", "match": {"path": "/ping"}, "respond": {"status": 200, "body": "pong"}},
                      {"name": "main", "match": {"path_prefix": "/"}, "pool": "blue"}]
    rewrite(gw, cfg2)
    reload_ok(gw)
    with RawConn(gw.port) as c:
        for _ in range(3):
            assert server_of(gw, conn=c) == "blue"
    # /stats itself is one more accepted connection
    assert gw.ups[0].stats()["accepted"] == before + 1, "the idle upstream connection was not reused"


@pytest.mark.timeout(60)
def test_runtime_state_survives_a_reload(sluice, upstreams, sockdir):
    ups = upstreams(2, ["a", "b"])
    dead = "127.0.0.1:%d" % free_port()
    sock = os.path.join(sockdir, "admin.sock")
    port = free_port()
    cfg = two_pool_config(port, sock, ups[0].address, ups[1].address, "blue", workers=2)
    cfg["pools"]["blue"]["servers"].append({"address": dead})
    cfg["pools"]["blue"]["breaker"] = {"consecutive_failures": 1, "open_for": "60s"}
    cfg["pools"]["blue"]["retry"] = {"attempts": 2}
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    for i in range(6):
        with RawConn(port) as c:
            assert c.request("GET", "/b%d" % i).status == 200
    wait_until(lambda: "open" in ctl_ok(sock, "show", "breakers"), what="the breaker to open")
    ctl_ok(sock, "set", "weight", "green", ups[1].address, "7")
    ctl_ok(sock, "drain", "blue", ups[0].address)

    cfg2 = json.loads(json.dumps(cfg))
    cfg2["routes"].insert(0, {"name": "new", "match": {"path": "/new"}, "respond": {"status": 204}})
    rewrite(gw, cfg2)
    reload_ok(gw)
    servers = ctl_ok(sock, "show", "servers")
    line_b = [ln for ln in servers.splitlines() if ups[1].address in ln]
    assert line_b and " 7 " in " %s " % line_b[0].replace("\t", " "), servers
    assert re.search(r"drain", [ln for ln in servers.splitlines() if ups[0].address in ln][0]), servers
    breakers = ctl_ok(sock, "show", "breakers")
    assert re.search(r"%s.*open" % re.escape(dead), breakers), breakers
    diff = ctl_ok(sock, "show", "diff")
    assert "weight 1 -> 7" in diff, diff

    # the drained server leaves the config: its state is dropped and said so once
    cfg3 = json.loads(json.dumps(cfg2))
    cfg3["pools"]["blue"]["servers"] = [{"address": dead}, {"address": ups[1].address}]
    rewrite(gw, cfg3)
    reload_ok(gw)
    wait_until(lambda: "runtime state dropped" in gw.stderr(), what="the dropped-state log line")
    dropped = [json.loads(ln) for ln in gw.stderr().splitlines() if "runtime state dropped" in ln]
    assert len(dropped) == 1 and dropped[0]["server"] == ups[0].address and "drained" in dropped[0]["dropped"]
    reload_ok(gw)
    assert sum("runtime state dropped" in ln for ln in gw.stderr().splitlines()) == 1


def test_reload_with_errors_changes_nothing(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir, route_pool="blue")
    bad = dict(gw.cfg)
    bad["routes"] = [{"name": "main", "match": {"path_prefix": "/"}, "pool": "nope"},
                     {"name": "two", "match": {"path_prefix": "/t"}, "service": "missing"}]
    rewrite(gw, bad)
    rc, out, err = ctl(gw.sock, "reload")
    assert rc == 1, (rc, out, err)
    checked = subprocess.run([SLUICE_BIN, "check", "-c", str(gw.conf_path)], capture_output=True, text=True)
    check = [ln for ln in checked.stderr.splitlines() if ln.strip()]
    assert len(check) >= 3
    lines = out.splitlines()
    assert lines[0].startswith("error: reload refused"), out
    for ln in check:  # the same messages as `sluice check`
        assert ln in lines, (ln, out)
    assert server_of(gw) == "blue"
    assert re.search(r"^generation\s+1$", ctl_ok(gw.sock, "show", "config"), re.M)

    # a syntax error too
    gw.conf_path.write_text("return {")
    rc, out, _ = ctl(gw.sock, "reload")
    assert rc == 1 and str(gw.conf_path) in out, out
    assert server_of(gw) == "blue"


def test_reload_refuses_keys_that_need_a_restart(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    cfg = json.loads(json.dumps(gw.cfg))
    cfg["workers"] = 3
    cfg["admin"]["socket"] = gw.sock + ".2"
    cfg["state_file"] = os.path.join(sockdir, "state")
    cfg["admin"]["max_connections"] = 5  # reloadable, but the reload is refused as a whole
    rewrite(gw, cfg)
    rc, out, _ = ctl(gw.sock, "reload")
    assert rc == 1, out
    assert re.search(r"workers: changed from 2 to 3: .*restart", out), out
    assert re.search(r"admin\.socket: changed from .* to .*\.2: .*restart", out), out
    assert re.search(r"state_file: changed: .*restart", out), out
    assert '"max_connections":32' in ctl_ok(gw.sock, "--json", "show", "admin")
    assert server_of(gw) == "blue"
    assert re.search(r"^generation\s+1$", ctl_ok(gw.sock, "show", "config"), re.M)


def test_reload_adds_a_listener(sluice, upstreams, sockdir):
    """An added listener is bound before the new config is published (a
    request right after the reload is served on it); one whose address cannot
    be bound fails the reload as a whole (t/test_reload_listeners.py: removing
    and changing one)."""
    gw = start(sluice, upstreams, sockdir)
    # the address is taken: nothing changes, the error names the listener
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    cfg = json.loads(json.dumps(gw.cfg))
    cfg["listeners"].insert(0, {"name": "second", "address": "127.0.0.1:%d" % taken.getsockname()[1]})
    cfg["routes"][-1]["pool"] = "green"
    rewrite(gw, cfg)
    rc, out, _ = ctl(gw.sock, "reload")
    taken.close()
    assert rc == 1 and re.search(r"listener second: cannot listen on 127\.0\.0\.1:\d+: address in use", out), out
    assert server_of(gw) == "blue"

    # a free address: listed first in the file, served at once on both listeners
    port2 = free_port()
    cfg["listeners"][0]["address"] = "127.0.0.1:%d" % port2
    rewrite(gw, cfg)
    reload_ok(gw)
    with RawConn(port2) as c:
        r = c.request("GET", "/on-second")
    assert r.status == 200 and r.json()["server"] == "green"
    assert server_of(gw) == "green"
    log = gw.wait_log(target="/on-second")
    assert log[0]["listener"] == "second"
    assert gw.wait_log(target="/x", pool="green")[0]["listener"] == "public"

    # removing it again: the port refuses connections once the reload returned
    cfg2 = json.loads(json.dumps(cfg))
    del cfg2["listeners"][0]
    rewrite(gw, cfg2)
    reload_ok(gw)
    assert refused(port2)
    assert server_of(gw) == "green"


def test_sighup_reloads_and_logs_errors(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir, route_pool="blue")
    cfg = dict(gw.cfg)
    cfg["routes"] = [{"name": "main", "match": {"path_prefix": "/"}, "pool": "green"}]
    rewrite(gw, cfg)
    gw.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in gw.stderr(), what="the reload log line")
    assert server_of(gw) == "green"
    out = ctl_ok(gw.sock, "show", "config")
    assert re.search(r"^loaded\s+.* by SIGHUP$", out, re.M), out

    gw.conf_path.write_text("return { workers = 'many' }")
    gw.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload on SIGHUP refused" in gw.stderr(), what="the refusal log line")
    assert server_of(gw) == "green"
    assert re.search(r"^generation\s+2$", ctl_ok(gw.sock, "show", "config"), re.M)


@pytest.mark.timeout(120)
def test_many_reloads_under_traffic(sluice, upstreams, sockdir):
    """Reloads alternating two configs while clients keep connections busy: no
    failed request, and old snapshots are freed (ASan's leak check at exit)."""
    gw = start(sluice, upstreams, sockdir, route_pool="blue")
    cfg_a = gw.cfg
    cfg_b = dict(gw.cfg)
    cfg_b["routes"] = [{"name": "main", "match": {"path_prefix": "/"}, "pool": "green"}]
    stop = threading.Event()
    failures = []
    counts = {"n": 0}

    def client():
        try:
            c = RawConn(gw.port, timeout=10)
            while not stop.is_set():
                r = c.request("GET", "/c")
                if r.status != 200:
                    failures.append(r.status)
                counts["n"] += 1
            c.close()
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for th in threads:
        th.start()
    for i in range(20):
        rewrite(gw, cfg_b if i % 2 == 0 else cfg_a)
        reload_ok(gw)
        assert server_of(gw) == ("green" if i % 2 == 0 else "blue")
    stop.set()
    for th in threads:
        th.join(10)
    assert not failures, failures[:5]
    assert counts["n"] > 20


def test_reload_rotates_a_certificate(certs, sluice, upstreams, sockdir):
    """New handshakes use the new certificate; a connection made before keeps working."""
    (u,) = upstreams(1)
    old = certs.issue("old", dns=["site.test", "old.test"])
    new = certs.issue("new", dns=["site.test", "new.test"])
    port = free_port()
    sock = os.path.join(sockdir, "admin.sock")
    cfg = tls_config(port, [u.address], [{"cert": old[0], "key": old[1]}], admin={"socket": sock})
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    assert "DNS:old.test" in peer_cert_text(port, servername="site.test")
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    before = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="site.test")
    cfg["listeners"][0]["tls"]["certificates"] = [{"cert": new[0], "key": new[1]}]
    rewrite(gw, cfg)
    reload_ok(gw)
    text = peer_cert_text(port, servername="site.test")
    assert "DNS:new.test" in text and "DNS:old.test" not in text
    before.sendall(b"GET /still HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = before.recv(65536)
        if not chunk:
            break
        data += chunk
    before.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


@pytest.mark.timeout(60)
def test_request_suspended_on_redis_finishes_on_the_old_snapshot(sluice, upstreams, sockdir, redis):
    """A request waiting in the access phase (a shared rate limit's cold key,
    with Redis stopped) across a reload: its Redis reply lands on the limits
    of its own snapshot and it is proxied by the old routing."""
    r = redis()
    ups = upstreams(2, ["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    port = free_port()
    cfg = two_pool_config(port, sock, ups[0].address, ups[1].address, "blue", h2c=False)
    cfg["redis"] = {"address": "127.0.0.1:%d" % r.port, "timeout": "4s", "connect_timeout": "1s"}
    cfg["rate_limits"] = {"per_client": {"key": "header:x-client", "rate": 100, "per": "1s", "burst": 100,
                                         "shared": True}}
    cfg["routes"][-1]["rate_limit"] = ["per_client"]
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    wait_until(lambda: gw.stderr().count("ratelimit: redis connected") >= 2, what="redis connections")
    with RawConn(port) as c:
        assert c.request("GET", "/warm", headers=[("X-Client", "warm")]).json()["server"] == "blue"

    got = {}

    def suspended():
        with RawConn(port, timeout=10) as c:
            resp = c.request("GET", "/cold", headers=[("X-Client", "cold-key")])
            got["status"], got["server"] = resp.status, resp.json()["server"]

    os.kill(r.proc.pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=suspended)
        t.start()
        time.sleep(0.5)  # the request is parked on its Redis round trip
        cfg2 = json.loads(json.dumps(cfg))
        cfg2["routes"][-1]["pool"] = "green"
        rewrite(gw, cfg2)
        reload_ok(gw)
        assert "status" not in got
    finally:
        os.kill(r.proc.pid, signal.SIGCONT)
    t.join(10)
    assert got == {"status": 200, "server": "blue"}
    with RawConn(port) as c:
        assert c.request("GET", "/after", headers=[("X-Client", "warm")]).json()["server"] == "green"


@pytest.mark.timeout(180)
def test_two_hundred_reloads_keep_memory_bounded(sluice, upstreams, sockdir):
    """Old snapshots go when their last user goes: RSS after 200 reloads with
    traffic stays near where it was after the first 20."""
    ups = upstreams(2, ["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    port = free_port()
    cfg_a = two_pool_config(port, sock, ups[0].address, ups[1].address, "blue")
    cfg_b = json.loads(json.dumps(cfg_a))
    cfg_b["routes"][-1]["pool"] = "green"
    # with ASan: a small quarantine, so freed memory is reused as it would be
    gw = sluice(cfg_a, env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=1"})
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    keep = RawConn(port, timeout=10)
    rss = {}
    for i in range(200):
        rewrite(gw, cfg_b if i % 2 == 0 else cfg_a)
        reload_ok(gw)
        assert server_of(gw, conn=keep) == ("green" if i % 2 == 0 else "blue")
        if i == 19:
            rss["warm"] = gw.rss_kb()
    rss["end"] = gw.rss_kb()
    keep.close()
    assert rss["end"] - rss["warm"] < 8 * 1024, rss


@pytest.mark.timeout(120)
def test_reloads_under_wrk_h2load_and_new_https_connections(certs, sluice, upstreams, sockdir):
    """20 reloads moving the main route between two pools while wrk (HTTP/1.1
    keep-alive), h2load (h2 over TLS) and a stream of new HTTPS connections
    run: no request fails or is reset, and every request that starts after a
    reload returned uses the new routing."""
    ups = upstreams(2, ["blue", "green"])
    crt, key = certs.issue("a", dns=["a.test"])
    sock = os.path.join(sockdir, "admin.sock")
    port, tls_port = free_port(), free_port()
    cfg_a = two_pool_config(port, sock, ups[0].address, ups[1].address, "blue", h2c=False)
    cfg_a["listeners"].append({"name": "tls", "address": "127.0.0.1:%d" % tls_port,
                               "tls": {"certificates": [{"cert": crt, "key": key}]}})
    cfg_b = json.loads(json.dumps(cfg_a))
    cfg_b["routes"][-1]["pool"] = "green"
    gw = sluice(cfg_a)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    seconds = 8
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d%ds" % seconds, "http://127.0.0.1:%d/w" % port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    h2l = subprocess.Popen(["h2load", "-D", str(seconds), "-c4", "-m8", "https://127.0.0.1:%d/h" % tls_port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    https = {"ok": 0, "failed": []}

    def new_https_connections():
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        while not stop.is_set():
            try:
                with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=10),
                                     server_hostname="a.test") as s:
                    s.sendall(b"GET /n HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    https["ok"] += 1
                else:
                    https["failed"].append(data[:100])
            except (OSError, ssl.SSLError) as e:
                https["failed"].append(repr(e))

    t = threading.Thread(target=new_https_connections)
    t.start()
    try:
        time.sleep(0.5)
        for i in range(20):
            rewrite(gw, cfg_b if i % 2 == 0 else cfg_a)
            reload_ok(gw)
            assert server_of(gw) == ("green" if i % 2 == 0 else "blue")
            time.sleep(0.25)
    finally:
        stop.set()
        t.join(20)
        wrk_out = wrk.communicate(timeout=60)[0]
        h2l_out = h2l.communicate(timeout=60)[0]
    assert "requests in" in wrk_out and "Socket errors" not in wrk_out and "Non-2xx" not in wrk_out, wrk_out
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  h2l_out)
    w = re.search(r"(\d+) requests in", wrk_out)
    print("20 reloads under load: wrk %s requests, 0 errors; h2load %s succeeded, %s failed, %s errored; "
          "new HTTPS connections %d ok, %d failed" % (w and w.group(1), m and m.group(3), m and m.group(4),
                                                      m and m.group(5), https["ok"], len(https["failed"])))
    assert m and int(m.group(3)) > 0 and m.group(4) == "0" and m.group(5) == "0", h2l_out
    assert not https["failed"] and https["ok"] > 10, (https["ok"], https["failed"][:3])


def test_reload_applies_admin_settings_and_the_connection_budget(sluice, upstreams, sockdir, tmp_path):
    """admin.mode, admin.max_connections, admin.http (added, moved, token) and
    limits.max_connections change on reload."""
    gw = start(sluice, upstreams, sockdir, workers=1)
    assert os.stat(gw.sock).st_mode & 0o777 == 0o600
    cfg = json.loads(json.dumps(gw.cfg))
    cfg["admin"].update({"mode": "0660", "max_connections": 5})
    aport = free_port()
    cfg["admin"]["http"] = "127.0.0.1:%d" % aport
    cfg["limits"] = {"max_connections": 2}
    rewrite(gw, cfg)
    reload_ok(gw)
    assert os.stat(gw.sock).st_mode & 0o777 == 0o660
    assert '"max_connections":5' in ctl_ok(gw.sock, "--json", "show", "admin")
    assert http_get(aport, "/healthz")[0] == 200
    assert http_get(aport, "/metrics")[0] == 200

    # the budget: two connections, a third waits in the accept queue ...
    a, b = RawConn(gw.port, timeout=10), RawConn(gw.port, timeout=10)
    assert server_of(gw, conn=a) == "blue" and server_of(gw, conn=b) == "blue"
    third = RawConn(gw.port, timeout=10)
    third.send(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(TimeoutError):  # not accepted: no answer
        third.read_some(timeout=1)
    # ... until a reload raises it
    cfg["limits"] = {"max_connections": 100}
    token = tmp_path / "token"
    secret = "5e" * 32
    token.write_text(secret + "\n")
    aport2 = free_port()
    cfg["admin"].update({"http": "127.0.0.1:%d" % aport2, "http_token_file": str(token)})
    rewrite(gw, cfg)
    reload_ok(gw)
    r = third.read_response()
    assert r.status == 200, r
    for c in (a, b, third):
        c.close()
    # admin.http moved, with a token from now on
    assert refused(aport)
    assert http_get(aport2, "/metrics")[0] == 401
    assert http_get(aport2, "/metrics", headers={"Authorization": "Bearer " + secret})[0] == 200
    # a rotated token on the same address: the listener stays, the token changes
    token.write_text("7f" * 32 + "\n")
    reload_ok(gw)
    assert http_get(aport2, "/metrics", headers={"Authorization": "Bearer " + secret})[0] == 401
    assert http_get(aport2, "/metrics", headers={"Authorization": "Bearer " + "7f" * 32})[0] == 200
    # and gone again
    del cfg["admin"]["http"], cfg["admin"]["http_token_file"]
    rewrite(gw, cfg)
    reload_ok(gw)
    assert refused(aport2)
    assert server_of(gw) == "blue"


def test_admin_http_that_cannot_be_bound_fails_the_reload(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    cfg = json.loads(json.dumps(gw.cfg))
    cfg["admin"]["http"] = "127.0.0.1:%d" % taken.getsockname()[1]
    cfg["routes"][-1]["pool"] = "green"
    rewrite(gw, cfg)
    rc, out, _ = ctl(gw.sock, "reload")
    taken.close()
    assert rc == 1 and re.search(r"admin\.http: cannot listen on 127\.0\.0\.1:\d+", out), out
    assert server_of(gw) == "blue"


def test_rate_limit_buckets_survive_a_reload(sluice, upstreams, sockdir):
    """Buckets follow the limit's name while its shape stays; a new shape starts fresh."""
    gw = start(sluice, upstreams, sockdir, workers=1)
    cfg = json.loads(json.dumps(gw.cfg))
    cfg["rate_limits"] = {"per_client": {"key": "client_ip", "rate": 1, "per": "1m", "burst": 3}}
    cfg["routes"][-1]["rate_limit"] = "per_client"
    rewrite(gw, cfg)
    reload_ok(gw)
    with RawConn(gw.port) as c:
        assert [c.request("GET", "/r%d" % i).status for i in range(3)] == [200, 200, 200]
    cfg["routes"].insert(0, {"name": "extra", "match": {"path": "/never"}, "respond": {"status": 204}})
    rewrite(gw, cfg)
    reload_ok(gw)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/after").status == 429
    cfg["rate_limits"]["per_client"]["burst"] = 4
    rewrite(gw, cfg)
    reload_ok(gw)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/fresh").status == 200


def test_reload_moves_the_access_log(sluice, upstreams, sockdir, tmp_path):
    """Log settings change on reload: the access log goes to the new file."""
    gw = start(sluice, upstreams, sockdir)
    cfg = json.loads(json.dumps(gw.cfg))
    path = tmp_path / "access.log"
    cfg["access_log"] = {"path": str(path)}
    rewrite(gw, cfg)
    reload_ok(gw)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/to-the-file").status == 200
    wait_until(lambda: path.exists() and "/to-the-file" in path.read_text(), what="the request in the new log file")
    assert "/to-the-file" not in gw.stdout()


@pytest.mark.timeout(90)
def test_reload_moves_shared_limits_to_another_redis_and_rotates_its_password(sluice, upstreams, sockdir, redis,
                                                                              tmp_path):
    """Redis settings change on reload: each worker reconnects with the new
    address or password; requests keep being answered throughout."""
    import shutil as _shutil
    cli = _shutil.which("redis-cli")
    if not cli:
        pytest.skip("redis-cli is not installed")
    a, b = redis(), redis()
    ups = upstreams(2, ["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    port = free_port()
    cfg = two_pool_config(port, sock, ups[0].address, ups[1].address, "blue", h2c=False)
    cfg["redis"] = {"address": "127.0.0.1:%d" % a.port, "timeout": "1s", "connect_timeout": "1s"}
    cfg["rate_limits"] = {"per_client": {"key": "header:x-client", "rate": 1000, "per": "1s", "burst": 1000,
                                         "shared": True}}
    cfg["routes"][-1]["rate_limit"] = ["per_client"]
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock

    def keys(r, password=None):
        args = [cli, "-p", str(r.port)] + (["--no-auth-warning", "-a", password] if password else []) + ["DBSIZE"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
        return int(out) if out.isdigit() else -1

    def send(tag, n=20):
        with RawConn(port) as c:
            for i in range(n):
                assert c.request("GET", "/%s/%d" % (tag, i), headers=[("X-Client", "%s-%d" % (tag, i))]).status == 200

    wait_until(lambda: gw.stderr().count("ratelimit: redis connected") >= 2, what="redis connections")
    send("a")
    wait_until(lambda: keys(a) > 0, what="buckets in the first redis")
    assert keys(b) == 0
    # another address
    cfg["redis"]["address"] = "127.0.0.1:%d" % b.port
    rewrite(gw, cfg)
    reload_ok(gw)
    wait_until(lambda: gw.stderr().count("redis settings changed by a reload") >= 2, what="reconnects")
    send("b")
    wait_until(lambda: keys(b) > 0, what="buckets in the second redis")
    # a rotated password: set it on the server, then in the file sluice reads
    pw = tmp_path / "redis-password"
    subprocess.run([cli, "-p", str(b.port), "CONFIG", "SET", "requirepass", "s3cret-rotated-1"], check=True,
                   capture_output=True, timeout=10)
    pw.write_text("s3cret-rotated-1\n")
    cfg["redis"]["password_file"] = str(pw)
    rewrite(gw, cfg)
    reload_ok(gw)
    before = keys(b, "s3cret-rotated-1")
    send("c")
    wait_until(lambda: keys(b, "s3cret-rotated-1") > before, what="buckets written with the new password")
    assert "s3cret-rotated-1" not in gw.stderr()
