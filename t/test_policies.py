"""Lua policies (docs/policies.md): config and `sluice check` with FILE:LINE, the
request API in the access, response and log phases against real upstreams,
deny/respond, set_pool, and the sandbox (errors, loops, memory, recursion, yields,
pattern and rep bombs) with the worker serving on."""

import json
import textwrap
import time

import pytest

from conftest import RawConn, base_config, free_port, run_sluice, wait_until
from test_res_admin import sockdir  # noqa: F401  (fixture)
from test_tls_certs import certs  # noqa: F401  (fixture)


def write_policy(tmp_path, name, text):
    d = tmp_path / "policies"
    d.mkdir(exist_ok=True)
    (d / (name + ".lua")).write_text(textwrap.dedent(text))
    return "policies/%s.lua" % name


def policy_gw(tmp_path, sluice, upstreams, policies, route_policies, n_up=1, pools=None, routes=None, **kw):
    """A gateway with the given policies ({name: (source, extra keys)}) on one catch-all route."""
    ups = upstreams(n_up)
    conf_policies = {}
    for name, spec in policies.items():
        src, extra = spec if isinstance(spec, tuple) else (spec, {})
        entry = {"file": write_policy(tmp_path, name, src)}
        entry.update(extra)
        conf_policies[name] = entry
    port = free_port()
    cfg = base_config(port, [u.address for u in ups], policies=conf_policies, **kw)
    if pools:
        cfg["pools"] = pools(ups)
        cfg["services"] = {"web": {"pools": {p: 100 if i == 0 else 0 for i, p in enumerate(sorted(cfg["pools"]))}}}
    cfg["routes"] = routes or [{"name": "main", "match": {"path_prefix": "/"}, "service": "web",
                                "policies": route_policies}]
    gw = sluice(cfg)
    gw.upstreams = ups
    return gw


def echo(resp):
    assert resp.status == 200, resp
    return resp.json()


def upstream_header(body, name):
    vals = [v for k, v in body["headers"] if k.lower() == name]
    return vals


# ---------------------------------------------------------------------------
# sluice check
# ---------------------------------------------------------------------------

def check(tmp_path, policies, routes_policies=("p",), extra_files=None):
    for name, src in (extra_files or {}).items():
        write_policy(tmp_path, name, src)
    conf_policies = {}
    for name, src in policies.items():
        conf_policies[name] = {"file": write_policy(tmp_path, name, src)}
    cfg = base_config(free_port(), ["127.0.0.1:1"], policies=conf_policies)
    cfg["routes"][0]["policies"] = list(routes_policies)
    path = tmp_path / "check.lua"
    from conftest import config_to_lua
    path.write_text(config_to_lua(cfg))
    return run_sluice(["check", "-c", str(path)])


def test_check_accepts_a_valid_policy(tmp_path):
    r = check(tmp_path, {"p": "return { access = function(r) r.req_headers:set('x-a', '1') end }\n"})
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_check_reports_syntax_error_with_file_and_line(tmp_path):
    r = check(tmp_path, {"p": "return {\n  access = function(r)\n    local x = = 1\n  end\n}\n"})
    assert r.returncode == 1
    assert "policies.p: " in r.stderr and "policies/p.lua:3:" in r.stderr, r.stderr


def test_check_reports_top_level_errors_and_bad_shapes(tmp_path):
    r = check(tmp_path, {
        "a": "local t = nil\nreturn t.x\n",
        "b": "return 42\n",
        "c": "return { acess = function() end }\n",
        "d": "return { access = 'no' }\n",
        "e": "while true do end\n",
    }, routes_policies=("a",))
    assert r.returncode == 1
    err = r.stderr
    assert "policies.a: " in err and "policies/a.lua:2:" in err, err
    assert "policies.b: " in err and "must return a table" in err, err
    assert "policies.c: " in err and 'a key "acess"' in err, err
    assert "policies.d: " in err and "access must be a function" in err, err
    assert "policies.e: " in err and "policies/e.lua:1:" in err and "instruction budget" in err, err


def test_check_reports_unknown_policy_in_route_by_path(tmp_path):
    r = check(tmp_path, {"tenant": "return { access = function() end }\n"}, routes_policies=("tenant", "tenat"))
    assert r.returncode == 1
    assert 'routes[1].policies[2]: unknown policy "tenat" (did you mean "tenant"?)' in r.stderr, r.stderr


def test_check_reports_missing_file_and_bad_keys(tmp_path):
    cfg = base_config(free_port(), ["127.0.0.1:1"], policies={
        "gone": {"file": "policies/nope.lua"},
        "typo": {"file": "x.lua", "on_eror": "deny"},
        "oe": {"file": "x.lua", "on_error": "maybe"},
    })
    (tmp_path / "x.lua").write_text("return { access = function() end }\n")
    from conftest import config_to_lua
    path = tmp_path / "c.lua"
    path.write_text(config_to_lua(cfg))
    r = run_sluice(["check", "-c", str(path)])
    assert r.returncode == 1
    assert "policies.gone.file: cannot read" in r.stderr, r.stderr
    assert "policies.typo" in r.stderr and "on_eror" in r.stderr, r.stderr
    assert 'policies.oe.on_error: unknown value "maybe"' in r.stderr, r.stderr


