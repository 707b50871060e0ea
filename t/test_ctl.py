"""`sluice ctl` against sockets that misbehave: it never waits without end
(one deadline for the whole exchange, connect included), never prints more
than its cap, never lets the answer drive the terminal, and names what is
wrong with a path that is not a socket."""

import socket
import subprocess
import threading
import time

import pytest

from conftest import SLUICE_BIN


def ctl(sock, *args, timeout=None, env=None):
    cmd = [SLUICE_BIN, "ctl", "-s", sock]
    if timeout is not None:
        cmd += ["--timeout", str(timeout)]
    # the subprocess bound only catches a hang; --timeout is what is tested
    p = subprocess.run(cmd + list(args), capture_output=True, timeout=60, env=env)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


class FakeAdmin:
    """A Unix-socket server that reads a command line and answers with behave(conn)."""

    def __init__(self, path, behave, backlog=16, accept=True):
        self.path = path
        self.behave = behave
        self.stop_flag = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(backlog)
        self.conns = []
        self.thread = None
        if accept:
            self.thread = threading.Thread(target=self.serve, daemon=True)
            self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop_flag.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.run_one, args=(c,), daemon=True).start()

    def run_one(self, c):
        try:
            c.settimeout(5)
            c.recv(4096)
            self.behave(c, self.stop_flag)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop_flag.set()
        self.sock.close()
        if self.thread:
            self.thread.join(5)
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def fake(tmp_path):
    made = []

    def make(behave, **kw):
        f = FakeAdmin(str(tmp_path / ("admin%d.sock" % len(made))), behave, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def silent(c, stop):
    stop.wait(30)


def trickling(c, stop):
    for b in b"show pools answer that never ends\n" * 10:
        if stop.wait(1.5):
            return
        c.sendall(bytes([b]))


def endless(c, stop):
    chunk = b"x" * 65535 + b"\n"
    while not stop.is_set():
        c.sendall(chunk)


def escapes(c, stop):
    c.sendall(b"error: unknown pool \"\x1b[31mred\x1b]0;owned\x07\" \x9b\xc2\x9b\r\x7f caf\xc3\xa9 \xe2\x82 ok\n")


def test_silent_server_hits_the_deadline(fake):
    f = fake(silent)
    t0 = time.monotonic()
    rc, out, err = ctl(f.path, "show", "pools", timeout=1)
    assert rc == 2 and out == b"", (rc, out, err)
    assert "did not answer within 1 s" in err and "--timeout" in err, err
    assert time.monotonic() - t0 < 30


def test_trickling_server_hits_the_deadline_with_what_came(fake):
    f = fake(trickling)
    rc, out, err = ctl(f.path, "show", "pools", timeout=4)
    assert rc == 2, (rc, out, err)
    assert 1 <= len(out) <= 4 and b"show pools".startswith(out), out
    assert "did not finish its answer within 4 s" in err, err


def test_endless_server_is_cut_at_the_cap(fake):
    f = fake(endless)
    rc, out, err = ctl(f.path, "show", "pools", timeout=30)
    assert rc == 2, (rc, len(out), err)
    assert len(out) == 64 << 20
    assert "passed 64 MiB" in err, err


def test_default_deadline_is_ten_seconds(fake):
    f = fake(silent)
    t0 = time.monotonic()
    rc, out, err = ctl(f.path, "show", "pools")
    assert rc == 2 and "did not answer within 10 s" in err, err


def test_control_bytes_in_an_answer_are_escaped(fake):
    f = fake(escapes)
    rc, out, err = ctl(f.path, "show", "pools", timeout=5)
    assert rc == 1, (rc, out, err)
    assert out == (b"error: unknown pool \"\\x1b[31mred\\x1b]0;owned\\x07\" \\x9b\\xc2\\x9b\\x0d\\x7f "
                   b"caf\xc3\xa9 \\xe2\\x82 ok\n"), out
    assert b"\x1b" not in out and b"\x07" not in out and b"\r" not in out


def test_full_accept_queue_does_not_block_connect(fake):
    f = fake(silent, backlog=0, accept=False)
    # fill the accept queue of a server that never accepts
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(f.path)
            except BlockingIOError:
                s.close()
                break
            fillers.append(s)
        rc, out, err = ctl(f.path, "show", "pools", timeout=1)
        assert rc == 2, (rc, out, err)
        assert "cannot connect to %s within 1 s" % f.path in err and "accept queue" in err, err
    finally:
        for s in fillers:
            s.close()


def test_regular_file_is_named_as_such(tmp_path):
    p = tmp_path / "admin.sock"
    p.write_text("not a socket\n")
    rc, out, err = ctl(str(p), "show", "pools")
    assert rc == 2
    assert "%s is a regular file, not a socket" % p in err, err
    assert "Connection refused" not in err
    rc, out, err = ctl(str(tmp_path), "show", "pools")
    assert rc == 2 and "is a directory, not a socket" in err, err


def test_bad_timeout_is_a_usage_error(tmp_path):
    for bad in ("0", "-1", "abc", "nan", "1e9"):
        rc, out, err = ctl(str(tmp_path / "x.sock"), "show", "pools", timeout=bad)
        assert rc == 2 and "--timeout needs a number of seconds" in err, (bad, err)
