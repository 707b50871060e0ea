"""scripts/drill: its command line, its load client and relay, and that it leaves nothing running.

The drills themselves are long (scripts/drill --quick runs in CI as its own stage); these tests
check the parts every drill stands on, against real processes: the open-loop client counts what
a real gateway answers, the relay's fault modes are seen by the gateway, and an interrupted
drill (Ctrl-C) or a finished one stops every process it started.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import SRC_DIR, SLUICE_BIN, wait_until

DRILL = str(SRC_DIR / "scripts" / "drill")
sys.path.insert(0, str(SRC_DIR / "scripts" / "drill.d"))
import lab  # noqa: E402
import load  # noqa: E402
import probe  # noqa: E402
import steady  # noqa: E402


def run_drill(*args, timeout=120):
    env = dict(os.environ, SLUICE_BIN=SLUICE_BIN)
    return subprocess.run([sys.executable, DRILL] + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(SRC_DIR))


def processes_under(path):
    """pids whose command line mentions path (a drill's temp dir)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if path.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_usage():
    r = run_drill("--help")
    assert r.returncode == 0
    for name in ("load", "chaos", "failover", "dr", "pentest", "all", "--quick", "max_connections_per_client"):
        assert name in r.stdout
    r = run_drill("nosuch")
    assert r.returncode == 2
    assert "unknown drill 'nosuch'" in r.stderr
    r = run_drill()
    assert r.returncode == 2
    # --capacity: the load drill's table at given limits, no search; wrong uses are usage errors
    assert "--capacity" in run_drill("--help").stdout
    for args, said in ((("--capacity", "h3=100", "load"), "the protocol is one of h1, https, h2"),
                       (("--capacity", "h2=fast", "load"), "the rate is a whole number"),
                       (("--capacity", "h2=0", "load"), "the rate is a whole number"),
                       (("--capacity", "h1=300", "load"), "the latency probe sends 50 a second"),
                       (("--capacity", "h2=2000", "chaos"), "goes with the load drill"),
                       (("--capacity", "h2=2000", "--quick"), "goes with the load drill")):
        r = run_drill(*args)
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)


@pytest.mark.timeout(120)
def test_failover_and_dr_say_missing_or_run():
    """Without Sentinel support / dump-state in the binary the drills say MISSING; with them they run.
    Either way a verdict line names the drill, and --no-report leaves docs/readiness.md alone."""
    readiness = SRC_DIR / "docs" / "readiness.md"
    before = readiness.read_bytes() if readiness.exists() else None
    r = run_drill("--no-report", "failover", "dr", timeout=110)
    for name in ("failover", "dr"):
        m = re.search(r"^drill %s: (PASS|FAIL|MISSING)" % name, r.stdout, re.M)
        assert m, r.stdout + r.stderr
        if m.group(1) == "MISSING":
            assert "not built into" in r.stdout
    assert (readiness.read_bytes() if readiness.exists() else None) == before


def test_steady_client_counts_real_answers(gateway):
    gw = gateway(n=1)
    load = steady.Steady(gw.port, 200, conns=4, paths=["/", "/status/503", "/status/500", "/status/429"]).start()
    time.sleep(1.5)
    load.stop()
    w = load.window(0)
    # a quarter each: 200 ok; 503 without Retry-After from the origin is a 5xx, as is 500; 429 is shed
    assert w.get("ok", 0) >= 60 and w.get("5xx", 0) >= 120 and w.get("shed", 0) >= 60, w
    assert not w.get("reset") and not w.get("timeout") and not w.get("refused"), w
    assert load.statuses(0).keys() <= {200, 500, 503, 429}


def test_steady_client_sees_refused_and_relay_faults(gateway):
    gw = gateway(n=1)
    relay = steady.Relay(gw.upstreams[0].port).start()
    try:
        load = steady.Steady(relay.port, 100, conns=4).start()
        time.sleep(0.6)
        relay.set_mode("error500")
        t = time.monotonic()
        time.sleep(0.6)
        load.stop()
        assert load.window(0, t - 0.3).get("ok", 0) > 20
        # the relayed connections were closed: the requests after the switch meet the 500s
        late = load.window(t + 0.1)
        assert late.get("5xx", 0) > 20 and not late.get("ok"), late
    finally:
        relay.stop()
    fresh = steady.Steady(relay.port, 50, conns=2).start()
    time.sleep(0.5)
    fresh.stop()
    assert fresh.window(0).get("refused", 0) > 0, fresh.window(0)


