"""The status page (issue 14) in a real browser: headless Chromium loads GET /
from a running gateway with one server's breaker open, a rollout in progress
and requests refused by a rate limit, and the test reads the rendered DOM (no
JavaScript involved); ?json carries the same."""

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, free_port, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (scripts/install-deps)")

BREAKER = {"consecutive_failures": 3, "error_rate": 0.5, "min_requests": 20, "open_for": "60s",
           "max_open_for": "120s", "half_open_probes": 2, "window": "10s"}


class Rows(HTMLParser):
    """Every table row: (table id, row attributes, [(cell class, text)])."""

    def __init__(self):
        super().__init__()
        self.rows, self.table, self.row, self.cell = [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
        elif tag == "tr":
            self.row = (self.table, a, [])
        elif tag in ("td", "th") and self.row is not None:
            self.cell = [a.get("class"), ""]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row[2].append(tuple(self.cell))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None


def dump_dom(url, tmp_path):
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--user-data-dir=%s" % (tmp_path / "chromium"),
                        "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert p.returncode == 0 and "<html" in p.stdout, p.stderr[-2000:]
    return p.stdout


def test_status_page_in_headless_chromium(sluice, upstreams, tmp_path):
    a, b = upstreams(2)
    aport = free_port()
    sockdir = tempfile.mkdtemp(prefix="sluice-status-", dir="/tmp")
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(free_port(), [a.address], workers=1, pool={"breaker": BREAKER},
                      admin={"http": "127.0.0.1:%d" % aport, "socket": sock})
    cfg["pools"]["canary"] = {"servers": [{"address": b.address}]}
    cfg["services"] = {"api": {"pools": {"web": 90, "canary": 10}}}
    cfg["routes"] = [{"name": "fail", "match": {"path_prefix": "/status/"}, "pool": "web"},
                     {"name": "limited", "match": {"path_prefix": "/limited"}, "pool": "canary",
                      "rate_limit": ["per_client"]},
                     {"name": "default", "match": {"path_prefix": "/"}, "service": "api"}]
    cfg["rate_limits"] = {"per_client": {"key": "client_ip", "rate": 1, "per": "1m", "burst": 2}}
    try:
        gw = sluice(cfg)
        wait_until(lambda: os.path.exists(sock), what="admin socket")
        for i in range(3):
            with RawConn(gw.port) as c:
                assert c.request("GET", "/status/503?i=%d" % i).status == 503
        with RawConn(gw.port) as c:
            assert [c.request("GET", "/limited").status for _ in range(3)] == [200, 200, 429]
        wait_until(lambda: "circuit breaker state changed" in gw.stderr(), what="the breaker opened")
        # a rollout of api to canary, at its first step (20%) for the next minute
        p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "rollout", "start", "api", "--to", "canary", "--steps",
                            "20,100", "--interval", "60s"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
        check_page(gw, a, b, aport, tmp_path)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def check_page(gw, a, b, aport, tmp_path):
    dom = dump_dom("http://127.0.0.1:%d/" % aport, tmp_path)
    assert '<meta http-equiv="refresh"' in dom and "<script" not in dom
    assert "<link" not in dom and "src=" not in dom, "the page must be self-contained"
    parser = Rows()
    parser.feed(dom)
    rows = parser.rows
    servers = {r[1]["data-server"]: r for r in rows if r[0] == "pools" and r[1].get("class") == "server"}
    web = servers[a.address][2]
    assert web[2] == ("open", "open"), web  # breaker column, styled by its state
    assert web[1] == ("up", "up")
    canary = servers[b.address][2]
    assert canary[2] == ("closed", "closed") and canary[1] == ("up", "up")
    split = {r[2][1][1]: r[2][3][1] for r in rows if r[0] == "services" and r[2][0][1] == "api"}
    assert split == {"web": "80%", "canary": "20%"}, split  # the rollout's first step
    rollouts = [[c[1] for c in r[2]] for r in rows if r[0] == "rollouts" and r[1].get("data-service") == "api"]
    assert rollouts == [["api", "canary", "1", "20%", "running"]], rollouts
    guards = [[c[1] for c in r[2]] for r in rows if r[0] == "route-guards" and r[2][0][1] != "route"]
    # route, rate limited, WAF blocked, WAF detected, WAF budget exceeded / errors, policy denied, policy errors
    assert guards == [["limited", "1", "0", "0", "0", "0", "0"], ["all routes", "1", "0", "0", "0", "0", "0"]], guards
    assert '<td id="rl-allowed">2</td>' in dom and '<td id="rl-limited">1</td>' in dom, dom
    listeners = [r[2] for r in rows if r[0] == "listeners" and r[2][0][0] is None and r[2][0][1] == "public"]
    assert listeners and listeners[0][1][1] == "127.0.0.1:%d" % gw.port
    assert "ready" in dom and "generation 1" in dom
    # the same as JSON
    with RawConn(aport) as c:
        j = json.loads(c.request("GET", "/?json").body)
    assert j["rollouts"] == [{"service": "api", "pool": "canary", "step": 1, "percent": 20, "state": "running"}], j
    assert j["rate_limits"] == {"allowed": 2, "limited": 1, "fallback": 0, "redis_failures": 0}, j
    zeros = {"waf_blocked": 0, "waf_detected": 0, "waf_errors": 0, "policy_denied": 0, "policy_errors": 0}
    assert j["guards"] == {"total": dict(rate_limited=1, **zeros),
                           "routes": [dict(route="limited", rate_limited=1, **zeros)]}, j
