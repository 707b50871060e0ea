"""The demo upstream itself (no sluice needed): the tests below rely on its behaviours."""

import socket
import subprocess
import time

from conftest import (DEMO_UPSTREAM, PYTHON, ConnectionClosed, RawConn, build_request, chunked_body,
                      pattern_bytes, sha256)


def test_help_documents_behaviours():
    r = subprocess.run([PYTHON, str(DEMO_UPSTREAM), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    for word in ("/status/NNN", "/bytes/N", "/chunked/N", "/close/N", "/delay/MS", "/slow/N", "/reset", "/hang",
                 "/bad", "/stats", "/close-after"):
        assert word in r.stdout


def test_echo_keepalive_and_stats(upstreams):
    (u,) = upstreams(1, ["A"])
    with RawConn(u.port) as c:
        r1 = c.request("GET", "/x?y=1", headers=[("X-One", "1"), ("x-two", "2")])
        r2 = c.request("POST", "/p", body=b"hello")
    e1, e2 = r1.json(), r2.json()
    assert e1["server"] == "A" and e1["target"] == "/x?y=1"
    assert e1["headers"][1:] == [["X-One", "1"], ["x-two", "2"]]
    assert e2["body_len"] == 5 and e2["body_sha256"] == sha256(b"hello")
    assert e1["conn_id"] == e2["conn_id"] and e2["conn_request"] == 2
    st = u.stats()
    assert st["requests"] == 2 and st["per_connection"] == [2]


def test_chunked_request_with_trailers(upstreams):
    (u,) = upstreams(1)
    data = pattern_bytes(10000)
    with RawConn(u.port) as c:
        c.send(build_request("POST", "/", headers=[("Transfer-Encoding", "chunked")])
               + chunked_body(data, 777, trailers=[("X-T", "v")]))
        e = c.read_response().json()
    assert e["body_len"] == 10000 and e["body_sha256"] == sha256(data)
    assert e["trailers"] == [["X-T", "v"]]


def test_body_behaviours(upstreams):
    (u,) = upstreams(1)
    with RawConn(u.port) as c:
        r = c.request("GET", "/bytes/100000")
        assert r.body == pattern_bytes(100000)
        r = c.request("GET", "/chunked/5000?chunk=300&trailer=1")
        assert r.chunked and r.body == pattern_bytes(5000)
        assert dict(r.trailers)["x-body-sha256"] == sha256(pattern_bytes(5000))
        r = c.request("HEAD", "/bytes/10")
        assert r.header("content-length") == "10" and r.body == b""
        r = c.request("GET", "/status/503")
        assert r.status == 503
        # /status-if/NAME/NNN: only the server named NAME fails
        r = c.request("GET", "/status-if/%s/502" % u.name)
        assert r.status == 502
        r = c.request("GET", "/status-if/not-%s/502" % u.name)
        assert r.status == 200 and r.json()["server"] == u.name
        r = c.request("GET", "/close/3000")
        assert r.close_delimited and r.body == pattern_bytes(3000)


def test_failure_behaviours(upstreams):
    (u,) = upstreams(1)
    with RawConn(u.port) as c:
        c.send(build_request("GET", "/reset"))
        try:
            data = c.sock.recv(100)
            assert data == b""
        except ConnectionResetError:
            pass
    with RawConn(u.port, timeout=1) as c:
        c.send(build_request("GET", "/hang"))
        try:
            c.read_response(timeout=0.5)
            assert False, "hang answered"
        except socket.timeout:
            pass
    with RawConn(u.port) as c:
        c.send(build_request("GET", "/bad"))
        assert b"HTTP/1.1 200" not in c.sock.recv(1000)
    t0 = time.monotonic()
    with RawConn(u.port) as c:
        r = c.request("GET", "/slow/1000?rate=2000")
    assert r.body == pattern_bytes(1000) and time.monotonic() - t0 >= 0.4
    with RawConn(u.port) as c:
        c.request("GET", "/close-after")
        assert c.is_closed(2)
    with RawConn(u.port) as c:
        c.send(build_request("GET", "/truncate/1000"))
        try:
            c.read_response()
            assert False, "truncated body read completely"
        except ConnectionClosed:
            pass
