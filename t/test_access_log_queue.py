"""The access log never blocks a worker (issue 14 "Logs"): each worker queues
whole lines in a bounded queue (access_log.queue) and one log writer thread
writes them; a full queue drops lines whole and counts them in
sluice_access_log_dropped_total{output}. Driven with the real binary and real
clients: rotation under load (rename + `ctl reopen-logs`), a stdout pipe
nobody reads, a reload that moves the file while requests run, shutdown and
`run --upgrade` while requests run, and a disk that is full (/dev/full).
`ctl flush-logs`: a request's line is on disk once it answers (under load),
a blocked stdout pipe or syslog collector gets a timeout answer naming it;
the syslog sender's queue follows access_log.queue."""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (SLUICE_BIN, ClientLoad, RawConn, base_config, check_sanitizers, config_to_lua, free_port,
                      run_sluice, wait_until)
from test_admin_http import _can_connect, http_get, parse_metrics
from test_counters import total
from test_res_admin import ctl, ctl_ok, sockdir  # noqa: F401  (sockdir is a fixture)


def read_lines(path):
    """Every line of the file parsed as JSON: a partial or mangled line fails."""
    if not os.path.exists(path):
        return []
    data = open(path, "rb").read()
    assert not data or data.endswith(b"\n"), "the file ends inside a line: %r" % data[-200:]
    out = []
    for ln in data.split(b"\n")[:-1]:
        try:
            out.append(json.loads(ln))
        except ValueError:
            raise AssertionError("not a whole JSON line: %r" % ln[:300])
    return out


def count_lines(path):
    """Lines written so far (while the writer may be in the middle of a write)."""
    try:
        return open(path, "rb").read().count(b"\n")
    except FileNotFoundError:
        return 0


def metrics(aport):
    st, _, body = http_get(aport, "/metrics")
    assert st == 200
    return parse_metrics(body.decode())


def family_sum(m, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= ls)


def requests_total(aport):
    """Requests the workers finished (each writes one access-log line in the same phase)."""
    return int(family_sum(metrics(aport), "sluice_listener_requests_total"))


def dropped(aport, output=None):
    labels = {"output": output} if output else {}
    return int(family_sum(metrics(aport), "sluice_access_log_dropped_total", **labels))


def Clients(port, n=3, prefix="/c"):
    """n keep-alive clients (conftest.ClientLoad): .ids of every answered request, .failed."""
    return ClientLoad(port, keepalive=n, fresh=0, prefix=prefix, timeout=10)


def start_gw(sluice, upstreams, tmp_path, sockdir, workers=2, **kw):  # noqa: F811
    (u,) = upstreams(1)
    sock = os.path.join(sockdir, "admin.sock")
    aport = free_port()
    cfg = base_config(free_port(), [u.address], workers=workers, admin={"socket": sock, "http": "127.0.0.1:%d" % aport},
                      **kw)
    gw = sluice(cfg)
    wait_until(lambda: os.path.exists(sock) and _can_connect(aport), what="admin socket and http")
    gw.sock, gw.aport, gw.cfg = sock, aport, cfg
    return gw


@pytest.mark.timeout(120)
def test_rotation_under_load_loses_no_line(sluice, upstreams, tmp_path, sockdir):  # noqa: F811
    """wrk and python clients run while the file is renamed and reopened
    twice: every finished request has exactly one whole line, in one of the
    three files, and a request sent after a reopen is in the new file."""
    path = str(tmp_path / "access.log")
    gw = start_gw(sluice, upstreams, tmp_path, sockdir, access_log={"path": path})
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d6s", "http://127.0.0.1:%d/wrk" % gw.port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    clients = Clients(gw.port)
    try:
        for k in (1, 2):
            time.sleep(1.5)
            os.rename(path, "%s.%d" % (path, k))
            assert "log files reopened" in ctl_ok(gw.sock, "reopen-logs")
            with RawConn(gw.port) as c:
                assert c.request("GET", "/after-reopen-%d" % k).status == 200
        out = wrk.communicate(timeout=60)[0]
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
        clients.stop()
    assert "requests in" in out and "Non-2xx" not in out, out
    assert clients.count() > 50 and not clients.failed, clients.failed[:5]
    files = [path + ".1", path + ".2", path]

    def logged():
        return sum(count_lines(f) for f in files)

    # every finished request (the registry counts it where its line is queued) has its line
    wait_until(lambda: logged() == requests_total(gw.aport), timeout=15, what="every request's line written")
    per_file = [read_lines(f) for f in files]
    assert all(len(p) > 100 for p in per_file), [len(p) for p in per_file]
    ids = [e["request_id"] for p in per_file for e in p]
    assert len(set(ids)) == len(ids), "a line written twice"
    assert set(clients.ids) <= set(ids)
    # a request that started after a reopen returned is in a later file
    assert [e for e in per_file[1] if e["target"] == "/after-reopen-1"]
    assert [e for e in per_file[2] if e["target"] == "/after-reopen-2"]
    assert dropped(gw.aport) == 0


