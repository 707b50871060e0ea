"""Retries (to another server, only when safe, within the budget) and pool
limits (503 pool_overflow at once, never a queue), against real upstreams
that refuse connections or answer 503 on purpose."""

import socket
import socketserver
import threading
import time

import pytest

from conftest import RawConn, base_config, free_port


class StatusServer:
    """An origin that answers every request with one fixed status and counts them."""

    def __init__(self, status):
        outer = self
        self.count = 0
        self.lock = threading.Lock()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    length = 0
                    while True:
                        h = self.rfile.readline()
                        if h in (b"\r\n", b"\n", b""):
                            break
                        k, _, v = h.decode("latin-1").partition(":")
                        if k.strip().lower() == "content-length":
                            length = int(v.strip())
                    if length:
                        self.rfile.read(length)
                    with outer.lock:
                        outer.count += 1
                    body = b"fixed %d\n" % status
                    self.wfile.write(b"HTTP/1.1 %d X\r\nX-Upstream: fixed\r\nContent-Length: %d\r\n\r\n%s"
                                     % (status, len(body), body))

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.address = "127.0.0.1:%d" % self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def status_server():
    started = []

    def start(status):
        s = StatusServer(status)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def refused():
    return "127.0.0.1:%d" % free_port()


def request(gw, method="GET", target="/", body=None):
    with RawConn(gw.port, timeout=8) as c:
        return c.request(method, target, body=body)


def test_connect_failure_is_retried_on_another_server(sluice, upstreams):
    (good,) = upstreams(1, names=["good"])
    bad = refused()
    gw = sluice(base_config(free_port(), [bad, good.address], workers=1,
                            pool={"retry": {"attempts": 2, "on": ["connect-failure"]}}))
    for i in range(10):
        r = request(gw, "GET", "/r%d" % i)
        assert r.status == 200 and r.header("x-upstream") == "good"
    entries = gw.wait_log(count=10, pred=lambda e: e["target"].startswith("/r"))
    retried = [e for e in entries if e["attempts"] == 2]
    assert len(retried) == 5, entries  # round robin: every other request tried the refused server first
    assert all(e["upstream"] == good.address and e["status"] == 200 for e in retried)


def test_post_is_retried_only_when_nothing_was_sent(sluice, upstreams, status_server):
    (good,) = upstreams(1, names=["good"])
    bad = refused()
    gw = sluice(base_config(free_port(), [bad, good.address], workers=1,
                            pool={"retry": {"attempts": 2, "on": ["connect-failure", "503"]}}))
    # connect failure: nothing reached the refused server, so even a POST goes to the other one
    for i in range(4):
        r = request(gw, "POST", "/p%d" % i, body=b"x" * 10)
        assert r.status == 200 and r.json()["body_len"] == 10


def test_503_retried_for_get_but_not_for_post(sluice, upstreams, status_server):
    (good,) = upstreams(1, names=["good"])
    failing = status_server(503)
    gw = sluice(base_config(free_port(), [failing.address, good.address], workers=1,
                            pool={"retry": {"attempts": 2, "on": ["503"]}}))
    for i in range(6):
        r = request(gw, "GET", "/g%d" % i)
        assert r.status == 200 and r.header("x-upstream") == "good"
    assert failing.count == 3
    statuses = [request(gw, "POST", "/p%d" % i, body=b"abc").status for i in range(6)]
    assert sorted(statuses) == [200, 200, 200, 503, 503, 503], "a POST that reached a server is never resent"
    assert failing.count == 6


def test_retry_never_goes_back_to_the_same_server(sluice, status_server):
    a, b = status_server(503), status_server(503)
    gw = sluice(base_config(free_port(), [a.address, b.address], workers=1,
                            pool={"retry": {"attempts": 3, "on": ["503"]}}))
    r = request(gw, "GET", "/both")
    # two servers, three attempts allowed: each server is tried once, then the last answer goes out
    assert r.status == 503 and r.header("x-upstream") == "fixed"
    assert a.count == 1 and b.count == 1
    e = gw.wait_log(target="/both")[0]
    assert e["attempts"] == 2 and e["upstream_status"] == 503


