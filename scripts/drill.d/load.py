"""load.py - `scripts/drill load`: the capacity of this machine, then 1x, 2x and 5x of it.

Traffic: h2load at a fixed request rate (--rps per client; its per-request log gives
every latency, reported but not judged) and, beside it, the latency probe (probe.py: a few
dozen requests a second at normal priority, whose accepted p99 decides with the gateway's
own duration histogram: latency_misses()), one run for the GETs (95%: /small, a 600-byte body, and /16k, 16 KiB,
in the ratio 14:5) and one beside it for the POSTs (5%, 4 KiB bodies, to a demo upstream that reads them), with browser-like
request headers. Three protocols: HTTP/1.1 plaintext, HTTP/1.1 over TLS, HTTP/2 over TLS.
The origin is the bench's nginx; sluice has 2 workers and no access log.

Fairness: h2load runs at the lowest CPU priority (nice 19, SCHED_IDLE: _generator_setup), as
clients on other machines would; the origins keep the gateway's priority (see report()).

Capacity: the highest rate (doubling from a start, then two bisections) at which the accepted
requests' p99 stays under SEARCH_P99_MS (80% of P99_TARGET_MS: headroom for the longer table
steps) with no error while SEARCH_OVERLOAD (5) times that rate is offered and a rate limit of it
refuses the rest (miss()): a rate the gateway holds only while nothing is refused is no rate a
limit can be set to, since above it the refusals take CPU of their own (on this machine, shared
with the generator and the origins, the 1x-only rule put the limit where 2x saturated the CPUs).
On every run of it: a rate met once is run again and must be met again (rate_met()), unless its
p99 was under half the target.
Then a rate limit of that capacity (key "host": one bucket for all the traffic, 429) and
a pool in-flight bound (503 pool_overflow) are loaded by a reload, and the gateway is
driven at 1x, 2x and 5x, then at 1x again (recovery). Pass: at every step no error and
no request left unanswered (nor a generator killed with its requests uncounted); the
accepted requests keep the p99 target (the probe's) and the gateway's own histogram holds
99% within it; refusals are 429/503 from the configured limits and fast; RSS at 5x stays within 2x of 1x (+32 MiB);
the recovery step is clean.
"""

import json
import math
import os
import re
import subprocess
import threading
import time

import lab
import probe