def spawn_with_stdout_pipe(tmp_path, cfg):
    conf = tmp_path / "pipe.lua"
    conf.write_text(config_to_lua(cfg))
    err = open(tmp_path / "pipe.stderr", "wb")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    proc = subprocess.Popen([SLUICE_BIN, "run", "-c", str(conf)], stdout=subprocess.PIPE, stderr=err,
                            stdin=subprocess.DEVNULL, cwd=str(tmp_path), env=env)
    err.close()
    return proc


def read_pipe(proc, chunks):
    """A thread reading proc's stdout pipe into chunks until it closes."""
    fd = proc.stdout.fileno()

    def read_all():
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                return
            chunks.append(b)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    return reader


@pytest.mark.timeout(120)
def test_a_stdout_pipe_nobody_reads_never_blocks_a_worker(upstreams, tmp_path):
    """stdout is a pipe the reader stopped reading: requests are still
    answered (a blocked worker would time the clients out), the queue's drops
    are counted on /metrics and logged at most once a second, and once the
    reader resumes every line it gets is whole; at exit the rest is flushed."""
    (u,) = upstreams(1)
    port, aport = free_port(), free_port()
    cfg = base_config(port, [u.address], workers=2, admin={"http": "127.0.0.1:%d" % aport},
                      access_log={"path": "stdout", "queue": "64k"})
    proc = spawn_with_stdout_pipe(tmp_path, cfg)
    chunks = []
    reader = None
    try:
        wait_until(lambda: _can_connect(port) and _can_connect(aport), timeout=10, what="sluice listening")
        answered = 0
        t0 = time.monotonic()
        # far more than the pipe (64 KiB) and both queues (2 x 64 KiB) hold: ~600 bytes a line
        with RawConn(port, timeout=5) as c1, RawConn(port, timeout=5) as c2:
            for i in range(1500):
                for c in (c1, c2):
                    assert c.request("GET", "/blocked/%d" % i).status == 200
                    answered += 1
        wait_until(lambda: requests_total(aport) == answered, timeout=10, what="every request counted")
        wait_until(lambda: dropped(aport, "stdout") > 0, timeout=10, what="drops counted")
        n_dropped = dropped(aport, "stdout")
        total = answered
        assert n_dropped < total
        assert dropped(aport, "file") == 0
        drop_lines = [ln for ln in open(tmp_path / "pipe.stderr").read().splitlines() if "queue full" in ln]
        elapsed = time.monotonic() - t0
        assert 1 <= len(drop_lines) <= elapsed + 1, (len(drop_lines), elapsed)
        # the reader resumes
        reader = read_pipe(proc, chunks)

        def whole_lines():
            return b"".join(chunks).count(b"\n")

        wait_until(lambda: whole_lines() >= total - n_dropped, timeout=15, what="the queued lines after the resume")
        # and later traffic goes through again
        with RawConn(port, timeout=5) as c:
            assert c.request("GET", "/after-resume").status == 200
        wait_until(lambda: b"/after-resume" in b"".join(chunks), timeout=10, what="a line after the resume")
        n_dropped = dropped(aport, "stdout")  # final: every request's line was queued or dropped by now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    data = b"".join(chunks)
    assert data.endswith(b"\n")
    lines = [json.loads(ln) for ln in data.split(b"\n")[:-1]]  # a partial line fails here
    assert len(lines) == total - n_dropped + 1
    # each worker's lines in its order: per connection, the targets increase
    seen = {}
    for e in lines:
        if e["target"].startswith("/blocked/"):
            i = int(e["target"].rsplit("/", 1)[1])
            assert seen.get(e["client_port"], -1) < i, "lines of one connection out of order"
            seen[e["client_port"]] = i
    stderr = open(tmp_path / "pipe.stderr").read()
    assert not check_sanitizers(stderr), stderr[-3000:]


