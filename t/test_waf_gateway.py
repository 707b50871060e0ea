"""The WAF in the request path: block with 403 and waf_denied, detect mode,
a route that opts out, a route's own settings and exclusions, the access-log
fields, the audit log, and a broken rule refused by `sluice check`."""

import json
import subprocess
import urllib.parse

import httpx

from conftest import SLUICE_BIN, SRC_DIR, base_config, free_port, wait_until

RULES = str(SRC_DIR / "lua" / "waf")
XSS = "/search?q=" + urllib.parse.quote("<script>alert(1)</script>")
SQLI = "/search?q=" + urllib.parse.quote("' or '1'='1")


def start(sluice, upstreams, tmp_path, waf, routes=None):
    up = upstreams(1)[0]
    port = free_port()
    cfg = base_config(port, [up.address], routes=routes, waf=waf)
    return sluice(cfg), up


def entries_with(gw, key):
    return [e for e in gw.access_log() if key in e]


def test_block_detect_and_access_log(sluice, upstreams, tmp_path):
    audit = tmp_path / "waf-audit.jsonl"
    gw, _ = start(sluice, upstreams, tmp_path, {"paranoia": 1, "mode": "block", "rules": RULES,
                                                  "audit_log": str(audit)})
    with httpx.Client(timeout=5) as c:
        ok = c.get(gw.url("/search?q=red+shoes"), headers={"Cookie": "session=abc"})
        assert ok.status_code == 200
        r = c.get(gw.url(XSS), headers={"x-request-id": "req-waf-1"})
        assert r.status_code == 403
        assert "req-waf-1" in r.text and "firewall" in r.text
        r = c.get(gw.url("/"), headers={"Cookie": "pref=" + urllib.parse.quote("' or '1'='1")})
        assert r.status_code == 403
    wait_until(lambda: len(entries_with(gw, "waf_rules")) >= 2, what="access-log lines with waf fields")
    blocked = [e for e in gw.access_log() if e.get("reason") == "waf_denied"]
    assert len(blocked) == 2
    first = blocked[0]
    assert first["status"] == 403
    assert "18001" in first["waf_rules"].split(",")
    assert int(first["waf_score"]) >= 5 and first["waf_action"] == "block"
    plain = [e for e in gw.access_log() if e.get("status") == 200]
    assert plain and "waf_rules" not in plain[0]
    wait_until(lambda: audit.exists() and len(audit.read_text().splitlines()) >= 2, what="audit lines")
    lines = [json.loads(l) for l in audit.read_text().splitlines()]
    a = lines[0]
    assert a["request_id"] == "req-waf-1" and a["action"] == "block" and a["score"] >= 5
    m = [x for x in a["matches"] if x["rule"] == 18001][0]
    assert m["target"] == "args:q" and "<script>" in m["snippet"] and m["message"]
    # a cookie's value is never written to the audit log
    c = lines[1]
    assert all(x["snippet"].startswith("[redacted") for x in c["matches"] if x["target"].startswith("cookies"))
    assert "1'='1" not in audit.read_text()


def test_detect_mode_passes_and_logs(sluice, upstreams, tmp_path):
    gw, up = start(sluice, upstreams, tmp_path, {"mode": "detect", "rules": RULES})
    r = httpx.get(gw.url(SQLI), timeout=5)
    assert r.status_code == 200
    wait_until(lambda: entries_with(gw, "waf_rules"), what="a detect line")
    e = entries_with(gw, "waf_rules")[0]
    assert e["waf_action"] == "detect" and e["status"] == 200 and "19001" in e["waf_rules"]


