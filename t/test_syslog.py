"""The access log and the error/event log to a syslog collector (issue 14):
RFC 5424 over TCP (octet-counted), UDP and a Unix datagram socket, received by
a real rsyslogd started by the test, which writes each message as a JSON line;
the test reads them back. A collector that is down costs requests nothing, and
what is lost is counted."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (RawConn, base_config, closed_port, config_to_lua, free_port, run_sluice, terminate,
                      wait_until)
from test_counters import ctl, total

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
pytestmark = pytest.mark.skipif(not RSYSLOGD, reason="rsyslogd not installed (scripts/install-deps)")


class Rsyslog:
    """rsyslogd -n with one input (imtcp, imudp or imuxsock) writing every
    message as one JSON line (its syslog header fields and the message)."""

    def __init__(self, d, kind, port=None):
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.out = d / "received.jsonl"
        self.port = port or free_port()
        self.sock = d / "log.sock"
        if kind == "tcp":
            inp = 'module(load="imtcp")\ninput(type="imtcp" address="127.0.0.1" port="%d")' % self.port
        elif kind == "udp":
            inp = 'module(load="imudp")\ninput(type="imudp" address="127.0.0.1" port="%d")' % self.port
        else:
            inp = 'module(load="imuxsock" SysSock.Use="off")\ninput(type="imuxsock" Socket="%s" UseSpecialParser="off")' % self.sock
        conf = d / "rsyslog.conf"
        conf.write_text('''global(workDirectory="%(dir)s")
%(inp)s
template(name="json" type="list") {
  constant(value="{")
  property(name="syslogfacility-text" format="jsonf" outname="facility") constant(value=",")
  property(name="syslogseverity-text" format="jsonf" outname="severity") constant(value=",")
  property(name="app-name" format="jsonf" outname="app") constant(value=",")
  property(name="procid" format="jsonf" outname="procid") constant(value=",")
  property(name="protocol-version" format="jsonf" outname="version") constant(value=",")
  property(name="msg" format="jsonf" outname="msg" droplastlf="on")
  constant(value="}\\n")
}
action(type="omfile" file="%(out)s" template="json" flushOnTXEnd="on" asyncWriting="off" ioBufferSize="4k")
''' % {"dir": d, "inp": inp, "out": self.out})
        p = subprocess.run([RSYSLOGD, "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
        self.err = open(d / "rsyslogd.stderr", "wb")
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")],
                                     stdout=self.err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if kind == "tcp":
            wait_until(lambda: _connectable(self.port), timeout=10, what="rsyslogd listening")
        elif kind == "unix":
            wait_until(lambda: self.sock.exists(), timeout=10, what="rsyslogd socket")
        else:
            time.sleep(0.5)

    def lines(self):
        if not self.out.exists():
            return []
        return [json.loads(l) for l in self.out.read_text().splitlines() if l.strip()]

    def stop(self):
        terminate(self.proc)
        self.err.close()


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def rsyslog(tmp_path):
    started = []

    def start(kind, port=None):
        r = Rsyslog(tmp_path / ("rsyslog%d" % len(started)), kind, port)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def get(port, path):
    with RawConn(port) as c:
        return c.request("GET", path)


@pytest.mark.parametrize("kind", ["tcp", "udp", "unix"])
def test_access_log_reaches_rsyslog(sluice, upstreams, rsyslog, kind):
    r = rsyslog(kind)
    url = {"tcp": "tcp://127.0.0.1:%d" % r.port, "udp": "udp://127.0.0.1:%d" % r.port,
           "unix": "unix://%s" % r.sock}[kind]
    ups = upstreams(1)
    gw = sluice(base_config(free_port(), [ups[0].address], workers=2,
                            access_log={"path": "stdout", "syslog": url, "syslog_facility": "local3",
                                        "syslog_app": "edge-gw"}))
    targets = ["/syslog/%s/%d" % (kind, i) for i in range(40)]
    for t in targets:
        assert get(gw.port, t).status == 200
    wait_until(lambda: len(r.lines()) >= len(targets), timeout=15, what="40 lines at rsyslog")
    got = r.lines()
    assert len(got) == len(targets)
    for line in got:
        assert line["facility"] == "local3" and line["severity"] == "info"
        assert line["app"] == "edge-gw" and line["procid"] == str(gw.pid) and line["version"] == "1"
    entries = [json.loads(line["msg"]) for line in got]  # each a whole access-log object
    assert sorted(e["target"] for e in entries) == sorted(targets)
    assert all(e["status"] == 200 and e["upstream"] == ups[0].address for e in entries)
    # the file output still gets the same lines
    assert sorted(e["target"] for e in gw.access_log() if e["target"].startswith("/syslog/")) == sorted(targets)


def test_a_stalled_unix_collector_loses_no_line(sluice, upstreams, rsyslog):
    """/dev/log-style sockets hold 10 datagrams (net.unix.max_dgram_qlen): a
    collector that stops reading for a moment must not cost lines; they wait
    in sluice's bounded queue and go out, in order, when it reads again."""
    r = rsyslog("unix")
    ups = upstreams(1)
    gw = sluice(base_config(free_port(), [ups[0].address], workers=1,
                            access_log={"syslog": "unix://%s" % r.sock}))
    os.kill(r.proc.pid, signal.SIGSTOP)
    try:
        targets = ["/stalled/%d" % i for i in range(120)]
        for t in targets:
            assert get(gw.port, t).status == 200  # requests are not held up
    finally:
        os.kill(r.proc.pid, signal.SIGCONT)
    wait_until(lambda: len(r.lines()) >= len(targets), timeout=20, what="120 lines at rsyslog")
    entries = [json.loads(line["msg"]) for line in r.lines()]
    assert [e["target"] for e in entries] == targets  # every line, in order
    assert "lines dropped" not in gw.stderr()


