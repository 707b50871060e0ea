"""failover.py - `scripts/drill failover`: Redis behind Sentinel, its master killed under load.

A master, a replica and three redis-sentinel processes (down-after-milliseconds 1000) on
127.0.0.1; sluice finds the master through them (`redis = { sentinels = {...}, master = "edge" }`)
and holds a shared rate limit (key "route", RATE_LIMIT/s) that a steady load of twice that
rate runs into. The master is killed (SIGKILL). Measured: when the sentinels switched
(polled), when sluice followed (its "redis: master switched" log line), the fallback
decisions meanwhile (sluice_ratelimit_fallback_total), and the requests allowed per second
before, during and after: the limit must hold (allowed at most the limit plus one burst
per fallback), no accepted request may fail, and sluice must follow within FOLLOW_TARGET_S
of the kill.

When the binary does not accept `redis.sentinels` (the feature is not built into it) the
drill says MISSING and runs nothing.
"""

import os
import subprocess
import time

import lab
import steady

RATE_LIMIT = 50
LOAD = 100
FOLLOW_TARGET_S = 5.0
MASTER = "edge"


def supported(L):
    """(True, "") if this sluice takes redis.sentinels, else (False, what it said)."""
    port = L.port()
    cfg = {"listeners": [{"name": "p", "address": "127.0.0.1:%d" % port}],
           "pools": {"p": {"servers": ["127.0.0.1:1"]}}, "routes": [{"match": {"path_prefix": "/"}, "pool": "p"}],
           "rate_limits": {"x": {"key": "route", "rate": 1, "per": "1s", "shared": True}},
           "redis": {"sentinels": ["127.0.0.1:26379"], "master": MASTER}}
    path = L.path("probe.lua")
    with open(path, "w") as f:
        f.write(lab.conftest.config_to_lua(cfg))
    r = subprocess.run([lab.SLUICE_BIN, "check", "-c", path], capture_output=True, text=True, timeout=30)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def said_line(said):
    lines = said.splitlines() or ["?"]
    return next((ln for ln in lines if "sentinel" in ln), lines[-1]).strip()


def sentinel(L, i, master_port):
    port = L.port()
    d = L.path("sentinel%d" % i)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "sentinel.conf")
    with open(conf, "w") as f:
        f.write("port %d\nbind 127.0.0.1\ndir %s\nsentinel resolve-hostnames no\n"
                "sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s 1000\n"
                "sentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n"
                % (port, d, MASTER, master_port, MASTER, MASTER, MASTER))
    L.proc("sentinel%d" % i, ["redis-sentinel", conf], wait_port=port)
    return port


def master_of(sentinel_port):
    out = lab.redis_cli(sentinel_port, "SENTINEL", "get-master-addr-by-name", MASTER).split()
    return "%s:%s" % (out[0], out[1]) if len(out) == 2 else None


