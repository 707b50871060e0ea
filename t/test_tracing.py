"""W3C Trace Context and OTLP/HTTP export (issue 14, tracing): a real OTLP
receiver started by the test (python http.server on a free port) decodes
what sluice POSTs and checks it against the OTLP JSON shape; a real demo
upstream shows the traceparent sluice sends it; requests over HTTP/1.1 and
HTTP/2 (h2c, curl); the collector down; sample = 0; a reload."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import RawConn, base_config, closed_port, config_to_lua, free_port, run_sluice, wait_until
from test_counters import ctl, total

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
IN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
IN_SPAN = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP receiver: every POST body is decoded as JSON and kept."""

    def __init__(self, status=200):
        self.requests = []
        self.status = status
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.requests.append((self.path, dict((k.lower(), v) for k, v in self.headers.items()), body))
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/v1/traces" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        out = []
        with self.lock:
            reqs = list(self.requests)
        for path, headers, body in reqs:
            assert path == "/v1/traces"
            assert headers["content-type"] == "application/json"
            doc = json.loads(body)
            for rs in check_otlp(doc):
                out.append(rs)
        return out

    def wait_spans(self, pred=lambda s: True, count=1, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            got = [s for s in self.spans() if pred(s)]
            if len(got) >= count:
                return got
            assert time.monotonic() < deadline, "wanted %d spans, got %r" % (count, self.spans())
            time.sleep(0.1)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def check_otlp(doc):
    """The OTLP JSON ExportTraceServiceRequest shape; returns the spans, each
    with its resource's attributes under "_resource" and attributes as a dict."""
    assert set(doc) == {"resourceSpans"}, doc.keys()
    out = []
    for rs in doc["resourceSpans"]:
        res = attrs(rs["resource"]["attributes"])
        assert isinstance(rs["scopeSpans"], list) and rs["scopeSpans"]
        for ss in rs["scopeSpans"]:
            assert ss["scope"]["name"] == "sluice" and isinstance(ss["scope"]["version"], str)
            for sp in ss["spans"]:
                assert HEX32.match(sp["traceId"]) and sp["traceId"] != "0" * 32, sp
                assert HEX16.match(sp["spanId"]) and sp["spanId"] != "0" * 16, sp
                if "parentSpanId" in sp:
                    assert HEX16.match(sp["parentSpanId"]), sp
                assert sp["kind"] == 2  # SPAN_KIND_SERVER
                assert isinstance(sp["name"], str) and sp["name"]
                start, end = int(sp["startTimeUnixNano"]), int(sp["endTimeUnixNano"])
                assert isinstance(sp["startTimeUnixNano"], str) and isinstance(sp["endTimeUnixNano"], str)
                assert abs(start / 1e9 - time.time()) < 300 and end >= start, sp
                assert isinstance(sp["flags"], int)
                if "status" in sp:
                    assert sp["status"]["code"] in (0, 1, 2)
                s = dict(sp)
                s["attributes"] = attrs(sp["attributes"])
                s["_resource"] = res
                out.append(s)
    return out


def attrs(lst):
    d = {}
    for a in lst:
        assert set(a) == {"key", "value"}, a
        (kind, v), = a["value"].items()
        assert kind in ("stringValue", "intValue", "boolValue", "doubleValue"), a
        if kind == "intValue":
            assert isinstance(v, str) and re.match(r"^-?\d+$", v), a
            v = int(v)
        assert a["key"] not in d, "attribute %s twice" % a["key"]
        d[a["key"]] = v
    return d


@pytest.fixture
def collector():
    cs = []

    def start(**kw):
        c = Collector(**kw)
        cs.append(c)
        return c

    yield start
    for c in cs:
        c.stop()


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-trace-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def traced_gw(sluice, upstreams, tracing, sockdir=None, **kw):
    (u,) = upstreams(1)
    port = free_port()
    routes = [
        {"name": "local", "match": {"path": "/local"}, "respond": {"status": 200, "body": "ok\n"}},
        {"name": "dead", "match": {"path_prefix": "/dead"}, "pool": "dead"},
        {"name": "app", "match": {"path_prefix": "/app"}, "service": "web"},
    ]
    cfg = base_config(port, [u.address], routes=routes, tracing=tracing, **kw)
    cfg["pools"]["dead"] = {"servers": [{"address": "127.0.0.1:%d" % closed_port()}]}
    if sockdir:
        cfg["admin"] = {"socket": os.path.join(sockdir, "admin.sock")}
    gw = sluice(cfg)
    gw.cfg = cfg
    gw.u = u
    gw.sock = cfg.get("admin", {}).get("socket")
    return gw


def upstream_tp(resp):
    """The traceparent (and tracestate) headers the upstream received (its echo)."""
    hs = resp.json()["headers"]
    tp = [v for k, v in hs if k.lower() == "traceparent"]
    ts = [v for k, v in hs if k.lower() == "tracestate"]
    return tp, ts


def get(port, path, headers=None):
    with RawConn(port) as c:
        return c.request("GET", path, headers=headers or [])


def counter(sock, name):
    return total(ctl(sock, "show", "counters", json_out=True), name)


def test_new_trace_is_exported_and_the_upstream_is_its_child(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1.0, "service_name": "edge-gw"})
    r = get(gw.port, "/app/items?x=1", headers=[("User-Agent", "trace-test/1.0")])
    assert r.status == 200
    (tp,), ts = upstream_tp(r)
    assert ts == []
    m = TP.match(tp)
    assert m and m.group(3) == "01", tp
    (sp,) = col.wait_spans(lambda s: s["attributes"].get("url.path") == "/app/items")
    # the upstream request's parent is the exported span
    assert m.group(1) == sp["traceId"] and m.group(2) == sp["spanId"]
    assert "parentSpanId" not in sp  # a root: no incoming trace
    assert sp["_resource"]["service.name"] == "edge-gw"
    a = sp["attributes"]
    assert a["http.request.method"] == "GET" and a["url.scheme"] == "http" and a["http.route"] == "app"
    assert a["http.response.status_code"] == 200 and a["network.protocol.version"] == "1.1"
    assert a["client.address"] == "127.0.0.1" and a["user_agent.original"] == "trace-test/1.0"
    assert a["server.address"] == "example.test" and "error.type" not in a
    assert a["sluice.upstream.address"] == gw.u.address
    assert a["sluice.request_id"] == r.header("x-request-id")
    assert sp["name"] == "GET app" and "status" not in sp


