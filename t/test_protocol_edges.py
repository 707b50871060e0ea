"""Protocol edges found by held-out suites (issue 11 item 7, issue 17's uncounted h2 glitches).

- Trailer sections: fields RFC 9110 6.5.1 says cannot be trailers (framing, routing, request
  modifiers, authentication, response control data, content processing, hop-by-hop, and the
  forwarding fields the gateway sets) are dropped in both directions, over HTTP/1.1 and h2,
  and counted; other trailer fields pass.
- HTTP/2 stream ids: a HEADERS frame that would open a stream with an id not above every id
  used before ends the connection with GOAWAY PROTOCOL_ERROR.
- HTTP/2 limits: streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused (REFUSED_STREAM),
  a CONTINUATION flood is named `continuation_flood` whichever limit it hits first, and
  requests nghttp2 rejects itself (no :path) count as glitches.
"""

import json
import socket
import threading
import time

import h2.events
import hpack
import pytest

from conftest import RawConn, base_config, build_request, chunked_body, free_port
from test_h2 import PREFACE, H2Client, frame, goaway_code, h2c_gw  # noqa: F401  (fixture)

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


# ---------------------------------------------------------------------------
# HTTP/2 stream ids (RFC 9113 5.1.1)
# ---------------------------------------------------------------------------

def raw_get_block(c, path="/"):
    """A header block that leaves the HPACK tables alone (never-indexed literals)."""
    enc = hpack.Encoder()
    return enc.encode([(":method", "GET", True), (":path", path, True), (":scheme", "http", True),
                       (":authority", "a.test", True)], huffman=False)


def finish(c, sid):
    evs = c.events_until(lambda g: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in g))
    assert any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid for e in evs), evs


def assert_goaway(c, gw, code, reason):
    evs = c.events_until(lambda g: "closed" in g or goaway_code(g) is not None)
    assert goaway_code(evs) == code, evs[-5:]
    c.events_until(lambda g: "closed" in g, timeout=3)
    gw.stop()
    assert '"reason":"%s"' % reason in gw.stderr(), gw.stderr()[-2000:]


@pytest.mark.parametrize("reuse", [3, 1, 2])
def test_h2_headers_with_a_lower_stream_id_ends_the_connection(h2c_gw, reuse):
    """Stream 5 done; then HEADERS on 3 (skipped, so implicitly closed), 1 (closed) or 2 (even)."""
    c = H2Client(h2c_gw.port)
    finish(c, c.get("/one", sid=1))
    finish(c, c.get("/five", sid=5))
    c.send_raw(frame(0x1, 0x5, reuse, raw_get_block(c)))  # HEADERS, END_STREAM|END_HEADERS
    assert_goaway(c, h2c_gw, 1, "invalid_stream_id")  # PROTOCOL_ERROR


def test_h2_trailers_on_an_open_stream_are_not_a_new_stream(h2c_gw):
    """The stream-id check must not fire on HEADERS that end an open stream, even an older one."""
    c = H2Client(h2c_gw.port)
    c.conn.send_headers(1, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"), (":authority", "a")])
    c.conn.send_data(1, b"first")
    finish(c, c.get("/later", sid=3))
    c.conn.send_headers(1, [("x-checksum", "1")], end_stream=True)
    c.flush()
    head, data, _ = h2_response(c, 1)
    assert head[":status"] == "200" and json.loads(data)["trailers"] == [["x-checksum", "1"]]
    finish(c, c.get("/after", sid=7))
    c.close()


# ---------------------------------------------------------------------------
# HTTP/2 limits and glitches
# ---------------------------------------------------------------------------

def test_h2_continuation_flood_with_large_frames_is_named_continuation_flood(h2c_gw):
    """Frames big enough that the header list limit (32k) is passed before the frame count
    limit (4): still a CONTINUATION flood, and logged as one."""
    c = H2Client(h2c_gw.port)
    enc = hpack.Encoder()
    c.send_raw(frame(0x1, 0x0, 1, enc.encode([(":method", "GET", True), (":path", "/", True),
                                              (":scheme", "http", True), (":authority", "a", True)])))
    try:
        for i in range(6):
            block = enc.encode([("x-flood-%d" % i, "v" * 14000, True)], huffman=False)
            c.send_raw(frame(0x9, 0x0, 1, block))  # CONTINUATION without END_HEADERS
            time.sleep(0.05)  # one frame per read: nghttp2 decodes each before the next arrives
    except OSError:
        pass
    assert_goaway(c, h2c_gw, 11, "continuation_flood")  # ENHANCE_YOUR_CALM


def test_h2_single_oversized_header_block_is_header_list_too_large(h2c_gw):
    c = H2Client(h2c_gw.port)
    big = "x" * 4000
    block = c.conn.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                   (":authority", "a"), ("x-big", big)] + [("x-big", big)] * 40)
    c.send_raw(frame(0x1, 0x5, 1, block))
    assert_goaway(c, h2c_gw, 11, "header_list_too_large")


