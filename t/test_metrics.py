"""/metrics exports the counter registry (issue 14): every family of
src/counters.h, with the values `sluice ctl show counters` reads, in the
Prometheus text format (clean under the real `promtool check metrics`) and in
OpenMetrics when asked; histograms as cumulative _bucket{le} in seconds,
_sum and _count; series for the current config's names only."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, closed_port, free_port, wait_until
from test_admin_http import http_get, parse_metrics, _can_connect

PROMTOOL = shutil.which("promtool")


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-met-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctl_counters(sock):
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "--json", "show", "counters"],
                       capture_output=True, text=True, timeout=15)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)["counters"]


def scrape(port, om=False):
    st, h, body = http_get(port, "/metrics",
                           headers={"Accept": "application/openmetrics-text; version=1.0.0"} if om else None)
    assert st == 200
    return body.decode()


def promtool_check(text):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def types(text):
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def get(port, path):
    with RawConn(port) as c:
        return c.request("GET", path).status


def start(sluice, upstreams, sockdir, routes=None, **kw):
    (u,) = upstreams(1)
    port, aport = free_port(), free_port()
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(port, [u.address], admin={"socket": sock, "http": "127.0.0.1:%d" % aport}, routes=routes or [
        {"name": "site", "match": {"path_prefix": "/site"}, "service": "web"},
        {"name": "status", "match": {"path_prefix": "/status"}, "service": "web"},
        {"name": "broken", "match": {"path_prefix": "/broken"}, "pool": "broken"},
    ], **kw)
    dead = "127.0.0.1:%d" % closed_port()
    cfg["pools"]["broken"] = {"servers": [{"address": dead}],
                              "breaker": {"consecutive_failures": 1, "open_for": "60s"}}
    gw = sluice(cfg)
    gw.aport, gw.sock, gw.upstream, gw.dead = aport, sock, u, dead
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    return gw


@pytest.mark.skipif(not PROMTOOL, reason="promtool not installed (scripts/install-deps)")
def test_every_registry_family_exported_with_the_registry_values(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    for _ in range(6):
        assert get(gw.port, "/site/x") == 200
    assert get(gw.port, "/status/404") == 404
    assert [get(gw.port, "/broken/x") for _ in range(3)] == [502, 503, 503]
    assert get(gw.port, "/nothing") == 404  # no route: the listener counts it
    text = scrape(gw.aport)
    rc, out = promtool_check(text)
    assert rc == 0, out
    m = parse_metrics(text)
    t = types(text)
    doc = ctl_counters(gw.sock)
    # every family of the registry is declared, with its kind
    for fam in doc:
        assert t.get(fam["name"]) == fam["kind"], fam["name"]
        for s in fam["series"]:
            labels = s["labels"]
            if fam["kind"] == "histogram":
                name = fam["name"]
                assert m[(name + "_count", frozenset(labels.items()))] == s["count"], (name, labels)
                assert abs(m[(name + "_sum", frozenset(labels.items()))] - s["sum"]) < 1e-3
                for le, cum in zip(fam["buckets"] + ["+Inf"], s["buckets"]):
                    key = (name + "_bucket", frozenset(list(labels.items()) + [("le", str(le))]))
                    assert m[key] == cum, key
            else:
                assert m[(fam["name"], frozenset(labels.items()))] == s["value"], (fam["name"], labels)
    # spot checks against the traffic
    assert m[("sluice_route_requests_total", frozenset({"route": "site", "status_class": "2xx"}.items()))] == 6
    assert m[("sluice_route_requests_total", frozenset({"route": "status", "status_class": "4xx"}.items()))] == 1
    assert m[("sluice_pool_request_reasons_total", frozenset({"pool": "broken", "reason": "breaker_open"}.items()))] == 2
    assert m[("sluice_listener_request_reasons_total",
              frozenset({"listener": "public", "reason": "no_route"}.items()))] == 1
    assert m[("sluice_server_failures_total", frozenset({"pool": "broken", "server": gw.dead}.items()))] == 1
    assert m[("sluice_route_request_duration_seconds_count", frozenset({"route": "site"}.items()))] == 6
    assert m[("sluice_route_request_duration_seconds_bucket",
              frozenset({"route": "site", "le": "+Inf"}.items()))] == 6
    # zero series are there from the start (a rate() sees the first increment) ...
    assert m[("sluice_route_requests_total", frozenset({"route": "site", "status_class": "5xx"}.items()))] == 0
    assert m[("sluice_h2_sessions_total", frozenset())] == 0
    # ... except the sparse reasons
    assert ("sluice_route_request_reasons_total",
            frozenset({"route": "site", "reason": "waf_denied"}.items())) not in m


def test_openmetrics_counters_and_histograms(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    assert get(gw.port, "/site/x") == 200
    text = scrape(gw.aport, om=True)
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    t = types(text)
    # OpenMetrics names a counter family without _total; its samples keep it
    assert t["sluice_route_requests"] == "counter" and "sluice_route_requests_total" not in t
    assert re.search(r'^sluice_route_requests_total\{route="site",status_class="2xx"\} 1$', text, re.M)
    assert t["sluice_route_request_duration_seconds"] == "histogram"
    assert re.search(r'^sluice_route_request_duration_seconds_bucket\{route="site",le="\+Inf"\} 1$', text, re.M)
    # every sample belongs to the family declared last (families are contiguous)
    current = None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            assert name == current or re.fullmatch(re.escape(current) + r"(_total|_bucket|_sum|_count|_info)", name), \
                (current, line)


def test_series_follow_the_current_config(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    assert get(gw.port, "/site/x") == 200
    assert 'route="site"' in scrape(gw.aport)
    gw.conf_path.write_text(gw.conf_path.read_text().replace('"site"', '"renamed"'))
    gw.send_signal(signal.SIGHUP)
    wait_until(lambda: 'route="renamed"' in scrape(gw.aport), what="the reloaded names in /metrics")
    text = scrape(gw.aport)
    assert 'route="site"' not in text and 'route="renamed"' in text
    rc, out = promtool_check(text) if PROMTOOL else (0, "")
    assert rc == 0, out


def sluice_check(tmp_path, metrics_lua):
    conf = tmp_path / "c.lua"
    conf.write_text("""return {
  listeners = { { name = "public", address = "127.0.0.1:%d" } },
  pools = { web = { servers = { "127.0.0.1:9" } } },
  routes = { { name = "d", match = { path_prefix = "/" }, pool = "web" } },
  metrics = %s,
}
""" % (free_port(), metrics_lua))
    return subprocess.run([SLUICE_BIN, "check", "-c", str(conf)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("lua, error", [
    ("{ histogram_buckets = { 0.1, 0.05 } }",
     "metrics.histogram_buckets[2]: 0.05 is not above the bound before it (0.1)"),
    ("{ histogram_buckets = { 0.1, 0.1 } }", "metrics.histogram_buckets[2]: 0.1 is not above the bound before it"),
    ("{ histogram_buckets = { 0 } }", "metrics.histogram_buckets[1]: 0 is out of range"),
    ("{ histogram_buckets = { -1 } }", "metrics.histogram_buckets[1]: -1 is out of range"),
    ("{ histogram_buckets = { 7200 } }", "metrics.histogram_buckets[1]: 7200 is out of range"),
    ("{ histogram_buckets = { 0.0000005 } }", "out of range"),
    ("{ histogram_buckets = { 0.0012345 } }", "whole microseconds"),
    ("{ histogram_buckets = { \"5ms\" } }", "metrics.histogram_buckets[1]: expected an upper bound in seconds"),
    ("{ histogram_buckets = {} }", "metrics.histogram_buckets: 0 bounds: give 1 to 24"),
    ("{ histogram_buckets = { %s } }" % ", ".join(str(i) for i in range(1, 26)), "25 bounds: give 1 to 24"),
    ("{ histogram_buckets = 0.5 }", "metrics.histogram_buckets: expected a list of upper bounds"),
    ("{ buckets = { 1 } }", "metrics.buckets"),
    ("5", "metrics: expected a table"),
])
def test_histogram_buckets_errors(tmp_path, lua, error):
    p = sluice_check(tmp_path, lua)
    assert p.returncode != 0 and error in p.stderr, p.stderr


def test_histogram_buckets_valid(tmp_path):
    p = sluice_check(tmp_path, "{ histogram_buckets = { 0.000001, 0.3, 3600 } }")
    assert p.returncode == 0, p.stderr


def test_configured_buckets_exported_and_fixed_until_restart(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir, metrics={"histogram_buckets": [0.001, 0.3, 2.5]})
    for _ in range(3):
        assert get(gw.port, "/site/x") == 200
    text = scrape(gw.aport)
    les = set(re.findall(r'^sluice_route_request_duration_seconds_bucket\{route="site",le="([^"]+)"\}', text, re.M))
    assert les == {"0.001", "0.3", "2.5", "+Inf"}, les
    assert re.search(r'^sluice_route_request_duration_seconds_bucket\{route="site",le="\+Inf"\} 3$', text, re.M)
    assert re.search(r'^sluice_pool_upstream_response_seconds_bucket\{pool="web",le="0.3"\} 3$', text, re.M)
    if PROMTOOL:
        rc, out = promtool_check(text)
        assert rc == 0, out
    # a reload may not change them: refused, named, the old bounds stay
    gw.conf_path.write_text(gw.conf_path.read_text().replace("2.5", "5"))
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", gw.sock, "reload"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "metrics.histogram_buckets: changed" in p.stdout + p.stderr, p.stdout + p.stderr
    assert 'le="2.5"' in scrape(gw.aport)
