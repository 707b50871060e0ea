"""Slow request bodies cannot hold upstream capacity (issue 17, "Slow clients that hold upstream
capacity"): limits.client_body_min_rate, limits.client_body_deadline and
listeners[N].http2.max_uploading_streams, against real upstreams and real clients."""

import socket
import threading
import time

import hpack
import pytest

from conftest import RawConn, base_config, build_request, free_port, http_client
from test_h2 import PREFACE, frame
from test_protocol_edges import RawH2, ended, h2c_config, rst_codes


def trickle_h1(port, target, total=1000, every=0.4, timeout=15):
    """POST with Content-Length total, one byte every `every` seconds; returns the response."""
    with RawConn(port, timeout=timeout) as c:
        c.send(build_request("POST", target, [("Content-Length", str(total))]))
        deadline = time.monotonic() + timeout
        c.sock.settimeout(every)
        while time.monotonic() < deadline:
            try:
                c.sock.sendall(b"x")
            except OSError:
                break  # the gateway answered and closed
            try:
                data = c.sock.recv(65536)
            except socket.timeout:
                continue
            c.buf += data
            break
        return c.read_response(timeout=timeout)


def test_h1_body_below_the_minimum_rate_gets_408(gateway):
    gw = gateway(limits={"client_body_timeout": "2s", "client_body_min_rate": "1k"})
    start = time.monotonic()
    r = trickle_h1(gw.port, "/echo")  # 2.5 bytes/s: each read well within client_body_timeout
    assert r.status == 408
    assert time.monotonic() - start < 8
    (e,) = gw.wait_log(reason="client_body_too_slow")
    assert e["status"] == 408 and e["method"] == "POST"


def test_h1_body_past_the_total_deadline_gets_408(gateway):
    gw = gateway(limits={"client_body_deadline": "2s", "client_body_min_rate": "0"})
    with RawConn(gw.port, timeout=10) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "100000")]))
        start = time.monotonic()
        try:
            while time.monotonic() - start < 8:
                c.send(b"y" * 500)  # steady, but 100 kB would take 20 s
                time.sleep(0.1)
        except OSError:
            pass
        r = c.read_response()
    assert r.status == 408
    gw.wait_log(reason="client_body_too_slow")


def test_h1_body_waiting_for_a_slow_upstream_is_not_the_client_s_fault(gateway):
    """The upstream reads nothing for 4 s: the client cannot send meanwhile, so its rate
    (10 MB/s required here) is not measured while the gateway does not take the body."""
    gw = gateway(limits={"client_body_timeout": "1s", "client_body_min_rate": "10m"})
    body = b"z" * (3 << 20)
    with RawConn(gw.port, timeout=20) as c:
        c.send(build_request("POST", "/echo?read_delay_ms=4000", body=body))
        r = c.read_response(timeout=20)
    assert r.status == 200, r
    assert r.json()["body_len"] == len(body)


def test_h1_fast_body_passes_with_the_defaults(gateway):
    gw = gateway()
    body = b"q" * 200000
    with http_client(gw) as c:
        r = c.post("/echo", content=body)
    assert r.status_code == 200 and r.json()["body_len"] == len(body)


class H2Trickler:
    """One h2c connection that opens `streams` POST streams and sends their bodies a byte at a time."""

    def __init__(self, port, streams, path="/echo", src=None):
        self.c = RawH2(port, src=src)
        enc = hpack.Encoder()
        block = enc.encode([(":method", "POST", True), (":path", path, True), (":scheme", "http", True),
                            (":authority", "a.test", True)], huffman=False)
        self.ids = [2 * i + 1 for i in range(streams)]
        self.c.send(b"".join(frame(0x1, 0x4, sid, block) for sid in self.ids))  # END_HEADERS only
        self.frames = []
        self.dec = hpack.Decoder()  # the gateway's HEADERS, decoded in order
        self.status = {}

    def tick(self, ids=None):
        try:
            self.c.send(b"".join(frame(0x0, 0, sid, b"t") for sid in (ids or self.ids)))
        except OSError:
            pass

    def read(self, until=lambda g: False, timeout=0.05):
        new = self.c.frames(until, timeout=timeout)
        for f in new:
            if f != "closed" and f[0] == 0x1:
                self.status[f[2]] = dict(self.dec.decode(f[3])).get(":status")
        self.frames += new
        return self.frames

    def close(self):
        self.c.close()