class RawH2:
    """HTTP/2 by hand (h2c prior knowledge), for frames a client library would refuse to send."""

    def __init__(self, port, src=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                             source_address=(src, 0) if src else None)
        self.buf = b""
        self.sock.sendall(PREFACE + frame(0x4, 0, 0))  # empty SETTINGS

    def send(self, data):
        self.sock.sendall(data)

    def frames(self, until, timeout=10):
        """Read frames until until(frames) holds, the connection closes ("closed") or timeout."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                got.append((ftype, flags, sid, self.buf[9:9 + n]))
                self.buf = self.buf[9 + n:]
                if ftype == 0x4 and not flags & 1:
                    try:
                        self.sock.sendall(frame(0x4, 1, 0))  # SETTINGS ACK
                    except OSError:
                        pass  # closed by the server: the reads below say so
            if until(got):
                return got
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                data = b""
            if not data:
                got.append("closed")
                return got
            self.buf += data
        return got

    def close(self):
        self.sock.close()


def rst_codes(frames):
    return [int.from_bytes(f[3][:4], "big") for f in frames if f != "closed" and f[0] == 0x3]


def goaway_of(frames):
    for f in frames:
        if f != "closed" and f[0] == 0x7:
            return int.from_bytes(f[3][4:8], "big")
    return None


NO_PATH = hpack.Encoder().encode([(":method", "GET", True), (":scheme", "http", True),
                                  (":authority", "a.test", True)], huffman=False)


@pytest.mark.timeout(120)
def test_h2_requests_without_path_count_as_glitches(h2c_gw):
    """nghttp2 resets a request without :path on its own: each is a glitch, and past
    max_glitches_per_s (50) the connection ends with GOAWAY ENHANCE_YOUR_CALM, not after
    20,000 of them."""
    c = RawH2(h2c_gw.port)
    try:
        for batch in range(200):
            c.send(b"".join(frame(0x1, 0x5, 2 * (batch * 100 + i) + 1, NO_PATH) for i in range(100)))
    except OSError:
        pass  # closed while we were still sending: what we want
    got = c.frames(lambda g: "closed" in g or goaway_of(g) is not None)
    if goaway_of(got) is None:  # our unread flood may have turned the close into a reset
        assert "closed" in got, got[-5:]
    else:
        assert goaway_of(got) == 11, got[-5:]
        assert len(rst_codes(got)) <= 60, len(rst_codes(got))  # stopped near the limit
    c.close()
    h2c_gw.stop()
    assert '"reason":"glitches"' in h2c_gw.stderr(), h2c_gw.stderr()[-2000:]


def test_h2_a_few_malformed_requests_do_not_end_the_connection(h2c_gw):
    c = RawH2(h2c_gw.port)
    for sid in (1, 3, 5):
        c.send(frame(0x1, 0x5, sid, NO_PATH))
    got = c.frames(lambda g: len(rst_codes(g)) >= 3)
    assert rst_codes(got) == [1, 1, 1]  # PROTOCOL_ERROR, stream by stream
    c.send(frame(0x1, 0x5, 7, raw_get_block(None, "/fine")))
    got = c.frames(lambda g: any(f != "closed" and f[0] == 0x0 and f[1] & 1 and f[2] == 7 for f in g))
    assert any(f != "closed" and f[0] == 0x1 and f[2] == 7 for f in got), got
    assert goaway_of(got) is None
    c.close()


# ---------------------------------------------------------------------------
# HTTP/2 stream limit (RFC 9113 5.1.2): REFUSED_STREAM, which a client may retry
# ---------------------------------------------------------------------------

@pytest.fixture
def limited_gw(sluice, upstreams):
    cfg = h2c_config(upstreams(1)[0].address)
    cfg["listeners"][0]["http2"] = {"max_concurrent_streams": 2}
    return sluice(cfg)


def settled(c):
    """Both of the gateway's SETTINGS frames received (and acknowledged by RawH2)."""
    got = c.frames(lambda g: sum(1 for f in g if f != "closed" and f[0] == 0x4 and not f[1] & 1) >= 2)
    assert sum(1 for f in got if f != "closed" and f[0] == 0x4 and not f[1] & 1) >= 2, got
    return got


