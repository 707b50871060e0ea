"""What the container image relies on: `sluice probe tcp` (its HEALTHCHECK),
SLUICE_LOG_LEVEL, the warnings of `sluice check` about secrets written inline,
and docker/sluice.lua (the image's env-driven config) serving real traffic."""

import os
import socket
import time

import pytest

import json

from conftest import (SRC_DIR, base_config, config_to_lua, curl, free_port, run_sluice)

CONTAINER_CONF = SRC_DIR / "docker" / "sluice.lua"


# --------------------------------------------------------------- sluice probe
def test_probe_tcp_open_port_exits_0():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        r = run_sluice(["probe", "tcp", "127.0.0.1:%d" % srv.getsockname()[1]])
        assert r.returncode == 0, r.stderr
        r = run_sluice(["probe", "tcp", "localhost:%d" % srv.getsockname()[1], "--timeout", "500ms"])
        assert r.returncode == 0, r.stderr
    finally:
        srv.close()


def test_probe_tcp_refused_exits_1_and_says_why():
    port = free_port()
    r = run_sluice(["probe", "tcp", "127.0.0.1:%d" % port])
    assert r.returncode == 1
    assert "127.0.0.1:%d" % port in r.stderr and "refused" in r.stderr.lower(), r.stderr


def test_probe_tcp_times_out_on_a_black_hole():
    # a listener whose accept queue is full does not complete new handshakes
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(c)
        time.sleep(0.2)
        t0 = time.monotonic()
        r = run_sluice(["probe", "tcp", "127.0.0.1:%d" % port, "--timeout", "300ms"])
        took = time.monotonic() - t0
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "within the timeout" in r.stderr, r.stderr
        assert took < 10, "the probe must give up at its timeout"
    finally:
        for c in fillers:
            c.close()
        srv.close()


@pytest.mark.parametrize("args, words", [
    (["probe"], "usage"),
    (["probe", "udp", "127.0.0.1:1"], "unknown probe"),
    (["probe", "tcp"], "needs an address"),
    (["probe", "tcp", "127.0.0.1:99999"], "port out of range"),
    (["probe", "tcp", "127.0.0.1:80", "--timeout", "2"], "not a duration"),
    (["probe", "tcp", "127.0.0.1:80", "extra"], "unexpected argument"),
])
def test_probe_usage_errors_exit_2(args, words):
    r = run_sluice(args)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert words in r.stderr, r.stderr


# --------------------------------------------------------------- SLUICE_LOG_LEVEL
def test_log_level_from_environment(tmp_path):
    p = tmp_path / "c.lua"
    p.write_text(config_to_lua(base_config(free_port(), ["127.0.0.1:9"])))
    env = dict(os.environ, SLUICE_LOG_LEVEL="loud")
    r = run_sluice(["check", "-c", str(p)], env=env)
    assert r.returncode == 2 and "SLUICE_LOG_LEVEL" in r.stderr and "loud" in r.stderr, r.stderr
    env["SLUICE_LOG_LEVEL"] = "warn"
    r = run_sluice(["check", "-c", str(p)], env=env)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------- inline secrets
def check(tmp_path, text, name="s.lua"):
    p = tmp_path / name
    p.write_text(text)
    return p, run_sluice(["check", "-c", str(p)])


CLEAN_TAIL = """
  listeners = { { address = "127.0.0.1:%d" } },
  pools = { web = { servers = { "127.0.0.1:9" } } },
  routes = { { service = "web" } },
  services = { web = { pools = { web = 1 } } },
}
""" % 18080


