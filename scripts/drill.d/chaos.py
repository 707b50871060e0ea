"""chaos.py - `scripts/drill chaos`: faults injected under a steady open-loop load.

One gateway (2 workers, run under an open-files limit of 2,048 so that its connection budget is
derived from it) in front of a pool of three demo upstreams (scripts/demo_upstream.py), the
second one behind a relay the drill can make slow and lossy or answer 500s; health checks,
breakers and retries on; the route takes a shared rate limit (high enough never to refuse) so
Redis is on every request's path. A steady load of RATE GET/s (steady.py) runs throughout;
each fault gets a window, and the requests due in it are counted:
failed = 5xx + reset + timeout (accepted requests that did not get their answer), apart
from refused connects (nothing accepted: the gateway was not listening) and shed (429/503 with
Retry-After). Recovery: from the fault (or its repair, where said) until the gateway is
back to normal, from its own log lines and counters or the load's first good answer.
"""

import json
import os
import signal
import socket
import time

import lab
import steady

RATE = 100
NOFILE = 2048


class Rig:
    def __init__(self, L, quick):
        self.L, self.quick = L, quick
        self.ups = {}
        for name in ("a", "b", "c"):
            self.ups[name] = L.demo_upstream(name)
        self.relay = steady.Relay(self.ups["b"][1]).start()
        self.redis, self.redis_port = L.redis()
        self.port = L.port()
        self.gw = L.gateway("chaos", self.config("5s"))
        self.gw.start(prefix=["prlimit", "--nofile=%d:%d" % (NOFILE, NOFILE), "--"])
        self.load = steady.Steady(self.port, RATE, conns=16).start()

    def config(self, drain):
        servers = ["127.0.0.1:%d" % self.ups["a"][1], "127.0.0.1:%d" % self.relay.port,
                   "127.0.0.1:%d" % self.ups["c"][1]]
        return {
            "workers": 2,
            "listeners": [{"name": "public", "address": "127.0.0.1:%d" % self.port}],
            "pools": {"web": {
                "servers": servers,
                "health_check": {"type": "http", "path": "/", "interval": "1s", "timeout": "500ms",
                                 "rise": 2, "fall": 2},
                "breaker": {"consecutive_failures": 3, "error_rate": 0.5, "window": "5s", "min_requests": 10,
                            "open_for": "2s", "max_open_for": "10s"},
                "failure_statuses": [500, 502, 503, 504],
                "retry": {"attempts": 3, "on": ["connect-failure", "reset", "timeout", "5xx"], "budget": 0.5,
                          "min_retries": 10},
                "timeouts": {"connect": "500ms", "response": "1s"},
            }},
            "services": {"web": {"pools": {"web": 100}}},
            "rate_limits": {"shared": {"key": "route", "rate": 100000, "per": "1s", "burst": 100000,
                                       "shared": True}},
            "redis": {"address": "127.0.0.1:%d" % self.redis_port, "timeout": "50ms", "on_failure": "local"},
            "routes": [{"name": "default", "match": {"path_prefix": "/"}, "service": "web",
                        "rate_limit": "shared"}],
            "limits": {"client_header_timeout": "5s"},
            "drain_timeout": drain,
        }

    def restart_upstream(self, name):
        _, port = self.ups[name]
        self.ups[name] = self.L.demo_upstream(name, port)

    def log_after(self, t_wall, msg):
        return self.gw.log_after(t_wall, msg)

    def wait_log(self, t_wall, msg, timeout):
        return self.gw.wait_log(t_wall, msg, timeout)


def scenario(rig, name, fault, act, settle):
    """Run one fault: act() injects (and repairs) it and returns (behaviour text, recovery s or None,
    allowed failures); the window closes `settle` s after act() returns."""
    c0 = rig.gw.counters()
    t0, w0 = time.monotonic(), time.time()
    lab.log("chaos: %s" % name)
    behaviour, recovery, allowed = act(rig, t0, w0)
    time.sleep(settle)
    t1 = time.monotonic()
    time.sleep(rig.load.timeout + 0.5)  # the window's last requests get their outcome
    c1 = rig.gw.counters()
    w = rig.load.window(t0, t1)
    failed = w.get("5xx", 0) + w.get("reset", 0) + w.get("timeout", 0)
    retries = lab.counter_delta(c1, c0, "sluice_pool_retries_total")
    reasons = lab.reasons_delta(c1, c0, "sluice_pool_request_reasons_total")
    row = {"name": name, "fault": fault, "behaviour": behaviour, "recovery": recovery,
           "requests": sum(w.values()), "failed": failed, "shed": w.get("shed", 0),
           "refused": w.get("refused", 0), "statuses": rig.load.statuses(t0, t1), "retries": retries,
           "reasons": reasons, "allowed": allowed, "outcomes": w}
    row["ok"] = failed <= allowed and rig.gw.alive()
    lab.log("chaos: %s: %d requests, %d failed (allowed %d), %d shed, %d refused, recovery %s s, "
            "retries %d, reasons %s; %s" % (name, row["requests"], failed, allowed, row["shed"], row["refused"],
                                            "-" if recovery is None else "%.1f" % recovery, retries, reasons,
                                            behaviour))
    return row


