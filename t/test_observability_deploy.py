"""deploy/prometheus, deploy/alertmanager and deploy/grafana (issue 14): the
scrape config and rules pass promtool (with a unit test for every alert,
firing and not), the Alertmanager config passes amtool, every runbook link
points at a real page and heading, every dashboard expression parses and uses
only metric names sluice exports, and a real Prometheus scrapes a running
sluice and answers queries about it (rules and dashboards included)."""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import terminate, base_config, free_port, wait_until, RawConn

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
PROMETHEUS = shutil.which("prometheus")

need_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool not installed (scripts/install-deps)")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@need_promtool
def test_promtool_checks_config_and_rules():
    p = run([PROMTOOL, "check", "config", str(PROM / "prometheus.yml")])
    assert p.returncode == 0, p.stdout + p.stderr
    p = run([PROMTOOL, "check", "rules"] + [str(r) for r in RULES])
    assert p.returncode == 0, p.stdout + p.stderr


def alerts():
    out = []
    for r in RULES:
        for g in yaml.safe_load(r.read_text())["groups"]:
            out += [rule for rule in g["rules"] if "alert" in rule]
    return out


@need_promtool
def test_promtool_unit_tests_cover_every_alert_firing_and_not(tmp_path):
    tests = sorted((PROM / "tests").glob("*.yml"))
    p = run([PROMTOOL, "test", "rules"] + [str(t) for t in tests])
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr
    firing, quiet = set(), set()
    for t in tests:
        for case in yaml.safe_load(t.read_text())["tests"]:
            for a in case.get("alert_rule_test", []):
                (firing if a["exp_alerts"] else quiet).add(a["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names, "no alerts found"
    assert names <= firing, "alerts without a firing test: %s" % (names - firing)
    assert names <= quiet, "alerts without a not-firing test: %s" % (names - quiet)
    # the tests can fail: an alert that fires where the test says it does not is caught
    broken = tmp_path / "broken.test.yml"
    text = (PROM / "tests" / "sluice-alerts.test.yml").read_text()
    broken.write_text(text.replace("../rules/", str(PROM / "rules") + "/").replace("'0x10'", "'1x10'", 1))
    p = run([PROMTOOL, "test", "rules", str(broken)])
    assert p.returncode != 0, p.stdout


def test_every_alert_links_its_runbook_page():
    """Every alert's runbook_url is docs/runbooks/alerts/<AlertName>.md (the pages the
    drills work writes); once that directory is there, every page must exist and name
    its alert."""
    base = "https://github.com/sluice-gateway/sluice/blob/main/"
    pages = ROOT / "docs" / "runbooks" / "alerts"
    for a in alerts():
        url = a["annotations"]["runbook_url"]
        assert url == base + "docs/runbooks/alerts/%s.md" % a["alert"], (a["alert"], url)
        if pages.is_dir():
            page = pages / ("%s.md" % a["alert"])
            assert page.is_file(), "%s: runbook %s does not exist" % (a["alert"], page)
            assert a["alert"] in page.read_text(), page
        assert a["annotations"].get("summary") and a["labels"].get("severity") in ("warning", "critical")


@pytest.mark.skipif(not AMTOOL, reason="amtool not installed (prometheus-alertmanager)")
def test_amtool_checks_alertmanager_config_and_routes():
    cfg = str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml")
    p = run([AMTOOL, "check-config", cfg])
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr
    for labels, want in ((["severity=critical", "alertname=SluicePoolAllServersDown"], "sluice-page"),
                         (["severity=warning", "alertname=SluiceReloadFailed"], "sluice-deployers"),
                         (["severity=warning", "alertname=SluiceBreakerOpen"], "sluice-tickets")):
        p = run([AMTOOL, "config", "routes", "test", "--config.file=" + cfg] + labels)
        assert p.stdout.strip() == want, (labels, p.stdout, p.stderr)


def dashboard_exprs():
    out = []
    for d in DASHBOARDS:
        j = json.loads(d.read_text())
        names = {v["name"] for v in j["templating"]["list"]}
        assert "datasource" in names, "%s: no datasource variable" % d.name
        for panel in j["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (d.name, panel["title"])
            for t in panel["targets"]:
                out.append((d.name, panel["title"], t["expr"]))
        for v in j["templating"]["list"]:
            if v["type"] == "query":
                m = re.match(r"label_values\((.*), *\w+\)$", v["query"])
                assert m, v["query"]
                out.append((d.name, "variable " + v["name"], m.group(1)))
    assert out
    return out


def concrete(expr):
    """A dashboard expression with its variables filled in, as Grafana sends it."""
    return re.sub(r"\$\{?[a-z_]+\}?", ".*", expr)


def recorded_names():
    return {r["record"] for f in RULES for g in yaml.safe_load(f.read_text())["groups"]
            for r in g["rules"] if "record" in r}


def exported_families(text):
    """Every name a scrape carries: families (# TYPE) and the samples' names (NAME_bucket, ...)."""
    return (set(re.findall(r"^# TYPE (\S+) ", text, re.M)) |
            set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)))


def used_metric_names(expr):
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values say nothing
    return set(re.findall(r"\b(sluice_[a-zA-Z0-9_]+|sluice:[a-zA-Z0-9_:]+|up)\b(?!\s*\()", expr))


@need_promtool
def test_dashboard_expressions_parse(tmp_path):
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": "dashboard:expr_%d" % i, "expr": concrete(e)} for i, (_, _, e) in enumerate(dashboard_exprs())]}]}
    f = tmp_path / "dash.yml"
    f.write_text(yaml.safe_dump(rules))
    p = run([PROMTOOL, "check", "rules", str(f)])
    assert p.returncode == 0, p.stdout + p.stderr
    # and a broken expression is caught the same way
    f.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(by (x)"}]}]}))
    assert run([PROMTOOL, "check", "rules", str(f)]).returncode != 0


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode()


class Prometheus:
    def __init__(self, workdir, target_port):
        self.port = free_port()
        d = Path(workdir) / "prom"
        (d / "rules").mkdir(parents=True)
        for r in RULES:
            shutil.copy(r, d / "rules" / r.name)
        cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
        cfg["global"]["scrape_interval"] = "1s"
        cfg["global"]["evaluation_interval"] = "1s"
        cfg["alerting"] = {"alertmanagers": []}
        sc = cfg["scrape_configs"][0]
        sc["scrape_interval"] = "1s"
        sc["scrape_timeout"] = "1s"
        sc["static_configs"] = [{"targets": ["127.0.0.1:%d" % target_port]}]
        (d / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.log = open(d / "prometheus.log", "wb")
        self.proc = subprocess.Popen([PROMETHEUS, "--config.file=" + str(d / "prometheus.yml"),
                                      "--storage.tsdb.path=" + str(d / "data"),
                                      "--web.listen-address=127.0.0.1:%d" % self.port],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.logpath = d / "prometheus.log"

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s?%s" % (self.port, path, urllib.parse.urlencode(params))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
        try:
            return json.loads(body)
        except ValueError:  # a Prometheus still starting answers 503 in plain text
            return {"status": "error", "error": body.decode(errors="replace")}

    def query(self, q):
        return self.api("query", query=q)

    def stop(self):
        terminate(self.proc)
        self.log.close()


@pytest.mark.skipif(not PROMETHEUS, reason="prometheus not installed (scripts/install-deps)")
def test_real_prometheus_scrapes_sluice(sluice, upstreams, tmp_path):
    ups = upstreams(2)
    aport = free_port()
    gw = sluice(base_config(free_port(), [u.address for u in ups], admin={"http": "127.0.0.1:%d" % aport}))
    wait_until(lambda: scrape(aport), what="admin listener")
    exported = exported_families(scrape(aport))
    # every name a dashboard or rule reads is exported by sluice (or recorded by a rule)
    known = exported | recorded_names() | {"up"}
    for dash, title, expr in dashboard_exprs():
        used = used_metric_names(expr)
        assert used, (dash, title, expr)
        assert used <= known, "%s / %s: %s not exported" % (dash, title, used - known)
    for a in alerts():
        assert used_metric_names(a["expr"]) <= known, a
    prom = Prometheus(tmp_path, aport)
    try:
        def target_up():
            t = prom.api("targets")
            act = t.get("data", {}).get("activeTargets", []) if t.get("status") == "success" else []
            return any(x["health"] == "up" for x in act)
        stop = time.monotonic() + 60
        while not _safe(target_up):
            assert prom.proc.poll() is None, prom.logpath.read_text()
            assert time.monotonic() < stop, "no successful scrape in 60 s: %s" % prom.logpath.read_text()[-2000:]
            # traffic flows meanwhile
            with RawConn(gw.port) as c:
                assert c.request("GET", "/x").status == 200
            time.sleep(0.2)
        r = prom.query('sluice_pool_servers{pool="web"}')
        assert r["status"] == "success" and r["data"]["result"][0]["value"][1] == "2", r
        r = prom.query('sum(sluice_server_up{pool="web"})')
        assert r["data"]["result"][0]["value"][1] == "2", r
        r = prom.query("sluice_ready")
        assert r["data"]["result"][0]["value"][1] == "1", r
        # the registry's series, scraped while traffic flows (Prometheus asks for OpenMetrics first)
        def counted():
            with RawConn(gw.port) as c:
                assert c.request("GET", "/x").status == 200
            r = prom.query('sum(sluice_service_requests_total{service="web",status_class="2xx"})')
            return r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) >= 3
        wait_until(counted, timeout=30, interval=0.3, what="requests counted in Prometheus")
        r = prom.query('sluice_route_request_duration_seconds_bucket{route="default",le="+Inf"}')
        assert float(r["data"]["result"][0]["value"][1]) >= 3, r
        r = prom.query('sluice_route_request_duration_seconds_count{route="default"}')
        assert float(r["data"]["result"][0]["value"][1]) >= 3, r
        r = prom.query('sum by (status_class) (sluice_listener_requests_total{listener="public"})')
        classes = {x["metric"]["status_class"] for x in r["data"]["result"]}
        assert classes == {"none", "1xx", "2xx", "3xx", "4xx", "5xx"}, r  # zeros too: rate() sees the first
        wait_until(lambda: prom.query("sluice:service_requests:rate5m")["data"]["result"], timeout=20,
                   what="a recording rule over the request counters")
        # the dashboards' queries run against the real engine without error
        for dash, title, expr in dashboard_exprs():
            r = prom.query(concrete(expr))
            assert r["status"] == "success", (dash, title, expr, r)
        # the rules loaded and evaluate cleanly; with a healthy gateway nothing fires
        wait_until(lambda: _rules_evaluated(prom), timeout=20, what="rules evaluated")
        al = prom.api("alerts")["data"]["alerts"]
        assert [a for a in al if a["state"] == "firing"] == [], al
    finally:
        prom.stop()


def _safe(fn):
    try:
        return fn()
    except OSError:
        return False


def _rules_evaluated(prom):
    r = _safe(lambda: prom.api("rules"))
    if not r or r.get("status") != "success":
        return False
    rules = [x for g in r["data"]["groups"] for x in g["rules"]]
    assert all(x["health"] != "err" for x in rules), rules
    return rules and all(x["health"] == "ok" for x in rules)