@pytest.mark.timeout(120)
def test_reload_moves_the_file_while_requests_run(sluice, upstreams, tmp_path, sockdir):  # noqa: F811
    """A reload to another access_log.path under load: requests of the old
    config finish into the old file, the new ones go to the new file, every
    line whole and none lost; the old file is closed once written."""
    a, b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
    gw = start_gw(sluice, upstreams, tmp_path, sockdir, access_log={"path": a})
    clients = Clients(gw.port, n=4)
    try:
        wait_until(lambda: clients.count() > 200, timeout=15, what="traffic")
        cfg = dict(gw.cfg)
        cfg["access_log"] = {"path": b, "queue": "256k"}
        gw.conf_path.write_text(config_to_lua(cfg))
        assert "reloaded" in ctl_ok(gw.sock, "reload")
        n = clients.count()
        wait_until(lambda: clients.count() > n + 200, timeout=15, what="traffic after the reload")
    finally:
        clients.stop()
    assert not clients.failed, clients.failed[:5]
    wait_until(lambda: count_lines(a) + count_lines(b) == requests_total(gw.aport), timeout=15,
               what="every line written")
    la, lb = read_lines(a), read_lines(b)
    assert la and lb
    assert {e["generation"] for e in la} == {1}
    assert {e["generation"] for e in lb} == {2}
    assert set(clients.ids) <= {e["request_id"] for e in la + lb}

    def open_paths():
        out = set()
        for fd in os.listdir("/proc/%d/fd" % gw.pid):
            try:
                out.add(os.readlink("/proc/%d/fd/%s" % (gw.pid, fd)))
            except OSError:
                pass
        return out

    wait_until(lambda: a not in open_paths(), timeout=10, what="the old file closed")
    assert b in open_paths()
    assert dropped(gw.aport) == 0


@pytest.mark.timeout(120)
def test_shutdown_under_load_flushes_every_answered_line(sluice, upstreams, tmp_path, sockdir):  # noqa: F811
    path = str(tmp_path / "access.log")
    gw = start_gw(sluice, upstreams, tmp_path, sockdir, access_log={"path": path})
    clients = Clients(gw.port, n=4)
    try:
        wait_until(lambda: clients.count() > 500, timeout=15, what="traffic")
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0
    finally:
        clients.stop()
    # read right after exit: nothing may still be on its way
    ids = {e["request_id"] for e in read_lines(path)}
    missing = set(clients.ids) - ids
    assert not missing, "%d answered requests without a line" % len(missing)
    assert "access log: lines dropped" not in gw.stderr()


@pytest.mark.timeout(120)
def test_upgrade_under_load_flushes_the_old_process_lines(sluice, upstreams, tmp_path, sockdir):  # noqa: F811
    """`sluice run --upgrade` while clients run: both processes append to the
    same file; once the old one exited, every answered request has its line."""
    from test_upgrade import logged, start_new, wait_taken_over
    path = str(tmp_path / "access.log")
    old = start_gw(sluice, upstreams, tmp_path, sockdir, access_log={"path": path})
    clients = Clients(old.port, n=3)
    try:
        wait_until(lambda: clients.count() > 300, timeout=15, what="traffic")
        new = start_new(sluice, old.cfg)
        wait_taken_over(new)
        assert old.wait(30) == 0
        n = clients.count()
        wait_until(lambda: clients.count() > n + 100, timeout=15, what="traffic on the new process")
    finally:
        clients.stop()
    assert logged(new, "upgrade: took over; the old process drains")
    new.stop()
    lines = read_lines(path)
    ids = {e["request_id"] for e in lines}
    assert set(clients.ids) <= ids, "%d answered requests without a line" % len(set(clients.ids) - ids)
    assert len(ids) == len(lines)


