"""routes[N].request_buffering (issue 17, "Slow clients that hold upstream capacity"): a request
body up to the route's size is read whole before an upstream connection is taken, so a client
that trickles it holds a buffer, not upstream capacity; larger bodies are streamed after their
first bytes. Real upstreams (scripts/demo_upstream.py) and real clients."""

import time

import hpack

from conftest import RawConn, base_config, build_request, chunked_body, free_port, run_sluice, config_to_lua
from test_h2 import frame
from test_protocol_edges import RawH2, ended, h2c_config
from test_slow_bodies import trickle_h1


def buffered_config(upstream, size="64k", **kw):
    routes = [{"name": "upload", "match": {"path_prefix": "/echo"}, "service": "web", "request_buffering": size},
              {"name": "other", "match": {"path_prefix": "/"}, "service": "web"}]
    return base_config(free_port(), [upstream.address], routes=routes, **kw)


def upstream_saw(u):
    """(requests, connections) the upstream has seen, not counting the /stats calls."""
    s = u.stats()
    return s["requests"], s["connections"]


def test_trickled_body_reaches_the_upstream_only_when_whole(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(buffered_config(u))
    body = b"b" * 3000
    with RawConn(gw.port, timeout=15) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", str(len(body)))]))
        for i in range(0, len(body), 500):
            c.send(body[i:i + 500])
            time.sleep(0.3)
            if i + 500 < len(body):
                # the body is not whole yet: nothing has reached the upstream
                assert upstream_saw(u) == (0, 0), upstream_saw(u)
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_len"] == len(body)
    (e,) = gw.wait_log(route="upload")
    assert e["status"] == 200 and e["bytes_in"] == len(body)


def test_chunked_body_is_buffered_and_forwarded_with_its_trailers(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(buffered_config(u))
    data = bytes(range(256)) * 20
    with RawConn(gw.port, timeout=10) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]))
        c.send(chunked_body(data, chunk=700, trailers=[("X-Sum", "42")])[:-5])
        time.sleep(0.4)
        assert upstream_saw(u)[0] == 0  # the last chunk has not come
        c.send(chunked_body(data, chunk=700, trailers=[("X-Sum", "42")])[-5:])
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_len"] == len(data)


def test_body_larger_than_the_buffer_is_streamed_after_its_first_bytes(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(buffered_config(u, size="4k"))
    body = b"L" * 200000
    with RawConn(gw.port, timeout=10) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", str(len(body)))], body=body))
        r = c.read_response()
    assert r.status == 200 and r.json()["body_len"] == len(body)


def test_route_without_request_buffering_still_streams(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(buffered_config(u))
    with RawConn(gw.port, timeout=10) as c:
        c.send(build_request("POST", "/stream", [("Content-Length", "1000")]))
        c.send(b"s" * 10)
        # the other route streams: the upstream has the request before the body is whole
        deadline = time.monotonic() + 5
        while upstream_saw(u)[1] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream_saw(u)[1] == 1
        c.send(b"s" * 990)
        r = c.read_response()
    assert r.status == 200


def test_trickling_buffered_body_below_the_minimum_rate_gets_408(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(buffered_config(u, limits={"client_body_timeout": "1s", "client_body_min_rate": "1k"}))
    r = trickle_h1(gw.port, "/echo", total=5000, every=0.3)
    assert r.status == 408, r
    gw.wait_log(reason="client_body_too_slow", route="upload")
    assert upstream_saw(u)[0] == 0  # the upstream never saw it


def test_h2_trickled_body_is_buffered_too(sluice, upstreams):
    (u,) = upstreams(1)
    cfg = h2c_config(u.address)
    cfg["routes"] = [{"name": "upload", "match": {"path_prefix": "/"}, "service": "web", "request_buffering": "64k"}]
    gw = sluice(cfg)
    c = RawH2(gw.port)
    block = hpack.Encoder().encode([(":method", "POST", True), (":path", "/echo", True), (":scheme", "http", True),
                                    (":authority", "a.test", True)], huffman=False)
    c.send(frame(0x1, 0x4, 1, block))
    for _ in range(4):
        c.send(frame(0x0, 0, 1, b"p" * 100))
        time.sleep(0.25)
        assert upstream_saw(u)[0] == 0
    c.send(frame(0x0, 0x1, 1, b"end"))
    got = c.frames(ended(1), timeout=5)
    assert any(f != "closed" and f[0] == 0x1 and f[2] == 1 for f in got), got[-3:]
    c.close()
    (e,) = gw.wait_log(route="upload", protocol="HTTP/2.0")
    assert e["status"] == 200 and e["bytes_in"] == 403


def test_request_buffering_is_checked(tmp_path, upstreams):
    (u,) = upstreams(1)
    for value, words in (('"17m"', "request_buffering"), ('"lots"', "request_buffering"), ("true", "request_buffering")):
        cfg = config_to_lua(buffered_config(u)).replace('request_buffering = "64k"', "request_buffering = " + value)
        p = tmp_path / "bad.lua"
        p.write_text(cfg)
        r = run_sluice(["check", "-c", str(p)])
        assert r.returncode == 1, (value, r.stdout, r.stderr)
        assert "routes[1].request_buffering" in r.stderr, (value, r.stderr)