def kill_upstream(rig, t0, w0):
    rig.ups["a"][0].p.kill()
    down = rig.wait_log(w0, "upstream server down", 6)
    time.sleep(1)
    w_restart = time.time()
    rig.restart_upstream("a")
    up = rig.wait_log(w_restart, "upstream server up", 8)
    text = ("SIGKILL of upstream a: marked down by health checks after %s s; connect failures retried on b/c; "
            "restarted: back in the pool %s s later"
            % ("%.1f" % (down - w0) if down else "(never)", "%.1f" % (up - w_restart) if up else "(never)"))
    # in flight on the killed server: answered 502/503 and counted (at 100 req/s, ~1 ms each: 0 or 1)
    return text, (up - w_restart) if up else None, 2


def relay_fault(rig, w0, mode):
    """Switch the relay before b to MODE for a while, then back; (down after s, back after s) from the log."""
    rig.relay.set_mode(mode)
    time.sleep(4 if rig.quick else 8)
    w_fix = time.time()
    rig.relay.set_mode("pass")
    up = rig.wait_log(w_fix, "upstream server up", 8)
    down = rig.log_after(w0, "upstream server down")
    return (down - w0) if down else None, (up - w_fix) if up else None


def secs(v, none="-"):
    return none if v is None else "%.1f" % v


def slow_lossy(rig, t0, w0):
    down, back = relay_fault(rig, w0, "slow")
    text = ("relay before b: %.1f s before each new connection, %.0f%% reset; b marked down after %s s; timeouts "
            "and resets retried on a/c; fixed: b back %s s later"
            % (rig.relay.delay, rig.relay.loss * 100, secs(down, "(never)"), secs(back, "(never down)")))
    return text, back, 0


def error500(rig, t0, w0):
    down, back = relay_fault(rig, w0, "error500")
    text = ("b answers every request with 500: retried on a/c (retry on 5xx), breaker and health checks take "
            "b out (down after %s s); fixed: back %s s later" % (secs(down), secs(back)))
    return text, back, 0


def _redis_back(rig, w_back):
    return rig.wait_log(w_back, "ratelimit: redis available again", 6)


def redis_kill(rig, t0, w0):
    rig.redis.p.kill()
    time.sleep(3)
    w_back = time.time()
    rig.redis, _ = rig.L.redis(port=rig.redis_port)
    back = _redis_back(rig, w_back)
    c = rig.gw.counters()
    fb = sum(v for (f, _), v in c.items() if f == "sluice_ratelimit_fallback_total")
    text = ("SIGKILL of Redis: shared limit decided locally (on_failure = local; %d fallback decisions so far); "
            "restarted: resumed %s s later" % (fb, "%.1f" % (back - w_back) if back else "(never)"))
    return text, (back - w_back) if back else None, 0


def redis_stall(rig, t0, w0):
    os.kill(rig.redis.pid, signal.SIGSTOP)
    time.sleep(4)
    w_back = time.time()
    os.kill(rig.redis.pid, signal.SIGCONT)
    back = _redis_back(rig, w_back)
    down = rig.log_after(w0, "ratelimit: redis unavailable, shared limits fall back")
    text = ("SIGSTOP of Redis for 4 s: commands past redis.timeout (50 ms) mark it down %s; local fallback; "
            "SIGCONT: resumed %s s later" % ("after %.2f s" % (down - w0) if down else "(not logged)",
                                             "%.1f" % (back - w_back) if back else "(never)"))
    return text, (back - w_back) if back else None, 0


def fd_exhaustion(rig, t0, w0):
    socks, failed_connects = [], 0
    for _ in range(NOFILE + 500):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", rig.port))
            socks.append(s)
        except OSError:
            failed_connects += 1
            s.close()
    paused = rig.wait_log(w0, "connection limit reached, accepting paused", 5)
    # a new client meanwhile: how long until it is served
    t_probe, served = time.monotonic(), None
    while time.monotonic() - t_probe < 20:
        try:
            with socket.create_connection(("127.0.0.1", rig.port), timeout=1) as p:
                p.settimeout(2)
                p.sendall(b"GET / HTTP/1.1\r\nHost: drill.test\r\nConnection: close\r\n\r\n")
                if p.recv(12).startswith(b"HTTP/1.1 2"):
                    served = time.monotonic() - t0
                    break
        except OSError:
            pass
        time.sleep(0.5)
    for s in socks:
        s.close()
    text = ("%d connections opened at once against a budget derived from RLIMIT_NOFILE %d: %s; established "
            "keep-alive clients kept being served; idle ones closed after client_header_timeout (5 s); a new "
            "client was served after %s s"
            % (len(socks), NOFILE, "accepting paused (logged)" if paused else "no pause logged",
               "%.1f" % served if served else "(never, within 20 s)"))
    return text, served, 0


