"""sluice check / run on bad config input (issue 17): values of the wrong type
where the schema wants a list, and (below) config files that are not regular
files. Each must end with exit status 1 and a "FILE: PATH: message" line,
never a crash or a hang. The sweep over every key and every Lua type is the
unit program t/unit/check_conf_sweep; this file checks the real binary."""

import os
import re

import pytest

from conftest import check_sanitizers, free_port, run_sluice

POOL_SERVER = '{ "127.0.0.1:9001" }'


def config(port, pool_extra):
    return ('return { listeners = { { address = "127.0.0.1:%d" } },\n'
            '  pools = { web = { servers = %s, %s } },\n'
            '  routes = { { match = { path_prefix = "/" }, pool = "web" } } }\n' % (port, POOL_SERVER, pool_extra))


LIST_CASES = [
    ('retry = { on = "5xx" }', "pools.web.retry.on"),
    ("retry = { on = 503 }", "pools.web.retry.on"),
    ("retry = { on = true }", "pools.web.retry.on"),
    ("retry = { on = function() end }", "pools.web.retry.on"),
    ("failure_statuses = 503", "pools.web.failure_statuses"),
    ('failure_statuses = "503"', "pools.web.failure_statuses"),
    ("failure_statuses = 0/0", "pools.web.failure_statuses"),
    ("failure_statuses = false", "pools.web.failure_statuses"),
]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("extra,path", LIST_CASES)
def test_a_scalar_where_a_list_belongs(tmp_path, command, extra, path):
    p = tmp_path / "sluice.lua"
    p.write_text(config(free_port(), extra))
    r = run_sluice([command, "-c", str(p)], timeout=20)
    check_sanitizers(r.stderr)
    assert r.returncode == 1, "exit %r (a negative status is a signal): %s" % (r.returncode, r.stderr)
    assert re.search(r"^%s: %s: expected a list like .*, got " % (re.escape(str(p)), re.escape(path)),
                     r.stderr, re.M), r.stderr


# ---- the config file itself: only a regular file, never waited on ----

def special_file(tmp_path, kind):
    if kind == "fifo":
        p = tmp_path / "sluice.lua"
        os.mkfifo(p)
        return str(p), "is a FIFO (named pipe), not a regular file"
    if kind == "directory":
        return str(tmp_path), "is a directory, not a regular file"
    if kind == "too-large":
        p = tmp_path / "sluice.lua"
        with open(p, "w") as f:
            f.write("-- " + "x" * (1 << 20) + "\n")
            f.truncate((16 << 20) + 1)
        return str(p), "larger than 16 MiB, the most a config file may have"
    return kind, "is a character device (like /dev/zero), not a regular file"


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/urandom", "/dev/null", "directory", "too-large"])
def test_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path, command, kind):
    path, why = special_file(tmp_path, kind)
    r = run_sluice([command, "-c", path], timeout=20)  # a FIFO used to block here for ever
    check_sanitizers(r.stderr)
    assert r.returncode == 1, r.stderr
    assert "%s: cannot read: %s" % (path, why) in r.stderr, r.stderr


def test_file_helper_refuses_proc_files(tmp_path):
    p = tmp_path / "sluice.lua"
    p.write_text('return { listeners = { { address = "127.0.0.1:%d" } },\n'
                 '  routes = { { respond = { body = file("/proc/self/status") } } } }\n' % free_port())
    r = run_sluice(["check", "-c", str(p)], timeout=20)
    assert r.returncode == 1, r.stderr
    assert ('%s:2: file("/proc/self/status"): /proc/self/status has more bytes than its size says (0): '
            'a /proc or /sys file' % p) in r.stderr, r.stderr


@pytest.mark.parametrize("address,why", [
    ("999.1.1.1:80", '"999.1.1.1" is not an IPv4 address'),
    ("0:80", '"0" is not an IPv4 address'),
])
def test_addresses_that_look_numeric_are_not_host_names(tmp_path, address, why):
    p = tmp_path / "sluice.lua"
    p.write_text('return { listeners = { { address = "%s" } } }\n' % address)
    r = run_sluice(["check", "-c", str(p)], timeout=20)
    assert r.returncode == 1, r.stderr
    assert "%s: listeners[1].address: %s: %s (write four numbers" % (p, address, why) in r.stderr, r.stderr


def test_backtracking_pattern_in_the_config_is_stopped(tmp_path):
    # issue 17: this ran for minutes inside one C call, out of the instruction budget's reach
    p = tmp_path / "sluice.lua"
    p.write_text('local x = string.find(string.rep("a", 3000), string.rep("a*", 8) .. "b")\n'
                 'return { listeners = { { address = "127.0.0.1:%d" } } }\n' % free_port())
    r = run_sluice(["check", "-c", str(p)], timeout=30)
    check_sanitizers(r.stderr)
    assert r.returncode == 1, r.stderr
    assert re.search(r"^%s:1: string\.find: (pattern too slow|time limit reached)" % re.escape(str(p)),
                     r.stderr, re.M), r.stderr


def log_config(port, key, path):
    return ('return { listeners = { { address = "127.0.0.1:%d" } },\n'
            '  pools = { web = { servers = %s } },\n'
            '  routes = { { match = { path_prefix = "/" }, pool = "web" } },\n'
            '  %s = { path = "%s" } }\n' % (port, POOL_SERVER, key, path))


@pytest.mark.parametrize("key,commands", [("access_log", ["check", "run"]), ("error_log", ["run"])])
def test_a_log_path_that_is_a_fifo_is_refused_not_waited_on(tmp_path, key, commands):
    """Opening a FIFO for writing waits for a reader: the gateway would hang
    at start (or a worker block on a full pipe). Log paths must be files or
    character devices; /dev/null is fine."""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    conf = tmp_path / "c.lua"
    conf.write_text(log_config(free_port(), key, fifo))
    for command in commands:
        r = run_sluice([command, "-c", str(conf)], timeout=20)
        check_sanitizers(r.stderr)
        assert r.returncode == 1, (command, r.stderr)
        assert ('cannot open "%s" for appending: it is a FIFO' % fifo) in r.stderr, r.stderr
    conf.write_text(log_config(free_port(), key, "/dev/null"))
    r = run_sluice(["check", "-c", str(conf)], timeout=20)
    assert r.returncode == 0, r.stderr