def test_incoming_traceparent_is_continued_with_its_tracestate(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 0})
    tp_in = "00-%s-%s-01" % (IN_TRACE, IN_SPAN)
    r = get(gw.port, "/app/continued", headers=[("traceparent", tp_in), ("tracestate", "vendor1=abc, k2@sys=x y")])
    (tp,), ts = upstream_tp(r)
    m = TP.match(tp)
    # same trace, a new span whose parent is the caller's; sampled by the parent although sample = 0
    assert m.group(1) == IN_TRACE and m.group(2) != IN_SPAN and m.group(3) == "01"
    assert ts == ["vendor1=abc,k2@sys=x y"]
    (sp,) = col.wait_spans(lambda s: s["attributes"].get("url.path") == "/app/continued")
    assert sp["traceId"] == IN_TRACE and sp["parentSpanId"] == IN_SPAN and sp["spanId"] == m.group(2)
    assert sp["traceState"] == "vendor1=abc,k2@sys=x y"
    assert sp["flags"] & 0x300 == 0x300  # the parent is known to be remote


def test_unsampled_parent_is_propagated_not_exported(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1, "interval": "100ms"})
    r = get(gw.port, "/app/unsampled", headers=[("traceparent", "00-%s-%s-00" % (IN_TRACE, IN_SPAN))])
    (tp,), _ = upstream_tp(r)
    assert tp.startswith("00-%s-" % IN_TRACE) and tp.endswith("-00") and IN_SPAN not in tp
    get(gw.port, "/app/marker")  # sampled: once it is exported, the one before would have been too
    col.wait_spans(lambda s: s["attributes"].get("url.path") == "/app/marker")
    assert not [s for s in col.spans() if s["attributes"].get("url.path") == "/app/unsampled"]