P99_TARGET_MS = 50.0
# the capacity search's bound: headroom under the target, so that the longer 1x step holds the target
SEARCH_P99_MS = 0.8 * P99_TARGET_MS
SMALL_BODY = '{"items":[' + ",".join('{"id":%d,"name":"item-%04d","price":%d.99}' % (i, i, i) for i in range(14)) + "]}\n"
HEADERS = [
    "user-agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "accept: text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8",
    "accept-language: en-GB,en;q=0.7",
    "cookie: session=4f9a1c0e7b2d48a6a3e5c1f09b7d2e61; theme=dark",
]
GET_URIS = ["/small"] * 14 + ["/16k"] * 5
POST_SHARE = 0.05
PROTOCOLS = ("h1", "https", "h2")
QUICK_RATE = 400
SEARCH_STEP_S, TABLE_STEP_S = 8, 15
# a protocol's capacity search tries no new rate after this; with its four table steps (~75 s) and
# three protocols the drill stays within its budget (scripts/drill: 900 s)
SEARCH_BUDGET_S = 170
SHED_REASONS = ("rate_limited", "pool_overflow")
# the capacity search offers this multiple of a candidate rate, with a rate limit of the candidate:
# the table's highest step, so that a capacity met is one whose limit holds at 2x and at 5x
SEARCH_OVERLOAD = 5
# a search run counts only if the generator sent at least this multiple of the limit (at the lowest
# CPU priority it falls short of 5x on a saturated machine: the table's 5x steps send 2-3.5x)
SEARCH_OFFERED_MIN = 1.5
# capacities given on the command line (scripts/drill load --capacity h2=28000,...): the table runs at
# these limits, for these protocols only, without a search (set by scripts/drill before run())
GIVEN_CAPACITY = {}
# the latency probe's rate (probe.py): what decides a step's client-side latency
PROBE_RATE = 50
# the gateway's own duration histogram must put this share of its answers within the target
GATEWAY_WITHIN_MIN = 99.0
# a generator still running this long after its duration is killed and the step's figures void
GENERATOR_GRACE_S = 15
# the gateway's duration histograms (metrics.histogram_buckets): one bound at the p99 target
HIST_BOUNDS_S = (0.005, 0.01, 0.025, P99_TARGET_MS / 1000, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Rig:
    def __init__(self, L):
        self.L = L
        _, self.origin_port = L.origin_nginx(SMALL_BODY)
        # POSTs go to an origin that reads request bodies (nginx's `return 200` answers before reading
        # one, and sluice then closes the client connection: h2load would lose that client for good)
        _, self.app_port = L.demo_upstream("app")
        self.cert, self.key, _ = L.certificate()
        self.port, self.tls_port = L.port(), L.port()
        self.post_body = b"field=" + b"v" * 4090
        with open(L.path("post-body"), "wb") as f:
            f.write(self.post_body)
        self.gw = L.gateway("load", self.config(None))
        self.gw.start()

    def config(self, limit_rate):
        route = {"name": "all", "match": {"path_prefix": "/"}, "pool": "origin"}
        posts = {"name": "posts", "match": {"path_prefix": "/", "methods": ["POST"]}, "pool": "app"}
        cfg = {
            "workers": 2,
            "listeners": lab.listeners(self.port, self.tls_port, self.cert, self.key),
            "pools": {"origin": {"servers": ["127.0.0.1:%d" % self.origin_port],
                                 "keepalive": {"idle": 1024, "idle_timeout": "60s"},
                                 "timeouts": {"connect": "5s", "response": "30s"},
                                 "limits": {"max_requests": 2000}},
                      "app": {"servers": ["127.0.0.1:%d" % self.app_port]}},
            "routes": [posts, route],
            "access_log": {"path": "off"},
            "metrics": {"histogram_buckets": list(HIST_BOUNDS_S)},
        }
        if limit_rate:
            route["rate_limit"] = posts["rate_limit"] = "capacity"
            # one bucket for the listener's whole traffic (every request has the same host:port)
            cfg["rate_limits"] = {"capacity": {"key": "host", "rate": int(limit_rate), "per": "1s",
                                               "burst": max(10, int(limit_rate))}}
            # in flight at once: what the capacity needs at the p99 target, with room to spare
            cfg["pools"]["origin"]["limits"]["max_requests"] = max(256, int(limit_rate * P99_TARGET_MS / 1000 * 4))
        return cfg

    def active_requests_after(self, wait):
        """Requests still in flight in the pool WAIT seconds after the load stopped (hung ones)."""
        deadline = time.monotonic() + wait
        while True:
            pools = json.loads(self.gw.ctl("--json", "show pools").stdout)["pools"]
            active = sum(p["active_requests"] for p in pools)
            if active == 0 or time.monotonic() > deadline:
                return active
            time.sleep(0.1)

    def set_limit(self, rate):
        self.gw.write_config(self.config(rate))
        self.gw.ctl("reload")


def gateway_durations(gw):
    """(answers, answers within P99_TARGET_MS) from the gateway's own request-duration histogram
    (every listener; from the complete request head to the end of the response)."""
    r = gw.ctl("--json", "show counters")
    at = HIST_BOUNDS_S.index(P99_TARGET_MS / 1000)
    n = within = 0
    for fam in json.loads(r.stdout)["counters"]:
        if fam["name"] == "sluice_listener_request_duration_seconds":
            for series in fam.get("series", []):
                n += series.get("count", 0)
                within += series["buckets"][at]
    return n, within


def _clients(proto, rate):
    if proto == "h2":
        return max(4, min(50, math.ceil(rate / 500))), 64
    return max(8, min(1000, math.ceil(rate / 25))), 1


def _h2load(rig, proto, rate, duration, uris, post, tag):
    c, m = _clients(proto, rate)
    threads = 2 if rate > 4000 and not post else 1
    if post:
        # uploads: at most 8 at once per connection, under the listener's http2.max_uploading_streams
        # (10 by default; more are refused with REFUSED_STREAM, as documented)
        c, m = max(1, c // 10), min(m, 8)
    c = max(c, threads)
    base = ("http://127.0.0.1:%d" % rig.port) if proto == "h1" else ("https://127.0.0.1:%d" % rig.tls_port)
    logpath = rig.L.path("h2load-%s.log" % tag)
    if os.path.exists(logpath):
        os.unlink(logpath)
    cmd = ["h2load", "-t%d" % threads, "-c%d" % c, "-m%d" % m, "--rps=%.3f" % (rate / c), "-D%d" % duration,
           "--warm-up-time=1", "--log-file=" + logpath]
    if proto in ("h1", "https"):
        cmd.append("--h1")
    for h in HEADERS:
        cmd += ["-H", h]
    if post:
        cmd += ["-d", rig.L.path("post-body"), "-H", "content-type: application/x-www-form-urlencoded"]
    cmd += [base + u for u in uris]
    return start_generator(cmd), logpath


GENERATOR_NICE = 19


def _generator_setup():
    """In the generator's child before exec: die with the drill, and take the lowest CPU priority
    (nice 19 and SCHED_IDLE, inherited by h2load's threads). Clients of a real gateway run on other
    machines and take no CPU from it; here the generator costs about as much CPU per request as the
    gateway, and at normal priority it would take the gateway's CPU exactly when the gateway has
    most to do (2x, 5x). At the lowest priority it gets only what the gateway and the origins leave."""
    lab.bench._child_setup()
    os.setpriority(os.PRIO_PROCESS, 0, GENERATOR_NICE)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def start_generator(cmd):
    """Popen CMD (a load generator) at the lowest CPU priority; stdout and stderr to a pipe."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_generator_setup)


def _parse(out, logpath):
    r = {"done": 0, "started": 0, "errored": 0, "timeout": 0, "statuses": {}, "lat": {}, "first_end": None,
         "no_status_starts": []}
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, \d+ succeeded, \d+ failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    if m:
        r["started"], r["done"] = int(m.group(2)), int(m.group(3))
        r["errored"], r["timeout"] = int(m.group(4)), int(m.group(5))
    try:
        with open(logpath) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) >= 3:
                    st = int(cols[1])
                    start_us, end_us = int(cols[0]), int(cols[0]) + int(cols[2])
                    if r["first_end"] is None or end_us < r["first_end"]:
                        r["first_end"] = end_us
                    if st == 0:  # closed without an error, no status recorded
                        r["no_status_starts"].append(start_us)
                    r["statuses"][st] = r["statuses"].get(st, 0) + 1
                    r["lat"].setdefault(st, []).append(int(cols[2]) / 1000.0)
    except OSError:
        pass
    return r


def answered_across_warmup(r):
    """Of a parsed run's status-0 entries, those that are answers: h2load logs status 0 for a request
    it sent in its warm-up whose response head came in the warm-up and whose end came after it (it
    records no status in the warm-up; 30-100 of them in a run of h2 at 30,000 req/s with 200 ms
    latencies). Those started before the measured phase, which began before the first end the log
    holds (it logs only the measured phase's ends). A later status 0 stays an error."""
    return sum(1 for t in r["no_status_starts"] if r["first_end"] is not None and t < r["first_end"])


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * p / 100.0))]


