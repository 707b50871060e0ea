"""Binary upgrade (docs/admin.md "Binary upgrade", docs/runbooks/upgrade-binary.md):
`sluice run -c FILE --upgrade` takes the running process's listening sockets
over its admin socket, serves on them, and tells the old one to drain. Under
load no request fails; the old process exits once its connections are done;
a new process that cannot start leaves the old one serving and unchanged."""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import ClientLoad as Load  # test_reload_listeners imports it from here
from conftest import RawConn, base_config, config_to_lua, free_port, wait_until
from test_res_admin import ctl, ctl_ok, sockdir  # noqa: F401  (sockdir is a fixture)
from test_tls_certs import certs, tls_listener  # noqa: F401  (certs is a fixture)


def show_pid(sock):
    out = ctl_ok(sock, "show", "config")
    m = re.search(r"^pid\s+(\d+)$", out, re.M)
    assert m, out
    return int(m.group(1))


def logged(gw, msg):
    return [e for e in gw.log_entries() if e.get("msg") == msg]


def start_old(sluice, upstreams, sockdir, tmp_path, workers=2, admin_http=None, **kw):  # noqa: F811
    ups = upstreams(2)
    sock = os.path.join(sockdir, "admin.sock")
    admin = {"socket": sock}
    if admin_http:
        admin["http"] = admin_http
    cfg = base_config(free_port(), [u.address for u in ups], workers=workers, admin=admin,
                      state_file=str(tmp_path / "state"), **kw)
    old = sluice(cfg)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    return old, cfg, sock, ups


def start_new(sluice, cfg, name="new"):
    return sluice(cfg, ready=False, name=name, extra_args=["--upgrade"])


def wait_taken_over(new, timeout=15):
    wait_until(lambda: logged(new, "upgrade: took over; the old process drains") or new.proc.poll() is not None, timeout=timeout,
               what="the new process taking over")
    assert new.proc.poll() is None, "new process exited %s:\n%s" % (new.proc.returncode, new.stderr()[-3000:])


@pytest.mark.timeout(90)
def test_upgrade_under_load_fails_no_request_and_state_passes_over(sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path)
    # a deployer change the new process must keep (it reads the state file after the old one's last write)
    ctl_ok(sock, "set", "weight", "web", ups[1].address, "7")
    assert show_pid(sock) == old.pid
    load = Load(old.port)
    try:
        wait_until(lambda: load.count("keepalive") > 50 and load.count("fresh") > 20, timeout=15,
                   what="load running")
        # the new config adds a listener the old process does not have: bound fresh
        new_cfg = dict(cfg)
        extra = free_port()
        new_cfg["listeners"] = cfg["listeners"] + [{"name": "extra", "address": "127.0.0.1:%d" % extra}]
        new = start_new(sluice, new_cfg)
        wait_taken_over(new)
        assert old.wait(15) == 0, "the old process did not drain and exit:\n%s" % old.stderr()[-3000:]
        ka, fr = load.count("keepalive"), load.count("fresh")
        wait_until(lambda: load.count("keepalive") > ka + 50 and load.count("fresh") > fr + 20, timeout=15,
                   what="requests served by the new process alone")
    finally:
        load.stop()
    assert load.failed == [], "%d requests failed (%r served): %r" % (len(load.failed), load.ok, load.failed[:5])
    # both processes served part of the load
    assert old.access_log() and new.access_log()
    # the old one drained the way SIGTERM does, and logged the hand-over
    assert logged(old, "upgrade: listening sockets handed to a new process; changes are refused until it takes "
                       "over or goes away")
    assert [e for e in logged(old, "shutting down: no new connections, finishing in-flight requests")
            if e.get("signal") == "upgrade"]
    assert not logged(old, "upgrade abandoned: the new process went away before taking over; this process keeps "
                           "serving and takes changes again")
    # the admin socket is the new process's now (the old one did not remove it on exit)
    assert os.path.exists(sock)
    assert show_pid(sock) == new.pid
    out = ctl_ok(sock, "show", "servers", "web")
    assert re.search(re.escape(ups[1].address) + r".*\b7\b", out), out
    with RawConn(extra) as c:
        assert c.request("GET", "/on-the-added-listener").status == 200
    # changes go to the new process and are saved
    ctl_ok(sock, "set", "weight", "web", ups[0].address, "3")
    assert "weight web %s 3" % ups[0].address in (tmp_path / "state").read_text()


