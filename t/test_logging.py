"""The access log (one JSON object a line, every field) and the error/event log (JSON lines: stderr, a file
reopened for logrotate, stdout)."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
from datetime import datetime, timezone

from conftest import (SLUICE_BIN, SRC_DIR, RawConn, base_config, build_request, closed_port, config_to_lua, free_port,
                      pattern_bytes)

FIELDS = {
    "time": str, "request_id": str, "client_ip": str, "client_port": int, "listener": str, "scheme": str,
    "protocol": str, "method": str, "host": str, "target": str, "route": str, "service": str, "pool": str,
    "upstream": str, "upstream_status": int, "status": int, "reason": str, "bytes_in": int, "bytes_out": int,
    "attempts": int, "duration_ms": (int, float), "upstream_connect_ms": (int, float),
    "upstream_header_ms": (int, float), "upstream_duration_ms": (int, float), "http_version": str,
    "stream_id": int, "generation": int,
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
    assert e["http_version"] == "1.1" and e["stream_id"] == 0 and e["generation"] == 1
    assert 0 < e["upstream_duration_ms"] <= e["duration_ms"]
    assert "trace_id" not in e  # no tracing configured


def test_access_log_timings(gateway):
    gw = gateway(1)
    with RawConn(gw.port) as c:
        assert c.request("GET", "/delay/300").status == 200
    e = gw.wait_log(target="/delay/300")[0]
    assert e["duration_ms"] >= 290 and e["upstream_header_ms"] >= 290, e
    assert e["upstream_duration_ms"] >= 290, e
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
    assert e["protocol"] == "HTTP/1.0" and e["http_version"] == "1.0"
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


def test_access_log_keeps_utf8_text(gateway):
    """A target in UTF-8 (obs-text to the HTTP/1 parser) is logged as the same text, its bytes as they
    are: a JSON reader gets "/café", not "/cafÃ©" (src/json_str.h)."""
    gw = gateway(1)
    target = "/caf\u00e9/\u2603?q=\U0001F600&n=\u00a0"
    with RawConn(gw.port) as c:
        c.send(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: utf8.test\r\n\r\n")
        assert c.read_response().status == 200
    gw.wait_log(host="utf8.test")
    (line,) = [ln for ln in gw.out_path.read_bytes().splitlines() if b'"utf8.test"' in ln]
    assert json.loads(line.decode("utf-8"))["target"] == target  # strict UTF-8, then JSON
    assert b'"target":"' + target.encode() + b'"' in line, line


def test_access_log_escapes_bytes_that_are_not_utf8(gateway):
    """Bytes of ill-formed UTF-8 (a stray 0xff, a cut sequence, a surrogate) come as \\u00XX, one per
    byte, and a C1 control as its code point: the line is still strict UTF-8 JSON and loses nothing."""
    gw = gateway(1)
    target = b"/bad\xff\xc3(\xed\xa0\x80\xc2\x9b\xc3\xa9"
    with RawConn(gw.port) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: notutf8.test\r\n\r\n")
        assert c.read_response().status == 200
    gw.wait_log(host="notutf8.test")
    (line,) = [ln for ln in gw.out_path.read_bytes().splitlines() if b'"notutf8.test"' in ln]
    e = json.loads(line.decode("utf-8"))
    assert e["target"] == "/bad\u00ff\u00c3(\u00ed\u00a0\u0080\u009b\u00e9", e["target"]
    assert b'"target":"/bad\\u00ff\\u00c3(\\u00ed\\u00a0\\u0080\\u009b\xc3\xa9"' in line, line


def test_access_log_no_route_entry(gateway):
    gw = gateway(1, routes=[{"name": "only", "match": {"path": "/only"}, "service": "web"}])
    with RawConn(gw.port) as c:
        assert c.request("GET", "/missing").status == 404
    e = gw.wait_log(target="/missing")[0]
    check_shape(e)
    assert e["reason"] == "no_route" and e["route"] == "" and e["upstream"] == "" and e["attempts"] == 0
    assert e["upstream_duration_ms"] == 0


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


TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")


def test_access_log_trace_ids_waf_fields_and_generation(sluice, upstreams, tmp_path):
    """trace_id is what went upstream in traceparent (its parent id, for this
    unsampled request, the logged span_id itself, docs/tracing.md); WAF fields of a blocked
    request; the generation moves with a reload (SIGHUP)."""
    (u,) = upstreams(1)
    port = free_port()
    cfg = base_config(port, [u.address], tracing={"sample": 1},
                      waf={"paranoia": 1, "mode": "block", "rules": str(SRC_DIR / "lua" / "waf")})
    gw = sluice(cfg)
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    with RawConn(port) as c:
        r = c.request("GET", "/traced", headers=[("traceparent", caller)])
        (tp,) = [v for k, v in r.json()["headers"] if k.lower() == "traceparent"]
        blocked = c.request("GET", "/search?q=" + urllib.parse.quote("<script>alert(1)</script>"))
        assert blocked.status == 403
    m = TP_RE.match(tp)
    e = gw.wait_log(target="/traced")[0]
    check_shape(e)
    assert e["trace_id"] == m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert re.match(r"^[0-9a-f]{16}$", e["span_id"]) and e["span_id"] == m.group(2) != "00f067aa0ba902b7"
    assert e["parent_span_id"] == "00f067aa0ba902b7"
    assert e["upstream_span_id"] == m.group(2)  # the parent id the upstream got
    assert e["trace_sampled"] is False  # the caller's -00 decides
    b = gw.wait_log(status=403)[0]
    assert re.match(r"^[0-9a-f]{32}$", b["trace_id"]) and b["parent_span_id"] == "" and b["trace_sampled"] is True
    assert b["upstream_span_id"] == ""  # answered by sluice: no upstream attempt
    assert "18001" in b["waf_rules"].split(",") and b["waf_action"] == "block" and int(b["waf_score"]) >= 5
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        with RawConn(port) as c:
            assert c.request("GET", "/after-reload").status == 200
        if [x for x in gw.access_log() if x["target"] == "/after-reload" and x["generation"] == 2]:
            break
        assert time.monotonic() < deadline, gw.stderr()[-2000:]
        time.sleep(0.1)


def test_access_log_http2_stream_id(sluice, upstreams):
    import h2.events
    from test_h2 import H2Client
    (u,) = upstreams(1)
    port = free_port()
    cfg = base_config(port, [u.address])
    cfg["listeners"][0]["h2c"] = True
    gw = sluice(cfg)
    c = H2Client(port)
    for path in ("/h2/a", "/h2/b"):
        sid = c.get(path)
        c.events_until(lambda g: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in g))
    c.sock.close()
    a = gw.wait_log(target="/h2/a")[0]
    b = gw.wait_log(target="/h2/b")[0]
    check_shape(a)
    assert a["protocol"] == "HTTP/2.0" and a["http_version"] == "2"
    # one connection: streams 1 and 3
    assert (a["stream_id"], b["stream_id"]) == (1, 3), (a["stream_id"], b["stream_id"])


def test_error_log_to_a_file_reopened_and_moved_by_reload(sluice, upstreams, tmp_path):
    """error_log.path: sluice's messages go to the file (relative to the config), which
    SIGUSR1 and `ctl reopen-logs` reopen by name (logrotate); a reload moves them back."""
    (u,) = upstreams(1)
    sock = str(tmp_path / "admin.sock")
    cfg = base_config(free_port(), [u.address], admin={"socket": sock}, error_log={"path": "logs/error.log"})
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "error.log"
    gw = sluice(cfg)

    def lines(p):
        return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []

    deadline = time.monotonic() + 5
    while not [e for e in lines(path) if e["msg"] == "started"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e for e in lines(path) if e["msg"] == "started"], gw.stderr()
    os.rename(path, str(path) + ".1")
    gw.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not [e for e in lines(path) if e["msg"] == "log file reopened"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e for e in lines(path) if e["msg"] == "log file reopened" and e["stream"] == "stderr"]
    os.rename(path, str(path) + ".2")
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "reopen-logs"], capture_output=True, text=True, timeout=15)
    assert p.returncode == 0, p.stderr
    deadline = time.monotonic() + 5
    while not lines(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines(path), "reopen-logs did not make a new file"
    # a reload without error_log: messages go back to the stderr sluice started with
    cfg.pop("error_log")
    gw.conf_path.write_text(config_to_lua(cfg))
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "reload"], capture_output=True, text=True, timeout=15)
    assert p.returncode == 0, p.stderr
    deadline = time.monotonic() + 5
    while not [e for e in gw.log_entries() if e["msg"] == "config reloaded"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e for e in gw.log_entries() if e["msg"] == "config reloaded"], gw.stderr()
    assert '"msg":"started"' not in gw.stderr()  # that one went to the file


def test_error_log_to_stdout(sluice, upstreams, tmp_path):
    (u,) = upstreams(1)
    cfg = base_config(free_port(), [u.address], error_log={"path": "stdout"}, access_log={"path": "off"})
    gw = sluice(cfg)
    deadline = time.monotonic() + 5
    while '"msg":"started"' not in gw.stdout() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"msg":"started"' in gw.stdout()
