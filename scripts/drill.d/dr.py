"""dr.py - `scripts/drill dr`: back up what sluice keeps, lose it, restore it.

What sluice keeps: the state file (weights, drains, splits, rollouts: changes made through the
admin socket) and the shared rate-limit keys in Redis. The drill sets a split of service web
(blue 70 / green 30, where the config says 90 / 10), drains one blue server and lets the
shared limit write its keys; measures the split over SPLIT_REQUESTS requests; backs up with
`sluice ctl dump-state FILE`; loses everything (stops sluice, deletes the state file,
FLUSHALL); starts sluice again and measures the split (the config's); `sluice ctl
restore-state FILE`; measures again. Pass: before the backup and after the restore every
server's share is the one the weights set (within 4 standard deviations of a share over the
requests measured, at least SHARE_TOLERANCE), the drained server gets nothing, and the state
file exists again.

When the binary has no dump-state command (the feature is not built into it) the drill says
MISSING and runs nothing.
"""

import http.client
import json
import math
import os
import time

import lab

SPLIT_REQUESTS = 600
SHARE_TOLERANCE = 0.05
EXPECTED = {"blue1": 0.70, "blue2": 0.0, "green1": 0.30}


def split(port, n):
    """{server name: share} over n GETs (keep-alive; the demo upstreams echo their name)."""
    counts = {}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            c.request("GET", "/dr/%d" % i, headers={"x-client": "c%d" % (i % 7)})
            r = c.getresponse()
            body = r.read()
            name = json.loads(body)["server"] if r.status == 200 else "status %d" % r.status
            counts[name] = counts.get(name, 0) + 1
    finally:
        c.close()
    return {k: v / float(n) for k, v in sorted(counts.items())}


def fmt_split(s):
    return ", ".join("%s %.0f%%" % (k, 100 * v) for k, v in s.items())


def run(quick):
    with lab.Lab("dr") as L:
        # does the running gateway know the commands? (its `help` lists every command)
        port0 = L.port()
        g0 = L.gateway("probe", {"listeners": [{"name": "p", "address": "127.0.0.1:%d" % port0}],
                                 "pools": {"p": {"servers": ["127.0.0.1:1"]}},
                                 "routes": [{"match": {"path_prefix": "/"}, "pool": "p"}]}).start()
        helptext = g0.ctl("help").stdout
        g0.stop()
        if "dump-state" not in helptext or "restore-state" not in helptext:
            why = ("this sluice has no `sluice ctl dump-state` / `restore-state` (not built into %s: "
                   "`sluice ctl help` does not list them)" % lab.SLUICE_BIN)
            return "MISSING", "## dr\n\nMISSING: %s\n" % why, [why]
        n = SPLIT_REQUESTS // 2 if quick else SPLIT_REQUESTS
        ups = {name: L.demo_upstream(name)[1] for name in ("blue1", "blue2", "green1")}
        redis, rport = L.redis()
        port = L.port()
        cfg = {
            "workers": 2,
            "listeners": [{"name": "public", "address": "127.0.0.1:%d" % port}],
            "pools": {"blue": {"servers": ["127.0.0.1:%d" % ups["blue1"], "127.0.0.1:%d" % ups["blue2"]]},
                      "green": {"servers": ["127.0.0.1:%d" % ups["green1"]]}},
            "services": {"web": {"pools": {"blue": 90, "green": 10}}},
            "rate_limits": {"per_client": {"key": "header:x-client", "rate": 100000, "per": "1s", "shared": True}},
            "redis": {"address": "127.0.0.1:%d" % rport},
            "routes": [{"name": "default", "match": {"path_prefix": "/"}, "service": "web",
                        "rate_limit": "per_client"}],
            "state_file": "state",
        }
        gw = L.gateway("dr", cfg)
        state_path = os.path.join(gw.dir, "state")
        gw.start()
        gw.ctl("set", "service-weights", "web", "blue=70", "green=30")
        gw.ctl("drain", "blue", "127.0.0.1:%d" % ups["blue2"])
        before = split(port, n)
        keys_before = int(lab.redis_cli(rport, "DBSIZE") or 0)
        backup = L.path("sluice-state.backup")
        dump = gw.ctl("dump-state", backup, check=False)
        dumped = os.path.exists(backup) and os.path.getsize(backup) > 0
        # the loss: the process, its state file, Redis' keys
        gw.stop()
        if os.path.exists(state_path):
            os.unlink(state_path)
        lab.redis_cli(rport, "FLUSHALL")
        keys_lost = int(lab.redis_cli(rport, "DBSIZE") or 0)
        gw.start()
        lost = split(port, n)
        t0 = time.monotonic()
        restore = gw.ctl("restore-state", backup, check=False)
        took = time.monotonic() - t0
        keys_after = int(lab.redis_cli(rport, "DBSIZE") or 0)
        after = split(port, n)
        state_back = os.path.exists(state_path)
        services = gw.ctl("show", "services", "web", check=False).stdout.strip()
        gw.stop()
        failures = []
        if not dumped:
            failures.append("dump-state wrote nothing: %s%s" % (dump.stdout, dump.stderr))
        if restore.returncode != 0:
            failures.append("restore-state failed: %s%s" % (restore.stdout, restore.stderr))
        # the split is drawn per request: compare with the weights set (blue 70 with blue2 drained, green 30)
        # within 4 standard deviations of a share measured over n requests
        for name, want in EXPECTED.items():
            tol = max(SHARE_TOLERANCE, 4 * math.sqrt(want * (1 - want) / n))
            for label, got in (("before the backup", before), ("after the restore", after)):
                if abs(got.get(name, 0) - want) > tol:
                    failures.append("%s: %.0f%% %s, want %.0f%% (+-%.0f)"
                                    % (name, 100 * got.get(name, 0), label, 100 * want, 100 * tol))
        if after.get("blue2", 0):
            failures.append("the drained server blue2 got %.0f%% after the restore" % (100 * after["blue2"]))
        if not state_back:
            failures.append("no state file after the restore (changes would not survive a restart)")
        verdict = "PASS" if not failures else "FAIL"
        out = [lab.section_head("dr", quick)]
        out.append("Service web: config blue 90 / green 10; changed at run time to blue 70 / green 30 with blue2 "
                   "drained; a shared rate limit keyed per client in Redis. %d requests per measurement.\n" % n)
        out.append(lab.table(["step", "split (share of requests per server)", "Redis keys"], [
            ["changed (before the backup)", fmt_split(before), keys_before],
            ["`sluice ctl dump-state FILE`", "%d bytes written" % (os.path.getsize(backup) if dumped else 0), ""],
            ["lost: sluice stopped, state file deleted, FLUSHALL, started", fmt_split(lost), keys_lost],
            ["`sluice ctl restore-state FILE` (%.2f s)" % took, fmt_split(after), keys_after],
        ], ["l", "l", "r"]) + "\n")
        out.append("After the restore, `sluice ctl show services web`:\n\n```\n%s\n```\n" % services)
        if failures:
            out.append("Failed checks:\n\n" + "".join("- %s\n" % f for f in failures))
        out.append("Verdict: %s\n" % verdict)
        return verdict, "\n".join(out), failures
