"""HTTP/2 streams served directly by the pipeline (no HTTP/1.1 detour inside
sluice): what the upstream receives for a stream, what the client gets back,
and the answers the pipeline gives a stream itself (431, 501, 408, a reset
for a request target that cannot go into an HTTP/1.1 request line)."""

import json
import time

import pytest

import h2.errors
import h2.events

from conftest import base_config, free_port
from test_h2 import H2Client


@pytest.fixture
def h2c(sluice, upstreams):
    def make(limits=None):
        (u,) = upstreams(1)
        port = free_port()
        cfg = base_config(port, [u.address], limits=limits)
        cfg["listeners"][0]["h2c"] = True
        gw = sluice(cfg)
        gw.u = u
        return gw
    return make


def request(c, headers, body=None, end=True, trailers=None):
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, headers, end_stream=body is None and trailers is None and end)
    if body is not None:
        c.conn.send_data(sid, body, end_stream=trailers is None and end)
    if trailers:
        c.conn.send_headers(sid, trailers, end_stream=True)
    c.flush()
    return sid


def send_body(c, sid, payload):
    """DATA within the flow-control windows the gateway grants (it acknowledges as the upstream takes it)."""
    while payload:
        n = min(len(payload), c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
        if n == 0:
            c.events_until(lambda g: any(isinstance(e, h2.events.WindowUpdated) for e in g), timeout=5)
            continue
        c.conn.send_data(sid, payload[:n])
        c.flush()
        payload = payload[n:]


def ended(sid):
    return lambda g: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                         for e in g) or "closed" in g


def response(evs, sid):
    head = [e for e in evs if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid]
    body = b"".join(e.data for e in evs if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
    return (dict(head[0].headers) if head else None), body


def test_stream_head_reaches_the_upstream_as_http11_and_is_logged_as_h2(h2c):
    gw = h2c()
    c = H2Client(gw.port)
    sid = request(c, [(":method", "GET"), (":path", "/echo?x=1"), (":scheme", "http"), (":authority", "a.test:8443"),
                      ("cookie", "a=1"), ("x-custom", "v"), ("cookie", "b=2"), ("x-request-id", "req-h2-1")])
    evs = c.events_until(ended(sid))
    head, body = response(evs, sid)
    assert head[":status"] == "200"
    assert head["x-request-id"] == "req-h2-1"
    assert int(head["content-length"]) == len(body)
    info = json.loads(body)
    assert info["method"] == "GET" and info["target"] == "/echo?x=1" and info["version"] == "HTTP/1.1"
    hdrs = [(k.lower(), v) for k, v in info["headers"]]
    # RFC 9113 8.2.3: the crumbs travel as one cookie field
    assert [v for k, v in hdrs if k == "cookie"] == ["a=1; b=2"]
    assert ("host", "a.test:8443") in hdrs and ("x-custom", "v") in hdrs
    assert ("x-forwarded-proto", "http") in hdrs and ("x-request-id", "req-h2-1") in hdrs
    assert not any(k in ("content-length", "transfer-encoding") for k, _ in hdrs)
    c.close()
    (e,) = gw.wait_log(request_id="req-h2-1")
    assert e["protocol"] == "HTTP/2.0" and e["status"] == 200 and e["method"] == "GET"
    assert e["host"] == "a.test" and e["target"] == "/echo?x=1" and e["bytes_out"] > len(body)  # head + body


def test_body_without_length_goes_chunked_with_its_trailers(h2c):
    gw = h2c()
    c = H2Client(gw.port)
    payload = bytes(range(256)) * 1024  # 256 KiB: several windows' worth
    sid = request(c, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"), (":authority", "a.test")],
                  end=False)
    send_body(c, sid, payload)
    c.conn.send_headers(sid, [("x-checksum", "abc")], end_stream=True)
    c.flush()
    evs = c.events_until(ended(sid), timeout=20)
    head, body = response(evs, sid)
    assert head[":status"] == "200"
    info = json.loads(body)
    hdrs = dict((k.lower(), v) for k, v in info["headers"])
    assert hdrs.get("transfer-encoding") == "chunked"
    assert info["body_len"] == len(payload)
    assert [[k.lower(), v] for k, v in info["trailers"]] == [["x-checksum", "abc"]]
    c.close()


def test_too_many_fields_are_answered_431_and_the_connection_goes_on(h2c):
    gw = h2c(limits={"max_headers": 10})
    c = H2Client(gw.port)
    sid = request(c, [(":method", "GET"), (":path", "/echo"), (":scheme", "http"), (":authority", "a.test")]
                  + [("x-f%d" % i, "v") for i in range(30)])
    head, _ = response(c.events_until(ended(sid)), sid)
    assert head[":status"] == "431"
    sid = request(c, [(":method", "GET"), (":path", "/echo"), (":scheme", "http"), (":authority", "a.test")])
    head, _ = response(c.events_until(ended(sid)), sid)
    assert head[":status"] == "200"
    c.close()
    gw.wait_log(status=431, reason="request_too_large")


def test_connect_is_answered_501(h2c):
    gw = h2c()
    c = H2Client(gw.port)
    c.conn.config.validate_outbound_headers = False  # the h2 library insists on :path, even for CONNECT
    sid = request(c, [(":method", "CONNECT"), (":authority", "a.test:443")])
    head, _ = response(c.events_until(ended(sid)), sid)
    assert head[":status"] == "501"
    c.close()


def test_target_that_cannot_go_into_a_request_line_resets_the_stream_only(h2c):
    gw = h2c()
    c = H2Client(gw.port)
    c.conn.config.validate_outbound_headers = False
    c.conn.config.normalize_outbound_headers = False
    sid = request(c, [(":method", "GET"), (":path", "/a b HTTP/1.1\tx"), (":scheme", "http"), (":authority", "a.test")])
    evs = c.events_until(ended(sid))
    resets = [e for e in evs if isinstance(e, h2.events.StreamReset) and e.stream_id == sid]
    assert resets and resets[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    sid = request(c, [(":method", "GET"), (":path", "/echo"), (":scheme", "http"), (":authority", "a.test")])
    head, _ = response(c.events_until(ended(sid)), sid)
    assert head[":status"] == "200"
    c.close()
    assert gw.u.stats()["requests"] == 1  # the bad one never reached the upstream


def test_stalled_upload_is_answered_408(h2c):
    gw = h2c(limits={"client_body_timeout": "1s"})
    c = H2Client(gw.port)
    sid = request(c, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"), (":authority", "a.test"),
                      ("content-length", "100")], body=b"x" * 10, end=False)
    t0 = time.monotonic()
    evs = c.events_until(ended(sid), timeout=10)
    head, _ = response(evs, sid)
    assert head and head[":status"] == "408", evs
    assert time.monotonic() - t0 < 5
    c.close()
    gw.wait_log(status=408, reason="client_timeout")


def test_stream_cut_by_the_end_of_the_drain_time_is_logged_as_draining(sluice, upstreams):
    (u,) = upstreams(1)
    port = free_port()
    cfg = base_config(port, [u.address], drain_timeout="1s")
    cfg["listeners"][0]["h2c"] = True
    gw = sluice(cfg)
    c = H2Client(gw.port)
    sid = request(c, [(":method", "GET"), (":path", "/delay/5000"), (":scheme", "http"), (":authority", "a.test"),
                      ("x-request-id", "slow-h2")])
    time.sleep(0.3)
    gw.send_signal(15)
    assert gw.wait(10) == 0
    c.close()
    (e,) = gw.wait_log(request_id="slow-h2")
    assert e["reason"] == "draining" and e["protocol"] == "HTTP/2.0", e
