"""The admin socket and `sluice ctl`: show and steer pools at run time, every
change answered, logged with the peer's uid, applied on every worker at once
and kept across a restart through the state file; other users are refused."""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, free_port, wait_until


@pytest.fixture
def sockdir():
    # a directory another user can traverse (pytest's tmp_path is private to root)
    d = tempfile.mkdtemp(prefix="sluice-admin-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctl(sock, *args, user=None, json_out=False):
    cmd = [SLUICE_BIN, "ctl", "-s", sock] + (["--json"] if json_out else []) + list(args)
    kw = {}
    if user is not None:
        kw = {"user": user, "group": user}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=15, **kw)
    return p.returncode, p.stdout, p.stderr


def ctl_ok(sock, *args):
    rc, out, err = ctl(sock, *args)
    assert rc == 0, (args, rc, out, err)
    return out


def ctl_json(sock, *args):
    rc, out, err = ctl(sock, *args, json_out=True)
    assert out.count("\n") == 1, out
    return rc, json.loads(out)


def start(sluice, upstreams, sockdir, n=2, workers=2, state=True, mode=None, extra_pool=None, **kw):
    ups = upstreams(n)
    sock = os.path.join(sockdir, "admin.sock")
    admin = {"socket": sock}
    if mode:
        admin["mode"] = mode
    top = {"admin": admin}
    if state:
        top["state_file"] = os.path.join(sockdir, "state")
    cfg = base_config(free_port(), [u.address for u in ups], workers=workers, pool=extra_pool or {}, **top, **kw)
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    gw.ups = ups
    gw.cfg = cfg
    return gw


def served_by(gw, n, target="/x"):
    names = []
    for i in range(n):
        with RawConn(gw.port) as c:
            r = c.request("GET", "%s%d" % (target, i))
        assert r.status == 200, r
        names.append(r.header("x-upstream"))
    return names