@pytest.mark.parametrize("bad", [
    "00-%s-%s-01" % (IN_TRACE.upper(), IN_SPAN),      # upper-case hex
    "00-%s-%s-01" % ("0" * 32, IN_SPAN),              # all-zero trace id
    "00-%s-%s-01" % (IN_TRACE, "0" * 16),             # all-zero parent id
    "ff-%s-%s-01" % (IN_TRACE, IN_SPAN),              # the forbidden version
    "00-%s-%s-01-extra" % (IN_TRACE, IN_SPAN),        # version 00 has four parts
    "00-%s-%s-1" % (IN_TRACE, IN_SPAN),               # short flags
    "00_%s-%s-01" % (IN_TRACE, IN_SPAN),              # bad separator
    "garbage",
])
def test_invalid_traceparent_starts_a_new_trace(sluice, upstreams, collector, bad):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1, "interval": "100ms"})
    r = get(gw.port, "/app/bad", headers=[("traceparent", bad), ("tracestate", "v=1")])
    (tp,), ts = upstream_tp(r)
    m = TP.match(tp)
    assert m and m.group(1) != IN_TRACE.lower() and m.group(3) == "01", tp
    assert ts == []  # tracestate without a valid traceparent is dropped
    (sp,) = col.wait_spans(lambda s: s["attributes"].get("url.path") == "/app/bad")
    assert sp["traceId"] == m.group(1) and "parentSpanId" not in sp


def test_later_version_is_read_by_its_first_four_parts(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 0})
    r = get(gw.port, "/app/v", headers=[("traceparent", "cc-%s-%s-01-what-the-future-holds" % (IN_TRACE, IN_SPAN))])
    (tp,), _ = upstream_tp(r)
    assert tp.startswith("00-%s-" % IN_TRACE) and tp.endswith("-01"), tp


def test_two_traceparents_are_not_trusted(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 0})
    tp_in = "00-%s-%s-01" % (IN_TRACE, IN_SPAN)
    r = get(gw.port, "/app/two", headers=[("traceparent", tp_in), ("traceparent", tp_in)])
    (tp,), _ = upstream_tp(r)
    assert IN_TRACE not in tp and tp.endswith("-00")


def test_tracestate_is_bounded(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 0})
    tp_in = "00-%s-%s-01" % (IN_TRACE, IN_SPAN)
    big = "big=" + "x" * 200
    members = ["k%d=v%d" % (i, i) for i in range(20)]
    r = get(gw.port, "/app/ts", headers=[("traceparent", tp_in), ("tracestate", ",".join([big] + members[:10])),
                                          ("tracestate", ",".join(members[10:] + ["z=" + "y" * 250]))])
    _, (ts,) = upstream_tp(r)
    # 611 characters: members over 128 characters go first, from the end, until it fits in 512
    assert ts == ",".join([big] + members), ts
    r = get(gw.port, "/app/ts", headers=[("traceparent", tp_in), ("tracestate", ",".join(["a=" + "1" * 250] + members)),
                                          ("tracestate", ",".join(["b=" + "2" * 250, "c=" + "3" * 120]))])
    _, (ts,) = upstream_tp(r)
    assert ts == ",".join(members + ["c=" + "3" * 120]), ts
    assert len(ts) <= 512
    # a malformed member: the whole header is dropped
    r = get(gw.port, "/app/ts", headers=[("traceparent", tp_in), ("tracestate", "ok=1,BAD=2")])
    assert upstream_tp(r)[1] == []
    # a repeated key, too many members
    r = get(gw.port, "/app/ts", headers=[("traceparent", tp_in), ("tracestate", "a=1,a=2")])
    assert upstream_tp(r)[1] == []
    r = get(gw.port, "/app/ts", headers=[("traceparent", tp_in),
                                          ("tracestate", ",".join("k%d=1" % i for i in range(33)))])
    assert upstream_tp(r)[1] == []


def test_local_answers_and_failures_are_spans(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1, "interval": "100ms"})
    assert get(gw.port, "/local").status == 200
    assert get(gw.port, "/nowhere").status == 404
    assert get(gw.port, "/dead/x").status == 502
    sp = {s["attributes"]["url.path"]: s for s in col.wait_spans(count=3)}
    assert sp["/local"]["attributes"]["http.response.status_code"] == 200 and sp["/local"]["name"] == "GET local"
    assert sp["/nowhere"]["attributes"]["http.response.status_code"] == 404
    assert "status" not in sp["/nowhere"] and "error.type" not in sp["/nowhere"]["attributes"]
    assert sp["/nowhere"]["name"] == "GET"  # no route: the method alone
    dead = sp["/dead/x"]
    assert dead["attributes"]["http.response.status_code"] == 502 and dead["status"]["code"] == 2
    assert dead["attributes"]["error.type"] == "upstream_connect_failed"


