"""Protocol edges found by held-out suites (issue 11 item 7).

- Trailer sections: fields RFC 9110 6.5.1 says cannot be trailers (framing, routing, request
  modifiers, authentication, response control data, content processing, hop-by-hop, and the
  forwarding fields the gateway sets) are dropped in both directions, over HTTP/1.1 and h2,
  and counted; other trailer fields pass.
"""

import json
import socket
import threading
import time

import h2.events
import pytest

from conftest import RawConn, base_config, build_request, chunked_body, free_port
from test_h2 import H2Client, h2c_gw  # noqa: F401  (fixture)

# Trailer fields a client or upstream may try to smuggle past the head. Each must not reach the
# other side; x-checksum (an ordinary trailer) must.
FORBIDDEN = [
    ("Content-Length", "5"),
    ("Transfer-Encoding", "chunked"),
    ("Host", "evil.test"),
    ("Connection", "close"),
    ("TE", "trailers"),
    ("Trailer", "x-checksum"),
    ("Authorization", "Bearer stolen"),
    ("Cookie", "session=evil"),
    ("Set-Cookie", "session=evil"),
    ("Cache-Control", "no-store"),
    ("Max-Forwards", "0"),
    ("If-Match", "*"),
    ("Range", "bytes=0-1"),
    ("Content-Type", "text/evil"),
    ("Content-Encoding", "gzip"),
    ("Content-Range", "bytes 0-1/2"),
    ("Location", "http://evil.test/"),
    ("Retry-After", "1"),
    ("X-Forwarded-For", "10.6.6.6"),
    ("Via", "1.1 evil"),
]
# h2 forbids connection-specific fields outright (nghttp2 resets the stream), and nghttp2
# checks a content-length trailer against the body (8 bytes below), so over h2 these are the
# ones that could get through
H2_FORBIDDEN = [(k.lower(), "8" if k == "Content-Length" else v) for k, v in FORBIDDEN
                if k.lower() not in ("transfer-encoding", "connection", "te", "keep-alive", "upgrade")]
ALLOWED = ("X-Checksum", "sha256=abc")


def names(fields):
    return sorted(k.lower() for k, _ in fields)


def h2c_config(upstream_address):
    cfg = base_config(free_port(), [upstream_address])
    cfg["listeners"][0]["h2c"] = True
    return cfg


def dropped_total(gw):
    """Sum of the workers' "HTTP trailers" fields_dropped counts (logged at exit)."""
    gw.stop()
    total = 0
    for ln in gw.stderr().splitlines():
        if '"HTTP trailers"' in ln:
            total += json.loads(ln)["fields_dropped"]
    return total


# ---------------------------------------------------------------------------
# request trailers: client -> upstream
# ---------------------------------------------------------------------------

def test_h1_request_trailers_framing_and_routing_fields_are_dropped(gateway):
    gw = gateway()
    with RawConn(gw.port) as c:
        body = chunked_body(b"hello world", chunk=4, trailers=[ALLOWED] + FORBIDDEN)
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + body)
        r = c.read_response()
        assert r.status == 200, r
        echo = r.json()
        assert echo["body_len"] == 11
        assert echo["trailers"] == [list(ALLOWED)]
        # the head the upstream saw is the gateway's, untouched by the trailer
        hdrs = {k.lower(): v for k, v in echo["headers"]}
        assert hdrs["host"] == "example.test"
        assert "authorization" not in hdrs
        # a dropped "Connection: close" trailer does not close the client connection either
        r = c.request("GET", "/again")
        assert r.status == 200
    assert dropped_total(gw) == len(FORBIDDEN)


def test_h1_request_with_only_forbidden_trailers_keeps_its_body(gateway):
    gw = gateway()
    with RawConn(gw.port) as c:
        body = chunked_body(b"x" * 3000, chunk=1000, trailers=[("Content-Length", "1"), ("Host", "evil")])
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + body)
        r = c.read_response()
        assert r.status == 200
        echo = r.json()
        assert echo["body_len"] == 3000 and echo["trailers"] == []
    assert dropped_total(gw) == 2


def h2_post_with_trailers(c, path, body, trailers):
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"),
                              (":authority", "a.test")])
    c.conn.send_data(sid, body)
    c.conn.send_headers(sid, trailers, end_stream=True)
    c.flush()
    return sid


def h2_response(c, sid):
    evs = c.events_until(lambda g: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                                       and e.stream_id == sid for e in g))
    resp = [e for e in evs if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid]
    assert resp, evs
    data = b"".join(e.data for e in evs if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
    trailers = [t for e in evs if isinstance(e, h2.events.TrailersReceived) and e.stream_id == sid
                for t in e.headers]
    return dict(resp[0].headers), data, trailers


def test_h2_request_trailers_framing_and_routing_fields_are_dropped(h2c_gw):
    c = H2Client(h2c_gw.port)
    sid = h2_post_with_trailers(c, "/echo", b"hello h2", [(ALLOWED[0].lower(), ALLOWED[1])] + H2_FORBIDDEN)
    head, data, _ = h2_response(c, sid)
    assert head[":status"] == "200"
    echo = json.loads(data)
    assert echo["body_len"] == 8
    assert echo["trailers"] == [[ALLOWED[0].lower(), ALLOWED[1]]]
    hdrs = {k.lower(): v for k, v in echo["headers"]}
    assert hdrs["host"] == "a.test"
    c.close()
    assert dropped_total(h2c_gw) == len(H2_FORBIDDEN)


# ---------------------------------------------------------------------------
# response trailers: upstream -> client
# ---------------------------------------------------------------------------

class TrailerUpstream:
    """An HTTP/1.1 origin whose chunked responses end with the given trailer fields."""

    def __init__(self, trailers):
        self.trailers = trailers
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        buf = b""
        conn.settimeout(5)
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                _, _, buf = buf.partition(b"\r\n\r\n")  # requests here carry no body
                head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: x-checksum\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
                conn.sendall(head + chunked_body(b"trailered body", chunk=5, trailers=self.trailers))
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def trailer_upstream():
    started = []

    def start(trailers):
        u = TrailerUpstream(trailers)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


def test_h1_response_trailers_framing_and_control_fields_are_dropped(sluice, trailer_upstream):
    u = trailer_upstream([ALLOWED] + FORBIDDEN)
    port = free_port()
    gw = sluice(base_config(port, [u.address]))
    with RawConn(gw.port) as c:
        for _ in range(2):
            r = c.request("GET", "/t", headers=[("TE", "trailers")])
            assert r.status == 200 and r.body == b"trailered body"
            assert r.trailers == [ALLOWED], r.trailers
            assert r.header("content-type") == "text/plain"  # the head's own fields stay
        assert not c.is_closed(timeout=0.3)  # a "Connection: close" trailer closed nothing
    assert dropped_total(gw) == 2 * len(FORBIDDEN)


def test_h2_response_trailers_framing_and_control_fields_are_dropped(sluice, trailer_upstream):
    gw = sluice(h2c_config(trailer_upstream([ALLOWED] + FORBIDDEN).address))
    c = H2Client(gw.port)
    sid = c.get("/t")
    head, data, trailers = h2_response(c, sid)
    assert head[":status"] == "200" and data == b"trailered body"
    assert trailers == [(ALLOWED[0].lower(), ALLOWED[1])], trailers
    c.close()
    assert dropped_total(gw) == len(FORBIDDEN)
