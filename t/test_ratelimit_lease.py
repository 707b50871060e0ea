"""Shared rate limits with a slow Redis (docs/rate-limiting.md, "Shared
limits: leases", "Round trips"): requests that find no lease while a take is
on its way join it instead of sending takes of their own; a reply that
grants fewer tokens than there are waiters; Redis dying or stalling with
waiters queued (each answered once, by on_failure); the limit holding across
instances whose Redis round trips are slowed by a relay.

Redis is a real redis-server, stalled with SIGSTOP or reached through a TCP
relay that delays every byte; the takes Redis ran are counted with MONITOR."""

import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, wait_until
from test_ratelimit import config, err_lines, get, redis, totals  # noqa: F401 (redis is a fixture)

WRK = shutil.which("wrk")


class Monitor:
    """Counts the bucket script's takes Redis runs (MONITOR), by key, with their `want`."""

    LINE = re.compile(r'"EVAL(?:SHA)?" "[^"]*" "1" "([^"]*)" "take" "\d+" "\d+" "\d+" "(\d+)"')

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.takes = []  # (key, want)
        self.lock = threading.Lock()
        self.buf = b""
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        assert self.buf.startswith(b"+OK"), self.buf
        self.buf = self.buf[self.buf.index(b"\r\n") + 2:]
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\r\n")
            for ln in lines:
                m = self.LINE.search(ln.decode(errors="replace"))
                if m:
                    with self.lock:
                        self.takes.append((m.group(1), int(m.group(2))))

    def takes_of(self, key):
        with self.lock:
            return [w for k, w in self.takes if k == key]

    def close(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()


class DelayRelay:
    """127.0.0.1:port -> target, every chunk delivered `delay` seconds after it
    arrived, in order, in both directions (a slow network, not a slow server:
    commands stay pipelined)."""

    def __init__(self, target_port, delay):
        self.delay = delay
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                q = queue.Queue()
                threading.Thread(target=self._recv, args=(a, q), daemon=True).start()
                threading.Thread(target=self._send, args=(b, q), daemon=True).start()

    def _recv(self, s, q):
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _send(self, s, q):
        while True:
            due, data = q.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                s.sendall(data)
            except OSError:
                return

    def close(self):
        self.running = False
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


FAR = '{ key = "header:x-client", rate = 1000000, per = "1s", burst = 1000000, shared = true }'


def one_limit(port, upstream, redis_port, limit, **kw):
    return config(port, upstream, {"lim": limit},
                  ['    { match = { path_prefix = "/" }, pool = "web", rate_limit = "lim" }'],
                  redis_port=redis_port, **kw)


def start_gw(sluice, text, port, name="sluice"):
    gw = sluice(text, ports=[port], name=name)
    wait_until(lambda: any(e.get("msg") == "ratelimit: redis connected" for e in err_lines(gw)),
               what="redis connected")
    return gw


def concurrent_gets(port, n, client, path="/j"):
    """n requests at once, each on its own connection: [(status, headers)] in completion order."""
    out = []
    lock = threading.Lock()

    def one():
        try:
            st, h, _ = get(port, path, {"X-Client": client}, timeout=20)
        except OSError as e:
            st, h = "error: %r" % e, {}
        with lock:
            out.append((st, h))

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    return ts, out


def access_lines(gw, path):
    return [e for e in gw.access_log() if e.get("target") == path]


@pytest.mark.timeout(60)
def test_waiters_join_one_take(sluice, upstreams, redis):
    """Redis stalled, a cold key, 40 requests at once on one worker: the first
    sends a take (its token plus the next batch), the other 39 wait for that
    take's reply instead of sending 39 takes of one token; one take serves all."""
    (u,) = upstreams(1)
    r = redis()
    port = free_port()
    gw = start_gw(sluice, one_limit(port, u.address, r.port, FAR, workers=1, timeout="3s"), port)
    mon = Monitor(r.port)
    try:
        r.kill(signal.SIGSTOP)
        try:
            ts, out = concurrent_gets(port, 40, "join")
            time.sleep(1.0)  # every request reaches sluice and suspends (none can be answered yet)
            assert all(t.is_alive() for t in ts)
        finally:
            r.kill(signal.SIGCONT)
        for t in ts:
            t.join(20)
        assert [st for st, _ in out] == [200] * 40, out
        wait_until(lambda: len(mon.takes_of("sluice:rl:lim:join")) >= 1, what="the take seen by MONITOR")
        time.sleep(0.2)
        # one take: 1 token for the first request + the batch (100); the 39 others were served from it
        assert mon.takes_of("sluice:rl:lim:join") == [101]
    finally:
        mon.close()
    assert len(gw.wait_log(count=40, target="/j")) == 40
    gw.stop()
    t = totals(gw)
    # (a request that a loaded machine delayed past the reply found the lease instead)
    assert t["allowed"] == 40 and 30 <= t["redis_waits"] <= 40 and t["fallback"] == 0, t


@pytest.mark.timeout(60)
def test_reply_grants_fewer_than_waiters(sluice, upstreams, redis):
    """A bucket of 20 (1 a minute), 60 waiters behind one take: the first take
    asks for 3 (one + a batch of 20 / 8), serves 3; Redis still has 17, so one
    more take for the 57 left serves 17 and Redis is empty: the last 40 are
    refused (429, Retry-After). Exactly the burst is admitted, with 2 takes."""
    (u,) = upstreams(1)
    r = redis()
    port = free_port()
    gw = start_gw(sluice, one_limit(port, u.address, r.port,
                                    '{ key = "header:x-client", rate = 1, per = "1m", burst = 20, shared = true }',
                                    workers=1, timeout="3s"), port)
    mon = Monitor(r.port)
    try:
        r.kill(signal.SIGSTOP)
        try:
            ts, out = concurrent_gets(port, 60, "few")
            time.sleep(1.0)
        finally:
            r.kill(signal.SIGCONT)
        for t in ts:
            t.join(20)
        statuses = [st for st, _ in out]
        assert statuses.count(200) == 20 and statuses.count(429) == 40, statuses
        refused = [h for st, h in out if st == 429]
        assert all(1 <= int(h["retry-after"]) <= 60 and h["ratelimit-remaining"] == "0" for h in refused)
        wait_until(lambda: len(mon.takes_of("sluice:rl:lim:few")) >= 2, what="two takes")
        time.sleep(0.2)
        takes = mon.takes_of("sluice:rl:lim:few")
        assert len(takes) == 2 and takes[0] == 3 and takes[1] >= 17, takes
    finally:
        mon.close()
    log = gw.wait_log(count=60, target="/j")
    assert len(log) == 60  # each request answered once
    assert sum(1 for e in log if e["status"] == 429 and e["reason"] == "rate_limited") == 40
    # the bucket in Redis is empty: a later request is refused locally, without a take
    assert get(port, "/j", {"X-Client": "few"})[0] == 429
    gw.stop()
    t = totals(gw)
    assert t["allowed"] == 20 and t["denied"] == 41 and t["fallback"] == 0, t


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["killed", "timeout"])
def test_redis_fails_with_waiters_queued(sluice, upstreams, redis, how):
    """Waiters queued behind a take when Redis dies (SIGKILL while stalled) or
    stays stalled past `timeout`: every one is decided by on_failure at once
    (here deny: 503 redis_fallback), exactly once, none hangs."""
    (u,) = upstreams(1)
    r = redis()
    port = free_port()
    timeout = "3s" if how == "killed" else "300ms"
    gw = start_gw(sluice, one_limit(port, u.address, r.port, FAR, workers=1, timeout=timeout, on_failure="deny"),
                  port)
    r.kill(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        ts, out = concurrent_gets(port, 30, "dies")
        if how == "killed":
            time.sleep(0.5)
            r.kill(signal.SIGKILL)
        for t in ts:
            t.join(20)
        took = time.monotonic() - t0
    finally:
        r.kill(signal.SIGCONT)
    statuses = [st for st, _ in out]
    assert statuses == [503] * 30, statuses
    assert all(h["retry-after"] == "1" for _, h in out)
    # bounded: the kill is seen at once, a stall at the 300 ms timeout (slack for a loaded machine)
    assert took < 2.5, took
    log = gw.wait_log(count=30, target="/j")
    assert len(log) == 30 and all(e["reason"] == "redis_fallback" for e in log), log
    time.sleep(0.3)
    assert len(access_lines(gw, "/j")) == 30  # and never a second answer
    gw.stop()
    t = totals(gw)
    # most queued behind the first take (one that reached sluice after the failure was decided at once)
    assert t["fallback"] == 30 and t["denied"] == 30 and 10 <= t["redis_waits"] <= 30, t


def wrk(port, seconds, client, conns=50):
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "-H", "X-Client: %s" % client,
                          "http://127.0.0.1:%d/w" % port], capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, int(m.group(1)) if m else 0, out


