"""The families /metrics gained beyond the request totals (issue 14): client
connections and HTTP/2 streams by protocol, TLS versions and resumption,
upstream connections opened, reused and idle, reloads by outcome, regex
give-ups, Redis latency, and rollout step and verdicts; each
driven by real traffic (curl, python ssl, a real redis-server, a rollout run
by the real controller) and read back from a scrape."""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, curl, free_port, wait_until
from test_admin_http import http_get, parse_metrics, _can_connect
from test_tls_certs import certs, tls_listener  # noqa: F401  (fixture)

PROMTOOL = shutil.which("promtool")
REDIS = shutil.which("redis-server")


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-fam-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def metrics(port):
    st, _, body = http_get(port, "/metrics")
    assert st == 200
    return parse_metrics(body.decode())


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())))


def admin(cfg, sockdir=None):
    aport = free_port()
    cfg["admin"] = {"http": "127.0.0.1:%d" % aport}
    if sockdir:
        cfg["admin"]["socket"] = os.path.join(sockdir, "admin.sock")
    return aport


def test_connections_streams_and_tls_by_protocol(sluice, upstreams, certs):  # noqa: F811
    (u,) = upstreams(1)
    port, tport = free_port(), free_port()
    crt, key = certs.issue("a", dns=["a.test"])
    cfg = base_config(port, [u.address])
    cfg["listeners"].append(tls_listener(tport, [{"cert": crt, "key": key}]))
    aport = admin(cfg)
    gw = sluice(cfg, ports=[port, tport])
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    for p in ("http1", "https", "h2"):
        wait_until(lambda: value(metrics(aport), "sluice_connections_active", protocol=p) == 0, what=p)
    # an HTTP/1 keep-alive connection and an HTTP/1.1-over-TLS one, both held open
    plain = RawConn(port)
    assert plain.request("GET", "/x").status == 200
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", tport), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="a.test")
    tls.sendall(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert tls.recv(65536).startswith(b"HTTP/1.1 200")
    session, version = tls.session, tls.version()
    try:
        wait_until(lambda: value(metrics(aport), "sluice_connections_active", protocol="http1") == 1 and
                   value(metrics(aport), "sluice_connections_active", protocol="https") == 1,
                   what="two open connections counted")
    finally:
        plain.close()
        tls.close()
    wait_until(lambda: value(metrics(aport), "sluice_connections_active", protocol="http1") == 0 and
               value(metrics(aport), "sluice_connections_active", protocol="https") == 0,
               what="closed connections uncounted")
    # a resumed session (ticket from the first connection)
    again = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tport), timeout=5), server_hostname="a.test",
                            session=session)
    assert again.session_reused
    again.close()
    # HTTP/2 over TLS: three streams on one connection
    r = curl(["--cacert", str(certs.ca), "--resolve", "a.test:%d:127.0.0.1" % tport, "--http2", "-s", "-o",
              "/dev/null"] + ["https://a.test:%d/s%d" % (tport, i) for i in range(3)], timeout=60)
    assert r.returncode == 0, r.stderr
    ver = {"TLSv1.3": "TLSv1.3", "TLSv1.2": "TLSv1.2"}[version]

    def done():
        m = metrics(aport)
        return (value(m, "sluice_connections_total", protocol="h2") == 1 and
                value(m, "sluice_connections_active", protocol="h2") == 0 and
                value(m, "sluice_h2_streams_total") == 3)
    wait_until(done, what="the HTTP/2 connection counted and closed")
    m = metrics(aport)
    assert value(m, "sluice_h2_streams_active") == 0
    # ours, and the fixture's readiness probe (which may be counted after the first scrape)
    assert value(m, "sluice_connections_total", protocol="http1") in (1, 2)
    assert value(m, "sluice_connections_total", protocol="https") == 2
    assert value(m, "sluice_tls_handshakes_by_version_total", version=ver) == 3
    assert value(m, "sluice_tls_handshakes_total") == 3
    assert value(m, "sluice_tls_handshakes_resumed_total", version=ver) == 1
    assert value(m, "sluice_tls_handshakes_resumed_total", version="other") == 0
    gw.stop()


def test_upstream_connections_opened_reused_idle(sluice, upstreams):
    (u,) = upstreams(1)
    cfg = base_config(free_port(), [u.address], workers=1)
    aport = admin(cfg)
    gw = sluice(cfg)
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    with RawConn(gw.port) as c:
        for i in range(4):
            assert c.request("GET", "/r%d" % i).status == 200
    m = metrics(aport)
    assert value(m, "sluice_pool_upstream_connections_opened_total", pool="web") == 1
    assert value(m, "sluice_pool_upstream_connections_reused_total", pool="web") == 3
    assert value(m, "sluice_pool_upstream_connections_idle", pool="web") == 1
    assert value(m, "sluice_pool_upstream_connections", pool="web") == 1