def test_check_require_only_from_policy_directories(tmp_path):
    (tmp_path / "outside.lua").write_text("return 1\n")
    r = check(tmp_path, {"p": "local u = require('util')\nreturn { access = function(r) u.f(r) end }\n"},
              extra_files={"util": "return { f = function(r) end }\n"})
    assert r.returncode == 0, r.stderr
    for name in ("../outside", "outside", "os"):
        r = check(tmp_path, {"p": "require(%r)\nreturn { access = function() end }\n" % name})
        assert r.returncode == 1, name
        assert "policies/p.lua:1:" in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# the request API
# ---------------------------------------------------------------------------

API_POLICY = """
local cfg = ...
return {
  access = function(r)
    local h = r.req_headers
    h:set("x-method", r.method)
    h:set("x-path", r.path)
    h:set("x-query", r.query)
    local args = r:args()
    h:set("x-arg-a", args.a or "-")
    h:set("x-arg-multi", type(args.m) == "table" and table.concat(args.m, ",") or "-")
    h:set("x-arg-space", args.s or "-")
    h:set("x-client", r.client_ip .. ":" .. r.client_port)
    h:set("x-names", table.concat({ r.route, r.service, r.listener }, "/"))
    h:set("x-rid", r.request_id)
    h:set("x-cookie", r:cookie("session") or "-")
    h:set("x-first", r:header("X-Multi") or "-")
    h:set("x-all", table.concat(h:get_all("x-multi"), "|"))
    h:add("x-added", "one")
    h:add("x-added", "two")
    h:remove("x-secret")
    h:set("x-config", cfg.greeting .. ":" .. r.config.list[2])
    h:set("x-tls", tostring(r.tls_version))
    r.ctx.seen = "ctx-" .. r.method
    r:log("policy_note", "access ran")
    r:log("tenant", r:header("x-tenant") or "none")
  end,
  response = function(r)
    local h = r.resp_headers
    h:set("x-ctx", r.ctx.seen)
    h:set("x-status", tostring(r.status) .. "/" .. tostring(r.upstream_status))
    h:add("x-resp-added", "a")
    h:remove("x-upstream")
    h:set("x-had-req", tostring(r.req_headers:get("x-tenant")))
  end,
  log = function(r)
    r:log("final_status", r.status)
    r:log("ctx_in_log", r.ctx.seen)
  end,
}
"""


def api_gw(tmp_path, sluice, upstreams):
    return policy_gw(tmp_path, sluice, upstreams,
                     {"api": (API_POLICY, {"config": {"greeting": "hi", "list": ["a", "b"]}})}, ["api"])


def test_request_api_in_access_response_and_log(tmp_path, sluice, upstreams):
    gw = api_gw(tmp_path, sluice, upstreams)
    with RawConn(gw.port) as c:
        resp = c.request("GET", "/some/path?a=1&m=x&m=y&s=a+b%21", headers=[
            ("X-Multi", "first"), ("X-Multi", "second"), ("Cookie", "a=1; session=s3cr3t; b=2"),
            ("X-Secret", "hidden"), ("X-Tenant", "acme"), ("X-Request-Id", "rid-123")])
        port = c.local_port
    body = echo(resp)

    def up(name):
        vals = upstream_header(body, name)
        assert len(vals) == 1, (name, body["headers"])
        return vals[0]
    assert up("x-method") == "GET"
    assert up("x-path") == "/some/path"
    assert up("x-query") == "a=1&m=x&m=y&s=a+b%21"
    assert up("x-arg-a") == "1"
    assert up("x-arg-multi") == "x,y"
    assert up("x-arg-space") == "a b!"
    assert up("x-client") == "127.0.0.1:%d" % port
    assert up("x-names") == "main/web/public"
    assert up("x-rid") == "rid-123"
    assert up("x-cookie") == "s3cr3t"
    assert up("x-first") == "first"
    assert up("x-all") == "first|second"
    assert upstream_header(body, "x-added") == ["one", "two"]
    assert upstream_header(body, "x-secret") == []
    assert up("x-config") == "hi:b"
    assert up("x-tls") == "nil"
    # response phase
    assert resp.header("x-ctx") == "ctx-GET"
    assert resp.header("x-status") == "200/200"
    assert resp.header("x-resp-added") == "a"
    assert resp.header("x-upstream") is None
    assert resp.header("x-had-req") == "acme"
    # r:log in the access and log phases lands in the access-log line
    (e,) = gw.wait_log(request_id="rid-123")
    assert e["policy_note"] == "access ran" and e["tenant"] == "acme"
    assert e["final_status"] == "200" and e["ctx_in_log"] == "ctx-GET"
    assert e["status"] == 200 and e["reason"] == ""


