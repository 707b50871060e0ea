"""limits.max_connections_per_client (docs/configuration.md `limits`): the
open client connections of one address are counted over the whole process
(every worker, every listener) and a connection over the cap is closed at
accept, before anything is read (no TLS handshake), counted in
sluice_listener_connections_refused_total{reason="per_client_limit"} and
logged at most once a second per worker. Another address is still served; a
connection that closes, whichever way, gives its place back (a leak would
lock the client out for ever). A listener may have its own cap; a reload
changes the cap for new connections and keeps the open ones."""

import os
import re
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import RawConn, base_config, config_to_lua, free_port, wait_until
from test_admin_http import _can_connect, http_get, parse_metrics
from test_res_admin import ctl, sockdir  # noqa: F401  (fixture)
from test_tls_certs import certs, tls_listener  # noqa: F401  (fixture)

REFUSED = "sluice_listener_connections_refused_total"


class Refused(Exception):
    pass


def metrics(aport):
    st, _, body = http_get(aport, "/metrics")
    assert st == 200
    return parse_metrics(body.decode())


def refusals(aport, listener):
    return metrics(aport).get((REFUSED, frozenset({("listener", listener), ("reason", "per_client_limit")})), 0)


def connect(port, src, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=5, source_address=(src, 0) if src else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def tls_wrap(s, ca, alpn="http/1.1"):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols([alpn])
    return ctx.wrap_socket(s, server_hostname="a.test")


def served(port, src="127.0.0.1", ca=None, host="127.0.0.1"):
    """A new keep-alive connection from src answered 200, left open; Refused if the gateway closed it."""
    try:
        s = connect(port, src, host)
    except ConnectionResetError as e:  # the reset came before connect() returned
        raise Refused(repr(e))
    try:
        if ca:
            s = tls_wrap(s, ca)
        s.sendall(b"GET /held HTTP/1.1\r\nHost: a.test\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                raise Refused("closed without an answer")
            got += chunk
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
        s.close()
        raise Refused(repr(e))
    except BaseException:
        s.close()
        raise
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    # the rest of the body, so that the connection is idle and clean
    head, _, body = got.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < n:
        body += s.recv(65536)
    return s


def closed_at_once(port, src="127.0.0.1", tls=False, host="127.0.0.1"):
    """A new connection from src is closed by the gateway (reset or FIN) without a byte sent to us."""
    try:
        s = connect(port, src, host)
    except ConnectionResetError:  # the reset came before connect() returned
        return True
    try:
        if tls:
            # the handshake must fail: the gateway closed the socket before reading the ClientHello
            try:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                ctx.wrap_socket(s, server_hostname="a.test")
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError):
                return True
            return False
        s.settimeout(3)
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
    finally:
        s.close()


def hold(port, n, src="127.0.0.1", ca=None, host="127.0.0.1", timeout=10.0):
    """n connections from src, each served (retried while connections closed just before are
    still being released by the gateway): the count of src had room for n."""
    deadline = time.monotonic() + timeout
    while True:
        conns = []
        try:
            for _ in range(n):
                conns.append(served(port, src, ca, host))
            return conns
        except Refused:
            for c in conns:
                c.close()
            if time.monotonic() > deadline:
                raise AssertionError("%s could not hold %d connections to %d" % (src, n, port))
            time.sleep(0.1)


def close_all(conns):
    for c in conns:
        c.close()


def admin_config(cfg):
    aport = free_port()
    cfg.setdefault("admin", {})["http"] = "127.0.0.1:%d" % aport
    return aport


def start(sluice, cfg, ports=None):
    aport = admin_config(cfg)
    gw = sluice(cfg, ports=ports)
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    gw.aport = aport
    return gw


def refused_lines(gw):
    return [e for e in gw.log_entries() if e.get("msg", "").startswith("connection refused")]


def test_cap_holds_per_address_over_every_worker(sluice, upstreams):
    (u,) = upstreams(1)
    port = free_port()
    gw = start(sluice, base_config(port, [u.address], workers=2, limits={"max_connections_per_client": 3}))
    held = hold(port, 3)
    t0 = time.monotonic()
    try:
        # new connections land on either worker (SO_REUSEPORT): every one is closed at once, and
        # counted before it is closed
        before = refusals(gw.aport, "public")
        for _ in range(8):
            assert closed_at_once(port)
        assert refusals(gw.aport, "public") == before + 8
        # another address is served meanwhile, up to its own cap
        other = hold(port, 3, src="127.0.0.2")
        assert closed_at_once(port, src="127.0.0.2")
        # the held connections are still served
        for s in held:
            s.sendall(b"GET /again HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        close_all(other)
        # one closed: the client gets one back, and only one
        held.pop().close()
        held += hold(port, 1)
        assert closed_at_once(port)
        took = time.monotonic() - t0
    finally:
        close_all(held)
    # all closed: the full cap again
    close_all(hold(port, 3))
    # 10 closed_at_once, and any a retry of hold() met while a closed connection was being freed
    total = refusals(gw.aport, "public")
    assert total >= 10
    lines = refused_lines(gw)
    assert lines, gw.stderr()[-2000:]
    # at most one line a second per worker; the ones not logged are told on the next line
    assert len(lines) <= 2 * (int(took) + 1), lines
    assert len(lines) + sum(e["refused_unlogged"] for e in lines) <= total, lines
    assert all(e["client_ip"] in ("127.0.0.1", "127.0.0.2") and e["limit"] == 3 and e["listener"] == "public"
               and e["level"] == "warn" for e in lines), lines


def test_tls_connection_over_the_cap_is_closed_before_the_handshake(sluice, upstreams, certs):  # noqa: F811
    (u,) = upstreams(1)
    port = free_port()
    crt, key = certs.issue("a", dns=["a.test"])
    cfg = base_config(port, [u.address], workers=2, limits={"max_connections_per_client": 2})
    cfg["listeners"] = [tls_listener(port, [{"cert": crt, "key": key}], name="tls")]
    gw = start(sluice, cfg)
    held = hold(port, 2, ca=certs.ca)
    try:
        before = metrics(gw.aport)
        n0 = refusals(gw.aport, "tls")
        for _ in range(4):
            assert closed_at_once(port, tls=True)
        assert refusals(gw.aport, "tls") == n0 + 4
        after = metrics(gw.aport)
        # no handshake was attempted: none failed, none completed
        for (name, labels), v in after.items():
            if name.startswith("sluice_tls_handshake"):
                assert before.get((name, labels), 0) == v, (name, labels)
        close_all(hold(port, 2, src="127.0.0.2", ca=certs.ca))
    finally:
        close_all(held)
    close_all(hold(port, 2, ca=certs.ca))


def test_count_is_given_back_on_every_close_path(sluice, upstreams, certs):  # noqa: F811
    """Cap 3: after each way a connection can end, repeated as many times as the cap, the client
    still gets its 3 connections (a hold not given back would lock it out). Each case runs from an
    address of its own, so that what one case left closing does not count against the next."""
    (u,) = upstreams(1)
    port, tport, cport = free_port(), free_port(), free_port()
    crt, key = certs.issue("a", dns=["a.test"])
    cfg = base_config(port, [u.address], workers=2,
                      limits={"max_connections_per_client": 3, "client_header_timeout": "1s",
                              "keepalive_timeout": "1s"})
    cfg["listeners"].append(tls_listener(tport, [{"cert": crt, "key": key}], handshake_timeout="1s"))
    cfg["listeners"].append({"name": "h2c", "address": "127.0.0.1:%d" % cport, "h2c": True})
    gw = start(sluice, cfg, ports=[port, tport, cport])
    ca = certs.ca

    def back(src):
        close_all(hold(port, 3, src=src))
        close_all(hold(tport, 3, src=src, ca=ca))

    def one(port_, src, ca=None):
        # retried while the previous run's connection is still being freed
        return hold(port_, 1, src=src, ca=ca)[0]

    def reset(s):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()

    def h2_session(port_, src, tls):
        s = connect(port_, src)
        if tls:
            s = tls_wrap(s, ca, alpn="h2")
            assert s.selected_alpn_protocol() == "h2"
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        c.initiate_connection()
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "GET"), (":path", "/h2"), (":scheme", "https" if tls else "http"),
                             (":authority", "a.test")], end_stream=True)
        s.sendall(c.data_to_send())
        done = False
        while not done:
            data = s.recv(65536)
            assert data, "closed before the answer"
            for ev in c.receive_data(data):
                done = done or isinstance(ev, h2.events.StreamEnded)
        return s, c

    cases = []

    def case(fn):
        cases.append(fn)
        return fn

    @case
    def client_closes_idle(src):
        one(port, src).close()

    @case
    def client_resets_idle(src):
        reset(one(port, src))

    @case
    def client_resets_mid_head(src):
        s = connect(port, src)
        s.sendall(b"GET /partial HTTP/1.1\r\nHost: a")
        time.sleep(0.05)
        reset(s)

    @case
    def server_closes_after_connection_close(src):
        with RawConn(port, source_ip=src) as c:
            assert c.request("GET", "/x", headers=[("Connection", "close")]).status == 200
            assert c.is_closed()

    @case
    def bad_request_closed(src):
        with RawConn(port, source_ip=src) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
            assert c.read_response().status == 400
            assert c.is_closed()

    @case
    def header_timeout(src):
        with RawConn(port, source_ip=src) as c:
            c.send(b"GET /slow HTTP/1.1\r\n")
            assert c.is_closed(timeout=5)

    def closed_by_the_gateway(s):
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        s.close()

    @case
    def keepalive_timeout(src):
        closed_by_the_gateway(one(port, src))

    @case
    def tls_served_then_closed(src):
        one(tport, src, ca=ca).close()

    @case
    def tls_handshake_failure(src):
        s = connect(tport, src)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # not TLS
        s.settimeout(5)
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()

    @case
    def tls_client_gives_up_mid_handshake(src):
        s = connect(tport, src)
        reset(s)

    @case
    def tls_handshake_timeout(src):
        closed_by_the_gateway(connect(tport, src))

    @case
    def h2_client_goaway(src):
        s, c = h2_session(tport, src, tls=True)
        c.close_connection()
        s.sendall(c.data_to_send())
        s.close()

    @case
    def h2_server_goaway_on_a_flood(src):
        from hyperframe.frame import PingFrame
        s, c = h2_session(tport, src, tls=True)
        try:
            s.sendall(b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(300)))
            s.settimeout(5)
            while s.recv(65536):
                pass
        except (ConnectionResetError, ssl.SSLError, socket.timeout, OSError):
            pass
        s.close()

    @case
    def h2c_session_then_reset(src):
        s, _ = h2_session(cport, src, tls=False)
        reset(s)

    @case
    def h2c_listener_http1_then_close(src):
        one(cport, src).close()

    @case
    def h2c_sniff_abandoned(src):
        connect(cport, src).close()

    for i, fn in enumerate(cases):
        src = "127.0.0.%d" % (10 + i)
        for _ in range(3):
            fn(src)
        try:
            back(src)
        except AssertionError as e:
            raise AssertionError("after %s: %s" % (fn.__name__, e))


