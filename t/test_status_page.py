"""The status page (issue 14) in a real browser: headless Chromium loads GET /
from a running gateway with one server's breaker open and a traffic split in
place, and the test reads the rendered DOM (no JavaScript involved)."""

import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from conftest import RawConn, base_config, free_port, wait_until

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
    cfg = base_config(free_port(), [a.address], workers=1, pool={"breaker": BREAKER},
                      admin={"http": "127.0.0.1:%d" % aport})
    cfg["pools"]["canary"] = {"servers": [{"address": b.address}]}
    cfg["services"] = {"api": {"pools": {"web": 90, "canary": 10}}}
    cfg["routes"] = [{"name": "fail", "match": {"path_prefix": "/status/"}, "pool": "web"},
                     {"name": "default", "match": {"path_prefix": "/"}, "service": "api"}]
    gw = sluice(cfg)
    for i in range(3):
        with RawConn(gw.port) as c:
            assert c.request("GET", "/status/503?i=%d" % i).status == 503
    wait_until(lambda: "circuit breaker state changed" in gw.stderr(), what="the breaker opened")
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
    split = {r[2][1][1]: (r[2][2][1], r[2][3][1]) for r in rows if r[0] == "services" and r[2][0][1] == "api"}
    assert split == {"web": ("90", "90%"), "canary": ("10", "10%")}, split
    listeners = [r[2] for r in rows if r[0] == "listeners" and r[2][0][0] is None and r[2][0][1] == "public"]
    assert listeners and listeners[0][1][1] == "127.0.0.1:%d" % gw.port
    assert "ready" in dom and "generation 1" in dom
