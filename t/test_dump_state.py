"""`sluice ctl dump-state` / `restore-state` (docs/admin.md; runbook
docs/runbooks/backup-restore.md), the disaster-recovery story of the drills:
weights, a drain, a service split and a rollout set through the admin
socket, traffic through a shared limit (a real redis-server), a dump; then
the state file deleted, Redis flushed and sluice restarted; a restore; and
the traffic split and the limit's state are as before. Refusals change
nothing and say where."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import SLUICE_BIN, free_port, wait_until
from test_ratelimit import REDIS, get
from test_sentinel import Node

pytestmark = pytest.mark.skipif(not REDIS, reason="redis-server is needed")


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-dump-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctl(sock, *args, timeout=30):
    p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def ctl_ok(sock, *args):
    rc, out, err = ctl(sock, *args)
    assert rc == 0, (args, rc, out, err)
    return out


def config(port, sock, state, redis_port, ups):
    u1, u2, u3 = ups
    return """return {
  workers = 2,
  listeners = { { name = "public", address = "127.0.0.1:%d" } },
  admin = { socket = "%s" },
  state_file = "%s",
  pools = {
    web = { servers = { { address = "%s" }, { address = "%s" } } },
    canary = { servers = { { address = "%s" } } },
  },
  services = { web = { pools = { web = 90, canary = 10 } } },
  rate_limits = { tight = { key = "header:x-tight", rate = 1, per = "1h", burst = 10, shared = true } },
  redis = { address = "127.0.0.1:%d", timeout = "250ms" },
  routes = {
    { match = { path_prefix = "/t/" }, service = "web", rate_limit = "tight" },
    { match = { path_prefix = "/" }, service = "web" },
  },
  access_log = { path = "stdout" },
}
""" % (port, sock, state, u1.address, u2.address, u3.address, redis_port)


def split(port, n=200):
    """Which upstream served each of n requests (X-Upstream)."""
    import http.client
    seen = {}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(n):
        c.request("GET", "/s")
        r = c.getresponse()
        r.read()
        name = r.getheader("x-upstream")
        seen[name] = seen.get(name, 0) + 1
    c.close()
    return seen


def start(sluice, cfg, port, sock, name):
    gw = sluice(cfg, ports=[port], name=name)
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    wait_until(lambda: "ratelimit: redis connected" in gw.stderr(), what="redis connected")
    return gw


@pytest.mark.timeout(120)
def test_dump_lose_restart_restore(sluice, upstreams, sockdir, tmp_path):
    ups = upstreams(3, names=["u1", "u2", "u3"])
    r = Node(tmp_path)
    try:
        sock = os.path.join(sockdir, "admin.sock")
        state = os.path.join(sockdir, "state")
        port = free_port()
        cfg = config(port, sock, state, r.port, ups)
        gw = start(sluice, cfg, port, sock, "gw")
        # what deployers set: a weight, a drain, a split, a rollout (which moves the split itself)
        ctl_ok(sock, "set", "weight", "web", ups[0].address, "7")
        ctl_ok(sock, "drain", "web", ups[1].address)
        ctl_ok(sock, "set", "service-weights", "web", "web=60", "canary=40")
        ctl_ok(sock, "rollout", "start", "web", "--to", "canary", "--steps", "25,100", "--interval", "1h",
               "--min-requests", "100000")
        # traffic through the shared limit: 10 admitted, the bucket empty now
        st = [get(port, "/t/x", {"X-Tight": "k"})[0] for _ in range(13)]
        assert st.count(200) == 10 and st.count(429) == 3, st
        assert r.cmd("EXISTS", "sluice:rl:tight:k") == ":1"
        before_diff = ctl_ok(sock, "show", "diff")
        before_services = json.loads(ctl_ok(sock, "--json", "show", "services", "web"))
        before_rollout = json.loads(ctl_ok(sock, "--json", "rollout", "status", "web"))
        before_split = split(port)
        assert before_split.get("u2", 0) == 0 and before_split.get("u1", 0) > 0 and before_split.get("u3", 0) > 0
        with open(state) as f:
            before_state = f.read()

        # back up
        dump = os.path.join(sockdir, "backup.json")
        rc, out, err = ctl(sock, "dump-state", dump)
        assert rc == 0, (out, err)
        assert "wrote %s" % dump in err
        with open(dump) as f:
            doc = json.load(f)
        assert doc["format"] == "sluice-state-dump" and doc["version"] == 1
        assert "drain web %s" % ups[1].address in doc["runtime"]
        assert any(l.startswith("rollout web ") for l in doc["runtime"])
        keys = {k.get("key"): k for k in doc["redis"]["keys"]}
        assert "sluice:rl:tight:k" in keys and keys["sluice:rl:tight:k"]["pttl"] > 0
        assert "sluice:rl:instances" not in keys
        # the same to stdout
        rc, out, _ = ctl(sock, "dump-state")
        assert rc == 0 and json.loads(out)["runtime"] == doc["runtime"]

        # lose everything
        gw.stop()
        os.unlink(state)
        assert r.cmd("FLUSHALL") == "+OK"
        gw2 = start(sluice, cfg, port, sock, "gw2")
        assert "no differences" in ctl_ok(sock, "show", "diff")

        # a bad file changes nothing and says where
        bad = os.path.join(sockdir, "bad.json")
        broken = dict(doc)
        broken["runtime"] = doc["runtime"] + ["drain web 127.0.0.1:1"]
        with open(bad, "w") as f:
            json.dump(broken, f, indent=1)
        rc, out, _ = ctl(sock, "restore-state", bad)
        assert rc == 1 and "line" in out and "column" in out and "no such server" in out \
            and "nothing was restored" in out, out
        assert "no differences" in ctl_ok(sock, "show", "diff")
        assert r.cmd("DBSIZE").endswith(":0") or r.cmd("EXISTS", "sluice:rl:tight:k") == ":0"
        with open(bad, "w") as f:
            f.write(json.dumps(doc)[:-20])
        rc, out, _ = ctl(sock, "restore-state", bad)
        assert rc == 1 and "line 1, column" in out, out

        # restore
        rc, out, err = ctl(sock, "restore-state", dump)
        assert rc == 0, (out, err)
        assert "restored:" in out and "1 redis key" in out, out
        assert ctl_ok(sock, "show", "diff") == before_diff
        after_services = json.loads(ctl_ok(sock, "--json", "show", "services", "web"))
        assert after_services == before_services
        after_rollout = json.loads(ctl_ok(sock, "--json", "rollout", "status", "web"))
        ro_b, ro_a = before_rollout["rollouts"][0], after_rollout["rollouts"][0]
        assert (ro_a["step"], ro_a["state"], ro_a["canary"]) == (ro_b["step"], ro_b["state"], ro_b["canary"]), \
            (ro_b, ro_a)
        with open(state) as f:
            assert sorted(f.read().splitlines()) == sorted(before_state.splitlines())
        # the limit's state: the bucket is still empty
        assert r.cmd("EXISTS", "sluice:rl:tight:k") == ":1"
        assert [get(port, "/t/x", {"X-Tight": "k"})[0] for _ in range(3)] == [429] * 3
        # the traffic split: u2 still drained, web and canary shared as before
        after_split = split(port)
        assert after_split.get("u2", 0) == 0
        for name in ("u1", "u3"):
            assert abs(after_split.get(name, 0) - before_split.get(name, 0)) <= 40, (before_split, after_split)
        print("split before %s, after %s" % (before_split, after_split))
        # and it survives a restart (written to the state file)
        gw2.stop()
        start(sluice, cfg, port, sock, "gw3")
        assert ctl_ok(sock, "show", "diff") == before_diff
    finally:
        r.stop()


def test_restore_usage_and_missing_file(sluice, upstreams, sockdir):
    (u,) = upstreams(1)
    sock = os.path.join(sockdir, "a.sock")
    port = free_port()
    sluice("""return {
  listeners = { { name = "public", address = "127.0.0.1:%d" } },
  admin = { socket = "%s" },
  pools = { web = { servers = { { address = "%s" } } } },
  routes = { { match = { path_prefix = "/" }, pool = "web" } },
}
""" % (port, sock, u.address), ports=[port])
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    rc, out, err = ctl(sock, "restore-state")
    assert rc == 2 and "usage" in err
    rc, out, err = ctl(sock, "restore-state", os.path.join(sockdir, "nope"))
    assert rc == 2 and "No such file" in err
    # without redis: the dump holds the runtime only, and restores
    rc, out, _ = ctl(sock, "dump-state")
    assert rc == 0, out
    doc = json.loads(out)
    assert doc["redis"] is None and doc["runtime"] == []
    f = os.path.join(sockdir, "d.json")
    with open(f, "w") as fh:
        fh.write(out)
    rc, out, _ = ctl(sock, "restore-state", f)
    assert rc == 0 and "restored: 0 runtime changes" in out, out
    # keys for a sluice without redis: refused
    doc["redis"] = {"keys": [{"key": "sluice:rl:a:b", "pttl": -1, "dump": "00"}]}
    with open(f, "w") as fh:
        json.dump(doc, fh)
    rc, out, _ = ctl(sock, "restore-state", f)
    assert rc == 1 and "no `redis` section" in out, out