@pytest.mark.skipif(not WRK, reason="wrk is not installed")
@pytest.mark.timeout(90)
def test_slow_redis_far_below_limit_few_takes(sluice, upstreams, redis):
    """Redis 20 ms away (a relay delays each direction by 10 ms), a limit far
    above the load, wrk with 50 connections: the lease runs dry while its
    refill is on its way, and the requests that find it empty wait for that
    refill instead of each sending a take of one token. Takes stay near one
    per batch (100 requests) plus at most about one per round trip."""
    (u,) = upstreams(1)
    r = redis()
    relay = DelayRelay(r.port, 0.010)
    try:
        port = free_port()
        gw = start_gw(sluice, one_limit(port, u.address, relay.port, FAR, workers=1, timeout="1s"), port)
        mon = Monitor(r.port)
        try:
            seconds = 3
            total, bad, out = wrk(port, seconds, "fast")
            time.sleep(0.3)
            takes = len(mon.takes_of("sluice:rl:lim:fast"))
        finally:
            mon.close()
        gw.stop()
    finally:
        relay.close()
    t = totals(gw)
    assert bad == 0 and t["fallback"] == 0, (out, t)
    # ~50 round trips of 20 ms a second: a lease that is too small for that
    # pace is met by waiters joining the refill, never by a take per request
    bound = 2 * total / 100 + 2 * seconds / 0.020 + 10
    print("requests %d, takes %d (bound %.0f), waits %d" % (total, takes, bound, t["redis_waits"]))
    assert total > 500, out
    assert takes <= bound, (takes, total, t)


