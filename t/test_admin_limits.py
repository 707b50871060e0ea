"""The admin socket against clients that misbehave: a last command without
its newline, a client that never reads its answers, idle connections that
would hold every slot, control bytes echoed back (docs/admin.md, "Limits")."""

import json
import os
import socket
import threading
import time

import pytest

from conftest import run_sluice, wait_until
from test_res_admin import ctl, ctl_ok, sockdir, start  # noqa: F401  (sockdir is a fixture)


def start_with(sluice, upstreams, sockdir, **admin_keys):
    """start() with extra keys in the admin table."""
    from conftest import base_config, free_port
    ups = upstreams(1)
    sock = os.path.join(sockdir, "admin.sock")
    gw = sluice(base_config(free_port(), [u.address for u in ups], admin=dict(socket=sock, **admin_keys)))
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    gw.sock = sock
    return gw


def connect(sock):
    # the socket file appears at bind(), a moment before listen(): retry a refusal briefly
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(sock)
            return s
        except ConnectionRefusedError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def read_all(s, limit=1 << 26):
    out = bytearray()
    while len(out) < limit:
        b = s.recv(65536)
        if not b:
            break
        out += b
    return bytes(out)


def admin_stats(sock):
    rc, out, err = ctl(sock, "show", "admin", json_out=True)
    assert rc == 0, (out, err)
    return json.loads(out)


def test_last_command_without_newline_is_applied(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    a, b = gw.ups[0].address, gw.ups[1].address
    s = connect(gw.sock)
    s.sendall(("show pools\ndrain web %s" % a).encode())
    s.shutdown(socket.SHUT_WR)
    out = read_all(s).decode()
    s.close()
    assert out.splitlines()[0].startswith("POOL"), out
    assert out.rstrip("\n").splitlines()[-1] == "pool web server %s: draining, no new requests (0 requests in flight will finish)" % a, out
    # a lone command without a newline
    s = connect(gw.sock)
    s.sendall(("set weight web %s 7 --json" % b).encode())
    s.shutdown(socket.SHUT_WR)
    j = json.loads(read_all(s))
    s.close()
    assert j["ok"] is True and "weight 1 -> 7" in j["changed"]
    diff = ctl_ok(gw.sock, "show", "diff")
    assert "pool web server %s: drained" % a in diff and "pool web server %s: weight 1 -> 7" % b in diff


def test_client_that_never_reads_is_paused_not_buffered(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    one = len(ctl_ok(gw.sock, "help").encode())
    rss0 = gw.rss_kb()
    n = 80000  # 400 KB of "help\n": about 110 MB of answers if nothing held them back
    s = connect(gw.sock)
    sender = threading.Thread(target=lambda: s.sendall(b"help\n" * n), daemon=True)
    sender.start()
    wait_until(lambda: admin_stats(gw.sock)["paused_unread"] >= 1, timeout=10, what="the connection paused")
    time.sleep(0.5)
    grown = gw.rss_kb() - rss0
    assert grown < 16 * 1024, "the gateway holds %d KiB more for a client that does not read" % grown
    # reading resumes it: every command is answered, none lost
    s.settimeout(30)
    got = 0
    while got < n * one:
        b = s.recv(1 << 20)
        assert b, "closed after %d of %d bytes" % (got, n * one)
        got += len(b)
    sender.join(10)
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b""
    s.close()
    assert got == n * one


def test_idle_connections_do_not_lock_out_ctl(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    idle = [connect(gw.sock) for _ in range(40)]
    try:
        # the default cap is 32: the 33rd and later are refused or make room,
        # and sluice ctl always gets in
        out = ctl_ok(gw.sock, "show", "pools")
        assert out.startswith("POOL")
        st = admin_stats(gw.sock)
        assert st["max_connections"] == 32 and st["connections"] <= 32
        assert st["evicted_idle"] >= 1
    finally:
        for s in idle:
            s.close()


def test_idle_admin_connection_is_closed(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    s = connect(gw.sock)
    s.settimeout(30)
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed by the gateway, not by our timeout
    assert time.monotonic() - t0 < 25
    s.close()
    assert admin_stats(gw.sock)["closed_idle"] >= 1


def test_max_connections_is_configurable(sluice, upstreams, sockdir):
    gw = start_with(sluice, upstreams, sockdir, max_connections=3)
    assert admin_stats(gw.sock)["max_connections"] == 3
    idle = [connect(gw.sock) for _ in range(3)]
    try:
        time.sleep(0.2)
        assert ctl_ok(gw.sock, "show", "pools").startswith("POOL")
        assert admin_stats(gw.sock)["evicted_idle"] >= 1
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("value", [0, 1025, "many", -1])
def test_bad_max_connections_is_refused(tmp_path, value):
    from conftest import base_config, config_to_lua, free_port
    cfg = base_config(free_port(), ["127.0.0.1:1"], admin={"socket": str(tmp_path / "a.sock"),
                                                            "max_connections": value})
    p = tmp_path / "c.lua"
    p.write_text(config_to_lua(cfg))
    r = run_sluice(["check", "-c", str(p)])
    assert r.returncode == 1 and "admin.max_connections" in r.stderr, r.stderr


def test_control_bytes_are_escaped_in_text_answers(sluice, upstreams, sockdir):
    gw = start(sluice, upstreams, sockdir)
    s = connect(gw.sock)
    s.sendall(b"set weight \x1b[31mred\x1b]0;x\x07 127.0.0.1:1 3\n")
    s.sendall("drain wéb\u009b 127.0.0.1:1\n".encode())
    s.shutdown(socket.SHUT_WR)
    out = read_all(s)
    s.close()
    assert b"\x1b" not in out and b"\x07" not in out, out
    assert out.startswith(b"error: "), out
    s = connect(gw.sock)
    s.sendall("drain w\u009bb 127.0.0.1:1\n".encode())
    s.shutdown(socket.SHUT_WR)
    out = read_all(s)
    s.close()
    assert out == b'error: unknown pool "w\\xc2\\x9bb" (show pools lists them)\n', out


def test_rollout_answers_escape_names_like_every_answer(sluice, upstreams, sockdir):
    """The rollout commands write their errors through the same writer as the
    rest (admin_reply.h): a C1 control a client typed comes back as \\xHH,
    and the JSON form escapes it as its code point \\u009b (json_str.h): the same text."""
    gw = start(sluice, upstreams, sockdir)
    s = connect(gw.sock)
    s.sendall("rollout status w\u009bb\nrollout status w\u009bb --json\n".encode())
    s.shutdown(socket.SHUT_WR)
    out = read_all(s)
    s.close()
    text, js, rest = out.split(b"\n", 2)
    assert text == b'error: no rollout for service "w\\xc2\\x9bb" (rollout status lists them)', out
    assert json.loads(js) == {"ok": False, "error": 'no rollout for service "w\u009bb" (rollout status lists them)'}, js
    assert b'\\"w\\u009bb\\"' in js, js
    assert rest == b"", out
