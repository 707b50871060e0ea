"""The transport of TLS client connections (src/tls.c over src/io.c): TLS
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

from conftest import RawConn, build_request, chunked_body, free_port, pattern_bytes, sha256
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