def test_unknown_method_is_other(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1, "interval": "100ms"})
    with RawConn(gw.port) as c:
        assert c.request("FROBNICATE", "/app/m").status == 200
    (sp,) = col.wait_spans(lambda s: s["attributes"].get("url.path") == "/app/m")
    assert sp["attributes"]["http.request.method"] == "_OTHER"
    assert sp["attributes"]["http.request.method_original"] == "FROBNICATE"
    assert sp["name"] == "_OTHER app"


def test_http2_client(sluice, upstreams, collector):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1, "interval": "100ms"})
    tp_in = "00-%s-%s-01" % (IN_TRACE, IN_SPAN)
    cfg = dict(gw.cfg)
    gw.stop()
    cfg["listeners"] = [dict(cfg["listeners"][0], h2c=True)]
    gw = sluice(cfg, name="h2")
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H", "traceparent: " + tp_in,
                        "http://127.0.0.1:%d/app/h2" % gw.port], capture_output=True, text=True, timeout=15)
    assert p.returncode == 0, p.stderr
    hs = json.loads(p.stdout)["headers"]
    (tp,) = [v for k, v in hs if k.lower() == "traceparent"]
    m = TP.match(tp)
    assert m.group(1) == IN_TRACE
    (sp,) = col.wait_spans(lambda s: s["attributes"].get("url.path") == "/app/h2")
    assert sp["spanId"] == m.group(2) and sp["parentSpanId"] == IN_SPAN
    assert sp["attributes"]["network.protocol.version"] == "2"


def test_sample_zero_exports_nothing(sluice, upstreams, collector, sockdir):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 0, "interval": "100ms"}, sockdir=sockdir)
    for _ in range(30):
        r = get(gw.port, "/app/z")
        (tp,), _ = upstream_tp(r)
        assert tp.endswith("-00")  # propagated, not sampled
    time.sleep(1.0)  # ten export intervals
    assert col.requests == []
    assert counter(gw.sock, "sluice_tracing_spans_exported_total") == 0


def test_collector_down_costs_requests_nothing_and_drops_are_counted(sluice, upstreams, sockdir):
    dead = "http://127.0.0.1:%d/v1/traces" % closed_port()
    gw = traced_gw(sluice, upstreams, {"otlp": dead, "sample": 1, "interval": "100ms", "timeout": "1s"},
                   sockdir=sockdir)
    for _ in range(20):
        assert get(gw.port, "/app/down").status == 200
    wait_until(lambda: counter(gw.sock, "sluice_tracing_spans_dropped_total") == 20, timeout=10,
               what="20 spans dropped")
    assert counter(gw.sock, "sluice_tracing_export_failures_total") >= 1
    assert counter(gw.sock, "sluice_tracing_spans_exported_total") == 0
    logs = [e for e in gw.log_entries() if "span export failed" in e.get("msg", "")]
    assert logs and "connect" in logs[0]["error"], gw.stderr()[-2000:]


def test_collector_error_status_counts_failures(sluice, upstreams, collector, sockdir):
    col = collector(status=503)
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1, "interval": "100ms"}, sockdir=sockdir)
    for _ in range(5):
        assert get(gw.port, "/app/e").status == 200
    wait_until(lambda: counter(gw.sock, "sluice_tracing_spans_dropped_total") == 5, timeout=10,
               what="5 spans dropped")
    assert counter(gw.sock, "sluice_tracing_export_failures_total") >= 1


def test_small_queue_drops_and_batches(sluice, upstreams, collector, sockdir):
    col = collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col.url, "sample": 1, "interval": "10s", "queue_size": 16,
                                       "batch_size": 4, "headers": {"x-api-key": "k123"}},
                   sockdir=sockdir, workers=1)
    for _ in range(40):
        assert get(gw.port, "/app/q").status == 200
    # the queue holds 16: at half full the exporter is woken; what did not fit is counted
    wait_until(lambda: counter(gw.sock, "sluice_tracing_spans_exported_total") +
               counter(gw.sock, "sluice_tracing_spans_dropped_total") == 40, timeout=20, what="40 spans accounted")
    exported = counter(gw.sock, "sluice_tracing_spans_exported_total")
    assert len(col.spans()) == exported and exported >= 4
    with col.lock:
        reqs = list(col.requests)
    assert all(len(json.loads(b)["resourceSpans"][0]["scopeSpans"][0]["spans"]) <= 4 for _, _, b in reqs)
    assert all(h.get("x-api-key") == "k123" for _, h, _ in reqs)