def test_a_full_disk_is_counted_logged_and_survived(sluice, upstreams, tmp_path, sockdir):  # noqa: F811
    """/dev/full answers every write with ENOSPC: requests are still served,
    the lines are counted as dropped (output "file"), the error is logged at
    most once a second, and the process exits cleanly."""
    gw = start_gw(sluice, upstreams, tmp_path, sockdir, workers=1, access_log={"path": "/dev/full"})
    t0 = time.monotonic()
    with RawConn(gw.port) as c:
        for i in range(200):
            assert c.request("GET", "/full/%d" % i).status == 200
    wait_until(lambda: dropped(gw.aport, "file") >= 200, timeout=10, what="write failures counted")
    assert dropped(gw.aport, "file") == 200 and dropped(gw.aport, "stdout") == 0
    elapsed = time.monotonic() - t0
    errs = [e for e in gw.log_entries() if e.get("msg") == "access log: cannot write; lines dropped"]
    assert 1 <= len(errs) <= elapsed + 2
    assert errs[0]["error"] == os.strerror(28) and errs[0]["output"] == "file" and errs[0]["path"] == "/dev/full"
    assert gw.stop() == 0


def test_queue_size_config(tmp_path):
    def check(access_log):
        p = tmp_path / "c.lua"
        p.write_text(config_to_lua(base_config(free_port(), ["127.0.0.1:9"], access_log=access_log)))
        return run_sluice(["check", "-c", str(p)])

    assert check({"path": "stdout", "queue": "1m"}).returncode == 0
    assert check({"path": "stdout", "queue": 131072}).returncode == 0
    for bad in ("1k", "2g"):
        p = check({"path": "stdout", "queue": bad})
        assert p.returncode == 1 and "access_log.queue" in p.stderr and "out of range (64k to 1g)" in p.stderr, p.stderr
    p = check({"path": "stdout", "queue": "lots"})
    assert p.returncode == 1 and "access_log.queue" in p.stderr and "invalid size" in p.stderr, p.stderr


def whole_lines(path):
    """The whole lines of a file being written (a last line still being written is left out)."""
    data = open(path, "rb").read()
    return [json.loads(ln) for ln in data[:data.rfind(b"\n") + 1].split(b"\n")[:-1]]


@pytest.mark.timeout(120)
def test_flush_logs_puts_each_answered_request_on_disk_under_load(sluice, upstreams, tmp_path, sockdir):  # noqa: F811
    """`ctl flush-logs` answers only once every line queued before it is in
    the file: a request answered, then flush-logs, then its line is there,
    thirty times while other clients keep both workers busy; no settle time."""
    path = str(tmp_path / "access.log")
    gw = start_gw(sluice, upstreams, tmp_path, sockdir, access_log={"path": path})
    clients = Clients(gw.port, n=3, prefix="/load")
    try:
        wait_until(lambda: clients.count() > 100, timeout=15, what="traffic")
        for i in range(30):
            rid = "flush-%d" % i
            with RawConn(gw.port) as c:
                assert c.request("GET", "/probe/%d" % i, headers=[("x-request-id", rid)]).status == 200
            out = ctl_ok(gw.sock, "flush-logs")
            assert out.startswith("flushed: every access-log line queued before the command is written"), out
            assert [e for e in whole_lines(path) if e["request_id"] == rid], "line %s not on disk after flush" % rid
        rc, out, _ = ctl(gw.sock, "flush-logs", json_out=True)
        ans = json.loads(out)
        assert rc == 0 and ans["ok"] and ans["flushed"] and ans["pid"] == gw.pid and ans["queued_bytes"] >= 0, out
    finally:
        clients.stop()
    assert not clients.failed, clients.failed[:5]
    # the conftest reader now relies on it: every answered request, nothing partial
    ids = {e["request_id"] for e in gw.access_log(path)}
    assert set(clients.ids) <= ids
    assert dropped(gw.aport) == 0


