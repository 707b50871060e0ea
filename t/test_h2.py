"""HTTP/2 to clients: h2 over TLS (ALPN) and h2c with prior knowledge; streaming
bodies both ways, trailers, real clients (curl, h2load), and the flood defences
(rapid reset, CONTINUATION, SETTINGS, PING, empty frames, oversized header
lists), each of which must close the connection with GOAWAY and a counted
reason while memory stays bounded."""

import json
import os
import socket
import ssl
import struct
import subprocess
import time

import pytest

import h2.config
import h2.connection
import h2.events

from conftest import base_config, curl, free_port, sha256
from test_tls_certs import certs, tls_config  # noqa: F401  (fixture)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


@pytest.fixture
def h2c_gw(sluice, upstreams):
    (u,) = upstreams(1)
    port = free_port()
    cfg = base_config(port, [u.address])
    cfg["listeners"][0]["h2c"] = True
    gw = sluice(cfg)
    gw.u = u
    return gw


@pytest.fixture
def h2_tls_gw(certs, sluice, upstreams):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}]))
    gw.certs = certs
    return gw


def curl_h2(gw, path, *args):
    return curl(["--cacert", str(gw.certs.ca), "--resolve", "a.test:%d:127.0.0.1" % gw.port, "--http2",
                 "https://a.test:%d%s" % (gw.port, path)] + list(args), timeout=60)


def test_h2_over_tls_streams_large_bodies_both_ways(h2_tls_gw, tmp_path):
    body = os.urandom(3 * 1024 * 1024)
    f = tmp_path / "up.bin"
    f.write_bytes(body)
    for extra in ([], ["-H", "transfer-encoding: chunked"]):
        r = curl_h2(h2_tls_gw, "/echo", "--data-binary", "@" + str(f), *extra)
        assert r.returncode == 0, r.stderr
        echo = json.loads(r.stdout)
        assert echo["body_len"] == len(body) and echo["body_sha256"] == sha256(body)
        assert echo["version"] == "HTTP/1.1"
    r = curl_h2(h2_tls_gw, "/bytes/5000000", "-o", str(tmp_path / "down"), "-w", "%{http_version} %{size_download}")
    assert r.stdout == b"2 5000000"
    from conftest import pattern_bytes
    assert (tmp_path / "down").read_bytes() == pattern_bytes(5000000)
    entries = h2_tls_gw.wait_log(count=3, protocol="HTTP/2.0")
    assert all(e["scheme"] == "https" for e in entries)


def test_h2_response_trailers_and_connection_headers_stripped(h2_tls_gw):
    r = curl_h2(h2_tls_gw, "/chunked/100000?trailer=1", "-o", "/dev/null", "-D", "-", "-v")
    out = (r.stdout + r.stderr).decode()
    assert "x-trailer: yes" in out
    assert "x-body-sha256:" in out
    r = curl_h2(h2_tls_gw, "/hop", "-D", "-", "-o", "/dev/null")
    heads = r.stdout.decode().lower()
    assert "x-end-to-end: yes" in heads
    assert "keep-alive" not in heads and "x-hop-resp" not in heads and "connection:" not in heads


def test_h2load_over_tls(h2_tls_gw):
    r = subprocess.run(["h2load", "-n", "2000", "-c", "8", "-m", "10",
                        "https://127.0.0.1:%d/bytes/64" % h2_tls_gw.port], capture_output=True, text=True, timeout=60)
    assert "2000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout


