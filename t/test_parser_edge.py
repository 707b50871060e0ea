"""Strict HTTP/1.1 request parsing: every malformed or ambiguous request gets the expected
status, a small text/plain error body with Content-Length and Connection: close, the
connection is closed, and nothing reaches the upstream. Also client timeouts."""

import time

import pytest

from conftest import ConnectionClosed, RawConn, build_request, chunked_body, raw_exchange

H = b"Host: x.test\r\n"


def assert_rejected(gw, raw, statuses, upstream_untouched=True):
    if isinstance(statuses, int):
        statuses = (statuses,)
    resp, closed = raw_exchange(gw.port, raw)
    assert resp is not None, "connection closed without a response (expected %s)" % (statuses,)
    assert resp.status in statuses, "expected %s, got %r" % (statuses, resp)
    assert "close" in resp.connection_tokens(), "error response without Connection: close: %r" % resp
    ctype = resp.header("content-type") or ""
    assert ctype.startswith("text/plain"), resp
    assert resp.header("content-length") is not None and int(resp.header("content-length")) == len(resp.body)
    assert 0 < len(resp.body) <= 1024, resp
    assert closed, "connection not closed after %d" % resp.status
    if upstream_untouched:
        for u in gw.upstreams:
            assert u.stats()["requests"] == 0, "a rejected request reached the upstream"
    return resp


@pytest.fixture
def gw(gateway):
    return gateway(1, limits={"body_bytes": "1k"})


