"""Load balancing: smooth weighted round robin, least_conn, consistent hash."""

import concurrent.futures
import threading
import time

import pytest

from conftest import RawConn


def server(gw, target="/", headers=None, source_ip=None):
    with RawConn(gw.port, source_ip=source_ip) as c:
        r = c.request("GET", target, headers=headers)
    assert r.status == 200, r
    return r.json()["server"]


def test_round_robin_3_to_1_exact_per_cycle(gateway):
    gw = gateway(2, ["A", "B"], weights=[3, 1], workers=1, pool={"balance": "round_robin"})
    with RawConn(gw.port) as c:
        seq = [c.request("GET", "/rr%d" % i).json()["server"] for i in range(40)]
    for i in range(0, 40, 4):
        cycle = seq[i:i + 4]
        assert cycle.count("A") == 3 and cycle.count("B") == 1, "cycle %d: %r (whole: %r)" % (i // 4, cycle, seq)
    assert "BB" not in "".join(seq)


def test_round_robin_deterministic_with_one_worker(gateway):
    seqs = []
    for _ in range(2):
        gw = gateway(2, ["A", "B"], weights=[3, 1], workers=1)
        seqs.append([server(gw, "/d%d" % i) for i in range(8)])
    assert seqs[0] == seqs[1], seqs


def test_round_robin_default_equal_weights(gateway):
    gw = gateway(2, ["A", "B"], workers=1)
    seq = [server(gw, "/e%d" % i) for i in range(10)]
    assert seq.count("A") == 5 and seq.count("B") == 5, seq


def test_round_robin_two_workers_ratio(gateway):
    gw = gateway(2, ["A", "B"], weights=[3, 1], workers=2)
    seq = [server(gw, "/w%d" % i) for i in range(80)]
    assert 56 <= seq.count("A") <= 64, "3:1 over 80 requests on 2 workers gave A=%d" % seq.count("A")


def test_weight_zero_gets_nothing(gateway):
    gw = gateway(2, ["A", "B"], weights=[1, 0], workers=1)
    assert {server(gw, "/z%d" % i) for i in range(20)} == {"A"}


@pytest.mark.parametrize("workers", [1, 2])
def test_least_conn_prefers_idle_server(gateway, workers):
    # with 2 workers the quick requests land on either worker: only counts shared
    # by all workers keep every one of them off the busy server
    gw = gateway(2, ["A", "B"], workers=workers, pool={"balance": "least_conn"})
    slow = {}

    def slow_request():
        with RawConn(gw.port, timeout=10) as c:
            slow["server"] = c.request("GET", "/delay/2000").json()["server"]

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.4)
    try:
        quick = [server(gw, "/q%d" % i) for i in range(10)]
    finally:
        t.join(10)
    busy = slow["server"]
    idle = "B" if busy == "A" else "A"
    assert quick == [idle] * 10, "least_conn sent requests to the busy server %s: %r" % (busy, quick)
    after = {server(gw, "/after%d" % i) for i in range(6)}
    assert after == {"A", "B"}, "least_conn ties should alternate: %r" % after


def test_least_conn_spreads_concurrent_slow_requests(gateway):
    gw = gateway(2, ["A", "B"], workers=1, pool={"balance": "least_conn"})

    def one(i):
        time.sleep(i * 0.1)
        with RawConn(gw.port, timeout=10) as c:
            return c.request("GET", "/delay/1500").json()["server"]

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        got = list(ex.map(one, range(4)))
    assert got.count("A") == 2 and got.count("B") == 2, got


def test_hash_header_sticky(gateway):
    gw = gateway(2, ["A", "B"], workers=2, pool={"balance": "hash", "hash_key": "header:x-user-id"})
    owner = {}
    for rnd in range(3):
        for uid in range(30):
            s = server(gw, "/h/%d/%d" % (rnd, uid), headers=[("X-User-Id", "user-%d" % uid)])
            assert owner.setdefault(uid, s) == s, "user-%d moved from %s to %s" % (uid, owner[uid], s)
    assert set(owner.values()) == {"A", "B"}, "30 keys all hashed to one server: %r" % owner


def test_hash_header_missing_key_still_served(gateway):
    gw = gateway(2, ["A", "B"], pool={"balance": "hash", "hash_key": "header:x-user-id"})
    for i in range(5):
        assert server(gw, "/nokey%d" % i) in ("A", "B")


def test_hash_client_ip_sticky(gateway):
    gw = gateway(2, ["A", "B"], workers=2, pool={"balance": "hash", "hash_key": "client_ip"})
    owner = {}
    for rnd in range(3):
        for i in range(2, 22):
            ip = "127.0.0.%d" % i
            s = server(gw, "/ip", source_ip=ip)
            assert owner.setdefault(ip, s) == s, "%s moved" % ip
    assert set(owner.values()) == {"A", "B"}, owner


def test_hash_path_sticky(gateway):
    gw = gateway(2, ["A", "B"], workers=2, pool={"balance": "hash", "hash_key": "path"})
    owner = {}
    for rnd in range(3):
        for i in range(20):
            p = "/path-%d" % i
            s = server(gw, p)
            assert owner.setdefault(p, s) == s, "%s moved" % p
    assert set(owner.values()) == {"A", "B"}, owner