def test_ctx_is_per_request(tmp_path, sluice, upstreams):
    src = """
    return {
      access = function(r)
        r.req_headers:set("x-before", tostring(r.ctx.n))
        r.ctx.n = (r.ctx.n or 0) + 1
      end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"c": src}, ["c"])
    with RawConn(gw.port) as c:
        for _ in range(5):
            assert upstream_header(echo(c.request("GET", "/")), "x-before") == ["nil"]


def test_policies_run_in_order(tmp_path, sluice, upstreams):
    first = "return { access = function(r) r.req_headers:set('x-order', 'first') end }"
    second = ("return { access = function(r) r.req_headers:set('x-order', "
              "r.req_headers:get('x-order') .. ',second') end }")
    gw = policy_gw(tmp_path, sluice, upstreams, {"one": first, "two": second}, ["one", "two"])
    with RawConn(gw.port) as c:
        assert upstream_header(echo(c.request("GET", "/")), "x-order") == ["first,second"]


def test_deny_and_respond(tmp_path, sluice, upstreams):
    src = """
    return {
      access = function(r)
        local t = r:header("x-tenant")
        if t == "evil" then r:deny(403, "tenant blocked") end
        if t == "plain" then r:deny() end
        if t == "tea" then
          r:respond(418, "short and stout", { ["content-type"] = "text/x-tea", ["x-extra"] = "1" })
        end
        if t == "json" then r:respond(200, '{"ok":true}', { ["content-type"] = "application/json" }) end
        r.req_headers:set("x-reached", "yes")
      end,
      response = function(r) r.resp_headers:set("x-resp-phase", tostring(r.status)) end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"gate": src}, ["gate"])
    (u,) = gw.upstreams
    with RawConn(gw.port) as c:
        r = c.request("GET", "/", headers=[("X-Tenant", "evil"), ("X-Request-Id", "deny-1")])
        assert r.status == 403 and r.body == b"tenant blocked\n"
        assert r.header("x-resp-phase") == "403"
        r = c.request("GET", "/", headers=[("X-Tenant", "plain"), ("X-Request-Id", "deny-2")])
        assert r.status == 403 and r.body.startswith(b"403")
        r = c.request("GET", "/", headers=[("X-Tenant", "tea"), ("X-Request-Id", "resp-1")])
        assert r.status == 418 and r.body == b"short and stout"
        assert r.header("content-type") == "text/x-tea" and r.header("x-extra") == "1"
        r = c.request("GET", "/", headers=[("X-Tenant", "json")])
        assert r.status == 200 and r.json() == {"ok": True}
        assert r.header("content-type") == "application/json"
        assert upstream_header(echo(c.request("GET", "/", headers=[("X-Tenant", "ok")])), "x-reached") == ["yes"]
    assert u.stats()["requests"] == 1  # denied and answered requests never went upstream
    (e,) = gw.wait_log(request_id="deny-1")
    assert e["status"] == 403 and e["reason"] == "policy_denied" and e["policy"] == "gate"
    (e,) = gw.wait_log(request_id="resp-1")
    assert e["status"] == 418 and e["reason"] == "" and e["policy"] == "gate"


