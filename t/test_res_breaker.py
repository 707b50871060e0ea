"""Circuit breakers against real upstream processes made to fail on purpose:
they trip within the configured counts, an open server gets no request, the
pool answers 503 breaker_open with Retry-After at once, and a half-open
breaker closes again after its probes succeed (or re-opens, backing off)."""

import json
import re
import subprocess
import time

import pytest

from conftest import DEMO_UPSTREAM, PYTHON, RawConn, base_config, free_port, wait_until


def get(gw, target="/", headers=None):
    with RawConn(gw.port, timeout=8) as c:
        return c.request("GET", target, headers=headers)


def breaker_logs(gw):
    out = []
    for ln in gw.stderr().splitlines():
        try:
            e = json.loads(ln)
        except ValueError:
            continue
        if e.get("msg") == "circuit breaker state changed":
            out.append(e)
    return out


class FixedPortUpstream:
    """A demo upstream on a given port, so a test can stop it and bring it back."""

    def __init__(self, port, name):
        self.port = port
        self.address = "127.0.0.1:%d" % port
        self.proc = subprocess.Popen([PYTHON, str(DEMO_UPSTREAM), "--port", str(port), "--name", name],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        assert "listening" in line, line

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc.stdout.close()


@pytest.fixture
def fixed_upstream():
    started = []

    def start(port, name):
        u = FixedPortUpstream(port, name)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


BREAKER = {"consecutive_failures": 3, "error_rate": 0.5, "min_requests": 20, "open_for": "1s",
           "max_open_for": "4s", "half_open_probes": 2, "window": "10s"}


def test_trips_after_consecutive_failures_then_503_breaker_open(sluice, upstreams):
    (u,) = upstreams(1)
    port = free_port()
    gw = sluice(base_config(port, [u.address], workers=2, pool={"breaker": BREAKER}))
    for i in range(3):
        r = get(gw, "/status/503?i=%d" % i)
        assert r.status == 503 and r.header("x-upstream") == "u1"
    before = u.stats()["requests"]
    t0 = time.monotonic()
    r = get(gw, "/after")
    assert time.monotonic() - t0 < 0.5, "breaker_open must answer at once"
    assert r.status == 503 and r.header("x-upstream") is None
    assert r.header("retry-after") == "1"
    e = gw.wait_log(target="/after")[0]
    assert e["reason"] == "breaker_open" and e["upstream_status"] == 0
    assert u.stats()["requests"] == before, "a request reached a server whose breaker is open"
    logs = breaker_logs(gw)
    assert [x["state"] for x in logs] == ["open"], logs
    assert logs[0]["trigger"] == "consecutive_failures" and logs[0]["server"] == u.address


def test_two_failures_do_not_trip_three(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address], workers=1, pool={"breaker": BREAKER}))
    for _ in range(5):
        assert get(gw, "/status/503").status == 503
        assert get(gw, "/status/503").status == 503
        assert get(gw, "/ok").status == 200  # a success resets the run
    assert breaker_logs(gw) == []


def test_error_rate_trigger_needs_min_requests(sluice, upstreams):
    (u,) = upstreams(1)
    b = dict(BREAKER, consecutive_failures=0, error_rate=0.5, min_requests=10)
    gw = sluice(base_config(free_port(), [u.address], workers=1, pool={"breaker": b}))
    for i in range(9):
        r = get(gw, "/status/503" if i % 2 else "/ok")
        assert r.header("x-upstream") == "u1"
    assert breaker_logs(gw) == []
    assert get(gw, "/status/503").status == 503  # 10th call, 5/10 failed
    wait_until(lambda: breaker_logs(gw), what="breaker log")
    assert breaker_logs(gw)[0]["trigger"] == "error_rate"
    r = get(gw, "/x")
    assert r.status == 503 and gw.wait_log(target="/x")[0]["reason"] == "breaker_open"


def test_state_is_shared_by_workers_and_open_server_gets_nothing(sluice, fixed_upstream, upstreams):
    (good,) = upstreams(1, names=["good"])
    bad_port = free_port()  # nothing listens: connections are refused
    bad = "127.0.0.1:%d" % bad_port
    gw = sluice(base_config(free_port(), [bad, good.address], workers=2,
                            pool={"breaker": dict(BREAKER, consecutive_failures=2, open_for="30s", max_open_for="60s")}))
    statuses = [get(gw, "/r%d" % i).status for i in range(40)]
    entries = gw.wait_log(count=40, pred=lambda e: e["target"].startswith("/r"))
    to_bad = [e for e in entries if e["upstream"] == bad]
    # whatever worker served them, the pool saw exactly 2 failures before the breaker opened
    assert len(to_bad) == 2, to_bad
    assert all(e["reason"] == "upstream_connect_failed" for e in to_bad)
    assert statuses.count(200) == 38
    assert [x["state"] for x in breaker_logs(gw)] == ["open"]


def test_half_open_probes_close_the_breaker_after_recovery(sluice, fixed_upstream):
    port = free_port()
    u = fixed_upstream(port, "flaky")
    gw = sluice(base_config(free_port(), [u.address], workers=2, pool={"breaker": BREAKER}))
    assert get(gw, "/warm").status == 200
    u.stop()
    for i in range(3):
        assert get(gw, "/down%d" % i).status == 502
    r = get(gw, "/open")
    assert r.status == 503 and r.header("retry-after") == "1"
    u = fixed_upstream(port, "flaky")
    time.sleep(1.1)
    # half-open: two probes, both succeed -> closed
    assert get(gw, "/probe1").status == 200
    assert get(gw, "/probe2").status == 200
    wait_until(lambda: [x["state"] for x in breaker_logs(gw)] == ["open", "half_open", "closed"],
               what="breaker closed")
    for i in range(5):
        assert get(gw, "/after%d" % i).status == 200


def test_failed_probe_reopens_with_doubled_open_time(sluice, upstreams):
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address], workers=1, pool={"breaker": BREAKER}))
    for _ in range(3):
        get(gw, "/status/503")
    assert get(gw, "/x").status == 503
    time.sleep(1.1)
    r = get(gw, "/status/503?probe=1")
    assert r.header("x-upstream") == "u1", "the probe must reach the server"
    logs = breaker_logs(gw)
    assert [x["state"] for x in logs] == ["open", "half_open", "open"], logs
    assert logs[0]["open_ms"] == 1000 and logs[2]["open_ms"] == 2000
    assert logs[2]["trigger"] == "probe_failed"
    r = get(gw, "/y")
    assert r.status == 503 and r.header("retry-after") == "2"
    time.sleep(1.2)
    assert get(gw, "/z").status == 503, "still open: the second open period is 2 s"


def test_half_open_admits_only_the_configured_probes(sluice, upstreams):
    (u,) = upstreams(1)
    b = dict(BREAKER, half_open_probes=1)
    gw = sluice(base_config(free_port(), [u.address], workers=2, pool={"breaker": b}))
    for _ in range(3):
        get(gw, "/status/503")
    time.sleep(1.1)
    # one slow probe in flight: every other request is refused meanwhile
    c = RawConn(gw.port, timeout=8)
    c.send(b"GET /delay/800 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    r = get(gw, "/meanwhile")
    assert r.status == 503 and gw.wait_log(target="/meanwhile")[0]["reason"] == "breaker_open"
    assert c.read_response().status == 200
    c.close()
    wait_until(lambda: breaker_logs(gw)[-1]["state"] == "closed", what="closed after the probe")
    assert get(gw, "/later").status == 200
