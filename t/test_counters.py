"""The counter registry seen through `sluice ctl show counters`: real traffic
(200s, an upstream 404, 404 no_route, 429 rate_limited, 502 then 503
breaker_open) counted per listener, route, service, pool and server, by
status class and reason, with latency histograms whose counts equal the
request counts; the older `show` commands read the same registry."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, closed_port, free_port, wait_until


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-ctr-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctl(sock, *args, json_out=False):
    cmd = [SLUICE_BIN, "ctl", "-s", sock] + (["--json"] if json_out else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout) if json_out else p.stdout


def series(doc, name):
    """{frozenset(labels.items()): value or histogram dict} of one family."""
    fam = [f for f in doc["counters"] if f["name"] == name]
    assert len(fam) == 1, name
    return {frozenset(s["labels"].items()): s for s in fam[0]["series"]}


def value(doc, name, **labels):
    s = series(doc, name).get(frozenset(labels.items()))
    return 0 if s is None else s["value"]


def total(doc, name, **labels):
    """Sum of a counter over every series whose labels include these."""
    want = set(labels.items())
    return sum(s["value"] for k, s in series(doc, name).items() if want <= k)


def hist(doc, name, **labels):
    return series(doc, name).get(frozenset(labels.items()))


def get(port, path):
    with RawConn(port) as c:
        return c.request("GET", path).status


def test_show_counters_after_real_traffic(sluice, upstreams, sockdir):
    (u,) = upstreams(1)
    port = free_port()
    sock = os.path.join(sockdir, "admin.sock")
    dead = "127.0.0.1:%d" % closed_port()
    cfg = base_config(port, [u.address], workers=2, admin={"socket": sock}, routes=[
        {"name": "api", "match": {"path_prefix": "/api"}, "service": "web", "rate_limit": ["per_client"]},
        {"name": "site", "match": {"path_prefix": "/site"}, "service": "web"},
        {"name": "status", "match": {"path_prefix": "/status"}, "service": "web"},
        {"name": "broken", "match": {"path_prefix": "/broken"}, "pool": "broken"},
    ])
    cfg["pools"]["broken"] = {"servers": [{"address": dead}],
                              "breaker": {"consecutive_failures": 1, "open_for": "60s"}}
    cfg["rate_limits"] = {"per_client": {"key": "client_ip", "rate": 1, "per": "1m", "burst": 5}}
    gw = sluice(cfg)

    statuses = {}
    plan = [("/site/x", 7), ("/api/x", 8), ("/nothing", 3), ("/broken/x", 4), ("/status/404", 2)]
    for path, n in plan:
        statuses[path] = [get(port, path) for _ in range(n)]
    assert statuses["/site/x"] == [200] * 7
    assert statuses["/api/x"] == [200] * 5 + [429] * 3
    assert statuses["/nothing"] == [404] * 3
    assert statuses["/broken/x"] == [502] + [503] * 3
    assert statuses["/status/404"] == [404] * 2
    # the log phase counts before the access log writes: once every line is there, so is every count
    gw.wait_log(count=24)

    doc = ctl(sock, "show", "counters", json_out=True)
    assert doc["ok"] is True
    R = "sluice_route_requests_total"
    assert value(doc, R, route="site", status_class="2xx") == 7
    assert value(doc, R, route="api", status_class="2xx") == 5
    assert value(doc, R, route="api", status_class="4xx") == 3
    assert value(doc, R, route="status", status_class="4xx") == 2
    assert value(doc, R, route="broken", status_class="5xx") == 4
    assert total(doc, R) == 21  # the 3 unrouted requests have no route
    RR = "sluice_route_request_reasons_total"
    assert value(doc, RR, route="api", reason="rate_limited") == 3
    assert value(doc, RR, route="broken", reason="upstream_connect_failed") == 1
    assert value(doc, RR, route="broken", reason="breaker_open") == 3
    assert total(doc, RR, route="status") == 0  # an upstream's 404 is a normal response
    L = "sluice_listener_requests_total"
    assert value(doc, L, listener="public", status_class="2xx") == 12
    assert value(doc, L, listener="public", status_class="4xx") == 3 + 3 + 2
    assert value(doc, L, listener="public", status_class="5xx") == 4
    assert value(doc, "sluice_listener_request_reasons_total", listener="public", reason="no_route") == 3
    assert value(doc, "sluice_service_requests_total", service="web", status_class="2xx") == 12
    assert value(doc, "sluice_service_requests_total", service="pool:broken", status_class="5xx") == 4
    # 429s are refused before a pool is chosen: only the upstream's 404s reach the pool
    assert value(doc, "sluice_pool_requests_total", pool="web", status_class="4xx") == 2
    assert value(doc, "sluice_pool_requests_total", pool="web", status_class="2xx") == 12
    assert value(doc, "sluice_pool_request_reasons_total", pool="broken", reason="breaker_open") == 3
    assert value(doc, "sluice_server_requests_total", pool="web", server=u.address, status_class="2xx") == 12
    assert value(doc, "sluice_server_attempts_total", pool="broken", server=dead) == 1
    assert value(doc, "sluice_server_failures_total", pool="broken", server=dead) == 1
    assert value(doc, "sluice_server_attempts_total", pool="web", server=u.address) == 14
    assert value(doc, "sluice_ratelimit_decisions_total", decision="allowed") == 5
    assert value(doc, "sluice_ratelimit_decisions_total", decision="limited") == 3
    assert value(doc, "sluice_route_sent_bytes_total", route="site") > 7 * 100

    # latency histograms count every request exactly once
    for route in ("site", "api", "status", "broken"):
        h = hist(doc, "sluice_route_request_duration_seconds", route=route)
        assert h["count"] == total(doc, R, route=route), (route, h)
        assert h["buckets"][-1] == h["count"] and h["buckets"] == sorted(h["buckets"])
        assert h["sum"] >= 0
    h = hist(doc, "sluice_listener_request_duration_seconds", listener="public")
    assert h["count"] == 24 == total(doc, L)
    # upstream response time: every request that got an upstream response head
    h = hist(doc, "sluice_pool_upstream_response_seconds", pool="web")
    assert h["count"] == 14
    assert hist(doc, "sluice_pool_upstream_response_seconds", pool="broken") is None
    fam = [f for f in doc["counters"] if f["name"] == "sluice_route_request_duration_seconds"][0]
    assert fam["kind"] == "histogram" and fam["labels"] == ["route"] and fam["buckets"][0] == 0.005

    # the text form: one Prometheus-like line per series
    text = ctl(sock, "show", "counters")
    assert 'sluice_route_requests_total{route="site",status_class="2xx"} 7\n' in text
    assert 'sluice_route_request_duration_seconds_count{route="api"} 8\n' in text
    assert 'sluice_route_request_duration_seconds_bucket{route="api",le="+Inf"} 8\n' in text
    assert 'sluice_listener_request_reasons_total{listener="public",reason="no_route"} 3\n' in text

    # the older views read the same registry
    pools = {p["pool"]: p for p in ctl(sock, "show", "pools", json_out=True)["pools"]}
    assert pools["broken"]["refused"]["breaker_open"] == 3
    assert pools["web"]["refused"]["breaker_open"] == 0
    servers = {(s["pool"], s["address"]): s for s in ctl(sock, "show", "servers", json_out=True)["servers"]}
    assert servers[("broken", dead)]["requests"] == 1 and servers[("broken", dead)]["failures"] == 1
    assert servers[("web", u.address)]["requests"] == 14
    ctl(sock, "drain", "web", u.address)
    assert ctl(sock, "show", "config", json_out=True)["runtime_changes"] == 1
    doc = ctl(sock, "show", "counters", json_out=True)
    assert value(doc, "sluice_runtime_changes_total") == 1


def test_show_counters_is_in_help_and_checked(sluice, upstreams, sockdir):
    (u,) = upstreams(1)
    sock = os.path.join(sockdir, "admin.sock")
    sluice(base_config(free_port(), [u.address], admin={"socket": sock}))
    assert "show counters" in ctl(sock, "help")
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "show", "counters", "extra"], capture_output=True,
                       text=True, timeout=15)
    assert p.returncode == 1 and "show counters" in p.stdout
    # before any request: every family is listed, with no series
    doc = ctl(sock, "show", "counters", json_out=True)
    names = [f["name"] for f in doc["counters"]]
    assert "sluice_route_requests_total" in names and "sluice_tls_handshake_failures_total" in names
    # (the fixture's readiness probe was a connection: sluice_connections_total counts it)
    assert all(f["series"] == [] for f in doc["counters"] if f["name"] != "sluice_connections_total")


def test_show_counters_text_before_any_connection(sluice, upstreams, sockdir):
    """Nothing counted yet: the text answer says so (an empty answer made `sluice ctl` exit 2,
    "closed without an answer", as for a dead gateway)."""
    (u,) = upstreams(1)
    sock = os.path.join(sockdir, "admin.sock")
    sluice(base_config(free_port(), [u.address], admin={"socket": sock}), ready=False)
    wait_until(lambda: os.path.exists(sock), what="the admin socket")
    assert ctl(sock, "show", "counters") == "# every counter is 0 (a series is listed once it has counted something)\n"


def test_counters_kept_by_name_across_a_reload(sluice, upstreams, sockdir):
    """A route still configured keeps its totals, a new one starts at 0, a
    removed one is no longer shown; a request in flight across the reload is
    counted for the route it started on."""
    from conftest import config_to_lua
    (u,) = upstreams(1)
    port = free_port()
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(port, [u.address], workers=2, admin={"socket": sock}, routes=[
        {"name": "old", "match": {"path_prefix": "/delay"}, "service": "web"},
        {"name": "kept", "match": {"path_prefix": "/"}, "service": "web"},
    ])
    gw = sluice(cfg)
    for _ in range(3):
        assert get(port, "/delay/1") == 200
    for _ in range(4):
        assert get(port, "/kept") == 200
    gw.wait_log(count=7)

    # a slow request that starts on the first config and ends after the reload
    import threading
    slow = {}

    def slow_request():
        with RawConn(port, timeout=10) as c:
            slow["status"] = c.request("GET", "/delay/1000").status

    t = threading.Thread(target=slow_request)
    t.start()
    import time
    time.sleep(0.3)
    cfg["routes"] = [{"name": "new", "match": {"path_prefix": "/new"}, "service": "web"},
                     {"name": "kept", "match": {"path_prefix": "/"}, "service": "web"}]
    gw.conf_path.write_text(config_to_lua(cfg))
    assert ctl(sock, "reload").startswith("reloaded: generation 2")
    for _ in range(2):
        assert get(port, "/new/x") == 200
    assert get(port, "/kept") == 200
    t.join()
    assert slow["status"] == 200
    gw.wait_log(count=11)

    doc = ctl(sock, "show", "counters", json_out=True)
    R = "sluice_route_requests_total"
    assert value(doc, R, route="kept", status_class="2xx") == 5
    assert value(doc, R, route="new", status_class="2xx") == 2
    assert all(("route", "old") not in k for k in series(doc, R))
    assert hist(doc, "sluice_route_request_duration_seconds", route="kept")["count"] == 5
    # the listener saw all of them, the slow one included (counted on "old", now hidden)
    assert value(doc, "sluice_listener_requests_total", listener="public", status_class="2xx") == 11