def test_h2c_prior_knowledge_and_http11_on_the_same_listener(h2c_gw):
    r = curl(["--http2-prior-knowledge", h2c_gw.url("/a"), "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
    assert r.stdout == b"2 200"
    r = curl([h2c_gw.url("/b"), "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
    assert r.stdout == b"1.1 200"
    h2c_gw.wait_log(count=1, target="/a", protocol="HTTP/2.0", scheme="http")


def test_h2c_is_off_by_default(gateway):
    gw = gateway(1)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(PREFACE)
    data = s.recv(200)
    assert data.startswith(b"HTTP/1.1 ")  # the HTTP/1 parser refuses it
    s.close()


class H2Client:
    def __init__(self, port, tls_ca=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls_ca:
            ctx = ssl.create_default_context(cafile=tls_ca)
            ctx.set_alpn_protocols(["h2"])
            raw = ctx.wrap_socket(raw, server_hostname="a.test")
        self.sock = raw
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def get(self, path, sid=None):
        sid = sid or self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "https"),
                                     (":authority", "a.test")], end_stream=True)
        self.flush()
        return sid

    def events_until(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        got = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, ssl.SSLError, OSError):
                got.append("closed")
                return got
            if not data:
                got.append("closed")
                return got
            try:
                evs = self.conn.receive_data(data)
            except Exception as e:  # noqa: BLE001  (a protocol error on our side ends the read)
                got.append(e)
                return got
            got.extend(evs)
            try:
                self.flush()  # acks of what we just read (SETTINGS, PING)
            except OSError:
                # the server closed first, and our unread flood turned its close into a reset
                got.append("closed")
                return got
            if pred(got):
                return got
        return got

    def close(self):
        self.sock.close()


def goaway_code(events):
    for e in events:
        if isinstance(e, h2.events.ConnectionTerminated):
            return e.error_code
    return None


def test_h2c_request_with_python_h2(h2c_gw):
    c = H2Client(h2c_gw.port)
    sid = c.get("/hello")
    evs = c.events_until(lambda g: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in g))
    resp = [e for e in evs if isinstance(e, h2.events.ResponseReceived)]
    assert resp and dict(resp[0].headers)[":status"] == "200"
    c.close()


def assert_closed_with_goaway(c, reason_gw, reason, code=11):
    evs = c.events_until(lambda g: "closed" in g or goaway_code(g) is not None)
    # GOAWAY, unless our unread flood turned the close into a TCP reset that destroyed it
    assert goaway_code(evs) == code or evs[-1:] == ["closed"], evs[-5:]
    if goaway_code(evs) is None:
        evs = c.events_until(lambda g: "closed" in g, timeout=2)
    reason_gw.stop()
    assert '"reason":"%s"' % reason in reason_gw.stderr(), reason_gw.stderr()[-2000:]


def test_rapid_reset_closes_with_goaway(h2c_gw):
    c = H2Client(h2c_gw.port)
    try:
        for _ in range(400):
            sid = c.get("/delay/200")
            c.conn.reset_stream(sid)
            c.flush()
    except OSError:
        pass  # closed while we were still sending
    assert_closed_with_goaway(c, h2c_gw, "rapid_reset")


def test_continuation_flood_closes_with_goaway(h2c_gw):
    c = H2Client(h2c_gw.port)
    enc = c.conn.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")])
    c.send_raw(frame(0x1, 0x0, 1, enc))  # HEADERS without END_HEADERS
    try:
        for i in range(200):
            c.send_raw(frame(0x9, 0x0, 1, b"\x00\x01a\x01b" if i % 2 else b""))
    except OSError:
        pass
    assert_closed_with_goaway(c, h2c_gw, "continuation_flood")


def test_settings_flood_closes_with_goaway(h2c_gw):
    c = H2Client(h2c_gw.port)
    try:
        c.send_raw(frame(0x4, 0, 0, b"\x00\x03\x00\x00\x00\x64") * 500)
    except OSError:
        pass
    assert_closed_with_goaway(c, h2c_gw, "settings_flood")


def test_ping_flood_closes_with_goaway(h2c_gw):
    c = H2Client(h2c_gw.port)
    try:
        c.send_raw(frame(0x6, 0, 0, b"12345678") * 500)
    except OSError:
        pass
    assert_closed_with_goaway(c, h2c_gw, "ping_flood")


def test_empty_data_frame_flood_closes_with_goaway(h2c_gw):
    c = H2Client(h2c_gw.port)
    c.conn.send_headers(1, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"), (":authority", "a")])
    c.flush()
    try:
        c.send_raw(frame(0x0, 0, 1) * 1000)
    except OSError:
        pass
    assert_closed_with_goaway(c, h2c_gw, "empty_frame_flood")


def test_hpack_bomb_header_list_too_large(h2c_gw):
    c = H2Client(h2c_gw.port)
    # one 4000-byte value inserted in the dynamic table, then referenced many times:
    # a small block on the wire that decodes to far more than the announced limit
    big = "x" * 4000
    hdrs = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a"), ("x-big", big)]
    hdrs += [("x-big", big)] * 40
    block = c.conn.encoder.encode(hdrs)
    assert len(block) < 6000
    c.send_raw(frame(0x1, 0x5, 1, block))
    assert_closed_with_goaway(c, h2c_gw, "header_list_too_large")


@pytest.mark.timeout(120)
def test_many_attack_connections_keep_memory_bounded(h2c_gw):
    before = h2c_gw.rss_kb()
    for i in range(60):
        try:
            c = H2Client(h2c_gw.port)
            if i % 3 == 0:
                for _ in range(150):
                    sid = c.get("/delay/100")
                    c.conn.reset_stream(sid)
                c.flush()
            elif i % 3 == 1:
                c.send_raw(frame(0x6, 0, 0, b"abcdefgh") * 300)
            else:
                enc = c.conn.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                             (":authority", "a")])
                c.send_raw(frame(0x1, 0, 1, enc) + frame(0x9, 0, 1, b"") * 100)
            c.events_until(lambda g: "closed" in g or goaway_code(g) is not None, timeout=5)
            c.close()
        except OSError:
            pass
    time.sleep(0.5)
    assert h2c_gw.rss_kb() - before < 30000
    c = H2Client(h2c_gw.port)
    sid = c.get("/still-alive")
    evs = c.events_until(lambda g: any(isinstance(e, h2.events.StreamEnded) for e in g))
    assert any(isinstance(e, h2.events.ResponseReceived) for e in evs)
    c.close()