def run(quick):
    with lab.Lab("failover") as L:
        ok, said = supported(L)
        if not ok:
            why = ("this sluice does not accept redis = { sentinels = {...}, master = \"%s\" } (Sentinel support "
                   "is not built into %s): %s" % (MASTER, lab.SLUICE_BIN, said_line(said)))
            return "MISSING", "## failover\n\nMISSING: %s\n" % why, [why]
        for tool in ("redis-server", "redis-sentinel", "redis-cli"):
            if not lab.shutil.which(tool):
                raise lab.DrillError("%s is not installed (scripts/install-deps)" % tool)
        master, mport = L.redis("redis-master")
        replica, rport = L.redis("redis-replica", extra=["--replicaof", "127.0.0.1", str(mport)])
        sports = [sentinel(L, i, mport) for i in range(3)]
        deadline = time.monotonic() + 15
        while lab.redis_cli(rport, "INFO", "replication").find("master_link_status:up") < 0:
            if time.monotonic() > deadline:
                raise lab.DrillError("the replica did not sync with the master within 15 s")
            time.sleep(0.2)
        port = L.port()
        _, up = L.demo_upstream("web")
        gw = L.gateway("failover", {
            "workers": 2,
            "listeners": [{"name": "public", "address": "127.0.0.1:%d" % port}],
            "pools": {"web": {"servers": ["127.0.0.1:%d" % up]}},
            "rate_limits": {"edge": {"key": "route", "rate": RATE_LIMIT, "per": "1s", "burst": RATE_LIMIT,
                                     "shared": True}},
            "redis": {"sentinels": ["127.0.0.1:%d" % p for p in sports], "master": MASTER, "timeout": "50ms",
                      "on_failure": "local"},
            "routes": [{"name": "default", "match": {"path_prefix": "/"}, "pool": "web", "rate_limit": "edge"}],
        })
        gw.start()
        load = steady.Steady(port, LOAD, conns=8).start()
        try:
            time.sleep(3 if quick else 5)
            before = gw.counters()
            t_kill, w_kill = time.monotonic(), time.time()
            master.p.kill()
            switched = None
            while time.monotonic() - t_kill < 30:
                m = master_of(sports[0])
                if m and m != "127.0.0.1:%d" % mport:
                    switched = time.monotonic() - t_kill
                    break
                time.sleep(0.05)
            followed_wall = gw.wait_log(w_kill, "redis: master switched", 10)
            followed = (followed_wall - w_kill) if followed_wall else None
            time.sleep(3 if quick else 6)
            t_end = time.monotonic()
            time.sleep(load.timeout + 0.5)
            after = gw.counters()
        finally:
            load.stop()
        fallback = lab.counter_delta(after, before, "sluice_ratelimit_fallback_total")
        w = load.window(t_kill, t_end)
        failed = w.get("5xx", 0) + w.get("reset", 0) + w.get("timeout", 0)
        allowed = w.get("ok", 0)
        span = t_end - t_kill
        bound = RATE_LIMIT * span + RATE_LIMIT * 3
        before_w = load.window(t_kill - 3, t_kill)
        failures = []
        if followed is None:
            failures.append("sluice never logged \"redis: master switched\" within 10 s of the kill")
        elif followed > FOLLOW_TARGET_S:
            failures.append("sluice followed %.1f s after the kill (target %.0f s)" % (followed, FOLLOW_TARGET_S))
        if failed:
            failures.append("%d accepted requests failed (%s)" % (failed, w))
        if allowed > bound:
            failures.append("%d requests allowed in %.1f s: over the limit (%d/s, at most %.0f)"
                            % (allowed, span, RATE_LIMIT, bound))
        verdict = "PASS" if not failures else "FAIL"
        out = [lab.section_head("failover", quick)]
        out.append("Redis master + replica + 3 sentinels (down-after-milliseconds 1000, quorum 2); sluice with "
                   "2 workers finds the master through the sentinels; a shared limit of %d req/s (key route, burst "
                   "%d) under %d GET/s; on_failure = local. The master was killed with SIGKILL.\n"
                   % (RATE_LIMIT, RATE_LIMIT, LOAD))
        out.append(lab.table(["figure", "value"], [
            ["sentinels switched the master", "%.2f s after the kill" % switched if switched else "never"],
            ["sluice followed (\"redis: master switched\")", "%.2f s after the kill" % followed
             if followed is not None else "never"],
            ["target", "under %.0f s" % FOLLOW_TARGET_S],
            ["fallback decisions (local limits) meanwhile", fallback],
            ["allowed / limited before the kill (3 s)", "%d / %d" % (before_w.get("ok", 0), before_w.get("shed", 0))],
            ["allowed / limited from the kill on (%.1f s)" % span, "%d / %d (limit: at most %.0f)"
             % (allowed, w.get("shed", 0), bound)],
            ["accepted requests failed", failed],
        ], ["l", "r"]) + "\n")
        if failures:
            out.append("Failed checks:\n\n" + "".join("- %s\n" % f for f in failures))
        out.append("Verdict: %s\n" % verdict)
        return verdict, "\n".join(out), failures