def test_retry_budget_exhausted(sluice, upstreams):
    (good,) = upstreams(1, names=["good"])
    bad = refused()
    gw = sluice(base_config(free_port(), [bad, good.address], workers=1,
                            pool={"retry": {"attempts": 2, "on": ["connect-failure"], "budget": 0.2,
                                            "min_retries": 0}}))
    before = good.stats()["requests"]
    results = [request(gw, "GET", "/b%d" % i) for i in range(6)]
    # one request in flight: a retry would be 1/1 = 100% of the pool's requests, over 20%
    refused_ones = [r for r in results if r.status == 503]
    assert len(refused_ones) == 3
    assert all(r.header("retry-after") for r in refused_ones)
    entries = gw.wait_log(count=3, reason="retry_budget_exhausted")
    assert all(e["upstream"] == bad and e["attempts"] == 1 for e in entries)
    assert good.stats()["requests"] - before == 3


def test_retry_budget_scales_with_active_requests(sluice, upstreams):
    (good,) = upstreams(1, names=["good"])
    bad = refused()
    # smooth round robin over weights 1:4 starts good, good, bad, ...
    gw = sluice(base_config(free_port(), [{"address": bad, "weight": 1}, {"address": good.address, "weight": 4}],
                            workers=1,
                            pool={"retry": {"attempts": 2, "on": ["connect-failure"], "budget": 0.5,
                                            "min_retries": 0}}))
    slow = []
    for i in range(2):
        c = RawConn(gw.port, timeout=8)
        c.send(b"GET /delay/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        slow.append(c)
    time.sleep(0.3)
    # with two requests in flight, one retry is 1/3 of the pool's active requests: within 0.5
    busy = [request(gw, "GET", "/busy%d" % i) for i in range(6)]
    assert [r.status for r in busy] == [200] * 6
    for c in slow:
        assert c.read_response().status == 200
        c.close()
    retried = gw.wait_log(pred=lambda e: e["target"].startswith("/busy") and e["attempts"] == 2)
    assert all(e["upstream"] == good.address for e in retried)
    # alone in the pool, a retry would be 100% of its requests: refused
    idle = [request(gw, "GET", "/idle%d" % i) for i in range(6)]
    assert 503 in [r.status for r in idle]
    gw.wait_log(pred=lambda e: e["target"].startswith("/idle"), reason="retry_budget_exhausted")


def test_max_requests_overflow_is_immediate(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address], workers=2, pool={"limits": {"max_requests": 2}}))
    conns = []
    for i in range(2):
        c = RawConn(gw.port, timeout=8)
        c.send(b"GET /delay/1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        conns.append(c)
    time.sleep(0.3)
    t0 = time.monotonic()
    r = request(gw, "GET", "/third")
    assert time.monotonic() - t0 < 0.5
    assert r.status == 503 and r.header("retry-after") == "1"
    assert gw.wait_log(target="/third")[0]["reason"] == "pool_overflow"
    for c in conns:
        assert c.read_response().status == 200
        c.close()
    assert request(gw, "GET", "/after").status == 200, "the limit frees up as requests end"


def test_max_connections_overflow(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address], workers=1, pool={"limits": {"max_connections": 1}}))
    c = RawConn(gw.port, timeout=8)
    c.send(b"GET /delay/800 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    r = request(gw, "GET", "/second")
    assert r.status == 503
    assert gw.wait_log(target="/second")[0]["reason"] == "pool_overflow"
    assert c.read_response().status == 200
    c.close()
    # the one connection is now idle in the pool and serves the next request
    assert request(gw, "GET", "/reuse").status == 200


def test_all_servers_out_503_with_retry_after_at_once(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [{"address": u.address, "weight": 0}], workers=1))
    t0 = time.monotonic()
    r = request(gw, "GET", "/none")
    assert time.monotonic() - t0 < 0.5
    assert r.status == 503 and r.header("retry-after")
    assert gw.wait_log(target="/none")[0]["reason"] == "no_healthy_upstream"
