"""sluice version / check / run: command line behaviour and config validation."""

import re
import socket
import time

import pytest

from conftest import (SRC_DIR, base_config, config_to_lua, free_port, issue_example_config, run_sluice)

LIBS = ("libevent", "openssl", "pcre2", "lua", "hiredis", "nghttp2")


def test_version_lines():
    r = run_sluice(["version"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines, "no output"
    m = re.match(r"^sluice (\d+\.\d+\.\d+)\b", lines[0])
    assert m, "first line %r is not 'sluice X.Y.Z'" % lines[0]
    ac = SRC_DIR / "configure.ac"
    if ac.exists():
        am = re.search(r"AC_INIT\(\[sluice\],\s*\[([^\]]+)\]", ac.read_text())
        if am:
            assert m.group(1) == am.group(1), "version differs from configure.ac"
    rest = lines[1:]
    for lib in LIBS:
        hits = [l for l in rest if re.search(r"\b%s\b" % lib, l, re.I)]
        assert hits, "no line for %s in %r" % (lib, rest)
        assert re.search(r"\d+\.\d+", hits[0]), "no version number on %r" % hits[0]


def test_no_command_or_unknown_command_fails():
    r = run_sluice([])
    assert r.returncode != 0
    r = run_sluice(["frobnicate"])
    assert r.returncode != 0
    assert r.stderr.strip(), "no usage/error message on stderr"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_check_good_config_prints_one_line(tmp_path):
    cfg = base_config(free_port(), ["127.0.0.1:9001", "127.0.0.1:9002"])
    p = write(tmp_path, "good.lua", config_to_lua(cfg))
    r = run_sluice(["check", "-c", str(p)])
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 and r.stdout.strip(), "stdout must be one summary line: %r" % r.stdout


def test_check_issue_example_config(tmp_path):
    p = write(tmp_path, "sluice.lua", issue_example_config(free_port(), 9001, 9002))
    r = run_sluice(["check", "-c", str(p)])
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 and r.stdout.strip()


def test_check_accepts_duration_and_size_units(tmp_path):
    cfg = base_config(free_port(), ["127.0.0.1:9001"],
                      pool={"keepalive": {"idle": 8, "idle_timeout": "1500ms"},
                            "timeouts": {"connect": "250ms", "response": "2m"}},
                      limits={"header_bytes": "16k", "request_line_bytes": 4096, "max_headers": 50,
                              "body_bytes": "1g", "client_header_timeout": "10s", "client_body_timeout": "1m",
                              "send_timeout": "1h", "keepalive_timeout": "75s"},
                      drain_timeout="30s", heap_keep_free="256m")
    p = write(tmp_path, "units.lua", config_to_lua(cfg))
    r = run_sluice(["check", "-c", str(p)])
    assert r.returncode == 0, r.stderr


BAD_CONFIG = """\
return {
  workers = 1,
  listeners = { { name = "public", address = "127.0.0.1:%d" } },
  pools = {
    web = {
      servers = { { address = "127.0.0.1:9001" } },
      balance = "random",
      timeouts = { connect = "1 sec" },
    },
  },
  services = { web = { pools = { web = 100 } } },
  routes = {
    { match = { path = "/" }, service = "web" },
    { match = { path_prefix = "/api/" }, service = "api" },
    { match = { path_prefix = "/x/" }, pool = "nope" },
  },
  limits = { body_bytes = "10 parsecs" },
}
"""


def test_check_reports_every_error_with_path(tmp_path):
    write(tmp_path, "x.lua", BAD_CONFIG % free_port())
    r = run_sluice(["check", "-c", "x.lua"], cwd=str(tmp_path))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert 'x.lua: routes[2].service: unknown service "api"' in lines, lines
    others = [l for l in lines if not re.match(r"^x\.lua: \S+: .+", l)]
    # one error a line "FILE: PATH: message"; at most one closing summary line besides
    assert len(others) <= 1 and (not others or others[0] == lines[-1]), "stray stderr lines: %r" % others
    lines = [l for l in lines if l not in others]
    expected = ["routes[3].pool", "balance", "timeouts.connect", "limits.body_bytes"]
    for frag in expected:
        assert any(frag in l.split(": ")[1] for l in lines), "no error naming %s in %r" % (frag, lines)
    assert len(lines) >= 5


@pytest.mark.parametrize("value,why", [
    ('"2g"', "out of range (0 to 1g)"),
    ('"lots"', "size"),
    ("-1", "a whole number from 0"),
])
def test_check_heap_keep_free_out_of_range(tmp_path, value, why):
    cfg = config_to_lua(base_config(free_port(), ["127.0.0.1:9001"]))
    write(tmp_path, "x.lua", cfg.replace("return {", "return {\n  heap_keep_free = %s," % value, 1))
    r = run_sluice(["check", "-c", "x.lua"], cwd=str(tmp_path))
    assert r.returncode == 1
    line = [l for l in r.stderr.splitlines() if l.startswith("x.lua: heap_keep_free: ")]
    assert line and why in line[0], r.stderr


def test_check_bad_regex(tmp_path):
    cfg = base_config(free_port(), ["127.0.0.1:9001"],
                      routes=[{"match": {"path_regex": "^/(unclosed"}, "service": "web"}])
    write(tmp_path, "x.lua", config_to_lua(cfg))
    r = run_sluice(["check", "-c", "x.lua"], cwd=str(tmp_path))
    assert r.returncode == 1
    assert any(l.startswith("x.lua: routes[1].match.path_regex: ") for l in r.stderr.splitlines()), r.stderr


def test_check_lua_syntax_error(tmp_path):
    write(tmp_path, "x.lua", "return {\n  workers = 1,\n  listeners = {\n")
    r = run_sluice(["check", "-c", "x.lua"], cwd=str(tmp_path))
    assert r.returncode == 1
    assert "x.lua" in r.stderr


def test_check_lua_runtime_error_and_type_error(tmp_path):
    write(tmp_path, "x.lua", 'error("boom")\n')
    r = run_sluice(["check", "-c", "x.lua"], cwd=str(tmp_path))
    assert r.returncode == 1 and "boom" in r.stderr
    cfg = base_config(free_port(), ["127.0.0.1:9001"])
    cfg["workers"] = "two"
    write(tmp_path, "y.lua", config_to_lua(cfg))
    r = run_sluice(["check", "-c", "y.lua"], cwd=str(tmp_path))
    assert r.returncode == 1
    assert any(l.startswith("y.lua: workers: ") for l in r.stderr.splitlines()), r.stderr


def test_config_sandbox_has_no_os_or_io(tmp_path):
    marker = tmp_path / "pwned"
    write(tmp_path, "x.lua", 'io.open(%r, "w"):write("x")\nos.exit(3)\nreturn {}\n' % str(marker))
    r = run_sluice(["check", "-c", "x.lua"], cwd=str(tmp_path))
    assert r.returncode == 1, "config could use io/os: rc=%d" % r.returncode
    assert not marker.exists()
    write(tmp_path, "y.lua", 'os.exit(3)\nreturn {}\n')
    r = run_sluice(["check", "-c", "y.lua"], cwd=str(tmp_path))
    assert r.returncode == 1


def test_check_missing_file(tmp_path):
    r = run_sluice(["check", "-c", str(tmp_path / "nope.lua")])
    assert r.returncode == 1
    assert "nope.lua" in r.stderr


def test_run_refuses_bad_config(tmp_path):
    port = free_port()
    write(tmp_path, "x.lua", BAD_CONFIG % port)
    t0 = time.monotonic()
    r = run_sluice(["run", "-c", "x.lua"], cwd=str(tmp_path), timeout=15)
    assert r.returncode == 1
    assert time.monotonic() - t0 < 10
    assert 'x.lua: routes[2].service: unknown service "api"' in r.stderr
    s = socket.socket()
    try:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "something listens on the port of a refused config"
    finally:
        s.close()


def test_run_with_issue_example_config(tmp_path, sluice, upstreams):
    a, b = upstreams(2, ["A", "B"])
    port = free_port()
    gw = sluice(issue_example_config(port, a.port, b.port), ports=[port])
    import httpx
    with httpx.Client(trust_env=False, timeout=10) as c:
        r = c.get(gw.url("/healthz"))
        assert r.status_code == 200 and r.text == "ok\n"
        seen = set()
        for _ in range(8):
            r = c.get(gw.url("/anything"))
            assert r.status_code == 200
            seen.add(r.json()["server"])
        assert seen == {"A", "B"}
        r = c.get(gw.url("/static/x"), headers={"Host": "img.example.com"})
        assert r.status_code == 200 and r.json()["target"] == "/static/x"
        r = c.post(gw.url("/api/v2/items"), headers={"x-env": "prod"}, content=b"abc")
        assert r.status_code == 200 and r.json()["body_len"] == 3
    entries = gw.wait_log(target="/healthz")
    assert entries[0]["status"] == 200
