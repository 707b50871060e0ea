"""`sluice ctl reopen-logs` (issue 14): what SIGUSR1 does, through the admin
socket, for logrotate setups that prefer a command to a signal."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, free_port, wait_until


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sluice-reopen-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctl(sock, *args):
    return subprocess.run([SLUICE_BIN, "ctl", "-s", sock] + list(args), capture_output=True, text=True, timeout=15)


def test_ctl_reopen_logs_moves_to_a_fresh_access_log(sluice, upstreams, sockdir, tmp_path):
    (u,) = upstreams(1)
    path = tmp_path / "access.log"
    sock = os.path.join(sockdir, "admin.sock")
    gw = sluice(base_config(free_port(), [u.address], admin={"socket": sock}, access_log={"path": str(path)}))
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    with RawConn(gw.port) as c:
        assert c.request("GET", "/before-rotate").status == 200
    gw.wait_log(target="/before-rotate", path=path)
    rotated = tmp_path / "access.log.1"
    os.rename(path, rotated)
    p = ctl(sock, "reopen-logs")
    assert p.returncode == 0 and "log files reopened" in p.stdout, p.stdout + p.stderr
    assert path.exists()
    with RawConn(gw.port) as c:
        assert c.request("GET", "/after-rotate").status == 200
    gw.wait_log(target="/after-rotate", path=path)
    assert "/after-rotate" not in rotated.read_text() and "/before-rotate" in rotated.read_text()
    assert "access log reopened" in gw.stderr() and "admin: reopening log files" in gw.stderr()
    p = ctl(sock, "--json", "reopen-logs")
    assert p.returncode == 0 and json.loads(p.stdout) == {"ok": True, "reopened": True}, p.stdout
    p = ctl(sock, "reopen-logs", "now")
    assert p.returncode != 0 and "unknown command" in (p.stdout + p.stderr)
    assert "reopen-logs" in ctl(sock, "help").stdout