def test_check_warns_on_inline_secret_with_line_and_without_the_value(tmp_path):
    text = ('local cfg = {\n'
            '  -- password = "in a comment is fine"\n'
            '  extra = { api_token = "s3cr3t-VALUE-123" },\n'
            '}\n'
            'local db_password = "hunter2-VALUE"\n'
            'return {' + CLEAN_TAIL)
    p, r = check(tmp_path, text)
    assert r.returncode == 0, r.stderr   # a warning, not an error
    assert len(r.stdout.splitlines()) == 1, r.stdout
    lines = [l for l in r.stderr.splitlines() if "warning" in l]
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("%s:3: warning:" % p) and '"api_token"' in lines[0], lines
    assert lines[1].startswith("%s:5: warning:" % p) and '"db_password"' in lines[1], lines
    assert "VALUE" not in r.stderr, "a warning must never print the secret"
    assert "file(" in lines[0] and "env(" in lines[0], "the warning says how to fix it"


def test_check_warns_on_secret_looking_content(tmp_path):
    text = ('local k = [[\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n]]\n'
            'local aws = "AKIAABCDEFGHIJKLMNOP"\n'
            'local url = "redis://app:pa55word@redis:6379/0"\n'
            'return {' + CLEAN_TAIL)
    p, r = check(tmp_path, text)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if "warning" in l]
    assert len(lines) == 3, r.stderr
    assert lines[0].startswith("%s:1:" % p) and "PEM private key" in lines[0]
    assert lines[1].startswith("%s:6:" % p) and "AWS access key" in lines[1]
    assert lines[2].startswith("%s:7:" % p) and "URL with a password" in lines[2]
    assert "pa55word" not in r.stderr and "AKIAABCDEFGHIJKLMNOP" not in r.stderr


def test_check_warns_on_credentials_in_route_headers_and_tokens(tmp_path):
    text = ('local m = { headers = { ["authorization"] = "Bearer abcdefghijklmnop1234" } }\n'
            'local n = { headers = { ["x-api"] = "Basic dXNlcjpwYXNzd29yZA==" } }\n'
            'local jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"\n'
            'local gh = "ghp_0123456789abcdefABCDEF0123456789abcd"\n'
            'local t = { pass = "x1", auth = "y2" }\n'
            'return {' + CLEAN_TAIL)
    p, r = check(tmp_path, text)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if "warning" in l]
    assert [l.split(":")[1] for l in lines] == ["1", "2", "3", "4", "5", "5"], r.stderr
    assert '"authorization"' in lines[0]
    assert "HTTP Authorization credential" in lines[1]
    assert "JSON Web Token" in lines[2]
    assert "access token" in lines[3]
    for secret in ("abcdefghijklmnop1234", "dXNlcjpwYXNzd29yZA", "c2lnbmF0dXJl", "0123456789abcdef", "x1", "y2"):
        assert secret not in r.stderr


def test_check_does_not_warn_on_files_env_and_ordinary_keys(tmp_path):
    (tmp_path / "redis.pw").write_text("pw\n")
    text = ('local secret = env("APP_SECRET")\n'
            'local token = file("redis.pw")\n'
            '--[[ password = "old one" ]]\n'
            'local t = { password_file = "redis.pw", ["token_path"] = "/run/x", key = "client_ip",\n'
            '            hash_key = "header:x-user-id", per_token = { rate = 1 }, password = "" }\n'
            'local s, u = "a string -- with dashes", "http://example.com:80/path@x"\n'
            'local v = { passthrough = "yes", authority = "ca", b = "Bearer", key = "Basic auth", w = "eyJ" }\n'
            'return {' + CLEAN_TAIL)
    p, r = check(tmp_path, text)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr


def test_check_warns_on_bracketed_key_and_still_reports_errors(tmp_path):
    text = ('return {\n  x = { ["Secret"] = \'abc\' },\n' + CLEAN_TAIL.lstrip("\n"))
    p, r = check(tmp_path, text)
    assert r.returncode == 1, "the config error still fails the check"
    assert "%s:2: warning:" % p in r.stderr and '"secret"' in r.stderr, r.stderr
    assert "unknown key" in r.stderr, r.stderr


def test_shipped_configs_have_no_inline_secret():
    for cfg in [CONTAINER_CONF, SRC_DIR / "conf" / "sluice.lua"] + sorted((SRC_DIR / "conf").glob("examples/*.lua")):
        r = run_sluice(["check", "-c", str(cfg)])
        assert "warning" not in r.stderr, (cfg, r.stderr)