def proc_stat(pid):
    """Fields of /proc/PID/stat from field 3 on (after the command name), as a list of strings."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2:].split()


def test_load_generator_runs_at_lowest_priority(gateway):
    """The load drill's h2load gets only the CPU that the gateway and origins leave (as remote clients
    would): nice 19 and SCHED_IDLE in the child, the drill itself unchanged; and it still loads."""
    gw = gateway(n=1)
    mine = (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0))
    p = load.start_generator(["h2load", "--h1", "-c2", "--rps=20", "-D2", "http://127.0.0.1:%d/" % gw.port])
    try:
        fields = proc_stat(p.pid)
        assert int(fields[19 - 3]) == 19, fields  # nice (field 19)
        assert int(fields[41 - 3]) == os.SCHED_IDLE, fields  # policy (field 41)
        assert (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0)) == mine  # the child's alone
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    m = re.search(r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out, re.M)
    assert m and int(m.group(2)) >= 40, out


def _run(p99, errors=0, done=1000, ok=450, gw_within=100.0, h2load_p99=None, killed=(), shed_p99=None):
    """A search run's figures as load.step() returns them (and try_rate() completes: the limit): 1 s of
    2,500 req/s asked over a limit of 500 req/s, DONE sent, the latency probe's 50 accepted requests
    among the 500 accepted: p99 is the probe's accepted p99, shed_p99 its refused one's."""
    return {"errors": errors, "hung": 0, "shed": done - ok, "ok": ok, "done": done, "expected": 2500,
            "achieved": done, "rate": 2500, "limit": 500, "duration": 1,
            "p99": h2load_p99 if h2load_p99 is not None else p99, "acc_p99": h2load_p99, "killed": list(killed),
            "probe": {"p99": p99, "shed_p99": shed_p99, "ok": 50, "n": 50, "statuses": {200: 50}},
            "gw_within": gw_within, "machine": 50.0}


def test_load_capacity_rule_takes_the_worse_of_two_runs():
    t, bound = load.P99_TARGET_MS, load.SEARCH_P99_MS
    assert bound < t  # headroom under the target for the table steps
    assert load.SEARCH_OVERLOAD >= 5  # a capacity is met while the limit refuses what the 5x step brings
    assert load.rate_met([_run(t * 0.3)]) is True  # far from the edge: one run (half of it refused)
    assert load.rate_met([_run(bound - 1)]) is None  # near it: run again
    assert load.rate_met([_run(bound - 1), _run(bound - 2)]) is True
    assert load.rate_met([_run(bound - 1), _run(bound + 1)]) is False  # the worse of two counts
    assert load.rate_met([_run(bound + 1)]) is False  # a miss is never retried into a pass
    assert load.rate_met([_run(t * 0.3, errors=1)]) is False
    # the generator fell short of the overload: no overload, no capacity
    assert load.rate_met([_run(t * 0.3, done=700)]) is False
    assert "offered only 700 of 2500" in load.miss(_run(t * 0.3, done=700))
    assert load.rate_met([_run(t * 0.3, done=760)]) is True  # over 1.5 times the limit: overloaded
    # the gateway accepted under 97% of the limit's rate (the probe's accepted requests count): missed
    assert load.rate_met([_run(t * 0.3, ok=430)]) is False
    assert "480 req/s accepted" in load.miss(_run(t * 0.3, ok=430))
    # refusals slow (the probe's 429s): missed; fast ones do not decide
    assert load.rate_met([_run(t * 0.3, shed_p99=bound + 1)]) is False
    assert load.rate_met([_run(t * 0.3, shed_p99=bound - 1)]) is True
    # the gateway's own histogram under 99% within the target, or a generator killed: missed
    assert load.rate_met([_run(t * 0.3, gw_within=98.9)]) is False
    assert load.rate_met([_run(t * 0.3, killed=["POST"])]) is False
    # h2load's latencies (its wait for a CPU at the lowest priority in them) do not decide
    assert load.rate_met([_run(t * 0.3, h2load_p99=t * 3)]) is True


def test_load_step_latency_verdict():
    """A step fails on latency when the probe's accepted p99 is over the target or the gateway's own
    histogram holds under 99% within it, never on h2load's figures alone; a killed generator is named."""
    t = load.P99_TARGET_MS
    assert load.latency_misses(_run(t * 0.5, h2load_p99=t * 3)) == []
    why = load.latency_misses(_run(t * 1.2))
    assert len(why) == 1 and "latency probe" in why[0]
    why = load.latency_misses(_run(t * 0.5, gw_within=97.0))  # the gateway itself slow: fails whatever the probe
    assert len(why) == 1 and "97.00%" in why[0]
    assert len(load.latency_misses(_run(t * 1.2, gw_within=97.0))) == 2
    none_accepted = _run(None)
    assert "no request of the latency probe was accepted" in load.latency_misses(none_accepted)[0]
    assert load.generator_killed(_run(1, killed=["POST"])).startswith("h2load (POST) still ran")
    assert load.generator_killed(_run(1)) == ""


