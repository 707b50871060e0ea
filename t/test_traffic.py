"""Traffic shifting between pools of a service: sticky weighted splits (a
request key hashed onto the pools, so a client stays on its version and a
weight change moves only the clients that must move), and overrides checked
before the split. Real upstreams, real requests with cookies and headers."""

import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, free_port, wait_until


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-traffic-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctl_ok(sock, *args):
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock] + list(args), capture_output=True, text=True, timeout=15)
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p.stdout


def blue_green(sluice, upstreams, sockdir, service, workers=2):
    blue, green = upstreams(2, names=["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(free_port(), [blue.address], workers=workers, admin={"socket": sock},
                      state_file=os.path.join(sockdir, "state"))
    cfg["pools"] = {"blue": {"servers": [{"address": blue.address}]},
                    "green": {"servers": [{"address": green.address}]}}
    cfg["services"] = {"web": service}
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    gw.cfg = cfg
    return gw


def placement(gw, keys, header_of, conns=4):
    """Which upstream served each key, over a few keep-alive connections (so
    both workers answer)."""
    out = {}
    cs = [RawConn(gw.port) for _ in range(conns)]
    try:
        for i, k in enumerate(keys):
            r = cs[i % conns].request("GET", "/k", headers=header_of(k))
            assert r.status == 200, r
            out[k] = r.header("x-upstream")
    finally:
        for c in cs:
            c.close()
    return out


def cookie(k):
    return [("cookie", "theme=dark; uid=%s" % k)]


KEYS = ["user-%d" % i for i in range(1500)]


def test_sticky_cookie_split_is_consistent_and_monotone(sluice, upstreams, sockdir):
    gw = blue_green(sluice, upstreams, sockdir, {"pools": {"blue": 90, "green": 10}, "sticky": "cookie:uid"})
    first = placement(gw, KEYS, cookie)
    green = sum(1 for v in first.values() if v == "green")
    assert 100 <= green <= 200, "green had %d of 1500 keys at 10%%" % green
    # the same key lands on the same pool on another connection (and worker)
    again = placement(gw, KEYS[:300], cookie, conns=3)
    assert all(again[k] == first[k] for k in again), "a key changed pool without a weight change"

    ctl_ok(gw.sock, "set", "service-weights", "web", "blue=80", "green=20")
    second = placement(gw, KEYS, cookie)
    back = [k for k in KEYS if first[k] == "green" and second[k] == "blue"]
    moved = [k for k in KEYS if first[k] == "blue" and second[k] == "green"]
    assert not back, "keys moved from green back to blue: %r" % back[:5]
    # about 10% of the keys must move: 150 expected
    assert 90 <= len(moved) <= 210, "moved %d of 1500 keys for a 10%% shift" % len(moved)

    ctl_ok(gw.sock, "set", "service-weights", "web", "blue=0", "green=100")
    assert set(placement(gw, KEYS[:50], cookie).values()) == {"green"}


def test_sticky_survives_a_restart_and_a_reload(sluice, upstreams, sockdir):
    gw = blue_green(sluice, upstreams, sockdir, {"pools": {"blue": 50, "green": 50}, "sticky": "header:x-user"})
    hdr = lambda k: [("x-user", k)]  # noqa: E731
    before = placement(gw, KEYS[:300], hdr)
    assert 100 <= sum(1 for v in before.values() if v == "green") <= 200
    ctl_ok(gw.sock, "reload")
    assert placement(gw, KEYS[:300], hdr) == before
    gw.stop()
    gw2 = sluice(gw.cfg, name="again")
    wait_until(lambda: os.path.exists(gw.sock), what="admin socket")
    assert placement(gw2, KEYS[:300], hdr) == before


def test_without_sticky_key_requests_are_drawn(sluice, upstreams, sockdir):
    # no sticky key: the old per-request draw; a request without the cookie
    # of a sticky service is drawn the same way
    gw = blue_green(sluice, upstreams, sockdir, {"pools": {"blue": 50, "green": 50}, "sticky": "cookie:uid"})
    names = list(placement(gw, ["same"] * 1, cookie).values())
    with RawConn(gw.port) as c:
        for _ in range(60):
            r = c.request("GET", "/nokey")
            names.append(r.header("x-upstream"))
    assert 10 <= names.count("green") <= 50, names


def test_sticky_by_query_argument_and_client_ip(sluice, upstreams, sockdir):
    gw = blue_green(sluice, upstreams, sockdir, {"pools": {"blue": 50, "green": 50}, "sticky": "query:u"})
    seen = {}
    with RawConn(gw.port) as c:
        for i in range(200):
            r = c.request("GET", "/p?x=1&u=%d" % (i % 40))
            seen.setdefault(i % 40, set()).add(r.header("x-upstream"))
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {next(iter(v)) for v in seen.values()} == {"blue", "green"}


def test_overrides_before_the_split(sluice, upstreams, sockdir):
    gw = blue_green(sluice, upstreams, sockdir, {
        "pools": {"blue": 100, "green": 0}, "sticky": "cookie:uid",
        "overrides": [{"header": "x-canary", "value": "1", "pool": "green"},
                      {"cookie": "version", "value": "green", "pool": "green"}]})
    with RawConn(gw.port) as c:
        assert c.request("GET", "/").header("x-upstream") == "blue"
        assert c.request("GET", "/", headers=[("x-canary", "1")]).header("x-upstream") == "green"
        assert c.request("GET", "/", headers=[("X-Canary", "1")]).header("x-upstream") == "green"
        assert c.request("GET", "/", headers=[("x-canary", "0")]).header("x-upstream") == "blue"
        assert c.request("GET", "/", headers=[("cookie", "uid=7; version=green")]).header("x-upstream") == "green"
        assert c.request("GET", "/", headers=[("cookie", "uid=7; version=blue")]).header("x-upstream") == "blue"
    # an override goes on when the deployer moves the weights
    ctl_ok(gw.sock, "set", "service-weights", "web", "blue=0", "green=100")
    with RawConn(gw.port) as c:
        assert c.request("GET", "/").header("x-upstream") == "green"
        assert c.request("GET", "/", headers=[("x-canary", "1")]).header("x-upstream") == "green"


def test_override_to_unknown_pool_is_a_config_error(tmp_path):
    conf = tmp_path / "c.lua"
    conf.write_text("""return {
  listeners = { { address = "127.0.0.1:%d" } },
  pools = { blue = { servers = { "127.0.0.1:9" } }, green = { servers = { "127.0.0.1:10" } } },
  services = { web = { pools = { blue = 1 }, sticky = "cookie:",
    overrides = { { header = "x-canary", value = "1", pool = "gren" } } } },
  routes = { { match = { path_prefix = "/" }, service = "web" } },
}
""" % free_port())
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(conf)], capture_output=True, text=True, timeout=15)
    assert p.returncode != 0
    assert 'services.web.overrides[1].pool: unknown pool "gren" (did you mean "green"?)' in p.stderr, p.stderr
    assert 'services.web.sticky: missing the cookie name (write "cookie:NAME")' in p.stderr, p.stderr