def test_header_api_refuses_injection_and_gateway_fields(tmp_path, sluice, upstreams):
    src = """
    return {
      access = function(r)
        local what = r:header("x-try")
        if what == "crlf" then r.req_headers:set("x-a", "v\\r\\nx-injected: 1") end
        if what == "cl" then r.req_headers:set("content-length", "5") end
        if what == "host" then r.req_headers:set("host", "evil.test") end
        if what == "name" then r.req_headers:set("bad name", "v") end
        if what == "resp" then r.resp_headers:set("x-a", "1") end
        if what == "assign" then r.method = "POST" end
      end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"h": src}, ["h"])
    with RawConn(gw.port) as c:
        for what in ("crlf", "cl", "host", "name", "resp", "assign"):
            body = echo(c.request("GET", "/", headers=[("X-Try", what)]))  # on_error = pass
            assert upstream_header(body, "x-injected") == []
            assert upstream_header(body, "content-length") == []
    fails = [e for e in gw.log_entries() if e.get("msg") == "policy failed"]
    assert len(fails) == 6, fails
    assert all("policies/h.lua:" in e["error"] for e in fails), fails


def test_set_pool_within_the_service(tmp_path, sluice, upstreams):
    src = """
    return {
      access = function(r)
        local p = r:header("x-pool")
        if p then r:set_pool(p) end
      end,
      response = function(r) r.resp_headers:set("x-pool-used", tostring(r.pool)) end,
    }
    """

    def pools(ups):
        return {"blue": {"servers": [{"address": ups[0].address}]}, "green": {"servers": [{"address": ups[1].address}]}}
    gw = policy_gw(tmp_path, sluice, upstreams, {"pick": src}, ["pick"], n_up=2, pools=pools)
    with RawConn(gw.port) as c:
        # green has weight 0: only r:set_pool reaches it
        assert echo(c.request("GET", "/"))["server"] == gw.upstreams[0].name
        r = c.request("GET", "/", headers=[("X-Pool", "green")])
        assert echo(r)["server"] == gw.upstreams[1].name and r.header("x-pool-used") == "green"
        assert echo(c.request("GET", "/", headers=[("X-Pool", "blue")]))["server"] == gw.upstreams[0].name
        # a pool outside the service is an error: on_error = pass keeps the service's choice
        r = c.request("GET", "/", headers=[("X-Pool", "nope")])
        assert echo(r)["server"] == gw.upstreams[0].name
    fails = [e for e in gw.log_entries() if e.get("msg") == "policy failed"]
    assert len(fails) == 1 and 'pool "nope" is not one of service "web"' in fails[0]["error"], fails


# ---------------------------------------------------------------------------
# the sandbox
# ---------------------------------------------------------------------------

SANDBOX_POLICY = """
local cases = {
  error = function() local t = nil; return t.field end,
  loop = function() while true do end end,
  memory = function() local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end end,
  recursion = function() local function f(n) return f(n + 1) + 1 end return f(1) end,
  yield = function() coroutine.yield(1) end,
  yield_c = function() local co = coroutine.wrap(function() table.sort({3, 2, 1}, function(a, b)
    coroutine.yield() return a < b end) end) co() end,
  rep = function() return ("").rep("", 1e15) .. ("x"):rep(1e12) end,
  pattern = function() return (("a"):rep(30000)):find(".-.-.-.-.-.-b") end,
  gsub = function() return (("a"):rep(5000)):gsub("a-a-a-a-b", "x") end,
  pcall_loop = function() while true do pcall(function() while true do end end) end end,
  gc = function() setmetatable({}, { __gc = function() while true do end end }) end,
  globals = function()
    assert(io == nil and os == nil and debug == nil and package == nil, "unsafe globals")
    assert(dofile == nil and loadfile == nil and string.dump == nil, "unsafe loaders")
    local f, err = load(string.char(27) .. "Lua")
    assert(f == nil, "bytecode loaded")
    local ok = pcall(load, "return 1", "x", "b")
    assert(not ok, "binary mode accepted")
    assert(load("return 1 + 1")() == 2)
    error("sandbox ok")
  end,
}
return {
  access = function(r)
    local c = r:header("x-case")
    if c then cases[c]() end
    r.req_headers:set("x-policy-ran", "yes")
  end,
}
"""

SANDBOX_CASES = ["error", "loop", "memory", "recursion", "yield", "yield_c", "rep", "pattern", "gsub",
                 "pcall_loop", "gc", "globals"]


@pytest.mark.timeout(120)
def test_sandbox_stops_each_failure_and_the_worker_serves_on(tmp_path, sluice, upstreams):
    gw = policy_gw(tmp_path, sluice, upstreams, {
        "sb": (SANDBOX_POLICY, {"instructions": 2000000, "memory": "4m"}),
    }, ["sb"], workers=1)
    with RawConn(gw.port, timeout=30) as c:
        for case in SANDBOX_CASES:
            body = echo(c.request("GET", "/", headers=[("X-Case", case), ("X-Request-Id", "sb-" + case)]))
            # on_error = "pass": the request goes on, without what the failed policy would have set
            assert upstream_header(body, "x-policy-ran") == [], case
            # and the next request on the same worker is served normally
            body = echo(c.request("GET", "/"))
            assert upstream_header(body, "x-policy-ran") == ["yes"], case
    fails = {e["request_id"]: e for e in gw.log_entries() if e.get("msg") == "policy failed"}
    for case in SANDBOX_CASES:
        if case == "gc":
            continue
        e = fails["sb-" + case]
        assert e["policy"] == "sb" and e["phase"] == "access" and e["outcome"] == "pass", e
        assert "policies/sb.lua:" in e["error"], e
    assert fails["sb-loop"]["kind"] == "instructions"
    assert fails["sb-pcall_loop"]["kind"] == "instructions"
    assert fails["sb-memory"]["kind"] == "memory"
    assert "memory cap" in fails["sb-memory"]["error"]
    assert "stack overflow" in fails["sb-recursion"]["error"] or fails["sb-recursion"]["kind"] == "memory"
    assert "yield" in fails["sb-yield"]["error"] and "yield" in fails["sb-yield_c"]["error"]
    assert "rep" in fails["sb-rep"]["error"]
    for case in ("sb-pattern", "sb-gsub"):  # steps, or the call's time on a loaded machine
        err = fails[case]["error"]
        assert "pattern too slow" in err or "time limit reached inside a pattern match" in err, err
    assert "__gc" in fails["sb-gc"]["error"]
    assert "sandbox ok" in fails["sb-globals"]["error"]
    # the failures are in the access log too
    e = gw.wait_log(request_id="sb-loop")[0]
    assert e["policy_error"] == "sb" and e["status"] == 200


def test_on_error_deny(tmp_path, sluice, upstreams):
    src = "return { access = function(r) if r:header('x-fail') then error('boom') end end }"
    gw = policy_gw(tmp_path, sluice, upstreams, {"strict": (src, {"on_error": "deny"})}, ["strict"])
    (u,) = gw.upstreams
    with RawConn(gw.port) as c:
        r = c.request("GET", "/", headers=[("X-Fail", "1"), ("X-Request-Id", "fail-1")])
        assert r.status == 403
        echo(c.request("GET", "/"))
    (e,) = gw.wait_log(request_id="fail-1")
    assert e["reason"] == "policy_error" and e["policy_error"] == "strict"
    (f,) = [e for e in gw.log_entries() if e.get("msg") == "policy failed"]
    assert f["outcome"] == "deny" and "policies/strict.lua:1: boom" in f["error"], f
    assert u.stats()["requests"] == 1


def test_patterns_and_helpers_work(tmp_path, sluice, upstreams):
    src = r"""
    return {
      access = function(r)
        local h = r.req_headers
        local out = {}
        out[#out + 1] = tostring(("key=value"):match("(%w+)=(%w+)"))
        out[#out + 1] = tostring((" trim me "):match("^%s*(.-)%s*$"))
        out[#out + 1] = select(1, ("a,b,,c"):gsub(",", ";"))
        local words = {}
        for w in ("one two three"):gmatch("%a+") do words[#words + 1] = w end
        out[#out + 1] = table.concat(words, "+")
        out[#out + 1] = tostring(("f(a(b)c)d"):find("%b()"))
        out[#out + 1] = tostring(("THE (quick) fox"):find("%f[%a]%a+", 5))
        out[#out + 1] = ("abc"):rep(3, "-")
        out[#out + 1] = url.decode("a%20b+c", true)
        out[#out + 1] = html.decode("&lt;x&gt; &#65;&#x42; &amp;")
        out[#out + 1] = base64.decode(base64.encode("hello?"))
        local j = json.decode('{"a": [1, 2, {"b": "\\u00e9"}], "n": null, "t": true}')
        out[#out + 1] = j.a[3].b .. tostring(j.n) .. tostring(j.t) .. #j.a
        out[#out + 1] = tostring(json.decode("{bad"))
        h:set("x-out", table.concat(out, "|"))
      end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"helpers": src}, ["helpers"])
    with RawConn(gw.port) as c:
        (v,) = upstream_header(echo(c.request("GET", "/")), "x-out")
    parts = v.split("|")
    assert parts[:10] + parts[11:] == ["key", "trim me", "a;b;;c", "one+two+three", "2", "6", "abc-abc-abc",
                                       "a b c", "<x> AB &", "hello?", "nil"], parts
    assert parts[10].endswith("niltrue3") and len(parts[10]) > len("niltrue3"), parts


def test_set_limit_key_feeds_a_real_rate_limit(tmp_path, sluice, upstreams):
    src = """
    return {
      access = function(r)
        local t = r:header("x-tenant")
        if t then r:set_limit_key("tenant", t) end
        local w = r:header("x-whole")
        if w then r:set_limit_key("by_client", w) end
      end,
    }
    """
    routes = [{"name": "main", "match": {"path_prefix": "/"}, "service": "web", "policies": ["keys"],
               "rate_limit": ["per_tenant", "by_client"]}]
    gw = policy_gw(tmp_path, sluice, upstreams, {"keys": src}, None, routes=routes, rate_limits={
        "per_tenant": {"key": "policy:tenant", "rate": 2, "per": "1m", "burst": 2},
        "by_client": {"key": "client_ip", "rate": 3, "per": "1m", "burst": 3},
    })
    with RawConn(gw.port) as c:
        def status(*headers):
            return c.request("GET", "/", headers=list(headers)).status
        # per tenant: 2 each; the client-wide limit is overridden per x-whole value
        assert [status(("X-Tenant", "a"), ("X-Whole", "w1")) for _ in range(3)] == [200, 200, 429]
        assert [status(("X-Tenant", "b"), ("X-Whole", "w2")) for _ in range(2)] == [200, 200]
        r = c.request("GET", "/", headers=[("X-Tenant", "b"), ("X-Whole", "w3"), ("X-Request-Id", "rl-b")])
        assert r.status == 429 and r.header("retry-after")
        # without the policy's key the tenant limit does not apply; client_ip (3/min) does
        assert [status() for _ in range(4)] == [200, 200, 200, 429]
    (e,) = gw.wait_log(request_id="rl-b")
    assert e["reason"] == "rate_limited"


def test_check_rate_limit_policy_key_syntax(tmp_path):
    cfg = base_config(free_port(), ["127.0.0.1:1"], rate_limits={"x": {"key": "policy:", "rate": 1, "per": "1s"}})
    from conftest import config_to_lua
    path = tmp_path / "c.lua"
    path.write_text(config_to_lua(cfg))
    r = run_sluice(["check", "-c", str(path)])
    assert r.returncode == 1 and "rate_limits.x.key" in r.stderr and "policy key" in r.stderr, r.stderr


@pytest.mark.timeout(90)
def test_reload_compiles_policies_and_refuses_a_broken_one(tmp_path, sluice, upstreams, sockdir):
    import os
    from test_res_admin import ctl
    from conftest import config_to_lua
    sock = os.path.join(sockdir, "admin.sock")
    src = "return { access = function(r) r.req_headers:set('x-version', '%s') end }\n"
    gw = policy_gw(tmp_path, sluice, upstreams, {"v": src % "one"}, ["v"], admin={"socket": sock})
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    with RawConn(gw.port) as keep:
        assert upstream_header(echo(keep.request("GET", "/")), "x-version") == ["one"]
        # a new script: the next request, on the same keep-alive connection, runs it
        write_policy(tmp_path, "v", src % "two")
        rc, out, err = ctl(sock, "reload")
        assert rc == 0, (out, err)
        assert upstream_header(echo(keep.request("GET", "/")), "x-version") == ["two"]
        # a broken script fails the reload with FILE:LINE; the old one keeps running
        write_policy(tmp_path, "v", "return {\n  access = function(r) r.x( end\n}\n")
        rc, out, err = ctl(sock, "reload")
        assert rc == 1 and "policies.v: policies/v.lua:2:" in out, (out, err)
        assert upstream_header(echo(keep.request("GET", "/")), "x-version") == ["two"]
        # the config the policy gets is part of the snapshot too
        write_policy(tmp_path, "v", "local c = ...\nreturn { access = function(r) "
                     "r.req_headers:set('x-version', c.v) end }\n")
        gw.config["policies"]["v"]["config"] = {"v": "three"}
        gw.conf_path.write_text(config_to_lua(gw.config))
        rc, out, err = ctl(sock, "reload")
        assert rc == 0, (out, err)
        for _ in range(4):  # every worker
            assert upstream_header(echo(keep.request("GET", "/")), "x-version") == ["three"]


def test_tls_fields_and_http2(tmp_path, sluice, upstreams, certs):
    """r.tls_version, r.tls_client_subject, r.tls_sni, r.protocol over TLS, HTTP/1.1 and HTTP/2,
    with and without a verified client certificate; headers set by the policy both ways."""
    from conftest import curl
    from test_tls_certs import tls_config
    from test_tls_routing import rfc2253_subject
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    ops = certs.issue("ops", client=True, cn="ops")
    src = """
    return {
      access = function(r)
        r.req_headers:set("x-seen-proto", r.protocol)
      end,
      response = function(r)
        local h = r.resp_headers
        h:set("x-tls", tostring(r.tls_version))
        h:set("x-subject", tostring(r.tls_client_subject))
        h:set("x-sni", tostring(r.tls_sni))
        h:set("x-proto", r.protocol .. " " .. r.scheme)
      end,
    }
    """
    port = free_port()
    cfg = tls_config(port, [u.address], [{"cert": c, "key": k}],
                     tls={"client_ca": str(certs.ca), "client_verify": "optional"},
                     policies={"t": {"file": write_policy(tmp_path, "t", src)}})
    cfg["routes"][0]["policies"] = ["t"]
    gw = sluice(cfg)
    for flag, proto in (("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2.0")):
        for cert, subject in ((ops, rfc2253_subject(ops[0])), (None, "nil")):
            args = ["--cacert", str(certs.ca), "--resolve", "a.test:%d:127.0.0.1" % port, flag, "-D", "-",
                    "https://a.test:%d/x" % port]
            if cert:
                args += ["--cert", cert[0], "--key", cert[1]]
            r = curl(args)
            assert r.returncode == 0, r.stderr
            head, _, body = r.stdout.partition(b"\r\n\r\n")
            hdrs = {}
            for ln in head.decode().split("\r\n")[1:]:
                name, _, value = ln.partition(":")
                hdrs[name.strip().lower()] = value.strip()
            assert hdrs["x-tls"] in ("TLSv1.3", "TLSv1.2"), hdrs
            assert hdrs["x-subject"] == subject, hdrs
            assert hdrs["x-sni"] == "a.test", hdrs
            assert hdrs["x-proto"] == proto + " https", hdrs
            assert upstream_header(json.loads(body), "x-seen-proto") == [proto]


def test_re_and_cache(tmp_path, sluice, upstreams):
    src = r"""
    return {
      access = function(r)
        local out = {}
        local y, m = re.match("date=2026-12", [[(\d{4})-(\d\d)]])
        out[#out + 1] = y .. "/" .. m
        out[#out + 1] = tostring(re.match("ABC", "abc", "i"))
        local s, e = re.find("xx foo yy", [[\bfoo\b]])
        out[#out + 1] = s .. "-" .. e
        local words = {}
        for w in re.gmatch("a1 b22 c333", [[[a-z](\d+)]]) do words[#words + 1] = w end
        out[#out + 1] = table.concat(words, ",")
        out[#out + 1] = (re.gsub("john smith", [[(\w+) (\w+)]], "%2 %1"))
        out[#out + 1] = (re.gsub("a-b-c", "-", function() return "+" end))
        out[#out + 1] = tostring(pcall(re.match, "x", "("))
        out[#out + 1] = select(2, pcall(re.match, ("a"):rep(3000) .. "!", [[^(\w+\s?)*$]])):match("too slow") or "no limit"
        -- the cache lives between requests on a worker
        local n = (cache.get("hits:" .. r:header("x-key")) or 0) + 1
        cache.set("hits:" .. r:header("x-key"), n, 60)
        cache.set("short", "v", 0.05)
        out[#out + 1] = tostring(n)
        r.req_headers:set("x-out", table.concat(out, "|"))
      end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"rx": src}, ["rx"], workers=1)
    with RawConn(gw.port) as c:
        for i in range(1, 4):
            (v,) = upstream_header(echo(c.request("GET", "/", headers=[("X-Key", "k")])), "x-out")
            assert v.split("|") == ["2026/12", "ABC", "4-6", "1,22,333", "smith john", "a+b+c", "false",
                                    "too slow", str(i)], v


def test_require_and_separate_globals(tmp_path, sluice, upstreams):
    """A module of the policy directory, required at load and used per request; each policy's
    globals are its own."""
    d = tmp_path / "policies" / "lib"
    d.mkdir(parents=True)
    (d / "util.lua").write_text("local M = {}\nfunction M.tag(s) return 'tag:' .. s end\nreturn M\n")
    one = """
    local util = require("lib.util")
    name = "one"
    return { access = function(r) r.req_headers:set("x-one", util.tag(name)) end }
    """
    two = """
    name = "two"
    return { access = function(r)
      r.req_headers:set("x-two", require("lib.util").tag(name))
    end }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"one": one, "two": two}, ["one", "two"])
    with RawConn(gw.port) as c:
        body = echo(c.request("GET", "/"))
    assert upstream_header(body, "x-one") == ["tag:one"]
    assert upstream_header(body, "x-two") == ["tag:two"]


def test_phase_header_shorthands(tmp_path, sluice, upstreams):
    src = """
    return {
      access = function(r)
        r:set_header("x-set", "1")
        r:add_header("x-add", "a")
        r:add_header("x-add", "b")
        r:remove_header("x-drop")
      end,
      response = function(r)
        r:set_header("x-resp", r:resp_header("content-type"))
        r:remove_header("x-upstream")
      end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"s": src}, ["s"])
    with RawConn(gw.port) as c:
        resp = c.request("GET", "/", headers=[("X-Drop", "x")])
    body = echo(resp)
    assert upstream_header(body, "x-set") == ["1"]
    assert upstream_header(body, "x-add") == ["a", "b"]
    assert upstream_header(body, "x-drop") == []
    assert resp.header("x-resp") == "application/json" and resp.header("x-upstream") is None


def test_header_names_are_checked_whatever_the_state_remembers(tmp_path, sluice, upstreams):
    # header names are lowered and checked once per Lua state and remembered
    # by string: many names (more than it keeps), names made at run time,
    # and a refused name used again must all behave as the first time
    src = """
    return {
      access = function(r)
        for i = 1, 40 do
          r.req_headers:set("X-N" .. i, tostring(i))
        end
        for i = 1, 40, 13 do
          r.req_headers:set("x-back" .. i, r.req_headers:get("X-n" .. i) or "missing")
        end
        r:remove_header("x-n2")
        local what = r:header("x-try")
        if what == "name" then r.req_headers:set("bad name", "v") end
        if what == "host" then r.req_headers:set("HOST", "evil.test") end
      end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"n": src}, ["n"])
    with RawConn(gw.port) as c:
        for _ in range(3):
            body = echo(c.request("GET", "/"))
            assert upstream_header(body, "x-n1") == ["1"] and upstream_header(body, "x-n40") == ["40"]
            assert upstream_header(body, "x-n2") == []
            assert [upstream_header(body, "x-back%d" % i) for i in (1, 14, 27, 40)] == [["1"], ["14"], ["27"], ["40"]]
            for what in ("name", "host", "name"):
                body = echo(c.request("GET", "/", headers=[("X-Try", what)]))  # on_error = pass
                assert upstream_header(body, "host") != ["evil.test"]
    fails = [e for e in gw.log_entries() if e.get("msg") == "policy failed"]
    assert len(fails) == 9, fails
    assert sum("not a valid header name" in e["error"] for e in fails) == 6, fails
    assert sum("set by the gateway" in e["error"] for e in fails) == 3, fails


def test_policy_reads_the_request_body_when_it_asks(tmp_path, sluice, upstreams):
    """body = "1k" on a policy: routes using it read up to 1 KiB of the body before the access
    phase (routes[N].request_buffering); r.body holds it, decoded, and r.body_complete says
    whether that is all of it. The upstream still gets the whole body."""
    src = """
    return {
      access = function(r)
        local b = r.body
        if b and b:find("DROP TABLE", 1, true) then r:deny(403, "no") end
        r.req_headers:set("x-body-len", tostring(b and #b or -1))
        r.req_headers:set("x-body-complete", tostring(r.body_complete))
      end,
    }
    """
    gw = policy_gw(tmp_path, sluice, upstreams, {"inspect": (src, {"body": "1k"})},
                   None, routes=[{"name": "reads", "match": {"path_prefix": "/r"}, "service": "web",
                                  "policies": ["inspect"]},
                                 {"name": "other", "match": {"path_prefix": "/"}, "service": "web"}])
    with RawConn(gw.port) as c:
        got = echo(c.request("POST", "/r", body=b"name=bob"))
        assert upstream_header(got, "x-body-len") == ["8"] and upstream_header(got, "x-body-complete") == ["true"]
        big = b"a" * 5000
        got = echo(c.request("POST", "/r", body=big))
        assert upstream_header(got, "x-body-len") == ["1024"]
        assert upstream_header(got, "x-body-complete") == ["false"]
        assert got["body_len"] == len(big)  # the rest streamed after the first 1 KiB
        got = echo(c.request("POST", "/r", headers=[("Transfer-Encoding", "chunked")],
                             body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
        assert upstream_header(got, "x-body-len") == ["11"]
        r = c.request("POST", "/r", body=b"q=1; DROP TABLE users")
        assert r.status == 403
        got = echo(c.request("GET", "/r"))
        assert upstream_header(got, "x-body-len") == ["0"]


def route_counter(sock, family, route):
    """{label value: count} of a route family, from `ctl show counters --json`."""
    import subprocess
    from conftest import SLUICE_BIN
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "--json", "show", "counters"], capture_output=True,
                       text=True, timeout=15)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = {}
    for f in json.loads(p.stdout)["counters"]:
        if f["name"] != family:
            continue
        for s in f["series"]:
            if s["labels"].get("route") == route:
                out[[v for k, v in s["labels"].items() if k != "route"][0]] = s["value"]
    return out


def test_outcomes_and_errors_are_counted_per_route(tmp_path, sluice, upstreams, sockdir):
    import os
    sock = os.path.join(sockdir, "admin.sock")
    src = """
    return {
      access = function(r)
        local c = r:header("x-case")
        if c == "deny" then r:deny(451, "no") end
        if c == "respond" then r:respond(200, "here", { ["x-from"] = "policy" }) end
        if c == "error" then error("boom") end
        if c == "loop" then while true do end end
        if c == "memory" then local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(1024) .. i end end
      end,
      response = function(r)
        if r:header("x-case") == "late" then error("late boom") end
      end,
    }
    """
    routes = [{"name": "strict", "match": {"path_prefix": "/strict"}, "service": "web", "policies": ["s"]},
              {"name": "pol", "match": {"path_prefix": "/"}, "service": "web", "policies": ["p"]}]
    gw = policy_gw(tmp_path, sluice, upstreams, {
        "p": (src, {"instructions": 200000, "memory": "2m"}),
        "s": ("return { access = function(r) error('strict boom') end }", {"on_error": "deny"}),
    }, None, routes=routes, admin={"socket": sock}, workers=1)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    plan = [("allow", 3, 200), ("deny", 2, 451), ("respond", 1, 200), ("error", 2, 200), ("loop", 1, 200),
            ("memory", 1, 200), ("late", 1, 200)]
    with RawConn(gw.port, timeout=30) as c:
        for case, n, status in plan:
            for _ in range(n):
                assert c.request("GET", "/", headers=[("X-Case", case)]).status == status, case
        assert c.request("GET", "/strict").status == 403
    # "late" fails in the response phase: its access phase allowed it
    assert route_counter(sock, "sluice_route_policy_total", "pol") == {
        "allowed": 4, "denied": 2, "responded": 1, "error": 2, "budget_exceeded": 1, "memory_exceeded": 1}
    assert route_counter(sock, "sluice_route_policy_errors_total", "pol") == {"access": 4, "response": 1}
    assert route_counter(sock, "sluice_route_policy_total", "strict") == {"error": 1}
    assert route_counter(sock, "sluice_route_policy_errors_total", "strict") == {"access": 1}