def test_h2_trickling_stream_gets_408(sluice, upstreams):
    cfg = h2c_config(upstreams(1)[0].address)
    cfg["limits"] = {"client_body_timeout": "2s", "client_body_min_rate": "1k"}
    gw = sluice(cfg)
    t = H2Trickler(gw.port, 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ended(1)(t.frames):
        t.tick()
        t.read(ended(1), timeout=0.4)
    assert t.status.get(1) == "408", t.frames[-5:]
    t.close()
    gw.wait_log(reason="client_body_too_slow", protocol="HTTP/2.0")


def test_h2_streams_past_max_uploading_streams_are_refused(sluice, upstreams):
    cfg = h2c_config(upstreams(1)[0].address)
    cfg["listeners"][0]["http2"] = {"max_uploading_streams": 3}
    gw = sluice(cfg)
    t = H2Trickler(gw.port, 5)
    got = t.read(lambda g: len(rst_codes(g)) >= 2, timeout=5)
    refused = [(f[2], int.from_bytes(f[3][:4], "big")) for f in got if f != "closed" and f[0] == 0x3]
    assert refused == [(7, 7), (9, 7)], refused  # REFUSED_STREAM: not processed, safe to retry
    # a body that ends frees its slot: a new upload is taken
    t.c.send(frame(0x0, 0x1, 1, b"done"))
    t.read(ended(1), timeout=5)
    block = hpack.Encoder().encode([(":method", "POST", True), (":path", "/echo", True),
                                    (":scheme", "http", True), (":authority", "a.test", True)], huffman=False)
    t.c.send(frame(0x1, 0x4, 11, block) + frame(0x0, 0x1, 11, b"retried"))
    got = t.read(ended(11), timeout=5)
    assert t.status.get(11) == "200", got[-4:]
    t.close()


def refused_ids(frames):
    return [f[2] for f in frames if f != "closed" and f[0] == 0x3 and int.from_bytes(f[3][:4], "big") == 7]


def test_h2_uploads_per_client_address_are_capped_over_its_connections(sluice, upstreams):
    """http2.max_uploading_streams_per_client: one address cannot get round the per-connection cap
    by opening more connections; a slot comes back when a connection that held it goes away."""
    cfg = h2c_config(upstreams(1)[0].address)
    cfg["workers"] = 1
    cfg["listeners"][0]["http2"] = {"max_uploading_streams": 3, "max_uploading_streams_per_client": 5}
    gw = sluice(cfg)
    t1 = H2Trickler(gw.port, 3)
    assert refused_ids(t1.read(timeout=0.5)) == []  # 3 of the address's 5
    t2 = H2Trickler(gw.port, 3)
    assert refused_ids(t2.read(lambda g: len(rst_codes(g)) >= 1, timeout=5)) == [5]  # 5 of 5
    t3 = H2Trickler(gw.port, 3)
    assert refused_ids(t3.read(lambda g: len(rst_codes(g)) >= 3, timeout=5)) == [1, 3, 5]
    t1.close()  # its three uploads end with it
    block = hpack.Encoder().encode([(":method", "POST", True), (":path", "/echo", True),
                                    (":scheme", "http", True), (":authority", "a.test", True)], huffman=False)
    sid, deadline = 7, time.monotonic() + 5
    while True:
        t3.c.send(frame(0x1, 0x4, sid, block) + frame(0x0, 0x1, sid, b"after"))
        t3.read(ended(sid), timeout=5)
        if t3.status.get(sid) == "200" or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the gateway had not seen t1 close yet
        sid += 2
    assert t3.status.get(sid) == "200", t3.frames[-4:]
    for t in (t2, t3):
        t.close()
    gw.stop()
    refused = [e for e in gw.log_entries() if e.get("msg") == "HTTP/2 uploads refused"]
    assert refused and refused[0]["per_client"] >= 4 and refused[0]["per_connection"] == 0, refused


def test_h2_uploads_per_client_are_capped_over_every_worker(sluice, upstreams):
    """The per-client cap is the process's, not each worker's: six connections of one address,
    spread over two workers by SO_REUSEPORT, get 4 uploads in all, not 4 per worker; another
    address has its own 4; a slot comes back when a connection that held it goes away."""
    cfg = h2c_config(upstreams(1)[0].address)
    cfg["workers"] = 2
    cfg["listeners"][0]["http2"] = {"max_uploading_streams": 2, "max_uploading_streams_per_client": 4}
    gw = sluice(cfg)
    conns = []
    for _ in range(6):
        t = H2Trickler(gw.port, 2)
        t.read(timeout=0.3)  # taken or refused before the next connection asks
        conns.append(t)
    for t in conns:
        t.read(lambda g: False, timeout=0.2)
    refused = sum(len(refused_ids(t.frames)) for t in conns)
    assert refused == 12 - 4, [refused_ids(t.frames) for t in conns]
    # another IPv4 address is another client
    other = H2Trickler(gw.port, 2, src="127.0.0.2")
    assert refused_ids(other.read(timeout=0.5)) == []
    other.close()
    # a connection holding uploads goes: its slots come back for the address
    holder = next(t for t in conns if len(refused_ids(t.frames)) < 2)
    holder.close()
    block = hpack.Encoder().encode([(":method", "POST", True), (":path", "/echo", True),
                                    (":scheme", "http", True), (":authority", "a.test", True)], huffman=False)
    deadline = time.monotonic() + 5
    while True:
        t = H2Trickler(gw.port, 0)
        t.c.send(frame(0x1, 0x4, 1, block))
        got = t.read(lambda g: len(rst_codes(g)) >= 1, timeout=0.5)
        t.close()
        if not refused_ids(got) or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the gateway had not seen the holder close yet
    assert not refused_ids(got), got[-4:]
    for c in conns:
        c.close()
    gw.stop()
    lines = [e for e in gw.log_entries() if e.get("msg") == "HTTP/2 uploads refused"]
    assert sum(e["per_client"] for e in lines) >= 12 - 4, lines
    assert all(e["per_connection"] == 0 for e in lines), lines


@pytest.mark.timeout(120)
def test_ten_trickling_h2_connections_cannot_push_fresh_requests_into_503(sluice, upstreams):
    """The issue's attack: 10 connections x 100 POST streams whose bodies trickle, against a
    pool limited to 200 requests in flight. Uploads past max_uploading_streams (10) are refused
    and the slow ones are cut by the minimum rate, so fresh requests never see 503."""
    (u,) = upstreams(1)
    cfg = h2c_config(u.address)
    cfg["pools"]["web"]["limits"] = {"max_requests": 200}
    cfg["limits"] = {"client_body_timeout": "3s"}  # the rate's grace: 4 s
    gw = sluice(cfg)
    attackers = [H2Trickler(gw.port, 100) for _ in range(10)]
    statuses = []
    stop = threading.Event()

    def fresh():
        with http_client(gw, timeout=10) as c:
            while not stop.is_set():
                statuses.append(c.get("/fresh").status_code)
                time.sleep(0.05)

    th = threading.Thread(target=fresh)
    th.start()
    try:
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            for a in attackers:
                a.tick()
                a.read()
            time.sleep(0.3)
    finally:
        stop.set()
        th.join(15)
    refused = sum(rst_codes(a.frames).count(7) for a in attackers)
    for a in attackers:
        a.close()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert refused >= 10 * 90, refused  # each connection: at most 10 uploads at once
    gw.stop()
    log = gw.access_log()
    assert sum(1 for e in log if e.get("reason") == "client_body_too_slow") >= 50
    assert not [e for e in log if e.get("status") == 503]