def test_graceful_goaway_on_shutdown_finishes_open_streams(h2c_gw):
    # python-h2 refuses frames after GOAWAY, so curl is the client here
    p = subprocess.Popen(["curl", "-sS", "-v", "--noproxy", "*", "--max-time", "10", "--http2-prior-knowledge",
                          h2c_gw.url("/delay/800"), "-o", "/dev/null", "-w", "%{http_code} %{http_version}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    h2c_gw.send_signal(15)
    out, err = p.communicate(timeout=15)
    assert out == b"200 2", err
    assert b"GOAWAY, error=0" in err
    assert h2c_gw.wait(10) == 0


def test_client_reset_aborts_the_upstream_exchange(h2c_gw):
    c = H2Client(h2c_gw.port)
    sid = c.get("/delay/2000")
    time.sleep(0.3)
    c.conn.reset_stream(sid)
    c.flush()
    e = h2c_gw.wait_log(count=1, target="/delay/2000", timeout=5)[0]
    assert e["reason"] == "client_reset"
    c.close()


def test_idle_h2_connection_gets_goaway(sluice, upstreams):
    (u,) = upstreams(1)
    port = free_port()
    cfg = base_config(port, [u.address])
    cfg["listeners"][0]["h2c"] = True
    cfg["listeners"][0]["http2"] = {"idle_timeout": "1s"}
    sluice(cfg)
    c = H2Client(port)
    evs = c.events_until(lambda g: goaway_code(g) is not None or "closed" in g, timeout=5)
    assert goaway_code(evs) == 0


def request(c, method, path):
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "https"),
                              (":authority", "a.test")], end_stream=True)
    c.flush()
    return sid


def ack(c, evs):
    """Give back the flow-control window of the DATA received (python-h2 does not on its own)."""
    for e in evs:
        if isinstance(e, h2.events.DataReceived) and e.flow_controlled_length:
            c.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    c.flush()


def stream_done(sid):
    return lambda g: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                         for e in g)


def test_head_over_h2_keeps_the_content_length(h2c_gw):
    c = H2Client(h2c_gw.port)
    for path, want in (("/bytes/12345", "12345"), ("/bytes/0", "0"), ("/status/204", None)):
        sid = request(c, "HEAD", path)
        evs = c.events_until(stream_done(sid))
        (resp,) = [e for e in evs if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid]
        headers = dict(resp.headers)
        assert headers.get("content-length") == want, (path, resp.headers)
        assert not [e for e in evs if isinstance(e, h2.events.DataReceived) and e.stream_id == sid]
        assert [e for e in evs if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid]
    # GET on the same connection still announces and sends the body
    sid = request(c, "GET", "/bytes/12345")
    evs = c.events_until(stream_done(sid))
    (resp,) = [e for e in evs if isinstance(e, h2.events.ResponseReceived)]
    assert dict(resp.headers)["content-length"] == "12345"
    assert sum(len(e.data) for e in evs if isinstance(e, h2.events.DataReceived)) == 12345
    c.close()


def test_head_over_h2_with_curl_over_tls(h2_tls_gw):
    r = curl_h2(h2_tls_gw, "/bytes/4321", "-I")
    assert r.returncode == 0, r.stderr
    head = r.stdout.decode().lower()
    assert head.startswith("http/2 200") and "content-length: 4321\r\n" in head, head


def test_stream_whose_exchange_ends_early_is_reset_and_cleaned_up(h2c_gw):
    """The upstream announces 60000 bytes, sends half and closes: the internal connection ends,
    and the stream must be reset at once (not left open until the client gives up), with the
    connection still serving other streams. Nothing polls for this: the pair end's EOF event does it."""
    c = H2Client(h2c_gw.port)
    for _ in range(3):
        t0 = time.monotonic()
        sid = request(c, "GET", "/truncate/60000")
        evs = c.events_until(stream_done(sid), timeout=5)
        elapsed = time.monotonic() - t0
        ack(c, evs)
        (resp,) = [e for e in evs if isinstance(e, h2.events.ResponseReceived)]
        assert dict(resp.headers)["content-length"] == "60000"
        got = sum(len(e.data) for e in evs if isinstance(e, h2.events.DataReceived))
        assert got < 60000
        resets = [e for e in evs if isinstance(e, h2.events.StreamReset) and e.stream_id == sid]
        assert resets and not [e for e in evs if isinstance(e, h2.events.StreamEnded)], evs
        assert elapsed < 2.0, elapsed
        # the same connection goes on
        sid = request(c, "GET", "/hello")
        evs = c.events_until(stream_done(sid))
        assert [e for e in evs if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid], evs
    entries = h2c_gw.wait_log(count=3, target="/truncate/60000")
    assert all(e["reason"] != "" for e in entries)
    # and an exchange ended before any response head (the client resets it while the upstream hangs)
    sid = request(c, "GET", "/hang")
    time.sleep(0.2)
    c.conn.reset_stream(sid)
    c.flush()
    h2c_gw.wait_log(count=1, target="/hang", timeout=5)
    sid = request(c, "GET", "/hello")
    evs = c.events_until(stream_done(sid))
    assert [e for e in evs if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid], evs
    c.close()
