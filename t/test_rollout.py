"""Automated canary rollouts (`sluice ctl rollout ...`): the controller moves
a service's split step by step, judges the canary pool on the gateway's own
outcomes for each interval, promotes or rolls back at once, and keeps its
progress across a restart and a reload. Real upstreams (a demo upstream as the
stable pool, a small HTTP server that can be told to answer 500s as the
canary), real requests, short intervals."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, free_port, wait_until

CANARY = r'''
import http.server, os, sys, time
flag = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if os.path.exists(flag + ".slow"):
            time.sleep(0.4)
        st = 500 if os.path.exists(flag) else 200
        body = b"canary\n"
        self.send_response(st)
        self.send_header("X-Upstream", "green")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-rollout-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def canary(sockdir):
    port = free_port()
    script = os.path.join(sockdir, "canary.py")
    with open(script, "w") as f:
        f.write(CANARY)
    flag = os.path.join(sockdir, "fail")
    proc = subprocess.Popen([sys.executable, script, str(port), flag])

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_until(up, what="canary upstream")
    yield {"address": "127.0.0.1:%d" % port, "fail": lambda: open(flag, "w").close(),
           "slow": lambda: open(flag + ".slow", "w").close()}
    proc.terminate()
    proc.wait(10)


def ctl(sock, *args):
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock] + list(args), capture_output=True, text=True, timeout=15)
    return p.returncode, p.stdout


def ctl_ok(sock, *args):
    rc, out = ctl(sock, *args)
    assert rc == 0, (args, rc, out)
    return out


def status(sock):
    rc, out = ctl(sock, "--json", "rollout", "status", "web")
    assert rc == 0, out
    return json.loads(out)["rollouts"][0]


def start_gateway(sluice, upstreams, sockdir, canary, name=None, cfg=None):
    if cfg is None:
        blue, = upstreams(1, names=["blue"])
        sock = os.path.join(sockdir, "admin.sock")
        cfg = base_config(free_port(), [blue.address], workers=2, admin={"socket": sock},
                          state_file=os.path.join(sockdir, "state"))
        cfg["pools"] = {"blue": {"servers": [{"address": blue.address}]},
                        "green": {"servers": [{"address": canary["address"]}]}}
        cfg["services"] = {"web": {"pools": {"blue": 100, "green": 0}}}
    gw = sluice(cfg, name=name)
    sock = cfg["admin"]["socket"]
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    gw.cfg = cfg
    return gw


class Traffic:
    """Requests in a loop on two keep-alive connections; what answered each."""

    def __init__(self, port):
        self.port = port
        self.results = []  # (time, upstream, status)
        self.stop_flag = False
        self.threads = [threading.Thread(target=self.run) for _ in range(2)]
        for t in self.threads:
            t.start()

    def run(self):
        c = RawConn(self.port)
        try:
            while not self.stop_flag:
                r = c.request("GET", "/r")
                self.results.append((time.monotonic(), r.header("x-upstream"), r.status))
                time.sleep(0.002)
        finally:
            c.close()

    def stop(self):
        self.stop_flag = True
        for t in self.threads:
            t.join(10)


def test_healthy_canary_is_promoted_through_every_step(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    traffic = Traffic(gw.port)
    try:
        out = ctl_ok(gw.sock, "rollout", "start", "web", "--to", "green", "--steps", "10,50,100", "--interval", "1s",
                     "--max-error-rate", "1%", "--max-p99", "500ms", "--min-requests", "20")
        assert "rollout of service web to green started: step 1 of 3 (10%): blue 900, green 100" in out, out
        wait_until(lambda: status(gw.sock)["state"] == "completed", timeout=30, what="rollout completed")
    finally:
        traffic.stop()
    st = status(gw.sock)
    assert st["weights"] == "blue 0, green 1000", st
    events = [h["event"] for h in st["history"]]
    assert events[0].startswith("started: step 1 of 3 (10%)"), events
    assert any(e.startswith("promoted to step 2 (50%)") for e in events), events
    assert any(e.startswith("promoted to step 3 (100%)") for e in events), events
    assert events[-1].startswith("completed at 100%"), events
    assert st["last_interval"]["canary_requests"] >= 20 and st["last_interval"]["canary_errors"] == 0, st
    # every request was answered, and the canary's share grew
    assert all(s == 200 for _, _, s in traffic.results)
    text = ctl_ok(gw.sock, "rollout", "status")
    assert "service web: completed, step 3 of 3 (100%) to green" in text, text
    assert "verdict   completed" in text, text
    with RawConn(gw.port) as c:
        assert {c.request("GET", "/after%d" % i).header("x-upstream") for i in range(10)} == {"green"}
    assert "state=completed" in open(os.path.join(sockdir, "state")).read()


def test_canary_failing_after_step_2_is_rolled_back(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    traffic = Traffic(gw.port)
    try:
        ctl_ok(gw.sock, "rollout", "start", "web", "--to", "green", "--steps", "10,30,60,100", "--interval", "1s",
               "--max-error-rate", "5%", "--min-requests", "10")
        wait_until(lambda: status(gw.sock)["step"] == 2, timeout=20, what="step 2")
        canary["fail"]()
        failed_at = time.monotonic()
        wait_until(lambda: status(gw.sock)["state"] == "rolled_back", timeout=20, what="rollback")
        time.sleep(0.3)
    finally:
        traffic.stop()
    st = status(gw.sock)
    assert st["step"] == 2, st
    assert st["weights"] == "blue 100, green 0", st
    assert st["verdict"].startswith("rolled back: error rate"), st
    assert any(h["event"].startswith("rolled back at step 2 (30%): error rate") for h in st["history"]), st
    assert st["last_interval"]["canary_error_rate"] > 0.05, st
    # what clients saw after the failure began: no more than the step's share failed
    after = [(u, s) for t, u, s in traffic.results if t > failed_at]
    errors = sum(1 for _, s in after if s >= 500)
    assert after and errors <= 0.30 * len(after) + 20, (errors, len(after))
    # once rolled back, nothing reaches the canary
    with RawConn(gw.port) as c:
        assert {c.request("GET", "/x%d" % i).status for i in range(20)} == {200}


def test_slow_canary_is_rolled_back_on_p99(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    canary["slow"]()
    traffic = Traffic(gw.port)
    try:
        ctl_ok(gw.sock, "rollout", "start", "web", "--to", "green", "--steps", "50,100", "--interval", "1s",
               "--max-p99", "200ms", "--min-requests", "5")
        wait_until(lambda: status(gw.sock)["state"] == "rolled_back", timeout=20, what="rollback")
    finally:
        traffic.stop()
    st = status(gw.sock)
    assert st["step"] == 1 and st["weights"] == "blue 100, green 0", st
    assert st["verdict"] == "rolled back: p99 500 ms over the limit 200 ms", st
    # judged against the stable pool too: the canary (sleeps 400 ms) is the slower one
    assert st["last_interval"]["stable_p99_ms"] < st["last_interval"]["canary_p99_ms"], st


def test_abort_restart_reload_pause_and_promote(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    ctl_ok(gw.sock, "rollout", "start", "web", "--to", "green", "--steps", "20,60,100", "--interval", "1h")
    assert status(gw.sock)["weights"] == "blue 800, green 200"
    rc, out = ctl(gw.sock, "rollout", "start", "web", "--to", "green")
    assert rc == 1 and "service web has a rollout running (rollout abort web first)" in out, out

    # a restart continues from the same step
    gw.stop()
    gw2 = start_gateway(sluice, upstreams, sockdir, canary, name="again", cfg=gw.cfg)
    st = status(gw2.sock)
    assert st["state"] == "running" and st["step"] == 1 and st["weights"] == "blue 800, green 200", st
    assert "resumed at step 1 (20%) after a restart" in st["history"][-1]["event"], st
    # and so does a reload
    ctl_ok(gw2.sock, "reload")
    assert status(gw2.sock)["state"] == "running"

    out = ctl_ok(gw2.sock, "rollout", "pause", "web")
    assert "rollout of service web: paused" in out, out
    out = ctl_ok(gw2.sock, "rollout", "resume", "web")
    assert "rollout of service web: running" in out, out

    out = ctl_ok(gw2.sock, "rollout", "abort", "web")
    assert "rollout of service web: aborted: blue 100, green 0" in out, out
    with RawConn(gw2.port) as c:
        assert {c.request("GET", "/a%d" % i).header("x-upstream") for i in range(10)} == {"blue"}
    assert "state=aborted" in open(os.path.join(sockdir, "state")).read()
    rc, out = ctl(gw2.sock, "rollout", "abort", "web")
    assert rc == 1 and "is aborted (nothing to abort)" in out, out

    # a new rollout, promoted by hand
    ctl_ok(gw2.sock, "rollout", "start", "web", "--to", "green", "--interval", "1h")
    out = ctl_ok(gw2.sock, "rollout", "promote", "web")
    assert "rollout of service web: completed: blue 0, green 1000" in out, out


def test_rollout_command_errors(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    for args, msg in [
        (("rollout", "start", "nope", "--to", "green"), 'unknown service "nope"'),
        (("rollout", "start", "web"), "missing --to POOL"),
        (("rollout", "start", "web", "--to", "purple"), 'service web has no pool "purple"'),
        (("rollout", "start", "web", "--to", "blue"), "no other pool with a weight above 0"),
        (("rollout", "start", "web", "--to", "green", "--steps", "50,20"), 'invalid --steps "50,20"'),
        (("rollout", "start", "web", "--to", "green", "--interval", "soon"), 'invalid --interval "soon"'),
        (("rollout", "start", "web", "--to", "green", "--max-error-rate", "150%"), 'invalid --max-error-rate'),
        (("rollout", "start", "web", "--to", "green", "--bogus", "1"), 'unknown option "--bogus"'),
        (("rollout", "pause", "web"), 'no rollout for service "web"'),
    ]:
        rc, out = ctl(gw.sock, *args)
        assert rc == 1 and msg in out, (args, out)
    assert "no rollouts" in ctl_ok(gw.sock, "rollout", "status")
