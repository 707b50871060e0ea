"""The transport of TLS client connections (src/tls_io.c over src/io.c): TLS
records are encrypted once the current callbacks are done and written in one
write, and whatever the layer between the socket and the HTTP code holds must
neither be lost nor held up: pipelined requests, large bodies both ways with a
reader that stalls, the close_notify after the last byte of a Connection: close
response, keep-alive and HTTP/2 connections idle for longer than the send
timeout, and the handshake timeout (one deadline for the whole handshake)."""

import os
import socket
import ssl
import time

import h2.events
import h2.settings

from conftest import RawConn, base_config, build_request, chunked_body, free_port, pattern_bytes, sha256
from test_h2 import H2Client, ack, request, stream_done
from test_tls_certs import certs, tls_config  # noqa: F401  (fixture)

import pytest


class TlsConn(RawConn):
    """RawConn over TLS (ALPN http/1.1). A close without close_notify raises
    ssl.SSLEOFError instead of looking like a clean end."""

    def __init__(self, port, ca, timeout=10.0, rcvbuf=None):
        self.timeout = timeout
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["http/1.1"])
        self.sock = ctx.wrap_socket(s, server_hostname="io.test", suppress_ragged_eofs=False)
        self.buf = bytearray()


@pytest.fixture
def tls_gw(certs, sluice, upstreams):
    """make(limits=None, tls=None) -> a TLS gateway (certificate for io.test and a.test) in front of one upstream."""

    def make(limits=None, tls=None):
        (u,) = upstreams(1)
        c, k = certs.issue("io", dns=["io.test", "a.test"])
        port = free_port()
        gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], tls=tls, limits=limits, workers=1))
        gw.certs = certs
        return gw

    return make


def test_pipelined_requests_with_bodies_over_tls(tls_gw):
    gw = tls_gw()
    body = os.urandom(200000)
    reqs = []
    for i in range(12):
        if i == 5:
            reqs.append(build_request("POST", "/p%d" % i, body=body, host="io.test"))
        elif i == 8:
            reqs.append(build_request("POST", "/p%d" % i, headers=[("Transfer-Encoding", "chunked")],
                                      body=chunked_body(body[:50000], chunk=7000), host="io.test"))
        else:
            reqs.append(build_request("GET", "/p%d" % i, host="io.test"))
    with TlsConn(gw.port, gw.certs.ca) as c:
        c.send(b"".join(reqs))  # one write: several requests per TLS record, one request over many
        for i in range(12):
            r = c.read_response()
            assert r.status == 200, r
            echo = r.json()
            assert echo["target"] == "/p%d" % i
            if i == 5:
                assert (echo["body_len"], echo["body_sha256"]) == (len(body), sha256(body))
            if i == 8:
                assert (echo["body_len"], echo["body_sha256"]) == (50000, sha256(body[:50000]))
    assert len(gw.wait_log(count=12, scheme="https", status=200)) == 12


def test_large_bodies_both_ways_with_a_stalled_reader(tls_gw):
    gw = tls_gw()
    up = os.urandom(1 << 20)
    with TlsConn(gw.port, gw.certs.ca, timeout=30) as c:
        r = c.request("POST", "/up", body=up, host="io.test")
        assert (r.json()["body_len"], r.json()["body_sha256"]) == (len(up), sha256(up))
        r = c.request("POST", "/upc", headers=[("Transfer-Encoding", "chunked")],
                      body=chunked_body(up, chunk=65536), host="io.test")
        assert (r.json()["body_len"], r.json()["body_sha256"]) == (len(up), sha256(up))
    # 8 MiB to a client that reads nothing for a second: more than the kernel buffers
    # take (4 MiB send buffer at most), so sluice's writes block and the rest waits
    n = 8 << 20
    with TlsConn(gw.port, gw.certs.ca, timeout=30, rcvbuf=32768) as c:
        c.send(build_request("GET", "/bytes/%d" % n, host="io.test"))
        time.sleep(1.0)
        r = c.read_response(timeout=30)
        assert r.status == 200 and len(r.body) == n
        assert r.body == pattern_bytes(n)
        r = c.request("GET", "/after", host="io.test")  # the connection goes on
        assert r.json()["target"] == "/after"


