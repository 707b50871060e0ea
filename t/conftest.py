"""Fixtures and helpers for sluice's integration tests.

Everything runs on 127.0.0.1 against the real binary ($SLUICE_BIN, default
/work/main/build/sluice) and real origin servers (scripts/demo_upstream.py).
Every process a test starts is stopped at teardown, even when the test fails;
every socket and wait has a timeout, and a per-test SIGALRM watchdog turns a
hang into a failure (mark a test with @pytest.mark.timeout(N) to change its
budget; the default is 60 s).

Teardown of every sluice sends SIGTERM, waits, and fails the test if the exit
status is not 0 or if stderr holds a sanitizer report.
"""

import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SRC_DIR = Path(__file__).resolve().parent.parent
SLUICE_BIN = os.environ.get("SLUICE_BIN", "/work/main/build/sluice")
DEMO_UPSTREAM = SRC_DIR / "scripts" / "demo_upstream.py"
PYTHON = sys.executable or "/usr/bin/python3"
DEFAULT_TEST_TIMEOUT = 60
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer")

# Never let a proxy from the environment get between the tests and sluice.
for _v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_v, None)
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "*"

sys.dont_write_bytecode = True  # keep scripts/ and t/ free of __pycache__
sys.path.insert(0, str(SRC_DIR / "scripts"))
from demo_upstream import pattern_bytes  # noqa: E402,F401  (re-exported: the generated body pattern)