def test_collector_down_costs_requests_nothing_and_comes_back(sluice, upstreams, rsyslog, tmp_path):
    port = free_port()  # nobody listens yet
    ups = upstreams(1)
    gw = sluice(base_config(free_port(), [ups[0].address], workers=1,
                            access_log={"syslog": "tcp://127.0.0.1:%d" % port}))
    t0 = time.monotonic()
    for i in range(200):
        assert get(gw.port, "/down/%d" % i).status == 200
    assert time.monotonic() - t0 < 30
    wait_until(lambda: "lines dropped" in gw.stderr(), what="the drop warning")
    # a collector that starts later gets the lines sent after it is up
    late = rsyslog("tcp", port=port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not [l for l in late.lines() if "/up/" in l["msg"]]:
        assert get(gw.port, "/up/x").status == 200
        time.sleep(0.2)
    assert [l for l in late.lines() if "/up/" in l["msg"]], late.lines()
    # every line that arrived is whole
    assert all(json.loads(l["msg"])["status"] == 200 for l in late.lines())


def test_config_errors(tmp_path):
    def check(access_log):
        p = tmp_path / "c.lua"
        p.write_text(config_to_lua(base_config(free_port(), ["127.0.0.1:9"], access_log=access_log)))
        return run_sluice(["check", "-c", str(p)])

    p = check({"syslog": "http://x"})
    assert p.returncode == 1 and "access_log.syslog" in p.stderr and "unknown syslog address" in p.stderr
    p = check({"syslog": "tcp://127.0.0.1"})
    assert p.returncode == 1 and "access_log.syslog" in p.stderr
    p = check({"syslog": "unix://relative"})
    assert p.returncode == 1 and "absolute path" in p.stderr
    p = check({"syslog": "udp://127.0.0.1:514", "syslog_facility": "kern"})
    assert p.returncode == 1 and "unknown facility" in p.stderr
    assert check({"syslog": "udp://127.0.0.1:514"}).returncode == 0
    assert check({"syslog": "unix:///dev/log", "path": "off"}).returncode == 0


def counter(sock, name):
    return total(ctl(sock, "show", "counters", json_out=True), name)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_error_log_reaches_rsyslog(sluice, upstreams, rsyslog, tmp_path, kind):
    """error_log.syslog: sluice's own messages (start, a failed upstream, a reload) as RFC 5424
    with their severity; path = "off" keeps them off stderr."""
    r = rsyslog(kind)
    url = "tcp://127.0.0.1:%d" % r.port if kind == "tcp" else "unix://%s" % r.sock
    sock = str(tmp_path / "admin.sock")
    cfg = base_config(free_port(), ["127.0.0.1:%d" % closed_port()], workers=2, admin={"socket": sock},
                      error_log={"path": "off", "syslog": url, "syslog_facility": "local5", "syslog_app": "gw-events"})
    gw = sluice(cfg)
    assert get(gw.port, "/x").status == 502
    ctl(sock, "reload")
    wait_until(lambda: any('"config reloaded"' in l["msg"] for l in r.lines()), timeout=15,
               what="the reload line at rsyslog")
    got = r.lines()
    msgs = [json.loads(l["msg"]) for l in got]  # each a whole JSON log line
    assert all({"time", "level", "msg"} <= set(m) for m in msgs)
    assert all(l["facility"] == "local5" and l["app"] == "gw-events" and l["procid"] == str(gw.pid) for l in got)
    sev = {"debug": "debug", "info": "info", "warn": "warning", "error": "err"}
    assert [m for m in msgs if m["msg"] == "started"] and [m for m in msgs if m["msg"] == "config reloaded"]
    for l, m in zip(got, msgs):
        assert l["severity"] == sev[m["level"]], (l, m)
    # "off": nothing on stderr after the config took effect
    assert not [e for e in gw.log_entries() if e.get("msg") == "config reloaded"], gw.stderr()[-2000:]
    assert counter(sock, "sluice_error_log_dropped_total") == 0


def test_error_log_collector_down_drops_are_counted(sluice, upstreams, tmp_path):
    sock = str(tmp_path / "admin.sock")
    port = free_port()  # nobody listens
    (u,) = upstreams(1)
    cfg = base_config(free_port(), [u.address], workers=1, admin={"socket": sock},
                      error_log={"syslog": "tcp://127.0.0.1:%d" % port})
    gw = sluice(cfg)
    t0 = time.monotonic()
    for _ in range(5):
        ctl(sock, "reload")  # each logs a few lines
        assert get(gw.port, "/x").status == 200
    assert time.monotonic() - t0 < 30
    wait_until(lambda: counter(sock, "sluice_error_log_dropped_total") >= 1, timeout=10, what="error-log drops")
    # stderr still has every line
    assert len([e for e in gw.log_entries() if e.get("msg") == "config reloaded"]) == 5


def test_access_log_drops_are_counted(sluice, upstreams, tmp_path):
    sock = str(tmp_path / "admin.sock")
    ups = upstreams(1)
    cfg = base_config(free_port(), [ups[0].address], workers=1, admin={"socket": sock},
                      access_log={"syslog": "tcp://127.0.0.1:%d" % free_port()})  # nobody listens
    gw = sluice(cfg)
    for i in range(10):
        assert get(gw.port, "/d/%d" % i).status == 200
    wait_until(lambda: counter(sock, "sluice_access_log_dropped_total") >= 1, timeout=10, what="access-log drops")


def test_error_log_config_errors(tmp_path):
    def check(error_log):
        p = tmp_path / "c.lua"
        p.write_text(config_to_lua(base_config(free_port(), ["127.0.0.1:9"], error_log=error_log)))
        return run_sluice(["check", "-c", str(p)])

    p = check({"syslog": "http://x"})
    assert p.returncode == 1 and "error_log.syslog" in p.stderr and "unknown syslog address" in p.stderr
    p = check({"path": "off"})
    assert p.returncode == 1 and "error_log.path" in p.stderr and "needs error_log.syslog" in p.stderr
    p = check({"path": ""})
    assert p.returncode == 1 and "error_log.path" in p.stderr
    p = check({"syslog": "udp://127.0.0.1:514", "syslog_facility": "kern"})
    assert p.returncode == 1 and "error_log.syslog_facility" in p.stderr
    p = check({"paths": "x"})
    assert p.returncode == 1 and "error_log" in p.stderr
    assert check({"syslog": "udp://127.0.0.1:514", "path": "off"}).returncode == 0
    assert check({"path": "stdout"}).returncode == 0