@pytest.mark.parametrize("size", [100, 6 << 20])
def test_connection_close_ends_with_close_notify_after_the_last_byte(tls_gw, size):
    gw = tls_gw()
    with TlsConn(gw.port, gw.certs.ca, timeout=30, rcvbuf=32768) as c:
        c.send(build_request("GET", "/bytes/%d" % size, headers=[("Connection", "close")], host="io.test"))
        if size > 1 << 20:
            time.sleep(1.0)  # the last bytes and the close_notify wait for the socket
        r = c.read_response(timeout=30)
        assert r.body == pattern_bytes(size)
        assert "close" in r.connection_tokens()
        # then a close_notify (b""), not a bare TCP close (ssl.SSLEOFError)
        c.sock.settimeout(10)
        assert c.sock.recv(100) == b""


def test_idle_connections_outlive_the_send_timeout(tls_gw):
    gw = tls_gw(limits={"send_timeout": "1s", "keepalive_timeout": "10s"})
    with TlsConn(gw.port, gw.certs.ca) as c:
        assert c.request("GET", "/a", host="io.test").status == 200
        time.sleep(2.2)  # idle after a response for longer than the send timeout
        assert c.request("GET", "/b", host="io.test").json()["target"] == "/b"
        # an upstream slower than the send timeout, with nothing to send meanwhile
        assert c.request("GET", "/delay/2200", host="io.test").status == 200
    h = H2Client(gw.port, tls_ca=str(gw.certs.ca))
    try:
        for path in ("/h2a", "/h2b"):
            sid = request(h, "GET", path)
            evs = h.events_until(stream_done(sid))
            ack(h, evs)
            assert any(isinstance(e, h2.events.ResponseReceived) and (":status", "200") in e.headers
                       for e in evs), evs
            time.sleep(2.2)
    finally:
        h.close()


def test_h2_large_download_with_a_stalled_reader(tls_gw):
    gw = tls_gw()
    h = H2Client(gw.port, tls_ca=str(gw.certs.ca))
    try:
        # windows large enough that only the socket holds the data back
        h.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
        h.conn.increment_flow_control_window((1 << 31) - 1 - 65535)
        h.flush()
        n = 8 << 20
        sid = request(h, "GET", "/bytes/%d" % n)
        time.sleep(1.0)
        data = bytearray()
        deadline = time.monotonic() + 30
        done = False
        while not done and time.monotonic() < deadline:
            evs = h.events_until(lambda g: len(g) > 0, timeout=5)
            assert "closed" not in evs, evs
            for e in evs:
                if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    data += e.data
                if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    done = True
        assert done and len(data) == n
        assert bytes(data) == pattern_bytes(n)
    finally:
        h.close()


def test_handshake_timeout_is_one_deadline_for_the_whole_handshake(tls_gw):
    gw = tls_gw(tls={"handshake_timeout": "1s"})
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    start = time.monotonic()
    closed_at = None
    try:
        # a ClientHello trickled a byte every 100 ms: progress must not extend the deadline
        for b in hello:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed_at = time.monotonic()
                break
            s.settimeout(0.1)
            try:
                if s.recv(100) == b"":
                    closed_at = time.monotonic()
                    break
            except socket.timeout:
                pass
            except OSError:
                closed_at = time.monotonic()
                break
            if time.monotonic() - start > 4:
                break
    finally:
        s.close()
    assert closed_at is not None and closed_at - start < 2.5, "closed after %r s" % (
        closed_at and closed_at - start)
    assert gw.stop() == 0
    assert '"timeout":1' in gw.stderr()


@pytest.mark.parametrize("proto", ["http/1.1", "h2"])
def test_client_vanishing_while_its_socket_is_full(tls_gw, proto):
    """Encrypted records still waiting for the socket when the connection ends
    are written or dropped with it, never leaked (the sanitizer build checks)."""
    gw = tls_gw()
    for _ in range(3):
        if proto == "h2":
            h = H2Client(gw.port, tls_ca=str(gw.certs.ca))
            h.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
            h.conn.increment_flow_control_window((1 << 31) - 1 - 65535)
            h.flush()
            request(h, "GET", "/bytes/%d" % (16 << 20))
            time.sleep(0.8)
            h.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            h.close()  # unread data: a reset
        else:
            c = TlsConn(gw.port, gw.certs.ca, rcvbuf=32768)
            c.send(build_request("GET", "/bytes/%d" % (16 << 20), host="io.test"))
            time.sleep(0.8)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
    with TlsConn(gw.port, gw.certs.ca) as c:
        assert c.request("GET", "/still", host="io.test").json()["target"] == "/still"
    time.sleep(0.5)
    assert gw.stop() == 0