def test_listener_override_shared_count_and_reload(sluice, upstreams, sockdir):  # noqa: F811
    (u,) = upstreams(1)
    port, iport = free_port(), free_port()
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(port, [u.address], workers=2, limits={"max_connections_per_client": 2},
                      admin={"socket": sock})
    cfg["listeners"].append({"name": "internal", "address": "127.0.0.1:%d" % iport,
                             "max_connections_per_client": 5})
    gw = start(sluice, cfg, ports=[port, iport])
    held = hold(port, 2)
    try:
        assert closed_at_once(port)
        # one count over every listener: "internal" allows 5 in all, so 3 more
        held += hold(iport, 3)
        assert closed_at_once(iport)
        assert closed_at_once(port)
        # a higher cap by reload: the open connections stay, new ones count against 7
        cfg["limits"]["max_connections_per_client"] = 7
        gw.conf_path.write_text(config_to_lua(cfg))
        rc, out, err = ctl(sock, "reload")
        assert rc == 0, (rc, out, err)
        held += hold(port, 2)
        assert closed_at_once(port)
        assert closed_at_once(iport)  # its own 5 is still its cap
        # a lower cap: nothing open is closed, and nothing new gets in until the count is below it
        cfg["limits"]["max_connections_per_client"] = 1
        del cfg["listeners"][1]["max_connections_per_client"]
        gw.conf_path.write_text(config_to_lua(cfg))
        rc, out, err = ctl(sock, "reload")
        assert rc == 0, (rc, out, err)
        for s in held:
            s.sendall(b"GET /still HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        assert closed_at_once(port)
        assert closed_at_once(iport)
    finally:
        close_all(held)
    close_all(hold(port, 1))
    # 0 turns it off
    cfg["limits"]["max_connections_per_client"] = 0
    gw.conf_path.write_text(config_to_lua(cfg))
    rc, out, err = ctl(sock, "reload")
    assert rc == 0, (rc, out, err)
    close_all(hold(port, 12))
    assert refusals(gw.aport, "internal") >= 3


def test_dual_stack_listener_counts_ipv4_clients_by_their_own_address(sluice, upstreams):
    """On [::]:port IPv4 clients arrive IPv4-mapped (::ffff:127.0.0.1): each is counted as its
    IPv4 address, not all together under one /64; ::1 is counted under ::/64."""
    (u,) = upstreams(1)
    port = free_port()
    cfg = base_config(port, [u.address], workers=1, limits={"max_connections_per_client": 2})
    cfg["listeners"][0]["address"] = "[::]:%d" % port
    gw = start(sluice, cfg)
    held = hold(port, 2)
    try:
        assert closed_at_once(port)
        held += hold(port, 2, src="127.0.0.2")
        held += hold(port, 2, src="::1", host="::1")
        time.sleep(1.1)  # one refusal line a second per worker: this one gets its own
        assert closed_at_once(port, src="::1", host="::1")
    finally:
        close_all(held)
    wait_until(lambda: {e.get("counted_as") for e in refused_lines(gw)} >= {"::/64"}, what="the ::1 refusal logged")
    lines = refused_lines(gw)
    v4 = [e for e in lines if e["client_ip"] == "::ffff:127.0.0.1"]
    assert v4 and v4[0]["counted_as"] == "127.0.0.1", lines


@pytest.mark.parametrize("value,message", [
    ("-1", "limits.max_connections_per_client: -1 is out of range (0 to 1000000)"),
    ("1.5", "limits.max_connections_per_client: expected an integer, got 1.5"),
    ('"10"', "limits.max_connections_per_client: expected an integer"),
    ("2000000", "limits.max_connections_per_client: 2000000 is out of range (0 to 1000000)"),
])
def test_check_refuses_a_bad_cap(tmp_path, value, message):
    from conftest import run_sluice
    path = tmp_path / "c.lua"
    text = config_to_lua(base_config(free_port(), ["127.0.0.1:9"]))
    text = text.replace("return {", "return {\n  limits = { max_connections_per_client = %s }," % value, 1)
    path.write_text(text)
    r = run_sluice(["check", "-c", str(path)])
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    bad = text.replace("limits = { max_connections_per_client = %s }," % value, "")
    bad = bad.replace('address = "127.0.0.1:', 'max_connections_per_client = %s, address = "127.0.0.1:' % value, 1)
    path.write_text(bad)
    r = run_sluice(["check", "-c", str(path)])
    assert r.returncode != 0
    assert message.replace("limits.", "listeners[1].") in r.stderr, r.stderr