def test_flush_logs_usage_and_without_an_access_log_file(sluice, upstreams, sockdir):  # noqa: F811
    (u,) = upstreams(1)
    sock = os.path.join(sockdir, "admin.sock")
    gw = sluice(base_config(free_port(), [u.address], admin={"socket": sock}, access_log={"path": "off"}))
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    with RawConn(gw.port) as c:
        assert c.request("GET", "/x").status == 200
    assert ctl_ok(sock, "flush-logs").startswith("flushed:")
    for bad in ("0", "abc", "5001", "-1"):
        rc, out, _ = ctl(sock, "flush-logs", bad)
        assert rc == 1 and "usage: flush-logs [TIMEOUT_MS] (a wait of 1 to 5000 ms; default 2000)" in out, out
    rc, out, _ = ctl(sock, "flush-logs", "1", "2")
    assert rc == 1 and "unknown command" in out, out
    assert "flush-logs [TIMEOUT_MS]" in ctl_ok(sock, "help")


@pytest.mark.timeout(120)
def test_flush_logs_on_a_stdout_pipe_nobody_reads_says_what_is_pending(upstreams, tmp_path, sockdir):  # noqa: F811
    """stdout is a pipe nobody reads: flush-logs answers within its timeout
    with an error naming the blocked output and the bytes still queued (the
    admin socket keeps answering); once the reader resumes it succeeds."""
    (u,) = upstreams(1)
    port = free_port()
    sock = os.path.join(sockdir, "admin.sock")
    cfg = base_config(port, [u.address], workers=1, admin={"socket": sock},
                      access_log={"path": "stdout", "queue": "64k"})
    proc = spawn_with_stdout_pipe(tmp_path, cfg)
    try:
        wait_until(lambda: _can_connect(port) and os.path.exists(sock), timeout=10, what="sluice listening")
        # more than the pipe holds (64 KiB): the writer blocks, lines stay queued
        with RawConn(port, timeout=5) as c:
            for i in range(400):
                assert c.request("GET", "/blocked/%d/%s" % (i, "x" * 200)).status == 200
        rc, out, _ = ctl(sock, "flush-logs", "300")
        assert rc == 1, out
        assert out.startswith("error: flush-logs: not finished within 300 ms: "), out
        assert "bytes of access-log lines still queued; waiting on stdout (stdout) for" in out
        rc, out, _ = ctl(sock, "flush-logs", "200", json_out=True)
        ans = json.loads(out)
        assert rc == 1 and not ans["ok"] and not ans["flushed"], out
        assert ans["pending_bytes"] > 0 and ans["blocked_output"] == "stdout" and ans["blocked_ms"] >= 200, out
        assert ans["waited_ms"] >= 200
        # the admin socket is not held by it
        assert "connections" in ctl_ok(sock, "show", "admin")
        # the reader resumes
        chunks = []
        reader = read_pipe(proc, chunks)
        assert ctl_ok(sock, "flush-logs", "5000").startswith("flushed:")
        with RawConn(port, timeout=5) as c:
            assert c.request("GET", "/after-resume").status == 200
        ctl_ok(sock, "flush-logs")
        assert b"/after-resume" in b"".join(chunks)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    data = b"".join(chunks)
    lines = [json.loads(ln) for ln in data.split(b"\n")[:-1]]
    assert data.endswith(b"\n") and lines[-1]["target"] == "/after-resume"
    stderr = open(tmp_path / "pipe.stderr").read()
    assert not check_sanitizers(stderr), stderr[-3000:]