class RecordTls:
    """A TLS 1.2 client over memory BIOs that sees the records on the wire. After a
    TLS 1.2 handshake every record is application data (TLS 1.3 sends its tickets
    as such records too, which would blur the count)."""

    def __init__(self, port, ca, alpn):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols([alpn])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="io.test")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                data = self.sock.recv(65536)
                assert data, "closed during the handshake"
                self.inc.write(data)
        self.sock.sendall(self.out.read())
        self.overhead = 16 if "CHACHA" in self.tls.cipher()[0] else 24  # AEAD tag (+ GCM's explicit nonce)
        self.raw = b""
        self.records = []  # plaintext bytes of each application-data record received

    def send(self, data):
        self.tls.write(data)
        self.sock.sendall(self.out.read())

    def recv(self):
        data = self.sock.recv(65536)
        assert data, "closed"
        self.raw += data
        self.inc.write(data)
        while len(self.raw) >= 5 and len(self.raw) >= 5 + int.from_bytes(self.raw[3:5], "big"):
            n = int.from_bytes(self.raw[3:5], "big")
            assert self.raw[0] == 23, "record type %d after the handshake" % self.raw[0]
            self.records.append(n - self.overhead)
            self.raw = self.raw[5 + n:]
        out = b""
        try:
            while True:
                out += self.tls.read(65536)
        except ssl.SSLWantReadError:
            pass
        return out

    def close(self):
        self.sock.close()


class OneSendUpstream:
    """An upstream that answers every request with one send of its head and a 16 KiB
    body, so that the whole response is in sluice's socket when sluice reads it."""

    def __init__(self, size):
        import threading
        self.size = size
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        import threading
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(s,), daemon=True).start()

    def conn(self, s):
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[buf.index(b"\r\n\r\n") + 4:]
                if not self.answer(s):
                    return

    def answer(self, s):
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size + pattern_bytes(self.size))
        return True

    def close(self):
        self.lsock.close()


@pytest.mark.parametrize("head_alone", [False, True])
def test_http1_response_pieces_gathered_into_tls_records(certs, sluice, head_alone):
    """Pieces of the response shorter than a record (the head, the chunks that upstream
    reads made) are gathered into one record while they fit: each record costs both
    sides an encryption and a frame, and the client a read. A head that arrived from
    the upstream before its body (16 KiB of known length: head_alone) is not a record
    and a write of its own either: it waits for the body's first bytes, as nginx's
    postpone_output does."""
    size = 16384
    u = GatedUpstream(size) if head_alone else OneSendUpstream(size)
    c, k = certs.issue("io", dns=["io.test"])
    gw = sluice(tls_config(free_port(), [u.address], [{"cert": c, "key": k}], workers=1))
    c = RecordTls(gw.port, certs.ca, "http/1.1")
    try:
        for _ in range(3):
            c.records = []
            c.send(build_request("GET", "/bytes", host="io.test"))
            if head_alone:
                time.sleep(0.3)  # the head reaches sluice alone meanwhile
                u.gate.set()
            got = b""
            while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + size:
                got += c.recv()
            head_len = got.index(b"\r\n\r\n") + 4
            assert got[head_len:] == pattern_bytes(size)
            print("head %d bytes; records %s" % (head_len, c.records))
            # before: [head, ~8k, ~8k], the head alone and the body in the pieces of two
            # reads; and with the head alone upstream: [head, 16384, ...]
            assert c.records[0] > head_len, c.records
            assert len(c.records) == 2, c.records
    finally:
        c.close()
        u.close()


def test_h2_data_frames_fill_tls_records(tls_gw):
    """Over TLS a DATA frame's 9-byte header and its payload make one 16 KiB record:
    16,375-byte payloads, not 16,384 ones that would each add a record of 9 bytes."""
    import h2.config
    import h2.connection
    gw = tls_gw()
    c = RecordTls(gw.port, gw.certs.ca, "h2")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 20)
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    size = 200000
    try:
        c.send(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/bytes/%d" % size), (":scheme", "https"),
                                (":authority", "io.test")], end_stream=True)
        c.send(conn.data_to_send())
        frames, body, done = [], b"", False
        while not done:
            for e in conn.receive_data(c.recv()):
                if isinstance(e, h2.events.DataReceived):
                    frames.append(len(e.data))
                    body += e.data
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                done = done or isinstance(e, h2.events.StreamEnded)
            out = conn.data_to_send()
            if out:
                c.send(out)
        assert body == pattern_bytes(size)
        print("DATA frames %s; records %s" % (frames, c.records))
        assert max(frames) == 16384 - 9, frames
        full = [n for n in c.records if n == 16384]
        assert len(full) >= size // (16384 - 9) - 1, c.records
    finally:
        c.close()