@pytest.mark.timeout(90)
def test_old_process_finishes_its_in_flight_request_then_exits(sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path, workers=1)
    slow = RawConn(old.port, timeout=10)
    slow.send(b"GET /delay/2500 HTTP/1.1\r\nhost: t\r\n\r\n")
    time.sleep(0.3)  # the request is on the old process
    new = start_new(sluice, cfg)
    wait_taken_over(new)
    # the old one still serves its request; new connections go to the new one
    assert old.proc.poll() is None
    with RawConn(old.port) as c:
        assert c.request("GET", "/new").status == 200
    r = slow.read_response()
    assert r.status == 200
    assert "close" in r.connection_tokens()  # draining: the connection is not kept
    slow.close()
    assert old.wait(10) == 0
    new.wait_log(target="/new")
    assert not [e for e in new.access_log() if e.get("target") == "/delay/2500"]
    old.wait_log(target="/delay/2500")


def test_broken_config_leaves_the_old_process_serving(sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path)
    broken = sluice("return { workers = 1, listeners = ", ready=False, name="broken", extra_args=["--upgrade"])
    assert broken.wait(15) == 1
    assert "not started" in broken.stderr()
    assert old.proc.poll() is None
    assert show_pid(sock) == old.pid
    with RawConn(old.port) as c:
        assert c.request("GET", "/still").status == 200
    ctl_ok(sock, "set", "weight", "web", ups[0].address, "2")


def test_new_process_failing_after_taking_the_sockets_changes_nothing(sluice, upstreams, sockdir,  # noqa: F811
                                                                      tmp_path):
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path)
    # a listener on an address something else holds: the new process got the sockets, then fails to bind
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    try:
        bad = dict(cfg)
        bad["listeners"] = cfg["listeners"] + [{"name": "taken", "address": "127.0.0.1:%d" % held.getsockname()[1]}]
        new = start_new(sluice, bad, name="failing")
        assert new.wait(15) == 1
        assert "cannot listen" in new.stderr()
    finally:
        held.close()
    wait_until(lambda: logged(old, "upgrade abandoned: the new process went away before taking over; this process "
                                   "keeps serving and takes changes again"), what="the old process taking back")
    assert old.proc.poll() is None
    assert os.path.exists(sock) and show_pid(sock) == old.pid
    assert not os.path.exists(sock + ".new")
    with RawConn(old.port) as c:
        assert c.request("GET", "/still-old").status == 200
    ctl_ok(sock, "set", "weight", "web", ups[0].address, "4")
    # and a later upgrade still works
    new = start_new(sluice, cfg, name="second")
    wait_taken_over(new)
    assert old.wait(15) == 0
    assert show_pid(sock) == new.pid


