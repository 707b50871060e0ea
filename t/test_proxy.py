"""Proxying: forwarded headers, request ids, hop-by-hop headers, keep-alive, pipelining,
HTTP/1.0, bodies both ways (content-length, chunked, trailers, close-delimited), 100-continue,
upstream keep-alive reuse and the idle-close race."""

import concurrent.futures
import re
import time

import pytest

from conftest import (RawConn, build_request, chunked_body, curl, header_values, http_client, joined,
                      pattern_bytes, sha256, wait_until)

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def echo_headers(resp):
    return [(k, v) for k, v in resp.json()["headers"]]


def test_basic_get_via_curl(gateway):
    gw = gateway(1, ["A"])
    r = curl(["-i", gw.url("/hello?a=1&b=2")])
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    import json
    e = json.loads(body)
    assert e["server"] == "A" and e["method"] == "GET" and e["target"] == "/hello?a=1&b=2"


def test_forwarded_headers_added(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/fwd", host="www.example.test")
    assert r.status == 200
    h = echo_headers(r)
    assert joined(h, "x-forwarded-for") == "127.0.0.1"
    assert joined(h, "x-forwarded-proto") == "http"
    assert joined(h, "x-forwarded-host") == "www.example.test"
    assert joined(h, "via") == "1.1 sluice"
    rid = header_values(h, "x-request-id")
    assert len(rid) == 1 and HEX32.match(rid[0]), rid
    assert r.header_all("x-request-id") == rid, "response x-request-id must equal the one sent upstream"


def test_forwarded_for_and_via_appended(gateway):
    gw = gateway(1)
    with RawConn(gw.port, source_ip="127.0.0.7") as c:
        r = c.request("GET", "/", headers=[("X-Forwarded-For", "10.0.0.1, 10.0.0.2"), ("Via", "1.1 edge")])
    h = echo_headers(r)
    assert joined(h, "x-forwarded-for") == "10.0.0.1, 10.0.0.2, 127.0.0.7"
    assert joined(h, "via") == "1.1 edge, 1.1 sluice"


def test_forwarded_proto_and_host_not_spoofable(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/", host="real.test",
                      headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.test")])
    h = echo_headers(r)
    assert joined(h, "x-forwarded-proto") == "http"
    assert joined(h, "x-forwarded-host") == "real.test"


def test_valid_request_id_kept(gateway):
    gw = gateway(1)
    for rid in ("abc-123_X.y:z", "a", "A" * 64):
        with RawConn(gw.port) as c:
            r = c.request("GET", "/", headers=[("X-Request-Id", rid)])
        assert header_values(echo_headers(r), "x-request-id") == [rid]
        assert r.header("x-request-id") == rid


def test_invalid_request_id_replaced(gateway):
    gw = gateway(1)
    for rid in ("A" * 65, "has space", "semi;colon", "slash/x", ""):
        with RawConn(gw.port) as c:
            r = c.request("GET", "/", headers=[("X-Request-Id", rid)])
        assert r.status == 200
        sent = header_values(echo_headers(r), "x-request-id")
        assert len(sent) == 1 and HEX32.match(sent[0]), (rid, sent)
        assert r.header("x-request-id") == sent[0]


def test_request_ids_unique(gateway):
    gw = gateway(1)
    ids = set()
    with http_client(gw) as c:
        for _ in range(50):
            ids.add(c.get("/").headers["x-request-id"])
    assert len(ids) == 50


def test_hop_by_hop_request_headers_removed(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/", headers=[("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "1"),
                                           ("Keep-Alive", "timeout=5"), ("X-Normal", "stays")])
    names = {k.lower() for k, _ in echo_headers(r)}
    assert "x-secret-hop" not in names
    assert "keep-alive" not in names
    assert "x-normal" in names
    for v in header_values(echo_headers(r), "connection"):
        assert "x-secret-hop" not in v.lower()