def machine_ticks():
    """(busy, total) clock ticks of every CPU from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class Sampler(threading.Thread):
    """While a step runs, every 250 ms: the gateway's RSS, the load generators' CPU ticks."""

    def __init__(self, gw, gen_pids):
        super().__init__(daemon=True)
        self.gw, self.gen_pids, self.stop_ev, self.max_rss = gw, gen_pids, threading.Event(), 0
        self.gen_ticks = {}

    def run(self):
        while not self.stop_ev.wait(0.25):
            self.max_rss = max(self.max_rss, self.gw.rss_kib())
            for pid in self.gen_pids:
                t = lab.bench.cpu_ticks([pid])
                if t:
                    self.gen_ticks[pid] = t


def step(rig, proto, rate, duration):
    """Drive the gateway at RATE req/s for DURATION s; returns the figures of the step."""
    gw = rig.gw
    before, durations0 = gw.counters(), gateway_durations(gw)
    cpu0, t0, m0 = gw.cpu_ticks(), time.monotonic(), machine_ticks()
    get, get_log = _h2load(rig, proto, rate * (1 - POST_SHARE), duration, GET_URIS, False, "get")
    post, post_log = _h2load(rig, proto, rate * POST_SHARE, duration, ["/small"], True, "post")
    sampler = Sampler(gw, [get.pid, post.pid])
    sampler.start()
    # h2load measures after its warm-up second; the probe runs over the same measured time
    pr = probe.Probe(proto, rig.port if proto == "h1" else rig.tls_port, PROBE_RATE, duration, GET_URIS, HEADERS,
                     rig.post_body, post_every=round(1 / POST_SHARE), cafile=rig.cert)
    time.sleep(1.0)
    pr.start()
    outs, killed = [], []
    for name, p in (("GET", get), ("POST", post)):
        try:
            o, _ = p.communicate(timeout=max(1.0, t0 + duration + 1 + GENERATOR_GRACE_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            o, _ = p.communicate()
            killed.append(name)
        outs.append(o)
    wall = time.monotonic() - t0
    cpu = gw.cpu_ticks() - cpu0
    m1 = machine_ticks()
    pr.join()
    probe_s = pr.summary(pct)
    hung = rig.active_requests_after(2.0)
    sampler.stop_ev.set()
    sampler.join()
    after, durations1 = gw.counters(), gateway_durations(gw)
    n_gw = durations1[0] - durations0[0]
    res = [_parse(outs[0], get_log), _parse(outs[1], post_log)]
    statuses, lat = {}, {}
    for r in res:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in r["lat"].items():
            lat.setdefault(k, []).extend(v)
    reasons = lab.reasons_delta(after, before)
    shed_by = {k: reasons.get(k, 0) for k in SHED_REASONS if reasons.get(k)}
    done = sum(r["done"] for r in res)
    started = sum(r["started"] for r in res)
    ok = statuses.get(200, 0)
    overflow = min(statuses.get(503, 0), reasons.get("pool_overflow", 0))
    across_warmup = sum(answered_across_warmup(r) for r in res)
    bad_status = (sum(v for k, v in statuses.items() if k not in (200, 429, 503)) + statuses.get(503, 0) - overflow
                  - across_warmup)
    probe_errors = sum(probe_s["errors"].values()) + sum(
        v for k, v in probe_s["statuses"].items() if k not in (200, 429, 503))
    errors = sum(r["errored"] + r["timeout"] for r in res) + bad_status + probe_errors
    shed = statuses.get(429, 0) + overflow
    acc = sorted(lat.get(200, []))
    shed_lat = sorted(lat.get(429, []) + lat.get(503, []))
    every = sorted(x for v in lat.values() for x in v)
    expected = rate * duration
    answered = lab.counter_delta(after, before, "sluice_listener_requests_total")
    return {
        "proto": proto, "rate": rate, "duration": duration, "expected": expected,
        "done": done, "cut": started - done, "hung": hung,
        "h2load_errors": sum(r["errored"] + r["timeout"] for r in res),
        # h2load counts the requests of its measured DURATION (after its warm-up second)
        "achieved": done / duration, "wall": wall, "killed": killed, "probe": probe_s, "probe_errors": probe_errors,
        "ok": ok, "shed": shed, "shed_by": shed_by, "errors": errors, "statuses": statuses,
        "p50": pct(every, 50), "p99": pct(every, 99), "p999": pct(every, 99.9),
        "acc_p50": pct(acc, 50), "acc_p99": pct(acc, 99), "acc_p999": pct(acc, 99.9),
        "shed_p99": pct(shed_lat, 99),
        "cpu": 100.0 * cpu / lab.bench.CLK_TCK / wall if wall else 0, "rss": sampler.max_rss,
        # the gateway's CPU per request it answered (its own count: warm-up included, as in its CPU)
        "cpu_us": 1e6 * cpu / lab.bench.CLK_TCK / answered if answered else None,
        "gen_cpu": 100.0 * sum(sampler.gen_ticks.values()) / lab.bench.CLK_TCK / wall if wall else 0,
        "machine": 100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
        "no_status": statuses.get(0, 0), "across_warmup": across_warmup,
        "gw_within": 100.0 * (durations1[1] - durations0[1]) / n_gw if n_gw else None,
        "raw": outs,
    }


def generator_killed(s):
    """Why a step's h2load figures are void ('' if they are not): a generator that ran
    GENERATOR_GRACE_S past its duration was killed, and its requests were never counted."""
    if not s["killed"]:
        return ""
    return ("h2load (%s) still ran %d s after its duration and was killed: its requests are not counted"
            % (" and ".join(s["killed"]), GENERATOR_GRACE_S))


def gateway_slow(s):
    """Why the gateway itself was slow ('' if it was not): its own duration histogram put fewer than
    GATEWAY_WITHIN_MIN % of its answers within the target."""
    if s["gw_within"] is not None and s["gw_within"] >= GATEWAY_WITHIN_MIN:
        return ""
    return ("the gateway's own histogram: %s of its answers within %.0f ms (under %.0f%%)"
            % (pct_str(s["gw_within"]), P99_TARGET_MS, GATEWAY_WITHIN_MIN))


def miss(s):
    """Why a run of the search (S["limit"] the candidate rate, SEARCH_OVERLOAD times it offered) does
    not count as served ('' if it does): an error or a request left hanging, the generator killed or
    sending under SEARCH_OFFERED_MIN times the limit (no overload then), fewer than 97% of the limit's
    rate accepted, the latency probe's accepted or refused p99 over SEARCH_P99_MS, or the gateway's
    own histogram under GATEWAY_WITHIN_MIN within the target."""
    why = []
    if s["errors"] or s["hung"]:
        why.append("%d errors, %d hung" % (s["errors"], s["hung"]))
    if generator_killed(s):
        why.append(generator_killed(s))
    if s["achieved"] < SEARCH_OFFERED_MIN * s["limit"]:
        why.append("the generator offered only %.0f of %d req/s (under %.1f times the limit: no overload)"
                   % (s["achieved"], s["rate"], SEARCH_OFFERED_MIN))
    # the latency probe's accepted requests took the limit's tokens too (over the same measured time)
    accepted = s["ok"] + s["probe"]["ok"]
    if accepted < 0.97 * s["limit"] * s["duration"]:
        why.append("%.0f req/s accepted, under 97%% of the limit" % (accepted / s["duration"]))
    p99 = s["probe"]["p99"]
    if p99 is None or p99 > SEARCH_P99_MS:
        why.append("p99 %s ms over %.0f (latency probe)" % (fmt(p99), SEARCH_P99_MS))
    shed_p99 = s["probe"]["shed_p99"]
    if shed_p99 is not None and shed_p99 > SEARCH_P99_MS:
        why.append("refusals' p99 %s ms over %.0f (latency probe)" % (fmt(shed_p99), SEARCH_P99_MS))
    if gateway_slow(s):
        why.append(gateway_slow(s))
    return "; ".join(why)


def rate_met(runs):
    """The capacity rule, on the runs of one rate so far: True (met), False (missed) or None (run
    it again). A rate is met only if every run of it is served (the worse of two runs counts, so
    the capacity is one the 1x step can hold); one run served with a p99 under half the target is
    far enough from the edge to count alone."""
    if miss(runs[-1]):
        return False
    if len(runs) >= 2 or runs[-1]["probe"]["p99"] <= P99_TARGET_MS / 2:
        return True
    return None


def describe(s):
    pr = s["probe"]
    return ("%s %d req/s: done %d/%d, statuses %s, shed %d %s, errors %d (h2load: %d, probe: %d), cut at the end %d, "
            "hung %d; latency probe: %d requests %s%s, accepted p50 %s p99 %s max %s ms, shed p99 %s ms; h2load: "
            "p50 %s p99 %s p99.9 %s ms (accepted p99 %s, shed p99 %s); the gateway's own: %s within %.0f ms; "
            "CPU %.0f%% (%s µs/answer, generator %.0f%%, machine busy %.0f%%), RSS %d KiB, wall %.1f s%s%s"
            % (s["proto"], s["rate"], s["done"], s["expected"], s["statuses"], s["shed"], s["shed_by"] or "",
               s["errors"], s["h2load_errors"], s["probe_errors"], s["cut"], s["hung"], pr["n"], pr["statuses"],
               (" errors %s" % pr["errors"]) if pr["errors"] else "", fmt(pr["p50"]), fmt(pr["p99"]),
               fmt(pr["max"]), fmt(pr["shed_p99"]), fmt(s["p50"]), fmt(s["p99"]), fmt(s["p999"]),
               fmt(s["acc_p99"]), fmt(s["shed_p99"]), pct_str(s["gw_within"]), P99_TARGET_MS, s["cpu"],
               fmt(s["cpu_us"]), s["gen_cpu"], s["machine"], s["rss"], s["wall"],
               ("; %d closed without a status, %d of them answers across h2load's warm-up end"
                % (s["no_status"], s["across_warmup"])) if s["no_status"] else "",
               ("; " + generator_killed(s)) if s["killed"] else ""))


def pct_str(v):
    return "-" if v is None else "%.2f%%" % v


def fmt(v):
    return "-" if v is None else ("%.1f" % v if v < 100 else "%.0f" % v)


def try_rate(rig, proto, rate, step_s, tried):
    """One rate of the search, with a rate limit of it loaded and SEARCH_OVERLOAD times it offered:
    run until rate_met() decides; returns (met, why it missed)."""
    rig.set_limit(rate)
    runs = []
    while True:
        s = step(rig, proto, rate * SEARCH_OVERLOAD, step_s)
        s["limit"] = rate
        runs.append(s)
        tried.append(s)
        lab.log("capacity search%s %s" % (" (again)" if len(runs) > 1 else "", describe(s)))
        met = rate_met(runs)
        if met is not None:
            return met, miss(s)


def find_capacity(rig, proto, start, step_s, bisections, max_rate, budget_s):
    """The highest rate met (doubling from START, then bisecting), the runs, and what stopped it.
    No new rate is tried once BUDGET_S seconds have gone (the drill as a whole has a budget)."""
    good, bad, rate, tried, limit = None, None, start, [], ""
    deadline = time.monotonic() + budget_s

    def out_of_time():
        return time.monotonic() > deadline

    while rate <= max_rate and not out_of_time():
        met, why = try_rate(rig, proto, rate, step_s, tried)
        if met:
            good = rate
            rate *= 2
        else:
            bad, limit = rate, "missed at %d req/s: %s" % (rate, why)
            break
    if good is None:
        return None, tried, limit
    for _ in range(bisections if bad else 0):
        mid = (good + bad) // 2
        if mid - good < max(50, good // 20):
            break
        if out_of_time():
            limit += "; the search stopped at its time budget of %d s" % budget_s
            break
        met, why = try_rate(rig, proto, mid, step_s, tried)
        if met:
            good = mid
        else:
            bad, limit = mid, "missed at %d req/s: %s" % (mid, why)
    if not bad and rate <= max_rate:
        limit = "no higher rate tried: the search stopped at its time budget of %d s" % budget_s
    return good, tried, limit


def latency_misses(s):
    """What fails a step on latency: the latency probe's accepted p99 over the target (what a client
    on another machine sees), or the gateway itself slow (gateway_slow). h2load's own latencies are
    reported, not judged: it runs at the lowest CPU priority, and its wait for a CPU between a
    response's arrival and its read is in every one of them."""
    why = []
    pr = s["probe"]
    if pr["p99"] is None:
        why.append("no request of the latency probe was accepted (%d sent: %s)" % (pr["n"], pr["statuses"]))
    elif pr["p99"] > P99_TARGET_MS:
        why.append("accepted p99 %s ms over %.0f ms (latency probe, %d accepted; machine busy %.0f%%; the "
                   "gateway's own histogram: %s within %.0f ms)"
                   % (fmt(pr["p99"]), P99_TARGET_MS, pr["ok"], s["machine"], pct_str(s["gw_within"]), P99_TARGET_MS))
    if gateway_slow(s):
        why.append(gateway_slow(s))
    return why


