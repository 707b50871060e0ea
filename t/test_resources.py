"""Bounded memory: bodies are streamed with back-pressure in both directions, so a slow
reader (or a slow upstream) does not make sluice buffer the body. RSS is read from
/proc/PID/status (VmRSS)."""

import os
import socket
import threading
import time

import pytest

from conftest import SLUICE_BIN, RawConn, build_request, pattern_bytes, sha256

MB = 1024 * 1024


def sanitized_binary():
    try:
        with open(SLUICE_BIN, "rb") as f:
            return b"AddressSanitizer" in f.read()
    except OSError:
        return False


# "a few MB"; ASan builds keep freed memory in a quarantine and grow shadow memory
BUDGET_KB = (48 if sanitized_binary() else 12) * 1024


def asan_env():
    opts = os.environ.get("ASAN_OPTIONS", "detect_leaks=1")
    return {"ASAN_OPTIONS": opts + ":quarantine_size_mb=4:thread_local_quarantine_size_kb=64"}


@pytest.mark.timeout(90)
def test_slow_reader_of_large_response_keeps_rss_bounded(sluice, upstreams):
    from conftest import base_config, free_port
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address], workers=1), env=asan_env())
    size = 200 * MB
    with RawConn(gw.port) as c:  # warm up: first request, pools and buffers allocated
        assert c.request("GET", "/bytes/100000").status == 200
    time.sleep(0.2)
    base = gw.rss_kb()
    c = RawConn(gw.port, timeout=30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        c.send(build_request("GET", "/bytes/%d" % size))
        c.read_head()
        got = len(c.buf)
        c.buf.clear()
        peak = base
        # read slowly: 64 KB every 100 ms for 3 s, sampling RSS
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            got += len(c.read_some(timeout=5))
            peak = max(peak, gw.rss_kb())
            time.sleep(0.1)
        # then stop reading entirely for 2 s
        for _ in range(10):
            time.sleep(0.2)
            peak = max(peak, gw.rss_kb())
        print("slow reader: base %d KB peak %d KB read %d" % (base, peak, got))
        assert peak - base < BUDGET_KB, "RSS grew by %d KB while the client read slowly (%d bytes read)" % (
            peak - base, got)
        # and the whole body still arrives intact when the client speeds up
        c.sock.settimeout(30)
        while got < size:
            data = c.sock.recv(4 * MB)
            assert data, "connection closed after %d of %d bytes" % (got, size)
            got += len(data)
        assert got == size
    finally:
        c.close()


@pytest.mark.timeout(90)
def test_fast_uploader_to_slow_upstream_keeps_rss_bounded(sluice, upstreams):
    from conftest import base_config, free_port
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address], workers=1, limits={"body_bytes": "200m"}), env=asan_env())
    size = 100 * MB
    with RawConn(gw.port) as c:
        assert c.request("POST", "/warm", body=b"x" * 100000).status == 200
    time.sleep(0.2)
    base = gw.rss_kb()
    block = pattern_bytes(MB)
    c = RawConn(gw.port, timeout=30)
    sent = {"n": 0}

    def upload():
        try:
            c.send(build_request("POST", "/up?read_delay_ms=3000", headers=[("Content-Length", str(size))]))
            for _ in range(size // MB):
                c.send(block)
                sent["n"] += MB
        except OSError as e:
            sent["error"] = repr(e)

    t = threading.Thread(target=upload)
    t.start()
    try:
        peak = base
        for _ in range(12):  # the upstream does not read for 3 s
            time.sleep(0.2)
            peak = max(peak, gw.rss_kb())
        assert peak - base < BUDGET_KB, "RSS grew by %d KB while the upstream was not reading (%d bytes sent)" % (
            peak - base, sent["n"])
        print("uploader: base %d KB peak %d KB sent %d" % (base, peak, sent["n"]))
        assert sent["n"] < 50 * MB, "sluice accepted %d bytes of a body the upstream was not reading" % sent["n"]
        t.join(60)
        assert "error" not in sent, sent
        r = c.read_response(timeout=30)
        assert r.status == 200
        e = r.json()
        assert e["body_len"] == size
        assert e["body_sha256"] == sha256(block * (size // MB))
    finally:
        c.close()
        t.join(5)


def minor_faults(pid):
    """Page faults served without I/O (/proc/PID/stat field 10): for a proxy, pages of
    memory it touches for the first time, or again after giving them back."""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


@pytest.mark.timeout(120)
def test_repeated_bursts_reuse_the_heap(sluice, upstreams):
    """glibc gives a heap's free top back to the kernel once it passes 128 KiB: every burst of
    h2 streams made the worker shrink its heap and fault each page in again (a third of its
    CPU under h2load). heap_keep_free keeps the last burst's working set for the next one."""
    if sanitized_binary():
        pytest.skip("a sanitizer's allocator ignores mallopt (heap_keep_free)")
    import subprocess
    from conftest import base_config, free_port
    (u,) = upstreams(1)
    cfg = base_config(free_port(), [u.address], workers=1)
    cfg["listeners"][0]["h2c"] = True
    gw = sluice(cfg)

    def burst():
        r = subprocess.run(["h2load", "-n", "4000", "-c", "4", "-m", "50", gw.url("/bytes/16384")],
                           capture_output=True, text=True, timeout=60)
        assert "4000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout

    burst()  # the heap grows to the working set of such bursts
    burst()
    before = minor_faults(gw.pid)
    for _ in range(4):
        burst()
    faults = minor_faults(gw.pid) - before
    print("minor faults over four repeated bursts: %d" % faults)
    # 4 KiB pages: 2,500 is 10 MB, against the 256 MB the four bursts moved. Without
    # heap_keep_free two bursts faulted 5,000 to 18,000 pages (once 622), so four
    # fault about twice that; with it, from 11 on a quiet machine to ~1,000 on one
    # with a load average of 12 to 19 (other threads, slower and overlapping bursts)
    assert faults < 2500, "the worker faulted %d pages in again over four bursts" % faults


@pytest.mark.timeout(90)
def test_pipelining_flood_is_held_back_by_tcp(sluice, upstreams):
    """A client that pipelines requests far faster than they are answered (the first one
    waits 3 s upstream) is held back by the kernel's window: sluice's input stops at its
    read high-water mark, so its memory stays flat however much the client sends."""
    from conftest import base_config, free_port
    (u,) = upstreams(1)
    gw = sluice(base_config(free_port(), [u.address], workers=1), env=asan_env())
    with RawConn(gw.port) as c:
        assert c.request("GET", "/warm").status == 200
    time.sleep(0.2)
    base = gw.rss_kb()
    c = RawConn(gw.port, timeout=30)
    block = b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n" * (MB // 29)
    sent = {"n": 0}

    def flood():
        try:
            c.send(build_request("GET", "/delay/3000"))
            for _ in range(100):
                c.send(block)
                sent["n"] += len(block)
        except OSError as e:
            sent["error"] = repr(e)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        peak = base
        for _ in range(12):  # the first response takes 3 s
            time.sleep(0.2)
            peak = max(peak, gw.rss_kb())
        print("pipelining flood: base %d KB peak %d KB sent %d" % (base, peak, sent["n"]))
        assert peak - base < BUDGET_KB, "RSS grew by %d KB while requests waited (%d bytes sent)" % (
            peak - base, sent["n"])
        assert sent["n"] < 50 * MB, "sluice took %d bytes of pipelined requests it could not serve yet" % sent["n"]
    finally:
        c.close()
        t.join(5)