def test_route_opt_out_and_override(sluice, upstreams, tmp_path):
    routes = [
        {"name": "open", "match": {"path_prefix": "/open/"}, "service": "web", "waf": False},
        {"name": "search", "match": {"path_prefix": "/search"}, "service": "web",
         "waf": {"exclude": {"targets": [{"target": "args:q", "rules": [19001, 19002, 19003]}]}}},
        {"name": "paranoid", "match": {"path_prefix": "/p/"}, "service": "web",
         "waf": {"paranoia": 2, "threshold": 2}},
        {"name": "notags", "match": {"path_prefix": "/notags/"}, "service": "web",
         "waf": {"exclude": {"tags": ["attack-xss"], "rules": [10001]}}},
        {"name": "default", "match": {"path_prefix": "/"}, "service": "web"},
    ]
    gw, _ = start(sluice, upstreams, tmp_path, {"paranoia": 1, "rules": RULES}, routes=routes)
    with httpx.Client(timeout=5) as c:
        q = "?q=" + urllib.parse.quote("<script>alert(1)</script>")
        assert c.get(gw.url("/open/x" + q)).status_code == 200
        assert c.get(gw.url("/x" + q)).status_code == 403
        # the search box may hold SQL-looking text, not scripts
        assert c.get(gw.url(SQLI)).status_code == 200
        assert c.get(gw.url(XSS)).status_code == 403
        # and the exclusion is for args:q only
        assert c.get(gw.url("/search?other=" + urllib.parse.quote("' or '1'='1"))).status_code == 403
        # a paranoia-2 notice (a scripting library's User-Agent) blocks at threshold 2 there only
        ua = {"User-Agent": "python-requests/2.31"}
        assert c.get(gw.url("/p/a"), headers=ua).status_code == 403
        assert c.get(gw.url("/a"), headers=ua).status_code == 200
        assert c.get(gw.url("/notags/a" + q)).status_code == 200
        assert c.request("PROPFIND", gw.url("/notags/a")).status_code != 403
        assert c.request("PROPFIND", gw.url("/a")).status_code == 403


def run_check(tmp_path, text):
    conf = tmp_path / "c.lua"
    conf.write_text(text)
    return subprocess.run([SLUICE_BIN, "check", "-c", str(conf)], capture_output=True, text=True, timeout=30)


