"""The state file against what may sit at its path (docs/admin.md, "The
state file"): an unreadable file is never overwritten until an operator says
so, a symlink, device or FIFO is neither read nor replaced, a huge or hostile
file cannot hang start or flood the log, and lines are parsed by length."""

import json
import os
import shutil
import stat
import tempfile

import pytest

from conftest import Sluice, base_config, free_port, wait_until
from test_res_admin import ctl, ctl_ok, sockdir  # noqa: F401  (sockdir is a fixture)

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the case needs a second user (the test "
                                                           "runs sluice as uid 65534 against a file root owns)")


@pytest.fixture
def opendir(sockdir):
    # a directory every user may write to, as a state file's directory often is for the service user
    os.chmod(sockdir, 0o777)
    return sockdir


@pytest.fixture
def gateways(opendir):
    started = []

    def start(ups, state_file, user=None, ready=True):
        sock = os.path.join(opendir, "admin%d.sock" % len(started))
        cfg = base_config(free_port(), [u.address for u in ups], admin={"socket": sock}, state_file=state_file)
        gw = Sluice(opendir, cfg, name="sluice%d" % len(started), ready=False, user=user)
        started.append(gw)
        if ready:
            gw.wait_ready()
            wait_until(lambda: os.path.exists(sock), what="admin socket")
        gw.sock = sock
        return gw

    yield start
    problems = []
    for gw in started:
        problems += gw.teardown_problems()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def as_user(gw, user, *args):
    rc, out, err = ctl(gw.sock, *args, user=user)
    return rc, out, err


@needs_root
def test_unreadable_state_file_is_not_overwritten_until_forced(upstreams, gateways, opendir):
    ups = upstreams(2)
    a, b = ups[0].address, ups[1].address
    path = os.path.join(opendir, "state")
    saved = "# kept by an earlier run\ndrain web %s\n" % a
    with open(path, "w") as f:
        f.write(saved)
    os.chmod(path, 0o600)  # root's, unreadable to the service user
    gw = gateways(ups, path, user=NOBODY)
    err = gw.stderr()
    assert "state file: cannot read it" in err and path in err and "Permission denied" in err, err
    # a change applies, but the file that holds the saved drain is left alone
    rc, out, e = as_user(gw, NOBODY, "set", "weight", "web", b, "3")
    assert rc == 0 and "weight 1 -> 3" in out, (out, e)
    assert "warning: applied, but not saved" in out and "save-state --force" in out, out
    assert open(path).read() == saved and os.stat(path).st_uid == 0
    # a no-op change neither
    as_user(gw, NOBODY, "enable", "web", b)
    assert open(path).read() == saved
    rc, out, e = as_user(gw, NOBODY, "show", "state-file")
    assert "held: unreadable at start" in out and "Permission denied" in out, out
    rc, out, e = as_user(gw, NOBODY, "show", "config")
    assert "NOT WRITTEN" in out and "Permission denied" in out and "save-state --force" in out, out
    rc, out, e = as_user(gw, NOBODY, "--json", "show", "config")
    j = json.loads(out)
    assert j["state_file_writable"] is False and "Permission denied" in j["state_file_problem"], j
    rc, out, e = as_user(gw, NOBODY, "save-state")
    assert rc == 1 and "not overwritten" in out and open(path).read() == saved, out
    # the operator decides: the running state replaces the file
    rc, out, e = as_user(gw, NOBODY, "save-state", "--force")
    assert rc == 0 and "state file saved" in out, (out, e)
    assert os.stat(path).st_uid == NOBODY
    assert "weight web %s 3" % b in open(path).read()
    assert "replaced by save-state --force" in gw.stderr()
    # and from then on every change is written
    as_user(gw, NOBODY, "disable", "web", a)
    assert "disable web %s" % a in open(path).read()


def test_symlink_is_neither_read_nor_replaced(upstreams, gateways, opendir):
    ups = upstreams(2)
    a = ups[0].address
    elsewhere = tempfile.mkdtemp(prefix="sluice-elsewhere-", dir="/tmp")
    try:
        target = os.path.join(elsewhere, "precious")
        with open(target, "w") as f:
            f.write("drain web %s\n" % a)
        link = os.path.join(opendir, "state")
        os.symlink(target, link)
        gw = gateways(ups, link)
        assert "is a symbolic link, not a regular file" in gw.stderr()
        assert "no differences" in ctl_ok(gw.sock, "show", "diff")  # not applied through the link
        out = ctl_ok(gw.sock, "set", "weight", "web", a, "4")
        assert "not saved" in out and "symbolic link" in out, out
        assert os.path.islink(link) and os.readlink(link) == target
        assert open(target).read() == "drain web %s\n" % a
        rc, out, err = ctl(gw.sock, "save-state", "--force")
        assert rc == 1 and "never replaces it" in out, out
        assert os.path.islink(link)
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


