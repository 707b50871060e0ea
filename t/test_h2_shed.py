"""HTTP/2 under overload: a connection that sends many requests at once, most of them over a
rate limit. Every refused stream still gets a whole 429 (the documented fields and body), the
accepted streams on the same connection get their upstream answers, every refusal is counted
and logged, and bursts of 100 streams sent in one write, more than one read turn takes
(H2_STREAMS_PER_TURN in src/h2.c: the rest waits for the next turn with the socket's reading
paused), are all answered without losing or stalling a stream, over h2c and over TLS."""

import json
import os

import h2.events
import pytest

from conftest import base_config, free_port
from test_counters import ctl, sockdir, total  # noqa: F401  (fixture)
from test_h2 import H2Client
from test_tls_certs import certs, tls_config  # noqa: F401  (fixture)

TOKENS = 10  # the limit's burst; its rate is 1 a minute, so none comes back during a test


def shed_config(cfg, sock):
    cfg["workers"] = 1  # every stream of the test meets the same bucket and the same worker's counters
    cfg["admin"] = {"socket": sock}
    cfg["rate_limits"] = {"tight": {"key": "host", "rate": 1, "per": "1m", "burst": TOKENS}}
    cfg["routes"] = [{"name": "limited", "match": {"path_prefix": "/"}, "service": "web", "rate_limit": "tight"}]
    return cfg


@pytest.fixture(params=["h2c", "tls"])
def shed_gw(request, sluice, upstreams, sockdir, certs):  # noqa: F811
    (u,) = upstreams(1)
    port = free_port()
    sock = os.path.join(sockdir, "admin.sock")
    if request.param == "tls":
        c, k = certs.issue("a", dns=["a.test"])
        cfg = tls_config(port, [u.address], [{"cert": c, "key": k}])
        ca = str(certs.ca)
    else:
        cfg = base_config(port, [u.address])
        cfg["listeners"][0]["h2c"] = True
        ca = None
    gw = sluice(shed_config(cfg, sock))
    gw.sock, gw.ca = sock, ca
    return gw


def burst(gw, n, path="/echo"):
    """n GET streams sent in one write on one connection; {stream id: (headers, body, ended)}."""
    c = H2Client(gw.port, tls_ca=gw.ca)
    for _ in range(n):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "https" if gw.ca else "http"),
                                  (":authority", "a.test")], end_stream=True)
    c.flush()
    got = {}

    def ended(evs):
        for e in evs[len(ended.seen):]:
            if isinstance(e, h2.events.ResponseReceived):
                got.setdefault(e.stream_id, [None, b"", False])[0] = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                got.setdefault(e.stream_id, [None, b"", False])[1] += e.data
                c.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                got.setdefault(e.stream_id, [None, b"", False])[2] = True
        ended.seen = list(evs)
        return sum(1 for v in got.values() if v[2]) >= n or "closed" in evs

    ended.seen = []
    evs = c.events_until(ended, timeout=20)
    c.close()
    assert "closed" not in evs, evs[-3:]
    return got


def test_a_burst_over_the_limit_gets_whole_429s_and_the_accepted_streams_their_answers(shed_gw):
    n = 100  # over the default max_concurrent_streams would be refused: 100 is the limit itself
    got = burst(shed_gw, n)
    assert len(got) == n and all(v[2] for v in got.values()), sorted(k for k, v in got.items() if not v[2])
    by_status = {}
    for sid, (h, body, _) in got.items():
        by_status.setdefault(h[":status"], []).append((sid, h, body))
    assert sorted(by_status) == ["200", "429"], sorted(by_status)
    accepted, refused = by_status["200"], by_status["429"]
    assert len(accepted) == TOKENS and len(refused) == n - TOKENS
    # the accepted ones are the first ones sent: streams are taken in order, turn after turn
    assert sorted(sid for sid, _, _ in accepted) == [2 * i + 1 for i in range(TOKENS)]
    for sid, h, body in accepted:
        echo = json.loads(body)  # the upstream's own answer
        assert echo["target"] == "/echo" and echo["method"] == "GET", echo
    ids = set()
    for sid, h, body in refused:
        assert body == b"429 Too Many Requests\n", body
        assert h["content-type"] == "text/plain" and h["content-length"] == str(len(body))
        assert 1 <= int(h["retry-after"]) <= 60
        assert h["ratelimit-limit"] == str(TOKENS) and h["ratelimit-remaining"] == "0"
        assert 1 <= int(h["ratelimit-reset"]) <= 600
        assert len(h["x-request-id"]) == 32
        ids.add(h["x-request-id"])
    assert len(ids) == len(refused)  # one id per stream, not one head reused
    # each refusal counted and logged, once
    doc = ctl(shed_gw.sock, "show", "counters", json_out=True)
    assert total(doc, "sluice_route_request_reasons_total", route="limited", reason="rate_limited") == n - TOKENS
    log = shed_gw.wait_log(count=n, protocol="HTTP/2.0")
    shed = [e for e in log if e["reason"] == "rate_limited"]
    assert len(shed) == n - TOKENS and all(e["status"] == 429 and e["route"] == "limited" for e in shed)
    assert sorted(e["stream_id"] for e in shed) == sorted(sid for sid, _, _ in refused)


def test_streams_after_a_long_burst_on_the_same_connection_are_served(shed_gw):
    """Three bursts of 100 streams, each sent in one write and so taken in several turns, on one
    connection: every stream of every burst is answered; a turn that paused reading resumes it."""
    c = H2Client(shed_gw.port, tls_ca=shed_gw.ca)
    scheme = "https" if shed_gw.ca else "http"
    done = set()
    statuses = {}
    for round_ in range(3):
        sids = []
        for _ in range(100):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":path", "/r%d" % round_), (":scheme", scheme),
                                      (":authority", "a.test")], end_stream=True)
            sids.append(sid)
        c.flush()

        def all_ended(evs, sids=sids):
            for e in evs:
                if isinstance(e, h2.events.ResponseReceived):
                    statuses[e.stream_id] = dict(e.headers)[":status"]
                elif isinstance(e, h2.events.StreamEnded):
                    done.add(e.stream_id)
            return set(sids) <= done or "closed" in evs

        evs = c.events_until(all_ended, timeout=20)
        assert "closed" not in evs and set(sids) <= done, (round_, len(set(sids) - done))
    assert list(statuses.values()).count("200") == TOKENS
    assert list(statuses.values()).count("429") == 300 - TOKENS
    c.close()


def test_bench_h2_shed_help():
    """scripts/bench-h2-shed, which measured this (docs/benchmarks.md), answers --help and refuses
    a call without its two binaries."""
    import subprocess
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "bench-h2-shed")
    p = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("usage: bench-h2-shed"), (p.stdout, p.stderr)
    assert "--no-callgrind" in p.stdout and "--normal-priority" in p.stdout
    p = subprocess.run([script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "required" in p.stderr, p.stderr