def test_reload_changes_sampling_and_collector(sluice, upstreams, collector, sockdir):
    col1, col2 = collector(), collector()
    gw = traced_gw(sluice, upstreams, {"otlp": col1.url, "sample": 0, "interval": "100ms"}, sockdir=sockdir)
    get(gw.port, "/app/before")
    cfg = dict(gw.cfg, tracing={"otlp": col2.url, "sample": 1, "interval": "100ms", "service_name": "after"})
    gw.conf_path.write_text(config_to_lua(cfg))
    ctl(gw.sock, "reload")
    get(gw.port, "/app/after")
    (sp,) = col2.wait_spans(lambda s: s["attributes"].get("url.path") == "/app/after")
    assert sp["_resource"]["service.name"] == "after"
    assert col1.requests == [] and not [s for s in col2.spans() if s["attributes"]["url.path"] == "/app/before"]
    # tracing removed: the upstream sees the client's traceparent untouched
    cfg.pop("tracing")
    gw.conf_path.write_text(config_to_lua(cfg))
    ctl(gw.sock, "reload")
    r = get(gw.port, "/app/off", headers=[("traceparent", "garbage")])
    assert upstream_tp(r)[0] == ["garbage"]


def test_propagation_without_export(sluice, upstreams):
    gw = traced_gw(sluice, upstreams, {"sample": 1})
    r = get(gw.port, "/app/noexport", headers=[("traceparent", "00-%s-%s-01" % (IN_TRACE, IN_SPAN))])
    (tp,), _ = upstream_tp(r)
    assert tp.startswith("00-%s-" % IN_TRACE)


def test_tracing_off_leaves_headers_alone(gateway):
    gw = gateway(1)
    r = get(gw.port, "/x", headers=[("traceparent", "not-a-traceparent"), ("tracestate", "a=1")])
    assert upstream_tp(r) == (["not-a-traceparent"], ["a=1"])


def test_config_errors(tmp_path):
    def check(tracing):
        p = tmp_path / "c.lua"
        p.write_text(config_to_lua(base_config(free_port(), ["127.0.0.1:9"], tracing=tracing)))
        return run_sluice(["check", "-c", str(p)])

    p = check({"otlp": "https://collector:4318/v1/traces"})
    assert p.returncode == 1 and "tracing.otlp" in p.stderr and "https is not supported" in p.stderr
    p = check({"otlp": "grpc://collector:4317"})
    assert p.returncode == 1 and "not an http:// URL" in p.stderr
    p = check({"otlp": "http://collector:99999/v1/traces"})
    assert p.returncode == 1 and "invalid port" in p.stderr
    p = check({"otlp": "http://127.0.0.1:4318", "sample": 1.5})
    assert p.returncode == 1 and "tracing.sample" in p.stderr and "between 0 and 1" in p.stderr
    p = check({"sample": "half"})
    assert p.returncode == 1 and "tracing.sample" in p.stderr
    p = check({"samples": 0.1})
    assert p.returncode == 1 and "samples" in p.stderr and "sample" in p.stderr
    p = check({"service_name": ""})
    assert p.returncode == 1 and "tracing.service_name" in p.stderr
    p = check({"headers": {"content-type": "x"}})
    assert p.returncode == 1 and "set by the exporter" in p.stderr
    p = check({"queue_size": 1})
    assert p.returncode == 1 and "tracing.queue_size" in p.stderr
    assert check({"otlp": "http://127.0.0.1:4318/v1/traces", "sample": 0.05, "service_name": "sluice"}).returncode == 0
    assert check({"otlp": "http://[::1]:4318", "headers": {"x-api-key": "k"}, "batch_size": 100,
                  "queue_size": 4096, "timeout": "2s", "interval": "500ms", "parent_based": False}).returncode == 0
