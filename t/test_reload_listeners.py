"""Listeners on reload (docs/runbooks/reload.md): an added listener is bound
before the new config is published; a removed one stops accepting and its
connections drain (an in-flight request finishes and its answer says
`connection: close`, idle keep-alive connections are closed, an HTTP/2
session gets GOAWAY and finishes its streams); a changed one (address, name,
tls on/off, h2c) is a removal plus an addition, and keeps its listening
sockets when its address stays, so no connection is refused; a listener
whose address cannot be bound fails the reload as a whole. Real clients
(python keep-alive and fresh connections, h2load, an h2 client) run on the
kept listeners meanwhile: no request fails there."""

import json
import os
import re
import shutil
import socket
import subprocess
import threading

import h2.events
import pytest

from conftest import RawConn, curl, free_port, wait_until
from test_h2 import H2Client
from test_reload import refused, reload_ok, rewrite, server_of, two_pool_config
from test_res_admin import ctl, ctl_ok, sockdir  # noqa: F401  (fixture)
from test_tls_certs import certs  # noqa: F401  (fixture)
from test_upgrade import Load


def start(sluice, upstreams, sockdir, extra_listeners=(), workers=2):  # noqa: F811
    ups = upstreams(2, ["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    # /delay goes to green, the rest to blue
    cfg = two_pool_config(free_port(), sock, ups[0].address, ups[1].address, "blue", workers=workers,
                          extra_routes=[{"name": "slow", "match": {"path_prefix": "/delay"}, "pool": "green"}])
    cfg["listeners"] += [dict(l) for l in extra_listeners]
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock, gw.ups, gw.cfg = sock, ups, cfg
    return gw


def with_listeners(cfg, listeners, pool=None, slow=None):
    out = json.loads(json.dumps(cfg))
    out["listeners"] = listeners
    if pool:
        out["routes"][-1]["pool"] = pool
    if slow:
        out["routes"][0]["pool"] = slow
    return out


def h2load(port, seconds):
    if not shutil.which("h2load"):
        return None
    return subprocess.Popen(["h2load", "-D", str(seconds), "-c4", "-m4", "http://127.0.0.1:%d/h2load" % port],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def h2load_figures(proc):
    out = proc.communicate(timeout=60)[0]
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  out)
    assert m, out
    return int(m.group(3)), int(m.group(4)) + int(m.group(5)), out


def h2_bodies(events):
    bodies, status = {}, {}
    for e in events:
        if isinstance(e, h2.events.DataReceived):
            bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
        elif isinstance(e, h2.events.ResponseReceived):
            status[e.stream_id] = dict(e.headers)[":status"]
    return bodies, status


@pytest.mark.timeout(120)
def test_removed_listener_drains_while_kept_ones_lose_nothing(sluice, upstreams, sockdir):  # noqa: F811
    old_port = free_port()
    gw = start(sluice, upstreams, sockdir, [{"name": "old", "address": "127.0.0.1:%d" % old_port, "h2c": True}])
    public = gw.cfg["listeners"][0]
    load = Load(gw.port, keepalive=3, fresh=1)
    h2l = h2load(gw.port, 8)
    try:
        # on the listener about to go: a slow HTTP/1.1 request, an idle
        # keep-alive connection and an HTTP/2 session with a slow stream
        slow = {}

        def slow_request():
            with RawConn(old_port, timeout=10) as c:
                r = c.request("GET", "/delay/1500")
                slow["status"], slow["close"] = r.status, "close" in r.connection_tokens()
                slow["server"] = r.json()["server"]

        t = threading.Thread(target=slow_request)
        t.start()
        idle = RawConn(old_port, timeout=10)
        assert server_of(gw, conn=idle) == "blue"
        # nghttp (python's h2 takes any GOAWAY for the end of the connection)
        h2s = subprocess.Popen(["nghttp", "-v", "http://127.0.0.1:%d/delay/1500" % old_port],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: gw.ups[1].stats()["requests"] >= 2, what="the slow requests to reach green")

        rewrite(gw, with_listeners(gw.cfg, [public], pool="green", slow="blue"))
        reload_ok(gw)
        # the port refuses new connections once the reload returned; the idle connection is closed
        assert refused(old_port)
        assert idle.is_closed()
        assert server_of(gw) == "green"

        # in-flight requests finish, on the config they started with, and close
        t.join(10)
        assert slow == {"status": 200, "close": True, "server": "green"}
        out = h2s.communicate(timeout=20)[0]
        assert h2s.returncode == 0, out
        # the session is told to stop (GOAWAY, then GOAWAY naming its stream), the stream still ends
        assert re.search(r"recv GOAWAY frame.*\n.*last_stream_id=2147483647, error_code=NO_ERROR", out), out
        final = re.findall(r"recv GOAWAY frame.*\n.*last_stream_id=(\d+), error_code=NO_ERROR", out)
        assert len(final) == 2 and 0 < int(final[1]) < 2147483647, out  # the last stream nghttp opened
        assert re.search(r":status: 200", out) and '"server": "green"' in out, out

        # back under a new port, and removed again, with the load still on
        port3 = free_port()
        again = {"name": "old", "address": "127.0.0.1:%d" % port3}
        rewrite(gw, with_listeners(gw.cfg, [public, again], pool="blue"))
        reload_ok(gw)
        with RawConn(port3) as c:
            assert c.request("GET", "/back").status == 200
        rewrite(gw, with_listeners(gw.cfg, [public], pool="green"))
        reload_ok(gw)
        assert refused(port3) and refused(old_port)
    finally:
        load.stop()
    assert load.count("keepalive") > 20 and load.count("fresh") > 5, load.ok
    assert not load.failed, load.failed[:5]
    if h2l:
        ok, failed, out = h2load_figures(h2l)
        print("listener removed under load: python %r, %d failed; h2load %d succeeded, %d failed"
              % (load.ok, len(load.failed), ok, failed))
        assert ok > 0 and failed == 0, out
    removed = [e for e in gw.log_entries() if e.get("msg", "").startswith("listener removed")]
    assert [e["listener"] for e in removed] == ["old", "old"], removed
    assert gw.wait_log(target="/delay/1500")[0]["listener"] == "old"


@pytest.mark.timeout(120)
def test_changed_listener_keeps_its_socket_on_the_same_address(certs, sluice, upstreams, sockdir):  # noqa: F811
    gw = start(sluice, upstreams, sockdir)
    port = gw.port
    base = gw.cfg["listeners"][0]
    load = Load(port, keepalive=3, fresh=2)
    try:
        # h2c off and on, a new name: each a removal plus an addition on the same
        # address, whose sockets (and accept queues) pass to the new listener
        steps = [dict(base, h2c=False), dict(base, h2c=True, name="edge"), dict(base, h2c=True)]
        for i, listener in enumerate(steps * 2):
            rewrite(gw, with_listeners(gw.cfg, [listener], pool="green" if i % 2 == 0 else "blue"))
            reload_ok(gw)
            assert server_of(gw) == ("green" if i % 2 == 0 else "blue")
            if listener["h2c"]:
                h2c = H2Client(port)
                sid = h2c.get("/h2c")
                bodies, status = h2_bodies(h2c.events_until(
                    lambda g: any(isinstance(e, h2.events.StreamEnded) for e in g)))
                h2c.close()
                assert status.get(sid) == "200", (i, status)
    finally:
        load.stop()
    assert load.count("keepalive") > 20 and load.count("fresh") > 5, load.ok
    print("listener changed 6 times on its address under load: python %r, %d failed" % (load.ok, len(load.failed)))
    assert not load.failed, load.failed[:5]
    assert {e["listener"] for e in gw.access_log() if e.get("target") == "/h2c"} == {"edge", "public"}

    # TLS on for the same address, then off again
    crt, key = certs.issue("a", dns=["a.test"])
    tls = {k: v for k, v in base.items() if k != "h2c"}
    tls["tls"] = {"certificates": [{"cert": crt, "key": key}]}
    rewrite(gw, with_listeners(gw.cfg, [tls]))
    reload_ok(gw)
    r = curl(["-s", "--cacert", str(certs.ca), "--resolve", "a.test:%d:127.0.0.1" % port,
              "https://a.test:%d/tls" % port])
    assert r.returncode == 0 and json.loads(r.stdout)["server"] == "blue", r
    rewrite(gw, with_listeners(gw.cfg, [base]))
    reload_ok(gw)
    assert server_of(gw) == "blue"

    # a new address: the old one refuses, the new one serves
    port2 = free_port()
    rewrite(gw, with_listeners(gw.cfg, [dict(base, address="127.0.0.1:%d" % port2)], pool="green"))
    reload_ok(gw)
    assert refused(port)
    with RawConn(port2) as c:
        r = c.request("GET", "/moved")
    assert r.status == 200 and r.json()["server"] == "green"
    listening = [e for e in gw.log_entries() if e.get("msg") == "listening" and e.get("added_by")]
    assert listening[-1]["address"] == "127.0.0.1:%d" % port2, listening


def test_listener_that_cannot_be_bound_fails_the_whole_reload(sluice, upstreams, sockdir):  # noqa: F811
    port_b = free_port()
    gw = start(sluice, upstreams, sockdir, [{"name": "b", "address": "127.0.0.1:%d" % port_b}])
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    taken_addr = "127.0.0.1:%d" % taken.getsockname()[1]
    public = gw.cfg["listeners"][0]
    try:
        # removes b, moves the route and changes public's address to a taken one
        rewrite(gw, with_listeners(gw.cfg, [dict(public, address=taken_addr)], pool="green"))
        rc, out, _ = ctl(gw.sock, "reload")
        assert rc == 1 and re.search(r"listener public: cannot listen on %s: address in use" % taken_addr, out), out
        # an added one on the taken address: the same
        rewrite(gw, with_listeners(gw.cfg, [public, {"name": "c", "address": taken_addr}], pool="green"))
        rc, out, _ = ctl(gw.sock, "reload")
        assert rc == 1 and re.search(r"listener c: cannot listen on %s: address in use" % taken_addr, out), out
    finally:
        taken.close()
    # nothing changed: both listeners serve, on the old routing
    assert server_of(gw) == "blue"
    with RawConn(port_b) as c:
        r = c.request("GET", "/b")
    assert r.status == 200 and r.json()["server"] == "blue"
    assert re.search(r"^generation\s+1$", ctl_ok(gw.sock, "show", "config"), re.M)
