"""Signals an operator, an init system, logrotate or a terminal may send
(docs/signals.md): none may kill the gateway or fail a request. SIGHUP asks
for a reload, SIGUSR1 reopens the log files, SIGTERM/SIGINT drain (see
test_lifecycle.py), every other one is ignored with a log line."""

import os
import signal
import socket
import threading
import time

from conftest import ConnectionClosed, RawConn, base_config, config_to_lua, free_port, wait_until

IGNORED = [signal.SIGUSR2, signal.SIGQUIT, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGTSTP,
           signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH, signal.SIGURG, signal.SIGXCPU, signal.SIGXFSZ,
           signal.SIGIO, signal.SIGPWR, signal.SIGSTKFLT]
REALTIME = [signal.SIGRTMIN, signal.SIGRTMIN + 1, signal.SIGRTMIN + 5, signal.SIGRTMAX]


class Load:
    """Client loops sending requests (keep-alive, and a fresh connection every
    tenth request) until stopped; counts successes and failures."""

    def __init__(self, port, threads=2):
        self.port = port
        self.ok = 0
        self.failed = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def loop(self, n):
        i = 0
        conn = None
        while not self.stop_flag.is_set():
            i += 1
            try:
                if conn is None or i % 10 == 0:
                    if conn:
                        conn.close()
                    conn = RawConn(self.port, timeout=5)
                r = conn.request("GET", "/load/%d/%d" % (n, i))
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append("status %d" % r.status)
            except (OSError, ConnectionClosed, AssertionError) as e:
                with self.lock:
                    self.failed.append(repr(e))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    def count(self):
        with self.lock:
            return self.ok

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)


def signal_logged(gw, msg, name):
    return [e for e in gw.log_entries() if e.get("msg") == msg and e.get("signal") == name]


def rt_name(sig):
    return "SIGRTMIN+%d" % (sig - signal.SIGRTMIN)


def sig_name(sig):
    return rt_name(sig) if sig >= signal.SIGRTMIN else signal.Signals(sig).name


def test_every_signal_under_load_fails_no_request(gateway):
    gw = gateway(2, workers=2)
    load = Load(gw.port)
    try:
        wait_until(lambda: load.count() > 20, timeout=10, what="load running")
        for sig in [signal.SIGHUP, signal.SIGUSR1] + IGNORED + REALTIME:
            before = load.count()
            gw.send_signal(sig)
            # the gateway is still alive and still serves after each one
            wait_until(lambda: load.count() > before + 20, timeout=10, what="requests served after %s" % sig_name(sig))
            assert gw.proc.poll() is None, "sluice died of signal %d; stderr:\n%s" % (sig, gw.stderr()[-2000:])
        for sig in IGNORED:
            name = signal.Signals(sig).name
            wait_until(lambda: signal_logged(gw, "signal ignored", name), what="log line for %s" % name)
        for sig in REALTIME:
            wait_until(lambda: signal_logged(gw, "signal ignored", rt_name(sig)), what="log line for %s" % rt_name(sig))
        assert any(e.get("msg") == "SIGHUP: reloading the config" for e in gw.log_entries())
        assert any(e.get("msg") == "SIGUSR1: reopening log files" for e in gw.log_entries())
    finally:
        load.stop()
    assert load.failed == [], "%d of %d requests failed: %r" % (len(load.failed), load.ok, load.failed[:5])
    assert load.ok > 100
    # and SIGTERM still drains and exits 0 (checked at teardown too)
    assert gw.stop() == 0


def test_a_burst_of_one_signal_logs_a_few_lines_with_a_count(gateway):
    # real-time signals queue (ordinary ones coalesce in the kernel), so each of these arrives
    gw = gateway(1)
    sig = signal.SIGRTMIN + 2
    for _ in range(200):
        gw.send_signal(sig)
    time.sleep(1.2)
    gw.send_signal(sig)
    name = rt_name(sig)
    wait_until(lambda: any(e.get("repeats_not_logged") for e in signal_logged(gw, "signal ignored", name)),
               what="a summary line with the count of repeats")
    lines = signal_logged(gw, "signal ignored", name)
    assert len(lines) <= 4, lines
    assert sum(e.get("repeats_not_logged", 0) for e in lines) + len(lines) == 201
    with RawConn(gw.port) as c:
        assert c.request("GET", "/after").status == 200


def test_sigusr1_reopens_a_renamed_access_log_and_error_log(gateway, tmp_path):
    path = tmp_path / "access.log"
    gw = gateway(1, access_log={"path": str(path)})
    with RawConn(gw.port) as c:
        assert c.request("GET", "/before-rotate").status == 200
    gw.wait_log(target="/before-rotate", path=path)
    # what logrotate does: rename, then SIGUSR1 in postrotate
    rotated = tmp_path / "access.log.1"
    os.rename(path, rotated)
    err_rotated = tmp_path / (gw.err_path.name + ".1")
    os.rename(gw.err_path, err_rotated)
    gw.send_signal(signal.SIGUSR1)
    wait_until(lambda: path.exists() and gw.err_path.exists(), what="fresh log files")
    with RawConn(gw.port) as c:
        assert c.request("GET", "/after-rotate").status == 200
    gw.wait_log(target="/after-rotate", path=path)
    assert "/after-rotate" not in rotated.read_text()
    assert "/before-rotate" in rotated.read_text()
    # the error log moved on too: the reopen is logged in the new file, not the old one
    wait_until(lambda: "access log reopened" in gw.stderr(), what="reopen logged in the new error log")
    assert "SIGUSR1: reopening log files" in err_rotated.read_text()
    assert "log file reopened" in gw.stderr()


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_signals_while_the_config_loads_do_not_kill(sluice, upstreams):
    # a config that takes a moment to evaluate: signals arrive before the event loop exists
    (u,) = upstreams(1)
    port = free_port()
    text = "local x = 0\nfor i = 1, 8000000 do x = x + i end\n" + config_to_lua(base_config(port, [u.address]))
    gw = sluice(text, ports=[port], ready=False)
    # past exec and the dynamic loader (a signal there would kill any program):
    # inside sluice, evaluating the config, once it has used some CPU time
    wait_until(lambda: gw.proc.poll() is not None or cpu_ticks(gw.pid) >= 3, timeout=10, what="sluice running")
    deadline = time.monotonic() + 20
    sent = 0
    while time.monotonic() < deadline and gw.proc.poll() is None:
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            gw.send_signal(sig)
            sent += 1
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.01)
    assert gw.proc.poll() is None, "sluice died while starting; stderr:\n%s" % gw.stderr()[-2000:]
    assert sent >= 8
    with RawConn(port) as c:
        assert c.request("GET", "/after-start").status == 200


def test_sigterm_while_the_config_loads_stops_it(sluice, upstreams):
    (u,) = upstreams(1)
    port = free_port()
    text = "local x = 0\nfor i = 1, 8000000 do x = x + i end\n" + config_to_lua(base_config(port, [u.address]))
    gw = sluice(text, ports=[port], ready=False)
    wait_until(lambda: gw.proc.poll() is not None or cpu_ticks(gw.pid) >= 3, timeout=10, what="sluice running")
    gw.send_signal(signal.SIGTERM)
    rc = gw.wait(10)
    assert rc is not None, "a SIGTERM while the config loads was lost: sluice still runs"