def test_check_reports_rule_and_config_errors(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x.lua").write_text('return { { id = 5, targets = { "args" }, operator = { regex = "[" }, message = "m" } }\n')
    base = ('return { listeners = { { name = "p", address = "127.0.0.1:%d" } }, pools = { web = { servers = { '
            '{ address = "127.0.0.1:9" } } } }, services = { web = { pools = { web = 100 } } }, routes = { { match = '
            '{ path_prefix = "/" }, service = "web"%s } }, waf = %s }\n')
    r = run_check(tmp_path, base % (free_port(), "", '{ rules = "rules" }'))
    assert r.returncode != 0
    assert "x.lua: rules[1].operator.regex" in r.stderr + r.stdout
    r = run_check(tmp_path, base % (free_port(), ", waf = true", '{ paranoia = 5, mode = "log", rules = "%s" }' % RULES))
    out = r.stderr + r.stdout
    assert r.returncode != 0
    assert "waf.paranoia" in out and "waf.mode" in out and "waf = true is not a setting" in out
    r = run_check(tmp_path, base % (free_port(), ', waf = { exclude = { targets = { "argz:q" } } }', "{}"))
    assert r.returncode != 0 and "unknown target" in r.stderr + r.stdout
    r = run_check(tmp_path, base % (free_port(), ", waf = false", '{ paranoia = 2, rules = "%s" }' % RULES))
    assert r.returncode == 0, r.stderr


def test_detect_rule_beside_blocking_set(sluice, upstreams, tmp_path):
    # 18011 is a paranoia-2 rule: tried at paranoia 1 in detect mode, it is logged and blocks nothing
    gw, _ = start(sluice, upstreams, tmp_path, {"paranoia": 1, "rules": RULES, "detect_rules": [18011]})
    r = httpx.get(gw.url("/a?x=" + urllib.parse.quote("window.location")), timeout=5)
    assert r.status_code == 200
    wait_until(lambda: entries_with(gw, "waf_rules"), what="a detect line")
    e = entries_with(gw, "waf_rules")[0]
    assert e["waf_rules"] == "18011" and e["waf_score"] == "0" and e["waf_action"] == "detect"


def test_reload_with_a_broken_rule_keeps_the_old_rules(sluice, upstreams, tmp_path):
    import shutil
    rules = tmp_path / "myrules"
    shutil.copytree(RULES, rules)
    gw, _ = start(sluice, upstreams, tmp_path, {"rules": str(rules)})
    assert httpx.get(gw.url(XSS), timeout=5).status_code == 403
    (rules / "99-broken.lua").write_text('return { { id = 1, targets = { "nope" }, operator = { xss = true }, message = "m" } }\n')
    r = subprocess.run([SLUICE_BIN, "check", "-c", str(gw.conf_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "99-broken.lua: rules[1].targets" in r.stderr + r.stdout
    gw.proc.send_signal(1)  # SIGHUP: reload, refused
    wait_until(lambda: "99-broken.lua" in gw.stderr(), what="the reload error")
    assert httpx.get(gw.url(XSS), timeout=5).status_code == 403
    assert httpx.get(gw.url("/ok"), timeout=5).status_code == 200


def test_audit_redacts_secret_named_arguments(sluice, upstreams, tmp_path):
    audit = tmp_path / "audit.jsonl"
    gw, _ = start(sluice, upstreams, tmp_path, {"rules": RULES, "audit_log": str(audit)})
    secret = "' or '1'='1 hunter2"
    r = httpx.get(gw.url("/login?user=bob&password=" + urllib.parse.quote(secret)), timeout=5)
    assert r.status_code == 403
    wait_until(lambda: audit.exists() and audit.read_text().strip(), what="an audit line")
    line = json.loads(audit.read_text().splitlines()[0])
    pw = [m for m in line["matches"] if m["target"] == "args:password"]
    assert pw and all(m["snippet"].startswith("[redacted") for m in pw)
    assert "hunter2" not in audit.read_text()


def test_h2c_requests_are_inspected_too(sluice, upstreams, tmp_path):
    up = upstreams(1)[0]
    port = free_port()
    cfg = base_config(port, [up.address], waf={"rules": RULES})
    cfg["listeners"][0]["h2c"] = True
    gw = sluice(cfg)
    with httpx.Client(http1=False, http2=True, timeout=5) as c:
        ok = c.get(gw.url("/a?q=shoes"), headers={"cookie": "a=1"})
        assert ok.status_code == 200 and ok.http_version == "HTTP/2"
        r = c.get(gw.url(XSS))
        assert r.status_code == 403 and r.http_version == "HTTP/2"
        # cookie crumbs (one field per cookie in HTTP/2) are joined and read one by one
        r = c.get(gw.url("/a"), headers=[("cookie", "a=1"), ("cookie", "b=" + urllib.parse.quote("<script>alert(1)</script>"))])
        assert r.status_code == 403


def test_request_bodies_are_inspected(sluice, upstreams, tmp_path):
    """Bodies up to waf.body_limit are read before the access phase and inspected as URL-encoded,
    JSON or multipart; a larger body passes uninspected (on_body_limit = "pass") or is refused
    with 413 (on_body_limit = "deny")."""
    gw, up = start(sluice, upstreams, tmp_path, {"paranoia": 1, "rules": RULES, "body_limit": "8k"})
    with httpx.Client(timeout=5) as c:
        form = {"content-type": "application/x-www-form-urlencoded"}
        assert c.post(gw.url("/login"), content="user=alice&note=see+you+at+noon", headers=form).status_code == 200
        r = c.post(gw.url("/login"), content="user=" + urllib.parse.quote("' or '1'='1") + "&pw=x", headers=form)
        assert r.status_code == 403
        js = {"content-type": "application/json"}
        r = c.post(gw.url("/api"), content=json.dumps({"comment": "<script>alert(1)</script>"}), headers=js)
        assert r.status_code == 403
        ok = c.post(gw.url("/api"), content=json.dumps({"comment": "O'Brien liked it"}), headers=js)
        assert ok.status_code == 200 and ok.json()["body_len"] > 0  # the upstream got the body
        # past the limit: not inspected, passed on whole
        big = "pad=" + "x" * 10000 + "&q=" + urllib.parse.quote("<script>alert(1)</script>")
        r = c.post(gw.url("/api"), content=big, headers=form)
        assert r.status_code == 200 and r.json()["body_len"] == len(big)
    blocked = [e for e in gw.access_log() if e.get("reason") == "waf_denied"]
    assert len(blocked) == 2
    assert up.stats()["requests"] == 3

    gw2, _ = start(sluice, upstreams, tmp_path, {"paranoia": 1, "rules": RULES, "body_limit": "1k",
                                                   "on_body_limit": "deny"})
    with httpx.Client(timeout=5) as c:
        r = c.post(gw2.url("/api"), content="a=" + "y" * 5000, headers={"content-type": "text/plain"})
        assert r.status_code == 413
        assert c.post(gw2.url("/api"), content="a=short", headers=form).status_code == 200
    (e,) = [e for e in gw2.access_log() if e.get("status") == 413]
    assert e["reason"] == "waf_denied" and e["waf_action"] == "body_limit"


def test_outcomes_and_block_groups_are_counted_per_route(sluice, upstreams, tmp_path):
    import os
    import shutil
    from test_policies import route_counter
    # the shipped rules plus one whose regex gives up on a long run of 'a' (a
    # notice: it never blocks, but a request on which it gave up is counted)
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "90-slow.lua").write_text(
        'return { { id = 99001, severity = "notice", targets = { "args" }, '
        'operator = { regex = "^(a+)+$" }, message = "slow", tags = { "test" } } }\n')
    sock = str(tmp_path / "admin.sock")
    up = upstreams(1)[0]
    port = free_port()
    routes = [{"name": "watch", "match": {"path_prefix": "/watch"}, "service": "web", "waf": {"mode": "detect"}},
              {"name": "shop", "match": {"path_prefix": "/"}, "service": "web"}]
    cfg = base_config(port, [up.address], routes=routes, workers=1, admin={"socket": sock},
                      waf={"rules": str(rules), "body_limit": "1k", "on_body_limit": "deny"})
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    with httpx.Client(timeout=10) as c:
        for _ in range(3):
            assert c.get(gw.url("/search?q=red+shoes")).status_code == 200
        assert c.get(gw.url(XSS)).status_code == 403
        assert c.get(gw.url("/x?a=" + urllib.parse.quote("<svg onload=alert(1)>"))).status_code == 403
        assert c.get(gw.url("/"), headers={"Cookie": "p=" + urllib.parse.quote("' or '1'='1")}).status_code == 403
        # one request, two groups: counted once as blocked, once in each group
        both = "/x?a=" + urllib.parse.quote("<script>alert(1)</script>") + "&b=" + urllib.parse.quote("1 union select 1")
        assert c.get(gw.url(both)).status_code == 403
        assert c.post(gw.url("/upload"), content=b"x" * 4096,
                      headers={"Content-Type": "application/octet-stream"}).status_code == 413
        assert c.get(gw.url("/search?q=" + "a" * 3000 + "b")).status_code == 200
        assert c.get(gw.url("/watch" + XSS[len("/search"):])).status_code == 200
        assert c.get(gw.url("/watch/ok")).status_code == 200
    assert route_counter(sock, "sluice_route_waf_total", "shop") == {
        "passed": 3, "blocked": 4, "body_limit": 1, "budget_exceeded": 1}
    assert route_counter(sock, "sluice_route_waf_blocks_total", "shop") == {"xss": 3, "sqli": 2}
    assert route_counter(sock, "sluice_route_waf_total", "watch") == {"detected": 1, "passed": 1}
    assert route_counter(sock, "sluice_route_waf_blocks_total", "watch") == {}
