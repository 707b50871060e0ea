"""The access log (one JSON object a line, every field) and the error log (JSON lines on stderr)."""

import json
import re
import socket
import time
from datetime import datetime, timezone

from conftest import RawConn, build_request, closed_port, pattern_bytes

FIELDS = {
    "time": str, "request_id": str, "client_ip": str, "client_port": int, "listener": str, "scheme": str,
    "protocol": str, "method": str, "host": str, "target": str, "route": str, "service": str, "pool": str,
    "upstream": str, "upstream_status": int, "status": int, "reason": str, "bytes_in": int, "bytes_out": int,
    "attempts": int, "duration_ms": (int, float), "upstream_connect_ms": (int, float),
    "upstream_header_ms": (int, float),
}
REASONS = {"", "no_route", "bad_request", "request_too_large", "client_timeout", "client_reset", "rate_limited",
           "waf_denied", "policy_error", "policy_denied", "no_healthy_upstream", "breaker_open", "pool_overflow",
           "retry_budget_exhausted", "upstream_connect_failed", "upstream_reset", "upstream_timeout",
           "upstream_bad_response", "redis_fallback", "draining"}
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def check_shape(e):
    for k, t in FIELDS.items():
        assert k in e, "access log entry lacks %r: %r" % (k, e)
        assert isinstance(e[k], t) and not isinstance(e[k], bool), "%s has type %s: %r" % (k, type(e[k]), e)
    assert TIME_RE.match(e["time"]), e["time"]
    assert e["reason"] in REASONS, e["reason"]


def test_access_log_fields_proxied(gateway):
    gw = gateway(1)
    (u,) = gw.upstreams
    body = b"b" * 1234
    with RawConn(gw.port) as c:
        r = c.request("POST", "/log/path?q=1", host="log.test", body=body)
        port = c.local_port
    assert r.status == 200
    e = gw.wait_log(target="/log/path?q=1")[0]
    check_shape(e)
    t = datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - t).total_seconds()) < 60
    assert e["request_id"] == r.header("x-request-id")
    assert e["client_ip"] == "127.0.0.1" and e["client_port"] == port
    assert e["listener"] == "public" and e["scheme"] == "http" and e["protocol"] == "HTTP/1.1"
    assert e["method"] == "POST" and e["host"] == "log.test"
    assert e["route"] == "default" and e["service"] == "web" and e["pool"] == "web"
    assert e["upstream"] == u.address
    assert e["upstream_status"] == 200 and e["status"] == 200 and e["reason"] == ""
    assert 1234 <= e["bytes_in"] < 1234 + 2048, e["bytes_in"]
    assert len(r.body) <= e["bytes_out"] < len(r.body) + 2048, e["bytes_out"]
    assert e["attempts"] == 1
    assert e["duration_ms"] >= 0 and e["upstream_connect_ms"] >= 0 and e["upstream_header_ms"] >= 0


def test_access_log_timings(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/delay/300").status == 200
    e = gw.wait_log(target="/delay/300")[0]
    assert e["duration_ms"] >= 290 and e["upstream_header_ms"] >= 290, e
    assert e["duration_ms"] < 5000


def test_access_log_upstream_status_and_bytes_out(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/status/503").status == 503
        r = c.request("GET", "/bytes/1000000")
        assert r.body == pattern_bytes(1000000)
    e = gw.wait_log(target="/status/503")[0]
    assert e["status"] == 503 and e["upstream_status"] == 503 and e["reason"] == ""
    e = gw.wait_log(target="/bytes/1000000")[0]
    assert 1000000 <= e["bytes_out"] < 1002048


def test_access_log_http10_protocol_and_host(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        c.send(build_request("GET", "/ten", version="HTTP/1.0", host="Ten.Test:8080"))
        assert c.read_response().status == 200
    e = gw.wait_log(target="/ten")[0]
    assert e["protocol"] == "HTTP/1.0"
    assert e["host"] == "ten.test"


def test_access_log_one_line_per_request(gateway):
    gw = gateway(1)
    ids = []
    with RawConn(gw.port) as c:
        for i in range(20):
            ids.append(c.request("GET", "/line%d" % i).header("x-request-id"))
    entries = gw.wait_log(pred=lambda e: e["target"].startswith("/line"), count=20)
    assert len(entries) == 20
    assert sorted(e["request_id"] for e in entries) == sorted(ids)
    for e in entries:
        check_shape(e)


def test_access_log_to_file(gateway, tmp_path):
    path = tmp_path / "access.log"
    gw = gateway(1, access_log={"path": str(path)})
    with RawConn(gw.port) as c:
        assert c.request("GET", "/to-file").status == 200
    e = gw.wait_log(target="/to-file", path=path)[0]
    check_shape(e)
    assert "/to-file" not in gw.stdout()


def test_access_log_escapes_strings(gateway):
    gw = gateway(1)
    target = '/esc?a="quoted"&b=back\\slash&c=%00'
    with RawConn(gw.port) as c:
        c.send(('GET %s HTTP/1.1\r\nHost: esc.test\r\n\r\n' % target).encode())
        r = c.read_response()
    assert r.status in (200, 400)
    entries = gw.wait_log(status=r.status)  # every line must still parse as JSON
    if r.status == 200:
        assert entries[0]["target"] == target


def test_access_log_no_route_entry(gateway):
    gw = gateway(1, routes=[{"name": "only", "match": {"path": "/only"}, "service": "web"}])
    with RawConn(gw.port) as c:
        assert c.request("GET", "/missing").status == 404
    e = gw.wait_log(target="/missing")[0]
    check_shape(e)
    assert e["reason"] == "no_route" and e["route"] == "" and e["upstream"] == "" and e["attempts"] == 0


def test_access_log_client_reset(gateway):
    gw = gateway(1)
    c = RawConn(gw.port)
    c.send(build_request("GET", "/delay/1500"))
    time.sleep(0.3)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    e = gw.wait_log(target="/delay/1500", timeout=5)[0]
    assert e["reason"] == "client_reset", e


def test_error_log_is_json_lines(gateway):
    gw = gateway(servers=["127.0.0.1:%d" % closed_port()])
    with RawConn(gw.port) as c:
        assert c.request("GET", "/x").status == 502
    time.sleep(0.2)
    lines = [l for l in gw.stderr().splitlines() if l.strip()]
    for l in lines:
        try:
            o = json.loads(l)
        except ValueError:
            raise AssertionError("stderr line is not JSON: %r" % l)
        assert {"time", "level", "msg"} <= set(o), o
        assert TIME_RE.match(o["time"]), o
        assert o["level"] in ("debug", "info", "warn", "warning", "error", "fatal"), o