def ended(sid):
    return lambda g: any(f != "closed" and f[2] == sid and (f[0] == 0x3 or (f[0] in (0x0, 0x1) and f[1] & 1))
                         for f in g)


def test_h2_streams_over_the_acknowledged_limit_are_refused(limited_gw):
    c = RawH2(limited_gw.port)
    settled(c)
    for sid in (1, 3, 5):
        c.send(frame(0x1, 0x5, sid, raw_get_block(None, "/delay/300")))
    got = c.frames(lambda g: all(ended(s)(g) for s in (1, 3, 5)))
    assert [(f[2], int.from_bytes(f[3][:4], "big")) for f in got if f != "closed" and f[0] == 0x3] == [(5, 7)]
    assert goaway_of(got) is None and "closed" not in got
    for sid in (1, 3):  # the streams within the limit are answered
        assert any(f != "closed" and f[0] == 0x1 and f[2] == sid for f in got), sid
    # the refused request may be retried on the same connection
    c.send(frame(0x1, 0x5, 7, raw_get_block(None, "/retried")))
    got = c.frames(ended(7))
    assert any(f != "closed" and f[0] == 0x1 and f[2] == 7 for f in got) and goaway_of(got) is None
    c.close()


def test_h2_streams_over_the_limit_before_the_ack_do_not_count_as_glitches(limited_gw):
    """A client's first flight may go out before it saw the limit: 100 refusals, no close."""
    c = RawH2(limited_gw.port)
    c.send(b"".join(frame(0x1, 0x5, 2 * i + 1, raw_get_block(None, "/delay/200")) for i in range(102)))
    got = c.frames(lambda g: len(rst_codes(g)) >= 100 and all(ended(s)(g) for s in (1, 3)))
    assert rst_codes(got) == [7] * 100, rst_codes(got)[:5]
    assert goaway_of(got) is None and "closed" not in got
    c.close()


def test_h2_a_client_that_keeps_exceeding_the_known_limit_is_closed(limited_gw):
    c = RawH2(limited_gw.port)
    settled(c)
    try:
        c.send(b"".join(frame(0x1, 0x5, 2 * i + 1, raw_get_block(None, "/delay/2000")) for i in range(300)))
    except OSError:
        pass
    got = c.frames(lambda g: "closed" in g or goaway_of(g) is not None)
    assert goaway_of(got) == 11 or "closed" in got, got[-3:]
    assert set(rst_codes(got)) <= {7}
    c.close()
    limited_gw.stop()
    assert '"reason":"glitches"' in limited_gw.stderr()


def test_h2_late_body_and_trailers_of_a_refused_stream_are_ignored(limited_gw):
    """RFC 9113 5.1: a client may still send on a stream it did not yet know was refused; those
    frames (trailers are a HEADERS frame on a lower id) must not end the connection."""
    c = RawH2(limited_gw.port)
    settled(c)
    enc = hpack.Encoder()
    post = enc.encode([(":method", "POST", True), (":path", "/echo", True), (":scheme", "http", True),
                       (":authority", "a.test", True)], huffman=False)
    c.send(frame(0x1, 0x4, 1, post) + frame(0x1, 0x4, 3, post) + frame(0x1, 0x4, 5, post))
    got = c.frames(lambda g: rst_codes(g) == [7])
    assert rst_codes(got) == [7]
    c.send(frame(0x0, 0, 5, b"late") + frame(0x1, 0x5, 5, enc.encode([("x-late", "1", True)], huffman=False)))
    c.send(frame(0x0, 0x1, 1, b"one") + frame(0x0, 0x1, 3, b"three"))
    got = c.frames(lambda g: ended(1)(g) and ended(3)(g))
    assert goaway_of(got) is None and "closed" not in got, got[-3:]
    assert sum(1 for f in got if f != "closed" and f[0] == 0x1 and f[2] in (1, 3)) == 2
    c.close()