@pytest.mark.timeout(120)
def test_latency_probe_counts_real_answers():
    """The probe against the load drill's own rig (real nginx origin, demo upstream for POSTs, sluice over
    plain HTTP/1.1, TLS and h2) with a rate limit it exceeds: every request answered 200 or 429, POSTs among
    them, none lost; accepted and refused latencies measured; its connections taken in turn."""
    with lab.Lab("probe-test") as L:
        rig = load.Rig(L)
        rig.set_limit(20)
        for proto in ("h1", "https", "h2"):
            port = rig.port if proto == "h1" else rig.tls_port
            p = probe.Probe(proto, port, 60, 2, load.GET_URIS, load.HEADERS, rig.post_body, post_every=10,
                            cafile=rig.cert).start()
            p.join()
            s = p.summary(load.pct)
            assert s["n"] == 120 and not s["errors"], (proto, s)
            assert set(s["statuses"]) == {200, 429} and s["ok"] + s["shed"] == 120, (proto, s)
            assert {m for m, _, _ in p.results} == {"GET", "POST"}
            assert 0 < s["p50"] <= s["p99"] <= s["max"] < probe.TIMEOUT_S * 1000
            assert s["shed_p99"] is not None
            # requests take turns over SPREAD connections, so that both workers are sampled (HTTP/1.1 opens
            # more only while all of them have a request in flight)
            if proto == "h2":
                assert p.connects == probe.SPREAD, p.connects
            else:
                assert probe.SPREAD <= p.connects <= probe.H1_CONNS, (proto, p.connects)


def test_load_status_zero_across_warmup_is_an_answer(tmp_path):
    """h2load's log (start us, status, latency us): a status 0 that started before the first logged end
    is a request answered across the warm-up's end; one that started later is an error."""
    log = tmp_path / "h2load.log"
    log.write_text("1000000\t0\t300000\n"  # started in the warm-up, ended at 1.3 s: answered
                   "1050000\t200\t260000\n"
                   "1200000\t200\t5000\n"  # the first end: 1.205 s
                   "1400000\t0\t1000\n")  # started in the measured phase: lost
    r = load._parse("", str(log))
    assert r["statuses"] == {0: 2, 200: 2}
    assert load.answered_across_warmup(r) == 1


@pytest.mark.timeout(120)
def test_interrupted_drill_leaves_no_process():
    env = dict(os.environ, SLUICE_BIN=SLUICE_BIN)
    p = subprocess.Popen([sys.executable, DRILL, "--no-report", "--quick", "--keep", "chaos"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, cwd=str(SRC_DIR))
    lines = []
    tmp = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ln = p.stdout.readline()
            if not ln:
                break
            lines.append(ln)
            if "chaos: kill an upstream" in ln and "requests" not in ln:
                break
        # the drill's temp dir: every process it started names it on its command line
        kids = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(p.pid)], capture_output=True,
                              text=True).stdout
        m = re.search(r"(/tmp/sluice-drill-chaos-[^/\s]+)", kids)
        assert m, "no child with the drill's temp dir:\n%s\n%s" % (kids, "".join(lines))
        tmp = m.group(1)
        assert processes_under(tmp)
        p.send_signal(signal.SIGINT)
        rc = p.wait(60)
        rest = p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert rc != 0, rest
    wait_until(lambda: not processes_under(tmp), timeout=10, what="the drill's processes to be gone")
    if tmp:
        subprocess.run(["rm", "-rf", tmp])