def test_reloads_by_outcome(sluice, upstreams, sockdir):
    (u,) = upstreams(1)
    cfg = base_config(free_port(), [u.address])
    aport = admin(cfg, sockdir)
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(cfg["admin"]["socket"]), what="admin socket")

    def reload():
        return subprocess.run([SLUICE_BIN, "ctl", "-s", cfg["admin"]["socket"], "reload"], capture_output=True,
                              text=True, timeout=30).returncode
    assert reload() == 0 and reload() == 0
    good = gw.conf_path.read_text()
    gw.conf_path.write_text(good.replace("return {", "return { nonsense_key = 1,", 1))
    assert reload() != 0
    m = metrics(aport)
    assert value(m, "sluice_config_reloads_total", outcome="success") == 2
    assert value(m, "sluice_config_reloads_total", outcome="failure") == 1


def test_regex_give_ups(sluice):
    port = free_port()
    aport = free_port()
    gw = sluice('return { workers = 1, listeners = { { name = "p", address = "127.0.0.1:%d" } },\n'
                '  admin = { http = "127.0.0.1:%d" },\n'
                '  limits = { regex_match_limit = 1000 },\n'
                '  routes = {\n'
                '    { name = "evil", match = { path_regex = "^/(a+)+$" }, respond = { status = 200, body = "e" } },\n'
                '    { name = "fallback", respond = { status = 200, body = "f" } },\n'
                '  } }\n' % (port, aport), ports=[port])
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    with RawConn(port) as c:
        for _ in range(3):
            assert c.request("GET", "/" + "a" * 14 + "!").status == 200
        assert c.request("GET", "/aaa").status == 200
    assert value(metrics(aport), "sluice_route_regex_give_ups_total") == 3


@pytest.mark.skipif(not REDIS, reason="redis-server is not installed")
def test_redis_latency_histogram(sluice, upstreams, tmp_path):
    from test_ratelimit import Redis
    r = Redis(tmp_path)
    try:
        (u,) = upstreams(1)
        cfg = base_config(free_port(), [u.address], workers=1, routes=[
            {"name": "api", "match": {"path_prefix": "/"}, "service": "web", "rate_limit": ["shared"]}])
        cfg["rate_limits"] = {"shared": {"key": "client_ip", "rate": 1000, "per": "1s", "shared": True}}
        cfg["redis"] = {"address": "127.0.0.1:%d" % r.port, "timeout": "500ms"}
        aport = admin(cfg)
        gw = sluice(cfg)
        wait_until(lambda: _can_connect(aport), what="admin http listener")
        with RawConn(gw.port) as c:
            for i in range(5):
                assert c.request("GET", "/r%d" % i).status == 200
        m = metrics(aport)
        count = value(m, "sluice_ratelimit_redis_latency_seconds_count")
        assert count and count >= 1, count
        assert value(m, "sluice_ratelimit_redis_latency_seconds_bucket", le="+Inf") == count
        assert value(m, "sluice_ratelimit_redis_commands_total") >= count
        assert value(m, "sluice_ratelimit_decisions_total", decision="allowed") == 5
    finally:
        r.stop()


def test_rollout_step_and_verdicts(sluice, upstreams, sockdir):
    blue, green = upstreams(2, names=["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(free_port(), [blue.address], workers=1)
    cfg["pools"] = {"blue": {"servers": [{"address": blue.address}]},
                    "green": {"servers": [{"address": green.address}]}}
    cfg["services"] = {"web": {"pools": {"blue": 100, "green": 0}}}
    aport = admin(cfg, sockdir)
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    # the admin socket is bound before the admin HTTP listener: wait for the latter too
    wait_until(lambda: _can_connect(aport), what="admin HTTP listener")
    m = metrics(aport)
    assert value(m, "sluice_service_rollout_step", service="web", pool="green") is None
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "rollout", "start", "web", "--to", "green", "--steps",
                        "10,50,100", "--interval", "1s", "--min-requests", "5", "--max-error-rate", "10%"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    m = metrics(aport)
    assert value(m, "sluice_service_rollout_step", service="web", pool="green") == 1
    assert value(m, "sluice_service_rollout_canary_percent", service="web", pool="green") == 10
    assert value(m, "sluice_service_rollout_state", service="web", pool="green", state="running") == 1
    assert value(m, "sluice_service_rollout_state", service="web", pool="green", state="completed") == 0
    # no traffic for a while: the controller waits (and counts it)
    wait_until(lambda: (value(metrics(aport), "sluice_service_rollout_verdicts_total", service="web",
                              verdict="waiting") or 0) >= 1, timeout=10, what="a waiting verdict")
    deadline = time.monotonic() + 40
    with RawConn(gw.port) as c:
        while value(metrics(aport), "sluice_service_rollout_state", service="web", pool="green",
                    state="completed") != 1:
            assert time.monotonic() < deadline, metrics(aport)
            assert c.request("GET", "/r").status == 200
            time.sleep(0.01)
    m = metrics(aport)
    assert value(m, "sluice_service_rollout_step", service="web", pool="green") == 3
    assert value(m, "sluice_service_rollout_canary_percent", service="web", pool="green") == 100
    assert value(m, "sluice_service_rollout_verdicts_total", service="web", verdict="promoted") == 2
    assert value(m, "sluice_service_rollout_verdicts_total", service="web", verdict="completed") == 1
    assert value(m, "sluice_service_rollout_verdicts_total", service="web", verdict="rolled_back") == 0