def test_help_and_show_commands(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    out = ctl_ok(gw.sock, "help")
    for cmd in ("show pools", "show servers", "show breakers", "show config", "show diff", "set weight", "drain",
                "enable", "disable", "reset breaker", "set service-weights"):
        assert cmd in out
    out = ctl_ok(gw.sock, "show", "pools")
    assert out.splitlines()[1].split()[:3] == ["web", "2", "2"]
    out = ctl_ok(gw.sock, "show", "servers", "web")
    for u in gw.ups:
        assert u.address in out
    assert "up" in out and "active" in out
    assert "generation" in ctl_ok(gw.sock, "show", "config")
    assert "no differences" in ctl_ok(gw.sock, "show", "diff")
    rc, j = ctl_json(gw.sock, "show", "servers")
    assert rc == 0 and j["ok"] and {s["address"] for s in j["servers"]} == {u.address for u in gw.ups}
    assert all(s["health"] == "up" and s["breaker"] == "off" and s["weight"] == 1 for s in j["servers"])
    rc, j = ctl_json(gw.sock, "show", "breakers")
    assert rc == 0 and len(j["breakers"]) == 2
    rc, j = ctl_json(gw.sock, "show", "config")
    assert j["pools"] == 1 and j["servers"] == 2 and j["loaded"].endswith("Z")


def test_unknown_and_malformed_commands_change_nothing(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    a = gw.ups[0].address
    bad = [("frobnicate",), ("set", "weight", "web", a), ("set", "weight", "web", a, "-1"),
           ("set", "weight", "web", a, "1001"), ("set", "weight", "nopool", a, "3"),
           ("set", "weight", "web", "10.9.9.9:1", "3"), ("drain", "web"), ("show", "servers", "nopool"),
           ("set", "service-weights", "web", "nopool=3"), ("set", "service-weights", "web", "web=0"),
           ("set", "service-weights", "nosvc", "web=1"), ("reset", "breaker", "web")]
    for args in bad:
        rc, out, err = ctl(gw.sock, *args)
        assert rc == 1, (args, out)
        assert out.startswith("error: ") and out.count("\n") == 1, (args, out)
        rc, j = ctl_json(gw.sock, *args)
        assert rc == 1 and j["ok"] is False and j["error"]
    assert "no differences" in ctl_ok(gw.sock, "show", "diff")
    assert not os.path.exists(os.path.join(sockdir, "state"))
    assert "admin change" not in gw.stderr()


def test_set_weight_applies_at_once_on_every_worker(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir, workers=2)
    a, b = gw.ups[0].address, gw.ups[1].address
    out = ctl_ok(gw.sock, "set", "weight", "web", a, "0")
    assert out.strip() == "pool web server %s: weight 1 -> 0" % a
    time.sleep(0.05)
    assert set(served_by(gw, 20)) == {"u2"}
    ctl_ok(gw.sock, "set", "weight", "web", a, "3")
    names = served_by(gw, 40, "/y")
    assert 25 <= names.count("u1") <= 35, names
    assert "pool web server %s: weight 1 -> 3" % a in ctl_ok(gw.sock, "show", "diff")
    log = [json.loads(l) for l in gw.stderr().splitlines() if '"admin change"' in l]
    assert len(log) == 2 and log[0]["uid"] == os.geteuid() and "weight 1 -> 0" in log[0]["change"]
    ctl_ok(gw.sock, "clear", "weight", "web", a)
    assert "no differences" in ctl_ok(gw.sock, "show", "diff")


def test_disable_and_enable(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    a = gw.ups[0].address
    assert "disabled" in ctl_ok(gw.sock, "disable", "web", a)
    assert set(served_by(gw, 10)) == {"u2"}
    assert "disabled" in ctl_ok(gw.sock, "show", "servers")
    assert "enabled (was disabled)" in ctl_ok(gw.sock, "enable", "web", a)
    assert set(served_by(gw, 10, "/z")) == {"u1", "u2"}


def test_drain_lets_in_flight_finish_and_sends_nothing_new(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir, workers=1)
    a = gw.ups[0].address
    # warm a keep-alive connection to both servers, then start a slow request on u1
    served_by(gw, 2, "/warm")
    slow = RawConn(gw.port, timeout=8)
    slow.send(b"GET /delay/1000 HTTP/1.1\r\nHost: x\r\n\r\n")  # round robin: this one goes to u1
    time.sleep(0.2)
    out = ctl_ok(gw.sock, "drain", "web", a)
    assert "draining" in out and "1 requests in flight" in out
    before = gw.ups[0].stats()["requests"]
    assert set(served_by(gw, 10, "/during")) == {"u2"}
    r = slow.read_response()
    assert r.status == 200 and r.header("x-upstream") == "u1", "the in-flight request finishes"
    slow.close()
    assert gw.ups[0].stats()["requests"] == before
    # idle keep-alive connections to the drained server are closed
    wait_until(lambda: gw.ups[0].stats()["open"] == 0, timeout=3, what="idle connections to u1 closed")
    assert "draining" in ctl_ok(gw.sock, "show", "servers", "web")
    ctl_ok(gw.sock, "enable", "web", a)
    assert "u1" in served_by(gw, 4, "/back")


def test_service_weights_split_between_pools(sluice, upstreams, sockdir):
    blue, green = upstreams(2, names=["blue", "green"])
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(free_port(), [blue.address], workers=2, admin={"socket": sock},
                      state_file=os.path.join(sockdir, "state"))
    cfg["pools"]["green"] = {"servers": [{"address": green.address}]}
    cfg["services"]["web"] = {"pools": {"web": 100, "green": 0}}
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    assert set(served_by(gw, 10)) == {"blue"}
    out = ctl_ok(sock, "set", "service-weights", "web", "web=0", "green=100")
    assert "pool web weight 100 -> 0" in out and "pool green weight 0 -> 100" in out
    assert set(served_by(gw, 10, "/g")) == {"green"}
    ctl_ok(sock, "set", "service-weights", "web", "web=50", "green=50")
    names = served_by(gw, 60, "/h")
    assert 15 <= names.count("green") <= 45


def test_changes_survive_a_restart_through_the_state_file(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    a, b = gw.ups[0].address, gw.ups[1].address
    ctl_ok(gw.sock, "set", "weight", "web", a, "7")
    ctl_ok(gw.sock, "drain", "web", b)
    ctl_ok(gw.sock, "set", "service-weights", "web", "web=40")
    state = open(os.path.join(sockdir, "state")).read()
    assert "weight web %s 7" % a in state and "drain web %s" % b in state
    assert "service-weight web web 40" in state
    assert not [f for f in os.listdir(sockdir) if ".tmp." in f], "temporary file left behind"
    gw.stop()
    gw2 = sluice(gw.cfg, name="again")
    wait_until(lambda: os.path.exists(gw.sock), what="admin socket")
    diff = ctl_ok(gw.sock, "show", "diff")
    assert "weight 1 -> 7" in diff and "drained" in diff and "weight 100 -> 40" in diff
    assert set(served_by(gw2, 6)) == {"u1"}, "the drain was re-applied before serving"


def test_state_file_with_unknown_entries_is_not_fatal(sluice, upstreams, sockdir):
    with open(os.path.join(sockdir, "state"), "w") as f:
        f.write("weight nopool 127.0.0.1:1 3\nweight web 127.0.0.1:1 3\nbogus line\nweight web\n")
    gw = start(sluice, upstreams, sockdir)
    err = gw.stderr()
    assert err.count("state file: line skipped") == 4
    assert "no differences" in ctl_ok(gw.sock, "show", "diff")


def test_reset_breaker(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir, n=1,
               extra_pool={"breaker": {"consecutive_failures": 2, "open_for": "60s"}})
    for i in range(2):
        with RawConn(gw.port) as c:
            assert c.request("GET", "/status/503").status == 503
    rc, j = ctl_json(gw.sock, "show", "breakers")
    assert j["breakers"][0]["state"] == "open" and j["breakers"][0]["trips"] == 1
    out = ctl_ok(gw.sock, "reset", "breaker", "web", gw.ups[0].address)
    assert "breaker open -> closed" in out
    served_by(gw, 2)


def test_second_uid_is_refused_by_socket_mode(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    assert oct(os.stat(gw.sock).st_mode & 0o777) == "0o600"
    rc, out, err = ctl(gw.sock, "show", "pools", user=65534)
    assert rc == 2 and out == "" and "Permission denied" in err


def test_second_uid_is_refused_by_peer_credentials(sluice, upstreams, sockdir):
    # a loose mode lets nobody connect: the peer check must still refuse, and change nothing
    gw = start(sluice, upstreams, sockdir, mode="0666")
    a = gw.ups[0].address
    rc, out, err = ctl(gw.sock, "set", "weight", "web", a, "0", user=65534)
    assert rc == 1 and out.startswith("error: permission denied: uid 65534"), (rc, out, err)
    assert "no differences" in ctl_ok(gw.sock, "show", "diff")
    assert "peer is not the user sluice runs as" in gw.stderr()


def test_ctl_without_a_gateway(sockdir):
    rc, out, err = ctl(os.path.join(sockdir, "missing.sock"), "show", "pools")
    assert rc == 2 and "cannot connect" in err
    p = subprocess.run([SLUICE_BIN, "ctl"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "usage" in p.stderr


def test_bad_admin_config_is_refused(sluice, upstreams, sockdir):
    (u,) = upstreams(1)
    cfg = base_config(free_port(), [u.address], admin={"socket": "/nonexistent-dir/x.sock"})
    gw = sluice(cfg, ready=False)
    assert gw.wait(10) == 1
    assert "cannot listen on the admin socket" in gw.stderr()