# ---------------------------------------------------------------------------
# pytest plumbing: watchdog, markers, report access in fixtures
# ---------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test watchdog budget (default 60 s)")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _watchdog(request):
    """SIGALRM-based budget for the test and its teardown (there is no pytest-timeout here)."""
    m = request.node.get_closest_marker("timeout")
    limit = int(m.args[0]) if m else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout("test exceeded its %d s budget" % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit + 30)  # + room for teardown (stopping sluice, upstreams)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def free_port():
    """A currently free TCP port on 127.0.0.1."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def closed_port():
    """A port on 127.0.0.1 where nothing listens (connect is refused)."""
    return free_port()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def wait_until(pred, timeout=5.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


_LUA_KEYWORDS = set("and break do else elseif end false for function goto if in local nil not or repeat "
                    "return then true until while".split())


def lua_str(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 32 or o == 127:
            out.append("\\%03d" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_lua(v, indent=0):
    """Render a Python value as a Lua expression (dict -> table with keys, list -> array)."""
    pad = "  " * (indent + 1)
    end = "  " * indent
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nil"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_str(v)
    if isinstance(v, (list, tuple)):
        if not v:
            return "{}"
        return "{\n" + "".join(pad + to_lua(x, indent + 1) + ",\n" for x in v) + end + "}"
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = []
        for k, x in v.items():
            if isinstance(k, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) and k not in _LUA_KEYWORDS:
                key = k
            else:
                key = "[" + to_lua(k) + "]"
            items.append(pad + key + " = " + to_lua(x, indent + 1) + ",\n")
        return "{\n" + "".join(items) + end + "}"
    raise TypeError("cannot render %r as Lua" % (v,))


def config_to_lua(cfg):
    return "-- written by t/conftest.py\nreturn " + to_lua(cfg) + "\n"


def run_sluice(args, timeout=15, cwd=None, env=None):
    """Run `sluice ARGS...` to completion (check, version, ...)."""
    return subprocess.run([SLUICE_BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


def curl(args, timeout=15):
    """Run curl with sane defaults; returns CompletedProcess (text mode off: bytes)."""
    cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", str(max(1, int(timeout) - 2))] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def header_values(headers, name):
    """All values of a header (case-insensitive) from a list of (name, value) pairs."""
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def joined(headers, name):
    """A repeated header folded into one comma-separated value, or None."""
    vals = header_values(headers, name)
    return ", ".join(vals) if vals else None


def check_sanitizers(text):
    return [m for m in SANITIZER_MARKERS if m in text]


# ---------------------------------------------------------------------------
# raw HTTP/1.1 over a socket
# ---------------------------------------------------------------------------

class ConnectionClosed(Exception):
    pass


class Response:
    def __init__(self, version, status, reason, headers, body=b"", trailers=None, interim=None, raw_head=b""):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.trailers = trailers or []
        self.interim = interim or []   # 1xx responses received before this one
        self.raw_head = raw_head
        self.chunked = False
        self.close_delimited = False

    def header(self, name):
        vals = header_values(self.headers, name)
        return vals[0] if vals else None

    def header_all(self, name):
        return header_values(self.headers, name)

    def connection_tokens(self):
        toks = set()
        for v in self.header_all("connection"):
            toks.update(t.strip().lower() for t in v.split(","))
        return toks

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %d %r headers=%r body=%r>" % (self.version, self.status, self.reason, self.headers,
                                                          self.body[:200])


def build_request(method="GET", target="/", headers=None, body=None, version="HTTP/1.1", host="example.test"):
    """Bytes of a well-formed request. headers: list of (name, value); Host is added first
    unless host is None or a Host header is given; Content-Length added for a bytes body
    unless a Content-Length or Transfer-Encoding header is given."""
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if host is not None and "host" not in names:
        headers.insert(0, ("Host", host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, target, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in headers) + "\r\n"
    return head.encode("latin-1") + (body or b"")


def chunked_body(data, chunk=1000, trailers=()):
    out = bytearray()
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers:
        out += ("%s: %s\r\n" % (k, v)).encode("latin-1")
    out += b"\r\n"
    return bytes(out)


class RawConn:
    """A client connection with a buffered reader that parses responses itself."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, source_ip=None):
        self.timeout = timeout
        src = (source_ip, 0) if source_ip else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=src)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=None, body=None, version="HTTP/1.1",
                host="example.test"):
        self.send(build_request(method, target, headers, body, version, host))
        return self.read_response(method=method)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("read deadline passed")
        self.sock.settimeout(min(left, self.timeout))
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            raise ConnectionClosed("connection reset")
        if not data:
            raise ConnectionClosed("connection closed by peer")
        self.buf += data

    def _line(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                raise AssertionError("response line longer than %d bytes" % limit)
            self._fill(deadline)

    def _exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_head(self, deadline=None):
        deadline = deadline or time.monotonic() + self.timeout
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > (1 << 20):
                raise AssertionError("response head too large")
            self._fill(deadline)
        raw = bytes(self.buf[:i + 4])
        del self.buf[:i + 4]
        lines = raw[:-4].split(b"\r\n")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = []
        for ln in lines[1:]:
            k, sep, v = ln.partition(b":")
            assert sep, "bad response header line %r" % ln
            assert b"\n" not in ln and b"\r" not in ln, "bare CR/LF in response header %r" % ln
            headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        return m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode("latin-1"), headers, raw

    def read_response(self, method="GET", timeout=None, keep_interim=False):
        """Read one final response (1xx responses are collected in .interim)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim = []
        while True:
            version, status, reason, headers, raw = self.read_head(deadline)
            if 100 <= status < 200 and status != 101:
                interim.append(Response(version, status, reason, headers, raw_head=raw))
                if keep_interim:
                    return interim[-1]
                continue
            break
        resp = Response(version, status, reason, headers, interim=interim, raw_head=raw)
        te = ",".join(resp.header_all("transfer-encoding")).lower()
        cls = resp.header_all("content-length")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        if te:
            assert not cls, "response has both Transfer-Encoding and Content-Length: %r" % raw
            assert te.split(",")[-1].strip() == "chunked", "unexpected response transfer-encoding %r" % te
            resp.chunked = True
            body = bytearray()
            while True:
                line = self._line(deadline)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                body += self._exact(size, deadline)
                assert self._line(deadline) == b"", "missing CRLF after chunk"
            while True:
                tl = self._line(deadline)
                if not tl:
                    break
                k, _, v = tl.partition(b":")
                resp.trailers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
            resp.body = bytes(body)
        elif cls:
            assert len(set(cls)) == 1, "conflicting content-length %r" % cls
            resp.body = self._exact(int(cls[0]), deadline)
        else:
            resp.close_delimited = True
            body = bytearray(self.buf)
            self.buf.clear()
            try:
                while True:
                    self._fill(deadline)
                    body += self.buf
                    self.buf.clear()
            except ConnectionClosed:
                pass
            resp.body = bytes(body)
        return resp

    def read_some(self, timeout=None):
        """Whatever bytes arrive next (b'' on close)."""
        self.sock.settimeout(timeout or self.timeout)
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def is_closed(self, timeout=3.0):
        """True when the peer closes (FIN or RST) within timeout; extra data is discarded."""
        deadline = time.monotonic() + timeout
        if self.buf:
            self.buf.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class ClientLoad:
    """Client threads sending GET requests until stopped, as HTTP/1.1 clients do: keep-alive ones
    reuse their connection until an answer says `connection: close`; fresh ones open a connection
    per request. Keeps the 200s per kind ("keepalive", "fresh"), the x-request-id of each (every
    answered request must have its access-log line) and every failure, an error or another status
    (no retries). Paths: PREFIX/N/I, PREFIX "/keepalive" or "/fresh" unless given."""

    def __init__(self, port, keepalive=3, fresh=1, prefix=None, timeout=5):
        self.port, self.prefix, self.timeout = port, prefix, timeout
        self.ok = {"keepalive": 0, "fresh": 0}
        self.ids = []
        self.failed = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(i, True), daemon=True) for i in range(keepalive)]
        self.threads += [threading.Thread(target=self.loop, args=(i, False), daemon=True) for i in range(fresh)]
        for t in self.threads:
            t.start()

    def loop(self, n, keepalive):
        kind = "keepalive" if keepalive else "fresh"
        i = 0
        conn = None
        while not self.stop_flag.is_set():
            i += 1
            try:
                if conn is None:
                    conn = RawConn(self.port, timeout=self.timeout)
                r = conn.request("GET", "%s/%d/%d" % (self.prefix or "/" + kind, n, i),
                                 headers=[] if keepalive else [("connection", "close")])
                with self.lock:
                    if r.status == 200:
                        self.ok[kind] += 1
                        self.ids.append(r.header("x-request-id"))
                    else:
                        self.failed.append("%s: status %d" % (kind, r.status))
                if not keepalive or "close" in r.connection_tokens():
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001  every failure counts
                with self.lock:
                    self.failed.append("%s: %r" % (kind, e))
                if conn:
                    conn.close()
                conn = None
                if self.stop_flag.wait(0.05):  # e.g. refused at shutdown: do not spin
                    break
        if conn:
            conn.close()

    def count(self, kind=None):
        """200s so far, of one kind or of both."""
        with self.lock:
            return self.ok[kind] if kind else sum(self.ok.values())

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(15)


def raw_exchange(port, data, timeout=5.0, method="GET"):
    """Send bytes on a fresh connection, read one response; returns (response or None, closed)."""
    with RawConn(port, timeout=timeout) as c:
        c.send(data)
        try:
            resp = c.read_response(method=method)
        except ConnectionClosed:
            return None, True
        return resp, c.is_closed(timeout=3.0)


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------

def terminate(proc, timeout=10):
    """SIGTERM a process the test started, SIGKILL it if it has not exited after timeout."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Upstream:
    """A running scripts/demo_upstream.py."""

    def __init__(self, name, logdir):
        self.name = name
        self.errpath = Path(logdir) / ("upstream-%s.stderr" % name)
        self._err = open(self.errpath, "wb")
        self.proc = subprocess.Popen([PYTHON, str(DEMO_UPSTREAM), "--port", "0", "--name", name],
                                     stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL)
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if r else ""
        m = re.match(r"listening on ([\d.]+):(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError("demo upstream %s did not start: %r %s" % (name, line, self.errpath.read_text()))
        self.host = m.group(1)
        self.port = int(m.group(2))
        self.address = "%s:%d" % (self.host, self.port)

    def stats(self):
        with RawConn(self.port) as c:
            r = c.request("GET", "/stats", headers=[("Connection", "close")])
        return r.json()

    def stop(self):
        terminate(self.proc, 5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()


class Sluice:
    """A running `sluice run -c FILE`. stdout (access log) and stderr go to files."""

    def __init__(self, workdir, config, ports=None, name="sluice", ready=True, extra_args=(), env=None, user=None):
        self.workdir = Path(workdir)
        self.name = name
        self.conf_path = self.workdir / ("%s.lua" % name)
        if isinstance(config, str):
            text = config
        else:
            text = config_to_lua(config)
            if ports is None:
                ports = [int(l["address"].rsplit(":", 1)[1]) for l in config.get("listeners", [])]
        self.config = config
        self.config_text = text
        self.conf_path.write_text(text)
        self.ports = list(ports or [])
        self.port = self.ports[0] if self.ports else None
        self.out_path = self.workdir / ("%s.stdout" % name)
        self.err_path = self.workdir / ("%s.stderr" % name)
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        if not os.access(SLUICE_BIN, os.X_OK):
            raise RuntimeError("SLUICE_BIN %s is not an executable (build sluice first)" % SLUICE_BIN)
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        if env:
            e.update(env)
        self.proc = subprocess.Popen([SLUICE_BIN, "run", "-c", str(self.conf_path)] + list(extra_args),
                                     stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     cwd=str(self.workdir), env=e,
                                     **({"user": user, "group": user, "extra_groups": []} if user is not None else {}))
        self.pid = self.proc.pid
        self.stopped = False
        self.returncode = None
        if ready:
            self.wait_ready()

    # -- lifecycle --------------------------------------------------------
    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError("sluice exited with %s before listening on %d; stderr:\n%s"
                                         % (self.proc.returncode, port, self.stderr()))
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError("sluice not listening on %d after %.0fs; stderr:\n%s"
                                             % (port, timeout, self.stderr()))
                    time.sleep(0.02)

    def send_signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """Wait for exit; returns the exit status, or None if still running after timeout."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.returncode = rc
        if not self.stopped:
            self.stopped = True
            self._out.close()
            self._err.close()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Signal and wait; kill -9 if it does not exit. Returns the exit status (None if it hung)."""
        if self.stopped:
            return self.returncode
        self.send_signal(sig)
        rc = self.wait(timeout)
        if rc is None:
            self.proc.kill()
            self.proc.wait(5)
            self.stopped = True
            self._out.close()
            self._err.close()
        return rc

    def teardown_problems(self):
        """Stop (if needed) and list what is wrong with how it ended."""
        problems = []
        if not self.stopped:
            already = self.proc.poll()
            rc = self.stop()
            if already is not None:
                problems.append("%s had already exited with status %s before teardown" % (self.name, already))
            elif rc is None:
                problems.append("%s did not exit within 20s of SIGTERM (killed)" % self.name)
            elif rc != 0:
                problems.append("%s exited with status %s after SIGTERM" % (self.name, rc))
        err = self.stderr()
        found = check_sanitizers(err)
        if found:
            problems.append("%s stderr contains sanitizer reports %r:\n%s" % (self.name, found, err[-4000:]))
        return problems

    # -- observation ------------------------------------------------------
    def url(self, path="/", port=None):
        return "http://127.0.0.1:%d%s" % (port or self.port, path)

    def stdout(self):
        return self.out_path.read_bytes().decode("utf-8", "replace")

    def stderr(self):
        return self.err_path.read_bytes().decode("utf-8", "replace")

    def log_entries(self):
        """sluice's own log lines (stderr) parsed as JSON; other lines are skipped."""
        out = []
        for ln in self.stderr().splitlines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
        return out

    # Without an admin socket of its own, access_log() can only guess: it lets the log writer thread
    # (src/log_queue.c) catch up this long, since a line is written a moment after its response.
    LOG_SETTLE_S = 0.05

    def admin_socket(self):
        """The admin socket in this gateway's config, or None."""
        if isinstance(self.config, dict):
            return (self.config.get("admin") or {}).get("socket")
        m = re.search(r'admin\s*=\s*\{[^}]*\bsocket\s*=\s*"([^"]+)"', self.config_text)
        return m.group(1) if m else None

    def flush_logs(self, timeout_ms=5000):
        """`sluice ctl flush-logs`: True once every access-log line queued before it is written.
        False when there is nobody of ours to ask: no admin socket, or it is another process's
        now (a binary upgrade handed it over). A flush that fails (a blocked output) fails the test."""
        sock = self.admin_socket()
        if not sock or self.proc.poll() is not None or not os.path.exists(sock):
            return False
        p = subprocess.run([SLUICE_BIN, "ctl", "-s", sock, "--json", "flush-logs", str(timeout_ms)],
                           capture_output=True, text=True, timeout=timeout_ms / 1000.0 + 10)
        if p.returncode == 2:
            return False  # the socket could not be used (going away, or not listening yet)
        ans = json.loads(p.stdout)
        assert ans.get("ok"), "flush-logs failed: %s" % p.stdout
        return ans.get("pid") == self.pid

    def access_log(self, path=None, while_traffic=False):
        """Parsed access-log lines (stdout, or the given file). Fails on a non-JSON line. On a running
        gateway it first asks for `flush-logs`, so every request answered before is in; a last line
        still being written is left out only while_traffic (requests still running) or when the
        gateway cannot be asked (no admin socket: then after a settle time, a guess)."""
        partial_ok = False
        if self.proc.poll() is None:
            if not self.flush_logs():
                time.sleep(self.LOG_SETTLE_S)
                partial_ok = True
            partial_ok = partial_ok or while_traffic
        return self._access_log_now(path, partial_ok=partial_ok)

    def _access_log_now(self, path=None, partial_ok=True):
        text = Path(path).read_bytes().decode("utf-8", "replace") if path else self.stdout()
        if not text.endswith("\n") and self.proc.poll() is None and partial_ok:
            # the log writer is in the middle of a write(v): its last line is not whole yet
            text = text[:text.rfind("\n") + 1]
        out = []
        for ln in text.splitlines():
            if not ln.strip():
                continue
            try:
                out.append(json.loads(ln))
            except ValueError:
                raise AssertionError("access log line is not JSON: %r" % ln)
        return out

    def wait_log(self, pred=None, count=1, timeout=5.0, path=None, **fields):
        """Wait until `count` access-log entries match pred and/or field=value; returns them."""
        def match(e):
            if pred and not pred(e):
                return False
            return all(e.get(k) == v for k, v in fields.items())

        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self._access_log_now(path) if match(e)]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError("wanted %d access-log entries matching %r, got %d; log:\n%s"
                                     % (count, fields, len(got), (Path(path).read_text() if path
                                                                  else self.stdout())[-3000:]))
            time.sleep(0.05)

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
        raise AssertionError("no VmRSS")

    def threads(self):
        with open("/proc/%d/status" % self.pid) as f:
            for ln in f:
                if ln.startswith("Threads:"):
                    return int(ln.split()[1])
        return 0


def http_client(gw, **kw):
    """An httpx client aimed at a Sluice (keep-alive, no proxies from the environment)."""
    import httpx
    kw.setdefault("timeout", 10.0)
    return httpx.Client(base_url=gw.url(""), trust_env=False, **kw)


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture
def upstreams(tmp_path):
    """start(n=1, names=None) -> list of Upstream (all stopped at teardown)."""
    started = []

    def start(n=1, names=None):
        names = list(names or [])
        while len(names) < n:
            names.append("u%d" % (len(started) + len(names) + 1))
        ups = []
        for nm in names:
            u = Upstream(nm, tmp_path)
            started.append(u)
            ups.append(u)
        return ups

    yield start
    for u in started:
        try:
            u.stop()
        except Exception:
            pass


@pytest.fixture
def sluice(tmp_path, upstreams, request):
    """start(config: dict or Lua text, ports=None, ready=True, name=...) -> Sluice.

    Teardown stops each with SIGTERM and fails on a non-zero exit or a sanitizer report."""
    started = []

    def start(config, ports=None, ready=True, name=None, **kw):
        nm = name or ("sluice%d" % (len(started) + 1) if started else "sluice")
        s = Sluice(tmp_path, config, ports=ports, name=nm, ready=False, **kw)
        started.append(s)
        if ready:
            s.wait_ready()
        return s

    yield start
    problems = []
    for s in started:
        try:
            problems += s.teardown_problems()
        except Exception as e:  # make sure the others are still stopped
            problems.append("%s teardown: %r" % (s.name, e))
            if s.proc.poll() is None:
                s.proc.kill()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for s in started:
            print("==== %s stderr (tail) ====\n%s" % (s.name, s.stderr()[-3000:]))
            print("==== %s stdout (tail) ====\n%s" % (s.name, s.stdout()[-3000:]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def base_config(port, servers, workers=2, pool=None, routes=None, limits=None, **top):
    """The usual config: one listener "public", one pool "web" (service "web"), catch-all route."""
    p = {"servers": [{"address": s} if isinstance(s, str) else s for s in servers]}
    p.update(pool or {})
    cfg = {
        "workers": workers,
        "listeners": [{"name": "public", "address": "127.0.0.1:%d" % port}],
        "pools": {"web": p},
        "services": {"web": {"pools": {"web": 100}}},
        "routes": routes or [{"name": "default", "match": {"path_prefix": "/"}, "service": "web"}],
        "access_log": {"path": "stdout"},
        "drain_timeout": "5s",
    }
    if limits:
        cfg["limits"] = limits
    cfg.update(top)
    return cfg


@pytest.fixture
def gateway(sluice, upstreams):
    """make(n=1, names=None, servers=None, **base_config kwargs) -> Sluice with .upstreams.

    Starts n demo upstreams (unless servers, a list of "ip:port"/dicts, is given) and a
    sluice proxying everything to them."""

    def make(n=1, names=None, servers=None, weights=None, **kw):
        ups = []
        if servers is None:
            ups = upstreams(n, names)
            servers = []
            for i, u in enumerate(ups):
                s = {"address": u.address}
                if weights:
                    s["weight"] = weights[i]
                servers.append(s)
        port = free_port()
        gw = sluice(base_config(port, servers, **kw))
        gw.upstreams = ups
        return gw

    return make


# The exact example config of the core-gateway issue; only the ports are substituted.
ISSUE_EXAMPLE_CONFIG = """\
return {
  workers = 2,
  listeners = { { name = "public", address = "127.0.0.1:@LISTEN@" } },
  pools = {
    web = {
      servers = { { address = "127.0.0.1:@S1@", weight = 3 }, { address = "127.0.0.1:@S2@", weight = 1 } },
      balance = "round_robin",            -- also "least_conn", "hash" (with hash_key = "header:x-user-id" / "client_ip" / "path")
      keepalive = { idle = 64, idle_timeout = "60s" },
      timeouts = { connect = "1s", response = "30s" },
    },
  },
  services = { web = { pools = { web = 100 } } },   -- a service splits traffic over pools by weight
  routes = {
    { match = { path = "/healthz" }, respond = { status = 200, body = "ok\\n" } },
    { match = { host = "*.example.com", path_prefix = "/static/" }, pool = "web" },  -- pool = shorthand for a one-pool service
    { match = { path_regex = "^/api/v[0-9]+/", methods = { "GET", "POST" }, headers = { ["x-env"] = "prod" } }, service = "web" },
    { match = { path_prefix = "/" }, service = "web" },
  },
  limits = { header_bytes = 16384, body_bytes = "10m", client_header_timeout = "10s", keepalive_timeout = "75s" },
  access_log = { path = "stdout" },     -- one JSON object a line
}
"""


def issue_example_config(listen, s1, s2):
    return (ISSUE_EXAMPLE_CONFIG.replace("@LISTEN@", str(listen)).replace("@S1@", str(s1))
            .replace("@S2@", str(s2)))