class GatedUpstream(OneSendUpstream):
    """An upstream that sends a response's head, then waits for the test to open
    the gate before it sends the body (16 KiB, or chunked): the head reaches sluice
    in a read of its own, as nginx's sendfile path (head by writev, body by
    sendfile) often makes it do."""

    def __init__(self, size, chunked=False):
        import threading
        self.chunked = chunked
        self.gate = threading.Event()
        super().__init__(size)

    def answer(self, s):
        body = pattern_bytes(self.size)
        if self.chunked:
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        else:
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
        if not self.gate.wait(10):
            return False
        self.gate.clear()
        s.sendall(body)
        return True

    def close(self):
        self.gate.set()
        super().close()


@pytest.mark.parametrize("tls", [False, True])
def test_a_streamed_response_head_is_not_held(certs, sluice, tls):
    """A body of unknown length (chunked: events, long polls) may wait upstream for a
    long time: its head goes out at once, before any of the body exists."""
    u = GatedUpstream(100, chunked=True)
    c, k = certs.issue("io", dns=["io.test"])
    port = free_port()
    cfg = tls_config(port, [u.address], [{"cert": c, "key": k}], workers=1) if tls else \
        base_config(port, [u.address], workers=1)
    gw = sluice(cfg)
    conn = TlsConn(gw.port, certs.ca) if tls else RawConn(gw.port)
    try:
        conn.send(build_request("GET", "/events", host="io.test"))
        conn.sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.sock.recv(65536)
            assert data, "closed before the head"
            head += data
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower(), head
        u.gate.set()
        while not head.endswith(b"0\r\n\r\n"):
            data = conn.sock.recv(65536)
            assert data, "closed before the body's end"
            head += data
        assert pattern_bytes(100) in head
    finally:
        conn.close()
        u.close()


def test_a_head_that_came_alone_leaves_with_the_body_in_plaintext(sluice):
    """The same on a plaintext connection: one write for head and body, not two."""
    size = 16384
    u = GatedUpstream(size)
    gw = sluice(base_config(free_port(), [u.address], workers=1))
    c = RawConn(gw.port)
    try:
        c.send(build_request("GET", "/bytes", host="io.test"))
        time.sleep(0.3)  # the head reaches sluice alone meanwhile
        u.gate.set()
        c.sock.settimeout(5)
        first = c.sock.recv(1 << 20)
        assert b"\r\n\r\n" in first, first
        assert len(first) > first.index(b"\r\n\r\n") + 4, "the head came alone: %r" % first
        c.buf += first
        r = c.read_response()
        assert r.status == 200 and r.body == pattern_bytes(size)
    finally:
        c.close()
        u.close()


def test_refused_post_over_tls_keeps_the_connection(certs, sluice, upstreams):
    """Over TLS too (the bufferevent transport): a POST refused with 429 before its body was read keeps
    the connection; the rest of the body, sent after the 429, is dropped, not taken for a request."""
    (u,) = upstreams(1)
    c, k = certs.issue("io", dns=["io.test"])
    port = free_port()
    routes = [{"name": "limited", "match": {"path_prefix": "/limited"}, "service": "web", "rate_limit": "once"},
              {"name": "default", "match": {"path_prefix": "/"}, "service": "web"}]
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], workers=1, routes=routes,
                           rate_limits={"once": {"key": "path", "rate": 1, "per": "1h", "burst": 1}}))
    body = b"v" * 4000
    with TlsConn(gw.port, certs.ca) as conn:
        assert conn.request("POST", "/limited", body=body, host="io.test").status == 200
        r = conn.request("POST", "/limited", body=body, host="io.test")
        assert r.status == 429 and "close" not in r.connection_tokens(), r.headers
        conn.send(build_request("POST", "/limited", headers=[("Content-Length", str(len(body)))], host="io.test"))
        r = conn.read_response()
        assert r.status == 429 and "close" not in r.connection_tokens(), r.headers
        conn.send(body[:1500])
        time.sleep(0.05)
        conn.send(body[1500:])
        r = conn.request("GET", "/after", host="io.test")
        assert r.status == 200 and r.json()["target"] == "/after"