# (id, raw request, accepted statuses)
MALFORMED = [
    ("cl_and_te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_and_cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("dup_cl_differ", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl_list_differ", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    ("cl_not_number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    ("cl_negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl_plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("unknown_te", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: x-custom\r\n\r\n", 501),
    ("unknown_te_then_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: x-custom, chunked\r\n\r\n0\r\n\r\n",
     501),
    ("te_xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", (400, 501)),
    ("te_chunked_twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
     (400, 501)),
    ("te_chunked_then_identity", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", (400, 501)),
    ("te_vtab", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", (400, 501)),
    ("te_quoted", b"POST / HTTP/1.1\r\n" + H + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n', (400, 501)),
    ("te_space_before_colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_folded", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\r\n b\r\n\r\n", 400),
    ("obs_fold_tab", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\r\n\tb\r\n\r\n", 400),
    ("leading_space_first_header", b"GET / HTTP/1.1\r\n Host: x.test\r\n\r\n", 400),
    ("bare_cr_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\rb\r\n\r\n", 400),
    ("bare_cr_line_end", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\r\rX-Bar: b\r\n\r\n", 400),
    ("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: x.test\n\n", 400),
    ("bare_lf_header", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\nX-Bar: b\r\n\r\n", 400),
    ("bare_lf_request_line", b"GET / HTTP/1.1\n" + H + b"\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\x00b\r\n\r\n", 400),
    ("nul_in_name", b"GET / HTTP/1.1\r\n" + H + b"X-F\x00oo: ab\r\n\r\n", 400),
    ("space_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-Foo : a\r\n\r\n", 400),
    ("bad_header_name_char", b"GET / HTTP/1.1\r\n" + H + b"X@Foo: a\r\n\r\n", 400),
    ("header_without_colon", b"GET / HTTP/1.1\r\n" + H + b"X-Foo a\r\n\r\n", 400),
    ("bad_method_token", b"G;ET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("missing_host", b"GET / HTTP/1.1\r\nX-Foo: a\r\n\r\n", 400),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    ("version_3", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("version_2", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("version_garbage", b"GET / HTTP/1.x\r\n" + H + b"\r\n", (400, 505)),
    ("version_lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", (400, 505)),
    ("bad_chunk_size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     400),
    ("chunk_size_overflow", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000001\r\nhello\r\n0\r\n\r\n", (400, 413)),
]


@pytest.mark.parametrize("raw,statuses", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_request_rejected(gw, raw, statuses):
    untouched = not raw.startswith(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
    assert_rejected(gw, raw, statuses, upstream_untouched=untouched)


def test_smuggling_attempt_never_reaches_upstream(gw):
    smuggled = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
           + body)
    assert_rejected(gw, raw, 400)
    assert gw.upstreams[0].stats()["requests"] == 0


def test_rejected_request_is_logged(gw):
    assert_rejected(gw, b"GET / HTTP/1.1\r\n" + H + b"X-Foo : a\r\n\r\n", 400)
    e = gw.wait_log(status=400)[0]
    assert e["reason"] == "bad_request"


def test_request_line_too_long_default_limit(gateway):
    gw = gateway(1)
    assert_rejected(gw, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414)


def test_request_line_just_under_default_limit(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        r = c.request("GET", "/" + "a" * 8000)
    assert r.status == 200


def test_request_line_limit_configured(gateway):
    gw = gateway(1, limits={"request_line_bytes": "1k"})
    assert_rejected(gw, b"GET /" + b"b" * 1500 + b" HTTP/1.1\r\n" + H + b"\r\n", 414)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/" + "b" * 900).status == 200


def test_header_block_too_large(gateway):
    gw = gateway(1, limits={"header_bytes": "4k"})
    assert_rejected(gw, b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 5000 + b"\r\n\r\n", 431)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"w" * 300) for i in range(20))
    assert_rejected(gw, b"GET / HTTP/1.1\r\n" + H + many + b"\r\n", 431)


def test_header_block_default_limit(gateway):
    gw = gateway(1)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"w" * 1000) for i in range(20))
    assert_rejected(gw, b"GET / HTTP/1.1\r\n" + H + many + b"\r\n", 431)
    ok = [("X-H%d" % i, "w" * 1000) for i in range(12)]
    with RawConn(gw.port) as c:
        assert c.request("GET", "/", headers=ok).status == 200


def test_too_many_headers(gateway):
    gw = gateway(1, limits={"max_headers": 10})
    hs = b"".join(b"X-H%d: 1\r\n" % i for i in range(15))
    assert_rejected(gw, b"GET / HTTP/1.1\r\n" + H + hs + b"\r\n", 431)


def test_too_many_headers_default_limit(gateway):
    gw = gateway(1)
    hs = b"".join(b"X-H%d: 1\r\n" % i for i in range(110))
    assert_rejected(gw, b"GET / HTTP/1.1\r\n" + H + hs + b"\r\n", 431)
    with RawConn(gw.port) as c:  # 100 fields including Host is within the default
        assert c.request("GET", "/", headers=[("X-H%d" % i, "1") for i in range(99)]).status == 200


def test_content_length_over_body_limit(gw):
    assert_rejected(gw, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2000\r\n\r\n", 413)
    e = gw.wait_log(status=413)[0]
    assert e["reason"] == "request_too_large"


def test_content_length_at_body_limit_ok(gw):
    with RawConn(gw.port) as c:
        r = c.request("POST", "/", body=b"q" * 1024)
    assert r.status == 200 and r.json()["body_len"] == 1024


def test_chunked_body_over_limit(gw):
    raw = build_request("POST", "/", headers=[("Transfer-Encoding", "chunked")]) + chunked_body(b"c" * 3000, 500)
    resp, closed = raw_exchange(gw.port, raw)
    assert resp is not None and resp.status == 413, resp
    assert closed


def test_chunked_body_over_limit_after_response_started(gateway):
    """The upstream answers before the request body is complete; then the body exceeds
    body_bytes: no second response is possible, so the client connection must be closed."""
    gw = gateway(1, limits={"body_bytes": "2k"})
    with RawConn(gw.port) as c:
        c.send(build_request("POST", "/early", headers=[("Transfer-Encoding", "chunked")]))
        c.send(b"100\r\n" + b"x" * 256 + b"\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json() == {"early": True}
        for _ in range(20):
            try:
                c.send(b"100\r\n" + b"x" * 256 + b"\r\n")
            except OSError:
                break
            time.sleep(0.01)
        assert c.is_closed(3), "connection kept open after the chunked body exceeded body_bytes"


def test_case_insensitive_chunked_and_ows_accepted(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\nX-Tab:\tv\t\r\nX-Empty:\r\n\r\n"
               + chunked_body(b"hello", 2))
        r = c.read_response()
        assert r.status == 200
        e = r.json()
        assert e["body_len"] == 5
        assert ["X-Tab", "v"] in e["headers"]


def test_chunk_extensions_accepted(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(build_request("POST", "/", headers=[("Transfer-Encoding", "chunked")])
               + b"5;name=value\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.json()["body_len"] == 5


def test_client_header_timeout(gateway):
    gw = gateway(1, limits={"client_header_timeout": "1s"})
    with RawConn(gw.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x.test\r\n")
        t0 = time.monotonic()
        assert c.is_closed(4), "partial head held open past client_header_timeout"
        assert time.monotonic() - t0 >= 0.5


def test_client_header_timeout_slowloris(gateway):
    gw = gateway(1, limits={"client_header_timeout": "1s"})
    with RawConn(gw.port) as c:
        t0 = time.monotonic()
        closed = False
        for i in range(40):
            try:
                c.send(b"X-S%d: 1\r\n" % i if i else b"GET / HTTP/1.1\r\n")
            except OSError:
                closed = True
                break
            if c.is_closed(0.15):
                closed = True
                break
        assert closed, "a client trickling header bytes kept the connection past client_header_timeout"
        assert time.monotonic() - t0 < 4


def test_keepalive_timeout(gateway):
    gw = gateway(1, limits={"keepalive_timeout": "1s"})
    with RawConn(gw.port) as c:
        assert c.request("GET", "/").status == 200
        t0 = time.monotonic()
        assert c.is_closed(4), "idle keep-alive connection not closed after keepalive_timeout"
        assert time.monotonic() - t0 >= 0.5


def test_client_body_timeout(gateway):
    gw = gateway(1, limits={"client_body_timeout": "1s"})
    with RawConn(gw.port) as c:
        c.send(build_request("POST", "/", headers=[("Content-Length", "100")]) + b"x" * 10)
        try:
            r = c.read_response(timeout=4)
            assert r.status in (408, 400, 504), r
        except ConnectionClosed:
            pass
        assert c.is_closed(3)
    e = gw.wait_log(pred=lambda e: e["reason"] == "client_timeout")[0]
    assert e["method"] == "POST"