@pytest.mark.skipif(not WRK, reason="wrk is not installed")
@pytest.mark.timeout(120)
def test_slow_redis_limit_holds_across_instances(sluice, upstreams, redis):
    """Two sluice processes (two workers each), each 10 ms from Redis through a
    relay, both driven far above a 300/s limit (burst 300) by wrk: what all of
    them admit over the run stays within rate x T + burst + the lease
    over-admission bound of the docs (min(2 x batch x n, burst / 4) = 75)."""
    (u,) = upstreams(1)
    r = redis()
    limit = '{ key = "header:x-client", rate = 300, per = "1s", burst = 300, shared = true }'
    relays = [DelayRelay(r.port, 0.005) for _ in range(2)]
    gws = []
    try:
        for i, rl in enumerate(relays):
            port = free_port()
            gws.append(start_gw(sluice, one_limit(port, u.address, rl.port, limit, workers=2, timeout="1s"), port,
                                name="gw%d" % i))
        # both instances see each other (n = 2) before the run
        time.sleep(5.5)
        seconds = 3
        results = [None, None]

        def run(i):
            results[i] = wrk(gws[i].port, seconds, "shared", conns=20)

        t0 = time.monotonic()
        ths = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        span = time.monotonic() - t0
        for gw in gws:
            gw.stop()
    finally:
        for rl in relays:
            rl.close()
    allowed = sum(totals(gw)["allowed"] for gw in gws)
    fallback = sum(totals(gw)["fallback"] for gw in gws)
    offered = sum(res[0] for res in results)
    bound = 300 * span + 300 + 75
    expected = 300 * seconds + 300
    print("admitted %d of %d offered over %.2f s: bound %.0f, rate x T + burst %.0f"
          % (allowed, offered, span, bound, expected))
    assert fallback == 0
    assert offered > 3 * expected  # far above the limit
    assert allowed <= bound, (allowed, bound)
    # and the limit is not starved by the slow round trips either
    assert allowed >= 0.85 * expected, (allowed, expected)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["reload", "stop"])
def test_waiters_answered_on_reload_and_stop(sluice, upstreams, redis, how):
    """Waiters queued behind a take when the worker drops its Redis connection
    for a reload that changes the redis settings, or when sluice is told to
    stop: each is answered once by on_failure (deny: 503) — a reload at once,
    a stop at the latest when the command's timeout passes — and none hangs."""
    (u,) = upstreams(1)
    r = redis()
    port = free_port()
    text = one_limit(port, u.address, r.port, FAR, workers=1, timeout="3s", on_failure="deny")
    gw = start_gw(sluice, text, port)
    r.kill(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        ts, out = concurrent_gets(port, 20, "reload")
        time.sleep(1.0)
        assert all(t.is_alive() for t in ts)  # all waiting for the stalled Redis
        if how == "reload":
            gw.conf_path.write_text(text.replace('timeout = "3s"', 'timeout = "2s"'))
            gw.send_signal(signal.SIGHUP)
        else:
            gw.send_signal(signal.SIGTERM)
        for t in ts:
            t.join(20)
        took = time.monotonic() - t0
        if how == "stop":
            assert gw.wait(20) == 0
    finally:
        r.kill(signal.SIGCONT)
    assert [st for st, _ in out] == [503] * 20, out
    # a reload answers them when the connection is replaced, well before the 3 s timeout
    assert took < (2.8 if how == "reload" else 8), took
    if how == "reload":
        log = gw.wait_log(count=20, target="/j")
        assert len(log) == 20 and all(e["reason"] == "redis_fallback" for e in log), log
        gw.stop()
    t = totals(gw)
    assert t["fallback"] == 20 and t["denied"] == 20, t