# --------------------------------------------------------------- docker/sluice.lua
def test_container_config_from_environment(tmp_path, upstreams, sluice):
    """docker/sluice.lua as the image runs it: listen address, upstreams, the
    canary split, the rate limit and the admin paths come from the environment."""
    blue, green = upstreams(2, ["blue", "green"])
    port = free_port()
    aport = free_port()
    sock = tmp_path / "admin.sock"
    env = {
        "SLUICE_LISTEN": "127.0.0.1:%d" % port,
        "SLUICE_ADMIN_HTTP": "127.0.0.1:%d" % aport,
        "SLUICE_UPSTREAMS": blue.address,
        "SLUICE_CANARY_UPSTREAMS": green.address,
        "SLUICE_CANARY_WEIGHT": "0",
        # one token a second after a burst of 5: the 8 requests below meet a 429 as long as they
        # take under 3 s (curl processes on a loaded machine); 5 a second refilled as fast as they came
        "SLUICE_RATE_LIMIT": "1",
        "SLUICE_RATE_BURST": "5",
        "SLUICE_WORKERS": "1",
        "SLUICE_ADMIN_SOCKET": str(sock),
        "SLUICE_STATE_FILE": str(tmp_path / "state"),
        "SLUICE_DRAIN_TIMEOUT": "5s",
    }
    gw = sluice(CONTAINER_CONF.read_text(), ports=[port], env=env)
    r = curl(["-s", "http://127.0.0.1:%d/healthz" % port])
    assert r.stdout == b"ok\n"
    # the image's HEALTHCHECK: /readyz on the admin HTTP listener
    r = run_sluice(["probe", "http", "http://127.0.0.1:%d/readyz" % aport])
    assert r.returncode == 0, r.stderr
    statuses, servers = [], set()
    for _ in range(8):
        r = curl(["-s", "-w", "\n%{http_code}", "http://127.0.0.1:%d/x" % port])
        body, code = r.stdout.rsplit(b"\n", 1)
        statuses.append(int(code))
        if code == b"200":
            servers.add(json.loads(body)["server"])
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:], statuses
    assert servers == {"blue"}, "canary weight 0 sends nothing to green"
    r = run_sluice(["ctl", "-s", str(sock), "set", "service-weights", "web", "stable=0", "canary=100"])
    assert r.returncode == 0, r.stderr
    time.sleep(1.2)  # the bucket refills
    r = curl(["-s", "http://127.0.0.1:%d/x" % port])
    assert b'"server": "green"' in r.stdout, r.stdout
    assert "service-weight web canary 100" in (tmp_path / "state").read_text()
    gw.stop()


def test_container_config_admin_http_default_and_off():
    env = dict(os.environ, SLUICE_ADMIN_HTTP="off")
    r = run_sluice(["check", "-c", str(CONTAINER_CONF)], env=env)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, SLUICE_ADMIN_HTTP="0.0.0.0:9901")
    r = run_sluice(["check", "-c", str(CONTAINER_CONF)], env=env)
    assert r.returncode == 1 and "http_token_file" in r.stderr, r.stderr


def test_container_config_refuses_half_a_tls_pair():
    env = dict(os.environ, SLUICE_TLS_CERT_FILE="/etc/sluice/tls.crt")
    r = run_sluice(["check", "-c", str(CONTAINER_CONF)], env=env)
    assert r.returncode == 1
    assert "SLUICE_TLS_CERT_FILE and SLUICE_TLS_KEY_FILE go together" in r.stderr, r.stderr
    env = dict(os.environ, SLUICE_RATE_LIMIT="lots")
    r = run_sluice(["check", "-c", str(CONTAINER_CONF)], env=env)
    assert r.returncode == 1 and "SLUICE_RATE_LIMIT=lots: expected a whole number" in r.stderr, r.stderr