class DgramCollector:
    """A Unix datagram socket standing in for /dev/log, read only when asked
    (the kernel holds a few datagrams for it meanwhile: net.unix.max_dgram_qlen)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.got = []

    def drain(self):
        while True:
            try:
                self.got.append(self.sock.recv(65536))
            except BlockingIOError:
                return

    def read_while(self, fn):
        """fn() while a thread reads the socket; then what is left."""
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                self.drain()
                time.sleep(0.005)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            return fn()
        finally:
            stop.set()
            t.join(5)
            self.drain()

    def targets(self):
        return [json.loads(m.split(b" - - ", 1)[1])["target"] for m in self.got]

    def close(self):
        self.sock.close()


def syslog_dropped(sock):
    rc, out, _ = ctl(sock, "show", "counters", json_out=True)
    assert rc == 0, out
    return total(json.loads(out), "sluice_access_log_dropped_total", output="syslog")


@pytest.mark.parametrize("queue", ["64k", None])
def test_the_syslog_queue_follows_access_log_queue(sluice, upstreams, sockdir, queue):  # noqa: F811
    """A collector that does not read: each worker's sender holds what the
    socket refuses up to access_log.queue bytes (default 1m), then drops
    whole lines, counted."""
    (u,) = upstreams(1)
    sock, logsock = os.path.join(sockdir, "admin.sock"), os.path.join(sockdir, "log.sock")
    coll = DgramCollector(logsock)
    try:
        al = {"syslog": "unix://" + logsock}
        if queue:
            al["queue"] = queue
        gw = sluice(base_config(free_port(), [u.address], workers=1, admin={"socket": sock}, access_log=al))
        wait_until(lambda: os.path.exists(sock), what="admin socket")
        n = 300  # about 200 KiB of frames: more than 64k, less than 1m
        with RawConn(gw.port) as c:
            for i in range(n):
                assert c.request("GET", "/q/%d/%s" % (i, "y" * 200)).status == 200
        dropped_now = syslog_dropped(sock)
        coll.read_while(lambda: ctl_ok(sock, "flush-logs", "5000"))  # what the senders held, sent
        got = coll.targets()
        assert got == sorted(got, key=lambda t: int(t.split("/")[2]))  # in order, whole
        assert len(got) + dropped_now == n, (len(got), dropped_now)
        if queue:
            smallest = min(len(m) for m in coll.got)
            # the kernel held 11 (net.unix.max_dgram_qlen + 1), the sender at most 64 KiB
            assert dropped_now > 0 and (len(got) - 11) * smallest <= 64 * 1024, (len(got), dropped_now)
        else:
            assert dropped_now == 0
    finally:
        coll.close()


@pytest.mark.timeout(60)
def test_flush_logs_waits_for_the_syslog_senders(sluice, upstreams, sockdir):  # noqa: F811
    """access_log.syslog to a Unix datagram socket that does not read: the
    kernel holds 10 datagrams, the rest wait in the worker's sender, so
    flush-logs times out naming the collector; once it reads, flush-logs
    answers only after every line is in the collector's socket."""
    (u,) = upstreams(1)
    sock, logsock = os.path.join(sockdir, "admin.sock"), os.path.join(sockdir, "log.sock")
    coll = DgramCollector(logsock)
    try:
        gw = sluice(base_config(free_port(), [u.address], workers=2, admin={"socket": sock},
                                access_log={"syslog": "unix://" + logsock}))
        wait_until(lambda: os.path.exists(sock), what="admin socket")
        with RawConn(gw.port) as c:
            for i in range(60):
                assert c.request("GET", "/sys/%d" % i).status == 200
        rc, out, _ = ctl(sock, "flush-logs", "300")
        assert rc == 1 and "not finished within 300 ms" in out, out
        assert "waiting on syslog (unix://%s) for" % logsock in out, out
        # it answers once the senders are empty; what they held is in the socket then
        assert coll.read_while(lambda: ctl_ok(sock, "flush-logs", "5000")).startswith("flushed:")
        assert coll.targets() == ["/sys/%d" % i for i in range(60)]  # one connection: one worker, in order
        # with nothing held up, a request then flush-logs: its line is in the socket
        with RawConn(gw.port) as c:
            assert c.request("GET", "/sys/after").status == 200
        ctl_ok(sock, "flush-logs")
        coll.got.clear()
        coll.drain()
        assert coll.targets() == ["/sys/after"]
    finally:
        coll.close()