@needs_root
@pytest.mark.parametrize("dev,what", [((1, 3), "null"), ((1, 5), "zero"), ((1, 9), "urandom")])
def test_device_node_is_neither_read_nor_replaced(upstreams, gateways, opendir, dev, what):
    # a device node of our own (never the system's /dev/null): what state_file = "/dev/null" would do
    ups = upstreams(1)
    path = os.path.join(opendir, what)
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*dev))
    gw = gateways(ups, path)
    err = gw.stderr()
    assert "is a character device, not a regular file" in err, err[-2000:]
    assert len(err) < 10000, "start logged %d bytes" % len(err)
    out = ctl_ok(gw.sock, "drain", "web", ups[0].address)
    assert "not saved" in out
    st = os.lstat(path)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(*dev)


def test_fifo_does_not_hang_start(upstreams, gateways, opendir):
    ups = upstreams(1)
    path = os.path.join(opendir, "state")
    os.mkfifo(path)
    gw = gateways(ups, path)  # wait_ready fails if start hangs
    assert "is a FIFO, not a regular file" in gw.stderr()
    ctl_ok(gw.sock, "drain", "web", ups[0].address)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def test_many_bad_lines_log_a_bounded_number_of_warnings(upstreams, gateways, opendir):
    ups = upstreams(1)
    path = os.path.join(opendir, "state")
    with open(path, "w") as f:
        f.write("bogus line\n" * 100000)
        f.write("drain web %s\n" % ups[0].address)
    gw = gateways(ups, path)
    lines = [e for e in gw.log_entries() if e.get("msg", "").startswith("state file")]
    skipped = [e for e in lines if e["msg"] == "state file: line skipped"]
    assert len(skipped) == 20 and all(e["file"] == path for e in skipped)
    summary = [e for e in lines if e["msg"] == "state file: more lines skipped than logged"]
    assert summary and summary[0]["not_logged"] == 100000 - 20
    applied = [e for e in lines if e["msg"] == "state file applied"][0]
    assert applied["changes"] == 1 and applied["skipped"] == 100000
    assert "draining" in ctl_ok(gw.sock, "show", "servers")


def test_oversized_state_file_is_held_not_read(upstreams, gateways, opendir):
    ups = upstreams(1)
    path = os.path.join(opendir, "state")
    with open(path, "wb") as f:
        f.truncate(17 << 20)
    gw = gateways(ups, path)
    assert "larger than 16 MiB" in gw.stderr()
    out = ctl_ok(gw.sock, "drain", "web", ups[0].address)
    assert "not saved" in out and os.path.getsize(path) == 17 << 20


def test_long_line_with_a_nul_is_rejected_whole(upstreams, gateways, opendir):
    ups = upstreams(1)
    a = ups[0].address
    path = os.path.join(opendir, "state")
    # fgets() cut this line at 1,023 bytes and strlen() stopped at the NUL, so
    # the tail was read as a line of its own: a comment turned into a drain
    head = b"# note\x00"
    line = head + b"x" * (1023 - len(head)) + ("drain web %s" % a).encode()
    with open(path, "wb") as f:
        f.write(line + b"\n")
        f.write(b"disable web " + a.encode() + b"\x00 trailing\n")
        f.write(b"weight web " + a.encode() + b" 7\n")
    gw = gateways(ups, path)
    skipped = [e for e in gw.log_entries() if e.get("msg") == "state file: line skipped"]
    assert [(e["line"], e["why"]) for e in skipped] == [(1, "line too long"), (2, "not text (a NUL or control byte)")]
    diff = ctl_ok(gw.sock, "show", "diff")
    assert diff.strip() == "pool web server %s: weight 1 -> 7" % a, diff


def test_errors_name_the_path_and_the_reason(upstreams, gateways, opendir):
    ups = upstreams(1)
    path = os.path.join(opendir, "state")
    os.mkdir(path)
    gw = gateways(ups, path)
    e = [x for x in gw.log_entries() if x.get("msg", "").startswith("state file: not a regular file")][0]
    assert e["file"] == path and e["error"] == "%s is a directory, not a regular file" % path
    rc, out, err = ctl(gw.sock, "--json", "show", "state-file")
    j = json.loads(out)
    assert j["writable"] is False and j["path"] == path and "directory" in j["problem"]
