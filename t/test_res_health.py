"""Active health checks: a server failing `fall` checks in a row stops getting
requests, one passing `rise` in a row comes back; each transition is logged
once with its reason (refused, status, timeout)."""

import json
import socket
import threading
import time

import pytest

from conftest import RawConn, base_config, free_port, wait_until
from test_res_breaker import FixedPortUpstream, fixed_upstream  # noqa: F401  (fixture)


def transitions(gw):
    out = []
    for ln in gw.stderr().splitlines():
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if e.get("msg") in ("upstream server down", "upstream server up"):
            out.append(e)
    return out


def served_by(gw, n, target="/x"):
    names = []
    for i in range(n):
        with RawConn(gw.port) as c:
            r = c.request("GET", "%s%d" % (target, i))
        names.append(r.header("x-upstream") if r.status == 200 else r.status)
    return names


HC = {"type": "http", "path": "/status/200", "interval": "100ms", "timeout": "80ms", "rise": 2, "fall": 3}


def test_http_check_down_on_refused_and_back_on_recovery(sluice, upstreams, fixed_upstream):
    (stable,) = upstreams(1, names=["stable"])
    port = free_port()
    flaky = fixed_upstream(port, "flaky")
    gw = sluice(base_config(free_port(), [flaky.address, stable.address], workers=2, pool={"health_check": HC}))
    assert set(served_by(gw, 6)) == {"flaky", "stable"}
    flaky.stop()
    wait_until(lambda: transitions(gw), timeout=3, what="down transition")
    t = transitions(gw)
    assert len(t) == 1 and t[0]["msg"] == "upstream server down" and t[0]["reason"] == "refused"
    assert t[0]["server"] == flaky.address and t[0]["in_a_row"] == 3
    # no request goes to the down server: all succeed on the other one
    assert served_by(gw, 20, "/down") == ["stable"] * 20
    flaky = fixed_upstream(port, "flaky")
    wait_until(lambda: len(transitions(gw)) == 2, timeout=3, what="up transition")
    t = transitions(gw)[1]
    assert t["msg"] == "upstream server up" and t["reason"] == "status 200" and t["in_a_row"] == 2
    wait_until(lambda: "flaky" in served_by(gw, 4, "/back"), timeout=2, what="traffic back on flaky")
    time.sleep(0.5)
    assert len(transitions(gw)) == 2, "each transition is logged once"


def test_http_check_expects_status_range(sluice, upstreams):
    (u,) = upstreams(1)
    hc = dict(HC, path="/status/500", expect="200-399")
    gw = sluice(base_config(free_port(), [u.address], workers=1, pool={"health_check": hc}))
    wait_until(lambda: transitions(gw), timeout=3, what="down transition")
    assert transitions(gw)[0]["reason"] == "status 500"
    t0 = time.monotonic()
    with RawConn(gw.port) as c:
        r = c.request("GET", "/x")
    assert time.monotonic() - t0 < 0.5
    assert r.status == 503 and r.header("retry-after")
    assert gw.wait_log(target="/x")[0]["reason"] == "no_healthy_upstream"


def test_http_check_timeout(sluice, upstreams):
    (u,) = upstreams(1)
    hc = dict(HC, path="/hang")
    gw = sluice(base_config(free_port(), [u.address], workers=1, pool={"health_check": hc}))
    wait_until(lambda: transitions(gw), timeout=3, what="down transition")
    assert transitions(gw)[0]["reason"] == "timeout"


def test_http_check_sends_path_and_host(sluice, upstreams):
    (u,) = upstreams(1)
    seen = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    addr = "127.0.0.1:%d" % lsock.getsockname()[1]

    def serve():
        lsock.settimeout(5)
        try:
            while len(seen) < 2:
                c, _ = lsock.accept()
                data = c.recv(4096)
                seen.append(data)
                c.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
                c.close()
        except OSError:
            pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    hc = dict(HC, path="/healthz", host="hc.example")
    gw = sluice(base_config(free_port(), [addr], workers=1, pool={"health_check": hc}))
    th.join(5)
    lsock.close()
    assert seen and seen[0].startswith(b"GET /healthz HTTP/1.1\r\n")
    assert b"\r\nhost: hc.example\r\n" in seen[0]


def test_tcp_check(sluice, upstreams, fixed_upstream):
    (stable,) = upstreams(1, names=["stable"])
    port = free_port()
    flaky = fixed_upstream(port, "flaky")
    hc = {"type": "tcp", "interval": "100ms", "timeout": "80ms", "rise": 1, "fall": 1}
    gw = sluice(base_config(free_port(), [flaky.address, stable.address], workers=1, pool={"health_check": hc}))
    flaky.stop()
    wait_until(lambda: transitions(gw), timeout=3, what="down transition")
    assert transitions(gw)[0]["reason"] == "refused"
    assert set(served_by(gw, 6)) == {"stable"}


def test_bad_health_check_config(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address],
                            pool={"health_check": {"type": "icmp", "interval": "1s", "timeout": "2s"}}), ready=False)
    assert gw.wait(10) == 1
    err = gw.stderr()
    assert 'pools.web.health_check.type: unknown value "icmp"' in err
    assert "pools.web.health_check.timeout: must not be longer than interval" in err
