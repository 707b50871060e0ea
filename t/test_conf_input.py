"""sluice check / run on bad config input (issue 17): values of the wrong type
where the schema wants a list, and (below) config files that are not regular
files. Each must end with exit status 1 and a "FILE: PATH: message" line,
never a crash or a hang. The sweep over every key and every Lua type is the
unit program t/unit/check_conf_sweep; this file checks the real binary."""

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