def run(quick):
    step_s, table_s = (3, 3) if quick else (SEARCH_STEP_S, TABLE_STEP_S)
    protocols = ("h1", "h2") if quick else tuple(p for p in PROTOCOLS if p in GIVEN_CAPACITY) or PROTOCOLS
    rows, caps, limits, failures, notes = [], {}, {}, [], []
    with lab.Lab("load") as L:
        rig = Rig(L)
        for proto in protocols:
            rig.set_limit(None)
            if quick:
                # CI: no search (a shared machine's latency is no verdict); a fixed modest rate
                cap = QUICK_RATE
                notes.append("--quick: no capacity search; %d req/s taken as 1x, latency reported but not "
                             "judged (CI machines are shared).\n" % QUICK_RATE)
            elif proto in GIVEN_CAPACITY:
                cap = GIVEN_CAPACITY[proto]
                limits[proto] = "given with --capacity: not searched"
            else:
                cap, _, limits[proto] = find_capacity(rig, proto, 500, step_s, 2, 128000, SEARCH_BUDGET_S)
            if cap is None:
                failures.append("%s: no rate met the capacity rule (%s)" % (proto, limits.get(proto)))
                continue
            caps[proto] = cap
            rig.set_limit(cap)
            base_rss = None
            for label, mult in (("1x", 1), ("2x", 2), ("5x", 5), ("1x again", 1)):
                s = step(rig, proto, cap * mult, table_s)
                s["label"] = label
                lab.log("%s %s" % (label, describe(s)))
                rows.append(s)
                why = []
                if s["errors"] or s["hung"]:
                    why.append("%d errors, %d hung" % (s["errors"], s["hung"]))
                    if s["no_status"] > s["across_warmup"]:
                        why.append("%d of the errors closed without a status" % (s["no_status"] - s["across_warmup"]))
                if generator_killed(s):
                    why.append(generator_killed(s))
                if not quick:
                    why += latency_misses(s)
                if mult > 1 and s["shed"] == 0:
                    if s["achieved"] < 0.8 * s["rate"]:
                        why.append("nothing shed at %dx: the generator reached only %.0f of %d req/s, under the "
                                   "limit (the machine, not the gateway)" % (mult, s["achieved"], s["rate"]))
                    else:
                        why.append("nothing shed at %dx" % mult)
                elif mult > 1 and s["done"] < 0.8 * s["expected"]:
                    notes.append("%s %s: the generator sent %.0f%% of the %d req/s asked: the CPU the gateway and "
                                 "the origins left it (it runs at the lowest priority) did not reach further; the "
                                 "gateway shed what went over the limit.\n"
                                 % (proto, label, 100.0 * s["done"] / s["expected"], s["rate"]))
                if not quick and s["probe"]["shed_p99"] is not None and s["probe"]["shed_p99"] > P99_TARGET_MS:
                    why.append("refusals slow (latency probe: p99 %s ms)" % fmt(s["probe"]["shed_p99"]))
                if label == "1x":
                    base_rss = s["rss"]
                if mult == 5 and base_rss and s["rss"] > 2 * base_rss + 32768:
                    why.append("RSS %d KiB at 5x vs %d KiB at 1x" % (s["rss"], base_rss))
                if not quick and label == "1x again" and s["shed"] > 0.01 * s["done"]:
                    why.append("still shedding %d after the load dropped" % s["shed"])
                if why:
                    failures.append("%s %s: %s" % (proto, label, "; ".join(why)))
    busy = [s for s in rows if s["machine"] >= 95 and s["cpu"] + s["gen_cpu"] < 100]
    if busy:
        notes.append("The machine's CPUs were at least 95%% busy in %d of %d steps while the gateway and the load "
                     "generator used %.0f%% of one core at most: other jobs held the CPUs, and the latency "
                     "figures (and the capacity found) are the machine's, not the gateway's. Rerun on a quiet "
                     "machine for a capacity.\n"
                     % (len(busy), len(rows), max(s["cpu"] + s["gen_cpu"] for s in busy)))
    verdict = "PASS" if not failures and caps else "FAIL"
    return verdict, report(quick, caps, limits, rows, failures, notes), failures