def take_sockets_by_hand(sock):
    """What a new process does first: ask for the sockets and hold the
    connection. Returns the connection and the header record."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock)
    conn.sendall(b"upgrade-listeners\n")
    got = b""
    while len(got) < 512:
        got += conn.recv(512 - len(got))
    return conn, got


def test_changes_are_refused_while_the_sockets_are_handed_over(sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path)
    conn, got = take_sockets_by_hand(sock)
    assert got.startswith(b"sluice-upgrade 1 2 %d\n" % old.pid), got[:64]
    try:
        rc, out, err = ctl(sock, "set", "weight", "web", ups[0].address, "9")
        assert rc != 0 and "binary upgrade is in progress" in (out + err), (out, err)
        # rollouts too: the new process resumes them from the state file
        rc, out, err = ctl(sock, "rollout", "start", "web", "--to", "web", "--steps", "50,100", "--interval", "1s")
        assert rc != 0 and "binary upgrade is in progress" in (out + err), (out, err)
        # reading still works
        assert show_pid(sock) == old.pid
        assert ctl(sock, "rollout", "status")[0] == 0
    finally:
        conn.close()
    wait_until(lambda: ctl(sock, "set", "weight", "web", ups[0].address, "9")[0] == 0, what="changes taken again")


@pytest.mark.timeout(90)
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is installed by scripts/install-deps --bench")
def test_upgrade_under_wrk_has_no_errors(sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path)
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d6s", old.url("/wrk")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        new = start_new(sluice, cfg)
        wait_taken_over(new)
        out, _ = wrk.communicate(timeout=30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    assert old.wait(15) == 0
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 100, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    assert show_pid(sock) == new.pid


def test_upgrade_needs_an_admin_socket(sluice, upstreams, tmp_path):
    ups = upstreams(1)
    cfg = base_config(free_port(), [ups[0].address])
    old = sluice(cfg)
    new = sluice(config_to_lua(cfg), ready=False, name="new", extra_args=["--upgrade"])
    assert new.wait(15) == 1
    assert "no admin.socket" in new.stderr()
    with RawConn(old.port) as c:
        assert c.request("GET", "/x").status == 200


def test_upgrade_hands_over_the_admin_http_listener(sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    http_port = free_port()
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path, admin_http="127.0.0.1:%d" % http_port)
    with RawConn(http_port) as c:
        assert c.request("GET", "/readyz").status == 200
    new = start_new(sluice, cfg)
    wait_taken_over(new)
    assert old.wait(15) == 0
    # the same address answers, from the new process (the old one is gone)
    with RawConn(http_port) as c:
        assert c.request("GET", "/readyz").status == 200
    assert show_pid(sock) == new.pid


def h2load_result(out):
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  out)
    assert m, out
    return int(m.group(3)), int(m.group(4)), int(m.group(5))


@pytest.mark.timeout(120)
@pytest.mark.skipif(not shutil.which("h2load") or not shutil.which("wrk"), reason="h2load and wrk are needed")
def test_upgrade_under_h2load_and_wrk_has_no_failed_request(certs, sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    """h2load over TLS (h2), h2load on an h2c listener and wrk (HTTP/1.1
    keep-alive) run across the hand-over: no request fails. HTTP/2 sessions
    on the old process are drained in two steps (GOAWAY with the highest
    stream id and a PING, then the final GOAWAY), so no stream already on its
    way is refused; handshakes in progress finish instead of being cut."""
    crt, key = certs.issue("a", dns=["a.test"])
    tls_port, h2c_port = free_port(), free_port()
    # h2load does not reconnect after a GOAWAY: its sessions stay on the old
    # process while they have streams, up to half the drain time
    old, cfg, sock, ups = start_old(sluice, upstreams, sockdir, tmp_path, drain_timeout="20s")
    cfg = dict(cfg)
    cfg["listeners"] = cfg["listeners"] + [tls_listener(tls_port, [{"cert": crt, "key": key}]),
                                           {"name": "h2c", "address": "127.0.0.1:%d" % h2c_port, "h2c": True}]
    old.conf_path.write_text(config_to_lua(cfg))
    ctl_ok(sock, "reload")
    seconds = 7
    loads = {
        "h2": ["h2load", "-D", str(seconds), "-c8", "-m8", "https://127.0.0.1:%d/h2" % tls_port],
        "h2c": ["h2load", "-D", str(seconds), "-c8", "-m8", "http://127.0.0.1:%d/h2c" % h2c_port],
        "wrk": ["wrk", "-t1", "-c16", "-d%ds" % seconds, old.url("/wrk")],
    }
    procs = {k: subprocess.Popen(v, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k, v in loads.items()}
    try:
        time.sleep(2)
        new = start_new(sluice, cfg)
        wait_taken_over(new)
        # a new HTTP/2 connection goes to the new process
        r = subprocess.run(["nghttp", "http://127.0.0.1:%d/h2-new" % h2c_port], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0, r
        outs = {k: p.communicate(timeout=60)[0] for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert old.wait(15) == 0, old.stderr()[-3000:]
    for k in ("h2", "h2c"):
        ok, failed, errored = h2load_result(outs[k])
        print("upgrade under h2load (%s): %d succeeded, %d failed, %d errored" % (k, ok, failed, errored))
        assert ok > 100 and failed == 0 and errored == 0, "%s:\n%s" % (k, outs[k])
    m = re.search(r"(\d+) requests in", outs["wrk"])
    print("upgrade under wrk: %s requests, socket errors: %s" % (m and m.group(1), "Socket errors" in outs["wrk"]))
    assert m and int(m.group(1)) > 100, outs["wrk"]
    assert "Socket errors" not in outs["wrk"] and "Non-2xx" not in outs["wrk"], outs["wrk"]
    # both processes served each kind
    assert {e["protocol"] for e in old.access_log()} >= {"HTTP/2.0", "HTTP/1.1"}
    assert {e["protocol"] for e in new.access_log()} >= {"HTTP/2.0", "HTTP/1.1"}


def test_rollouts_are_held_while_the_sockets_are_handed_over(sluice, upstreams, sockdir, tmp_path):  # noqa: F811
    """From upgrade-listeners on, the old process moves no rollout: the new
    one resumes it from the state file. Abandoned, the old one drives it again."""
    ups = upstreams(2)
    pools = {"web": {"servers": [{"address": ups[0].address}]}, "green": {"servers": [{"address": ups[1].address}]}}
    old, cfg, sock, _ = start_old(sluice, upstreams, sockdir, tmp_path, pools=pools,
                                  services={"web": {"pools": {"web": 100, "green": 0}}})
    # without traffic and --min-requests 0, each 1 s interval promotes a step
    ctl_ok(sock, "rollout", "start", "web", "--to", "green", "--steps", "10,20,30,40,50,60,70,80,90,100",
           "--interval", "1s", "--min-requests", "0")

    def step():
        m = re.search(r'"step":(\d+)', ctl_ok(sock, "--json", "rollout", "status", "web"))
        assert m
        return int(m.group(1))

    wait_until(lambda: step() >= 1, timeout=5, what="the rollout to move")
    conn, _ = take_sockets_by_hand(sock)
    try:
        held = step()
        time.sleep(2.5)
        assert step() == held
    finally:
        conn.close()
    wait_until(lambda: step() > held, timeout=5, what="the rollout to move again once the upgrade was abandoned")