def served(gw, n, target="/s"):
    with RawConn(gw.port) as c:
        return [c.request("GET", "%s%d" % (target, i), headers=[("cookie", "uid=u%d" % i)]).header("x-upstream")
                for i in range(n)]


def test_blue_green_switch_and_back(sluice, upstreams, sockdir):
    gw = blue_green(sluice, upstreams, sockdir, {"pools": {"blue": 90, "green": 10}, "sticky": "cookie:uid"})
    before = served(gw, 200)
    assert "green" in before and "blue" in before
    out = ctl_ok(gw.sock, "switch", "web", "green")
    assert "service web: switched to green: blue 90, green 10 -> blue 0, green 100" in out, out
    # at once, on every worker (new connections spread over both)
    for _ in range(4):
        assert set(served(gw, 25)) == {"green"}
    svc = ctl_ok(gw.sock, "show", "services", "web")
    assert "switched (was 90; switch web --back)" in svc, svc
    diff = ctl_ok(gw.sock, "show", "diff")
    assert "service web pool blue: weight 90 before the switch (switch web --back restores it)" in diff, diff
    assert "service web pool blue: weight 90 -> 0" in diff, diff
    state = open(os.path.join(sockdir, "state")).read()
    assert "service-saved-weight web blue 90" in state and "service-weight web green 100" in state, state

    # the memory survives a restart; --back restores the split, and the sticky keys land as before
    gw.stop()
    gw2 = sluice(gw.cfg, name="again")
    wait_until(lambda: os.path.exists(gw.sock), what="admin socket")
    assert set(served(gw2, 25)) == {"green"}
    out = ctl_ok(gw.sock, "switch", "web", "--back")
    assert "service web: switched back: blue 0, green 100 -> blue 90, green 10" in out, out
    assert served(gw2, 200) == before
    assert "service-saved-weight" not in open(os.path.join(sockdir, "state")).read()
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", gw.sock, "switch", "web", "--back"], capture_output=True, text=True,
                       timeout=15)
    assert p.returncode == 1 and "service web is not switched (nothing to go back to)" in p.stdout, p
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", gw.sock, "switch", "web", "purple"], capture_output=True, text=True,
                       timeout=15)
    assert p.returncode == 1 and 'service web has no pool "purple"' in p.stdout, p


def test_switch_twice_keeps_the_first_split_and_to_a_pool_at_zero(sluice, upstreams, sockdir):
    gw = blue_green(sluice, upstreams, sockdir, {"pools": {"blue": 100, "green": 0}})
    ctl_ok(gw.sock, "switch", "web", "green")
    assert set(served(gw, 20)) == {"green"}
    ctl_ok(gw.sock, "switch", "web", "blue")
    assert set(served(gw, 20)) == {"blue"}
    ctl_ok(gw.sock, "switch", "web", "green")
    out = ctl_ok(gw.sock, "switch", "web", "--back")
    assert "-> blue 100, green 0" in out, out
    assert set(served(gw, 20)) == {"blue"}
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", gw.sock, "--json", "show", "services"], capture_output=True,
                       text=True, timeout=15)
    import json
    j = json.loads(p.stdout)
    assert j["ok"] and j["services"][0]["service"] == "web" and j["services"][0]["switched"] is False
    assert [(x["pool"], x["weight"]) for x in j["services"][0]["pools"]] == [("blue", 100), ("green", 0)]