def reload_loop(rig, t0, w0):
    n = 20 if rig.quick else 50
    rss0 = rig.gw.rss_kib()
    refused = 0
    for i in range(n):
        rig.gw.write_config(rig.config("%ds" % (5 + i % 2)))
        r = rig.gw.ctl("reload", check=False)
        if r.returncode != 0:
            refused += 1
    rss1 = rig.gw.rss_kib()
    text = "%d reloads (`sluice ctl reload`, the config changed each time): %d refused; RSS %d -> %d KiB" % (
        n, refused, rss0, rss1)
    return text, None, 0


def sigterm_restart(rig, t0, w0):
    ts = time.monotonic()
    rc = rig.gw.stop(20)
    stopped = time.monotonic() - ts
    rig.gw.start(prefix=["prlimit", "--nofile=%d:%d" % (NOFILE, NOFILE), "--"])
    time.sleep(1.5)
    gap = rig.load.longest_gap(ts - 0.5, time.monotonic() - 0.5)
    # a connection still in the kernel's accept queue when the old process closed its listening
    # socket is reset by the kernel: sluice never accepted it, so nothing it accepted was lost
    queued = sum(1 for due, reused, got, _, _ in rig.load.reset_details if due >= ts - 0.5 and not reused and not got)
    text = ("SIGTERM: in-flight requests finished, idle connections closed, exit status %s after %.2f s; "
            "connects refused until the new process listened (no answer for %.2f s); "
            "%d connection(s) reset by the kernel in the old listener's accept queue (never accepted); "
            "`sluice run --upgrade` is the restart without this gap (docs/admin.md)"
            % (rc, stopped, gap, queued))
    return text, gap, queued


SCENARIOS = [
    ("kill an upstream", "SIGKILL one of 3 servers, then restart it", kill_upstream),
    ("slow and lossy upstream", "relay: 1.5 s before each connection, 10% reset", slow_lossy),
    ("upstream answering 500", "relay answers 500 to everything", error500),
    ("kill Redis", "SIGKILL redis-server, restart it 3 s later", redis_kill),
    ("stall Redis", "SIGSTOP redis-server 4 s, SIGCONT", redis_stall),
    ("file descriptors exhausted", "connections up to the limit and beyond", fd_exhaustion),
    ("reload in a loop", "50 reloads", reload_loop),
    ("SIGTERM and restart", "SIGTERM, start again", sigterm_restart),
]


def run(quick):
    rows, failures = [], []
    with lab.Lab("chaos") as L:
        rig = Rig(L, quick)
        try:
            time.sleep(2)  # the load settles; the health checks have run
            for name, fault, act in SCENARIOS:
                row = scenario(rig, name, fault, act, 1 if quick else 3)
                rows.append(row)
                if not row["ok"]:
                    failures.append("%s: %d accepted requests failed (%s), allowed %d%s"
                                    % (name, row["failed"], row["outcomes"], row["allowed"],
                                       "" if rig.gw.alive() else "; the gateway is not running"))
                if not rig.gw.alive():
                    break
        finally:
            rig.load.stop()
            rig.relay.stop()
            stderr = rig.gw.stderr_text()
        crashes = [ln for ln in stderr.splitlines() if "AddressSanitizer" in ln or "runtime error:" in ln]
        if crashes:
            failures.append("sanitizer report in the gateway's stderr: %s" % crashes[0])
        total = rig.load.window(0)
    verdict = "PASS" if not failures else "FAIL"
    return verdict, report(quick, rows, failures, total, rig.load.retried), failures


def report(quick, rows, failures, total, retried):
    out = [lab.section_head("chaos", quick)]
    out.append("Steady load: %d GET/s, open loop (scripts/drill.d/steady.py), 16 keep-alive connections; "
               "pool of 3 demo upstreams with health checks (1 s, fall 2, rise 2), breakers "
               "(3 consecutive failures), retries (3 attempts on connect-failure, reset, timeout, 5xx), "
               "response timeout 1 s; a shared rate limit in Redis (redis.timeout 50 ms, on_failure local); "
               "the gateway under an open-files limit of %d. Failed = accepted requests answered 5xx, reset "
               "or never answered (timeout 5 s); refused = connects refused while no gateway listened.\n"
               % (RATE, NOFILE))
    hdr = ["fault", "what the gateway did", "recovery s", "requests", "failed", "shed", "refused", "retries",
           "verdict"]
    body = [[r["name"], r["behaviour"], "-" if r["recovery"] is None else "%.1f" % r["recovery"], r["requests"],
             "%d%s" % (r["failed"], " (%s)" % json.dumps(r["statuses"]) if r["failed"] else ""), r["shed"],
             r["refused"], r["retries"], "ok" if r["ok"] else "FAIL"] for r in rows]
    out.append(lab.table(hdr, body, ["l", "l"] + ["r"] * 6 + ["l"]) + "\n")
    out.append("Whole run: %s; GETs retried by the client after an idle keep-alive connection closed: %d.\n"
               % (json.dumps(total, sort_keys=True), retried))
    if failures:
        out.append("Failed checks:\n\n" + "".join("- %s\n" % f for f in failures))
    out.append("Verdict: %s\n" % ("PASS" if not failures else "FAIL"))
    return "\n".join(out)