def report(quick, caps, limits, rows, failures, notes):
    out = [lab.section_head("load", quick)]
    out.append("Target: p99 <= %.0f ms with 0 errors. Mix: 95%% GET (/small %d B : /16k 16 KiB = 14 : 5), "
               "5%% POST (4 KiB body), browser-like headers; h2load at a fixed rate (`--rps`), HTTP/1.1 one "
               "request in flight per connection, h2 up to 64 streams a connection. sluice: 2 workers, no "
               "access log; origin: nginx, 1 worker (GETs) and scripts/demo_upstream.py (POSTs); all on the same CPUs.\n"
               % (P99_TARGET_MS, len(SMALL_BODY)))
    out.append("Fairness: the load generator (h2load) runs at the lowest CPU priority (nice %d, SCHED_IDLE), as "
               "clients on other machines would: it gets only the CPU that the gateway and the origins leave, so "
               "it cannot take the CPU the gateway's accepted requests need at 2x and 5x (it costs more than half "
               "the gateway's CPU per request: the generator CPU column). When it cannot offer a rate the table "
               "says so (offered vs answered req/s). The origins keep normal priority, the gateway's: they serve "
               "only the accepted requests (the rate limit holds them to their 1x share), and at a lower priority "
               "the gateway's work on refusals would delay the accepted requests' upstream answers, a delay "
               "upstreams on machines of their own never add.\n"
               % GENERATOR_NICE)
    out.append("Which latency decides: the latency probe's. At the lowest priority h2load waits for a CPU between "
               "a response's arrival and its read whenever the machine is saturated, and that wait, which a client "
               "on another machine never has, is in every latency h2load logs (its columns are kept for "
               "comparison). Beside it the latency probe (scripts/drill.d/probe.py) runs at normal priority: %d "
               "requests a second of the same mix and protocol over the measured time of each run, on connections "
               "of its own, on a fixed schedule, each timed from its write (and connect, when it needs a new "
               "connection) to its last byte. A step fails on latency when the probe's accepted p99 is over "
               "%.0f ms, or when the gateway's own duration histogram puts fewer than %.0f%% of its answers within "
               "%.0f ms (the gateway itself slow, whatever any client measured); refusals are slow when the "
               "probe's p99 of 429/503 answers is over %.0f ms%s. The probe's errors (resets, timeouts, statuses "
               "other than 200/429/503) count in the errors column. A generator still running %d s after its "
               "duration is killed and fails its step (its requests were never counted).\n"
               % (PROBE_RATE, P99_TARGET_MS, GATEWAY_WITHIN_MIN, P99_TARGET_MS, P99_TARGET_MS,
                  " (--quick: latency reported, not judged)" if quick else "", GENERATOR_GRACE_S))
    if not quick:
        out.append("Capacity rule: a rate is tried with a rate limit of it loaded and %d times it offered, so "
                   "that the gateway refuses more than it serves, as at the table's 5x step: a rate it holds only "
                   "while nothing is refused "
                   "is not one a limit can be set to, since above it the refusals take CPU of their own (here on "
                   "CPUs shared with the generator and the origins). A rate is met when every run of it (%d s "
                   "each) answers every request with no error, accepts 97%% of the limit's rate while the "
                   "generator sends at least %.1f times the limit (at the lowest priority it cannot send all it "
                   "is asked on a saturated machine), the latency probe's p99 of accepted "
                   "and of refused requests is within %.0f ms (80%% of the target: headroom, so that the longer "
                   "table steps of %d s hold the target) and the gateway's own histogram holds %.0f%% within the "
                   "target; a rate met once is run a second time and must meet it again (the worse of two runs "
                   "counts) unless its probe p99 was under half the target. Search: doubling from 500 req/s, "
                   "then two bisections, no new rate after %d s (the drill's time budget). The capacity is the "
                   "highest rate met.\n"
                   % (SEARCH_OVERLOAD, SEARCH_STEP_S, SEARCH_OFFERED_MIN, SEARCH_P99_MS, TABLE_STEP_S,
                      GATEWAY_WITHIN_MIN, SEARCH_BUDGET_S))
        out.append(("Capacity given (--capacity, no search): " if GIVEN_CAPACITY else "Capacity found: ") + (", ".join("%s %d req/s%s" % (p, c, " (%s)" % limits[p]
                                                                       if limits.get(p) else "")
                                                 for p, c in caps.items()) or "none") + "\n")
    out.append("Then a rate limit of the capacity (429, `rate_limited`) and a pool in-flight bound (503, "
               "`pool_overflow`) were loaded (`sluice ctl reload`):\n")
    hdr = ["protocol", "load", "offered req/s", "answered req/s", "accepted", "shed (by reason)", "errors",
           "hung", "probe accepted p50 / p99 ms (n)", "probe shed p99 ms", "gateway ≤ %.0f ms" % P99_TARGET_MS,
           "h2load p50 ms", "h2load p99 ms", "h2load p99.9 ms", "h2load accepted p99 ms", "h2load shed p99 ms",
           "CPU", "CPU µs/answer", "generator CPU", "machine busy", "RSS KiB"]
    body = []
    for s in rows:
        by = ", ".join("%s %d" % kv for kv in s["shed_by"].items())
        share = (100.0 * s["shed"] / s["done"]) if s["done"] else 0
        body.append([s["proto"], s["label"], s["rate"], "%.0f" % s["achieved"], s["ok"],
                     "%d (%.0f%%%s)" % (s["shed"], share, ": " + by if by else ""), s["errors"], s["hung"],
                     "%s / %s (%d)" % (fmt(s["probe"]["p50"]), fmt(s["probe"]["p99"]), s["probe"]["ok"]),
                     fmt(s["probe"]["shed_p99"]), pct_str(s["gw_within"]),
                     fmt(s["p50"]), fmt(s["p99"]), fmt(s["p999"]), fmt(s["acc_p99"]), fmt(s["shed_p99"]),
                     "%.0f%%" % s["cpu"], fmt(s["cpu_us"]), "%.0f%%" % s["gen_cpu"],
                     "%.0f%%" % s["machine"], s["rss"]])
    out.append(lab.table(hdr, body, ["l", "l"] + ["r"] * (len(hdr) - 2)) + "\n")
    out.append("gateway ≤ %.0f ms: the share of the gateway's answers (accepted and shed) that its own duration "
               "histogram puts within the target, from the complete request head to the end of the response: "
               "what the gateway takes once it has read a request. The time before that (the client, the kernel's "
               "socket queues, a worker's loop busy with other connections) is not in it: 99%% or more there with "
               "a probe p99 over the target means the requests queued before the gateway read them, on a busy "
               "machine or in a busy worker (the CPU columns tell which). answered req/s: the requests h2load "
               "completed in its measured time, over that time.\n"
               % P99_TARGET_MS)
    out.append("CPU: the gateway's (user + system, both workers; 200% = both cores); CPU µs/answer: the gateway's "
               "CPU time per request it answered, accepted or shed (compare 1x, all accepted, with 5x, mostly "
               "refused: a refusal is one read and one write on the client's socket, most of its cost the "
               "kernel's TCP work, so at 5x the gateway needs more CPU than at 1x however fast it refuses); "
               "generator CPU: the h2load "
               "processes'; machine busy: all CPUs of the machine (other users included; 100% = all cores). "
               "A step whose generator or machine is saturated measures the machine, not the gateway.\n")
    if failures:
        out.append("Failed checks:\n\n" + "".join("- %s\n" % f for f in failures))
    out += sorted(set(notes))
    out.append("Verdict: %s\n" % ("PASS" if not failures and caps else "FAIL"))
    return "\n".join(out)
