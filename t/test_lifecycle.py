"""Process lifecycle: worker threads with SO_REUSEPORT listeners, several listeners,
graceful shutdown on SIGTERM / SIGINT with drain_timeout."""

import os
import signal
import socket
import threading
import time

import pytest

from conftest import ConnectionClosed, RawConn, base_config, config_to_lua, free_port, run_sluice


def listening_sockets(port):
    """Number of LISTEN sockets bound to 127.0.0.1:port (from /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for ln in f:
            parts = ln.split()
            local, state = parts[1], parts[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


def test_workers_reuseport_listeners(gateway):
    gw = gateway(1, workers=2)
    assert listening_sockets(gw.port) == 2, "expected one SO_REUSEPORT listening socket per worker"
    assert gw.threads() >= 3, "expected a main thread and 2 worker threads"


def test_workers_one(gateway):
    gw = gateway(1, workers=1)
    assert listening_sockets(gw.port) == 1


def test_two_listeners(sluice, upstreams):
    (u,) = upstreams(1)
    p1, p2 = free_port(), free_port()
    cfg = base_config(p1, [u.address])
    cfg["listeners"].append({"name": "internal", "address": "127.0.0.1:%d" % p2})
    gw = sluice(cfg)
    for port, name in ((p1, "public"), (p2, "internal")):
        with RawConn(port) as c:
            assert c.request("GET", "/via-" + name).status == 200
        assert gw.wait_log(target="/via-" + name)[0]["listener"] == name


def in_flight(gw, target, result):
    try:
        with RawConn(gw.port, timeout=15) as c:
            r = c.request("GET", target)
            result["status"] = r.status
            result["closed_after"] = c.is_closed(3)
    except Exception as e:  # noqa: BLE001 - reported by the test
        result["error"] = repr(e)


def new_connection_refused(port):
    """True if a new connection is refused, or accepted but closed without any response."""
    try:
        c = RawConn(port, timeout=2)
    except (ConnectionRefusedError, OSError):
        return True
    try:
        c.send(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            r = c.read_response(timeout=2)
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            return True
        return r.status == 503
    finally:
        c.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_finishes_in_flight(gateway, sig):
    gw = gateway(1, drain_timeout="10s")
    result = {}
    t = threading.Thread(target=in_flight, args=(gw, "/delay/1500", result))
    t.start()
    time.sleep(0.4)
    t0 = time.monotonic()
    gw.send_signal(sig)
    time.sleep(0.3)
    refused = new_connection_refused(gw.port)
    t.join(15)
    rc = gw.wait(15)  # no second signal: that may legitimately mean "exit now"
    took = time.monotonic() - t0
    assert result.get("status") == 200, "in-flight request during shutdown: %r" % result
    assert result.get("closed_after"), "connection of the in-flight request not closed after its response"
    assert refused, "a new connection was served after the signal"
    assert rc == 0, "exit status %r" % rc
    assert took < 8, "shutdown took %.1fs with one 1.5 s request in flight" % took


def test_shutdown_closes_idle_keepalive_clients(gateway):
    gw = gateway(1, drain_timeout="20s")
    conns = []
    for _ in range(3):
        c = RawConn(gw.port)
        assert c.request("GET", "/idle").status == 200
        conns.append(c)
    t0 = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    try:
        for c in conns:
            assert c.is_closed(3), "idle keep-alive client not closed on SIGTERM"
    finally:
        for c in conns:
            c.close()
    rc = gw.wait(10)
    assert rc == 0, "exit status %r" % rc
    assert time.monotonic() - t0 < 5, "idle connections delayed the exit"


def test_drain_timeout_bounds_shutdown(gateway):
    gw = gateway(1, drain_timeout="1s", pool={"timeouts": {"connect": "1s", "response": "30s"}})
    result = {}
    t = threading.Thread(target=in_flight, args=(gw, "/hang", result))
    t.start()
    time.sleep(0.4)
    t0 = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    rc = gw.wait(8)
    took = time.monotonic() - t0
    t.join(10)
    assert rc is not None, "still running 8 s after SIGTERM with drain_timeout=1s"
    assert rc == 0
    assert took < 4, took
    assert result.get("status") != 200


def test_sigterm_idle_exits_quickly(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/").status == 200
    t0 = time.monotonic()
    assert gw.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 3


def test_no_request_served_after_exit(gateway):
    gw = gateway(1)
    port = gw.port
    assert gw.stop() == 0
    s = socket.socket()
    try:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        s.close()
    assert not os.path.exists("/proc/%d" % gw.pid) or open("/proc/%d/status" % gw.pid).read().find("zombie") >= 0


def test_second_instance_on_the_same_address_is_refused(gateway, tmp_path):
    # SO_REUSEPORT would let a second (or stale) sluice of the same user join the
    # listening group and silently take a share of the traffic: it must refuse.
    gw = gateway(1, workers=2)
    cfg = base_config(gw.port, ["127.0.0.1:9"])
    path = tmp_path / "second.lua"
    path.write_text(config_to_lua(cfg))
    r = run_sluice(["run", "-c", str(path)], timeout=15)
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1:%d" % gw.port in r.stderr
    assert "another process" in r.stderr
    # the first instance still owns every connection
    assert listening_sockets(gw.port) == 2
    with RawConn(gw.port) as c:
        assert c.request("GET", "/still-mine").status == 200


def test_burst_of_connections_all_served(gateway):
    """Connections that arrive together wait in the listen queue and are taken one accept
    per loop turn: every one of them is served, none waits for a later arrival."""
    gw = gateway(1, workers=1)
    conns = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(300)]
    try:
        for i, s in enumerate(conns):
            s.sendall(b"GET /burst/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % i)
        for i, s in enumerate(conns):
            head = s.recv(65536)  # the whole answer is far below one segment
            assert head.startswith(b"HTTP/1.1 200 "), (i, head[:200])
    finally:
        for s in conns:
            s.close()


def test_connection_limit_pauses_and_resumes_accepting(gateway):
    """limits.max_connections: at the limit the worker stops accepting (a new connection
    waits in the kernel's queue, unanswered), and takes it once a connection closes."""
    gw = gateway(1, workers=1, limits={"max_connections": 3})
    held = [RawConn(gw.port) for _ in range(3)]
    waiting = None
    try:
        for c in held:
            assert c.request("GET", "/held").status == 200
        waiting = RawConn(gw.port, timeout=1.0)
        waiting.send(b"GET /waiting HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(socket.timeout):
            waiting.read_response()
        # below the limit with headroom (10%): accepting resumes
        for c in held:
            c.close()
        waiting.timeout = 5.0
        assert waiting.read_response().status == 200
    finally:
        for c in held:
            c.close()
        if waiting:
            waiting.close()