def test_hop_by_hop_response_headers_removed(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/hop")
        assert r.status == 200
        names = {k.lower() for k, _ in r.headers}
        assert "x-hop-resp" not in names and "keep-alive" not in names
        assert r.header("x-end-to-end") == "yes"
        assert "x-hop-resp" not in r.connection_tokens()
        r2 = c.request("GET", "/again")  # connection still usable
        assert r2.status == 200


def test_keepalive_many_requests_one_connection(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        for i in range(20):
            r = c.request("GET", "/k%d" % i)
            assert r.status == 200 and r.json()["target"] == "/k%d" % i
            assert "close" not in r.connection_tokens()


def test_pipelined_requests_in_one_write(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(build_request("GET", "/p1") + build_request("POST", "/p2", body=b"x" * 100)
               + build_request("GET", "/p3"))
        rs = [c.read_response() for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 200]
    assert [r.json()["target"] for r in rs] == ["/p1", "/p2", "/p3"]
    assert rs[1].json()["body_len"] == 100


def test_pipelined_many_with_slow_first(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(build_request("GET", "/delay/300") + b"".join(build_request("GET", "/q%d" % i) for i in range(10)))
        rs = [c.read_response() for _ in range(11)]
    assert [r.json()["target"] for r in rs] == ["/delay/300"] + ["/q%d" % i for i in range(10)]


def test_pipelined_head_and_get(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(build_request("HEAD", "/bytes/1000") + build_request("GET", "/bytes/10"))
        r1 = c.read_response(method="HEAD")
        r2 = c.read_response()
    assert r1.status == 200 and r1.header("content-length") == "1000" and r1.body == b""
    assert r2.body == pattern_bytes(10)


def test_http10_closes_by_default(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(build_request("GET", "/ten", version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200
        assert c.is_closed(3), "HTTP/1.0 connection without keep-alive must be closed"
    h = echo_headers(r)
    assert joined(h, "via") == "1.0 sluice"


def test_http10_without_host_is_fine(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(b"GET /nohost HTTP/1.0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200


def test_http10_keepalive(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r1 = c.request("GET", "/a", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
        assert r1.status == 200 and "keep-alive" in r1.connection_tokens()
        assert r1.header("content-length") is not None, "HTTP/1.0 keep-alive response needs a length"
        r2 = c.request("GET", "/b", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
        assert r2.status == 200 and r2.json()["target"] == "/b"
        r3 = c.request("GET", "/c", version="HTTP/1.0")
        assert r3.status == 200
        assert c.is_closed(3)


def test_http10_client_gets_no_chunked_response(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(build_request("GET", "/chunked/5000", version="HTTP/1.0"))
        r = c.read_response()
        assert not r.chunked, "chunked response to an HTTP/1.0 client"
        assert r.body == pattern_bytes(5000)


def test_http11_client_connection_close(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/", headers=[("Connection", "close")])
        assert r.status == 200 and "close" in r.connection_tokens()
        assert c.is_closed(3)


def test_connection_close_with_nothing_unread_closes_the_socket_at_once(gateway):
    """The client sent its whole request and nothing after it: once the response is out,
    the socket is closed, not half-closed and kept reading (nginx decides the same way).
    A byte sent afterwards meets a closed socket and the kernel answers with a reset
    (a lingering socket would read and drop it)."""
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/", headers=[("Connection", "close")])
        assert r.status == 200
        assert c.is_closed(3)
        c.sock.sendall(b"x")  # the reset comes back at once; the next send fails
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(100):
                time.sleep(0.01)
                c.sock.sendall(b"y")


def test_connection_close_with_unread_body_lingers(gateway):
    """A response sent before the request body was read (413 here): the socket is
    half-closed and what the client still sends is read and dropped, so no reset
    destroys the response before the client reads it."""
    gw = gateway(1, limits={"body_bytes": "2k"})
    with RawConn(gw.port) as c:
        c.send(build_request("POST", "/", headers=[("Content-Length", "200000")]))
        r = c.read_response()
        assert r.status == 413
        for _ in range(50):  # 200 KB more: each send succeeds, none meets a reset
            c.sock.sendall(b"x" * 4000)
            time.sleep(0.002)
        assert c.is_closed(3)


def test_post_content_length_body(gateway):
    gw = gateway(1)
    data = pattern_bytes(300000)
    with http_client(gw) as c:
        r = c.post("/upload", content=data)
    e = r.json()
    assert e["body_len"] == len(data) and e["body_sha256"] == sha256(data)


def test_chunked_request_body_dechunked_and_rechunked(gateway):
    gw = gateway(1)
    data = pattern_bytes(200000)
    with RawConn(gw.port) as c:
        c.send(build_request("POST", "/up", headers=[("Transfer-Encoding", "chunked")]) + chunked_body(data, 4999))
        r = c.read_response()
    e = r.json()
    assert e["body_len"] == len(data) and e["body_sha256"] == sha256(data)
    te = joined(e["headers"], "transfer-encoding")
    cl = joined(e["headers"], "content-length")
    assert (te is None) != (cl is None), "upstream got TE=%r CL=%r" % (te, cl)


def test_chunked_request_trailers_forwarded(gateway):
    gw = gateway(1)
    data = b"hello trailers"
    with RawConn(gw.port) as c:
        c.send(build_request("POST", "/tr", headers=[("Transfer-Encoding", "chunked"), ("Trailer", "x-client-sum")])
               + chunked_body(data, 5, trailers=[("X-Client-Sum", "abc123")]))
        r = c.read_response()
    e = r.json()
    assert e["body_sha256"] == sha256(data)
    assert ["x-client-sum", "abc123"] in [[k.lower(), v] for k, v in e["trailers"]]


def test_chunked_request_via_curl(gateway, tmp_path):
    gw = gateway(1)
    f = tmp_path / "up.bin"
    data = pattern_bytes(1000000)
    f.write_bytes(data)
    r = curl(["-H", "Transfer-Encoding: chunked", "--data-binary", "@%s" % f, gw.url("/curl-up")])
    assert r.returncode == 0, r.stderr
    import json
    e = json.loads(r.stdout)
    assert e["body_len"] == len(data) and e["body_sha256"] == sha256(data)


def test_chunked_response_and_trailer(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/chunked/100000?chunk=777&trailer=1", headers=[("TE", "trailers")])
        assert r.status == 200
        assert r.body == pattern_bytes(100000)
        assert r.chunked, "a chunked upstream response with trailers must reach an HTTP/1.1 client chunked"
        t = {k.lower(): v for k, v in r.trailers}
        assert t.get("x-trailer") == "yes", r.trailers
        assert t.get("x-body-sha256") == sha256(pattern_bytes(100000))
        r2 = c.request("GET", "/chunked/10")  # framing intact: the next response parses
        assert r2.body == pattern_bytes(10)


def test_chunked_response_via_httpx(gateway):
    gw = gateway(1)
    with http_client(gw) as c:
        r = c.get("/chunked/300000")
    assert r.status_code == 200 and r.content == pattern_bytes(300000)


def test_close_delimited_upstream_response(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/close/50000")
        assert r.status == 200 and r.body == pattern_bytes(50000)
        if not r.close_delimited:  # sluice re-framed it: the client connection stays usable
            r2 = c.request("GET", "/next")
            assert r2.status == 200


def test_large_content_length_response(gateway):
    gw = gateway(1)
    with http_client(gw) as c:
        r = c.get("/bytes/20000000")
    assert r.status_code == 200 and len(r.content) == 20000000
    assert sha256(r.content) == sha256(pattern_bytes(20000000))


def test_status_codes_passed_through(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        for st in (201, 301, 404, 418, 500, 503):
            r = c.request("GET", "/status/%d" % st)
            assert r.status == st and r.body == b"status %d\n" % st
        r = c.request("GET", "/status/204")
        assert r.status == 204 and r.body == b""
        r = c.request("GET", "/status/304")
        assert r.status == 304
        r = c.request("GET", "/after")
        assert r.status == 200


def test_expect_100_continue(gateway):
    gw = gateway(1)
    data = pattern_bytes(5000)
    with RawConn(gw.port) as c:
        c.send(build_request("POST", "/exp", headers=[("Expect", "100-continue"), ("Content-Length", str(len(data)))]))
        interim = c.read_response(timeout=3, keep_interim=True)
        assert interim.status == 100, "expected 100 Continue, got %r" % interim
        c.send(data)
        r = c.read_response()
    assert r.status == 200
    e = r.json()
    assert e["body_len"] == len(data) and e["body_sha256"] == sha256(data)
    assert joined(e["headers"], "expect") is None, "Expect must not be forwarded upstream"
    assert e["expect_100"] is False


def test_expect_100_continue_curl_does_not_wait(gateway, tmp_path):
    gw = gateway(1)
    f = tmp_path / "b.bin"
    f.write_bytes(pattern_bytes(200000))
    t0 = time.monotonic()
    r = curl(["--expect100-timeout", "5", "-H", "Expect: 100-continue", "--data-binary", "@%s" % f,
              "-o", "/dev/null", "-w", "%{http_code}", gw.url("/exp")])
    assert r.stdout == b"200"
    assert time.monotonic() - t0 < 3, "curl waited for 100 Continue"


def test_expect_100_not_sent_when_refused(gateway):
    gw = gateway(1, routes=[{"match": {"path": "/only"}, "service": "web"}], limits={"body_bytes": "1k"})
    with RawConn(gw.port) as c:  # no route: 404 straight away, no 100
        c.send(build_request("POST", "/none", headers=[("Expect", "100-continue"), ("Content-Length", "10")]))
        r = c.read_response(timeout=3, keep_interim=True)
        assert r.status == 404
    with RawConn(gw.port) as c:  # too large: 413 straight away, no 100
        c.send(build_request("POST", "/only", headers=[("Expect", "100-continue"), ("Content-Length", "5000")]))
        r = c.read_response(timeout=3, keep_interim=True)
        assert r.status == 413


def test_upstream_keepalive_reuse_one_client(gateway):
    gw = gateway(1)
    (u,) = gw.upstreams
    with http_client(gw) as c:
        for _ in range(100):
            assert c.get("/ka").status_code == 200
    st = u.stats()
    assert st["requests"] == 100
    assert st["connections"] <= 2, st


def test_upstream_keepalive_reuse_many_clients(gateway):
    gw = gateway(1)
    (u,) = gw.upstreams
    for i in range(100):
        with RawConn(gw.port) as c:
            assert c.request("GET", "/n%d" % i, headers=[("Connection", "close")]).status == 200
    st = u.stats()
    assert st["requests"] == 100
    assert st["connections"] <= 4, "upstream connections are not reused across client connections: %r" % st


def test_upstream_idle_closed_connection_not_reused(gateway):
    gw = gateway(1, workers=1)
    with RawConn(gw.port) as c:
        for i in range(5):
            r = c.request("GET", "/close-after")
            assert r.status == 200
            time.sleep(0.2)
            r = c.request("GET", "/after-%d" % i)
            assert r.status == 200, "request after the upstream closed its idle connection: %r" % r


def test_upstream_close_race_retried(gateway):
    """The upstream closes right after answering; the next request comes at once and may
    be written to the dead connection: sluice must retry it on a fresh one."""
    gw = gateway(1, workers=1)
    with RawConn(gw.port) as c:
        for i in range(30):
            r = c.request("GET", "/close-after?delay=%d" % (i % 3))
            assert r.status == 200
            r = c.request("GET", "/race-%d" % i)
            assert r.status == 200, "iteration %d: %r" % (i, r)


def test_upstream_idle_timeout_closes_pooled_connection(gateway):
    gw = gateway(1, workers=1, pool={"keepalive": {"idle": 8, "idle_timeout": "500ms"}})
    (u,) = gw.upstreams
    with RawConn(gw.port) as c:
        assert c.request("GET", "/").status == 200
    assert u.stats()["open"] == 1
    wait_until(lambda: u.stats()["open"] == 0, timeout=4, what="sluice closing the idle upstream connection")


def test_upstream_idle_limit(gateway):
    gw = gateway(1, workers=1, pool={"keepalive": {"idle": 1, "idle_timeout": "60s"}})
    (u,) = gw.upstreams

    def one(i):
        with RawConn(gw.port) as c:
            return c.request("GET", "/delay/400").status

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        assert list(ex.map(one, range(6))) == [200] * 6
    st = u.stats()
    assert st["connections"] >= 2, st
    wait_until(lambda: u.stats()["open"] <= 1, timeout=3, what="idle connections trimmed to keepalive.idle=1")


def test_concurrent_clients(gateway):
    gw = gateway(2)

    def worker(i):
        with RawConn(gw.port) as c:
            for j in range(20):
                r = c.request("POST", "/c%d/%d" % (i, j), body=b"z" * (i * 10 + j))
                if r.status != 200 or r.json()["body_len"] != i * 10 + j:
                    return False
        return True

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        assert all(ex.map(worker, range(20)))


def test_slow_upstream_streamed_not_buffered(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        t0 = time.monotonic()
        c.send(build_request("GET", "/slow/8000?rate=4000"))
        c.read_head()
        first = c.read_some(timeout=3)
        t_first = time.monotonic() - t0
    assert first, "no body bytes"
    assert t_first < 1.2, "first body bytes after %.2fs: response was buffered" % t_first


def test_absolute_form_target(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(b"GET http://abs.example.test/p?q=1 HTTP/1.1\r\nHost: abs.example.test\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    e = r.json()
    assert e["target"] in ("/p?q=1", "http://abs.example.test/p?q=1")
