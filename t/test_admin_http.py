"""The admin HTTP listener (issue 14): /healthz, /readyz, /metrics (checked by
the real `promtool check metrics`), the status page and its JSON, 404/405,
strict parsing, keep-alive, and the bearer token a non-loopback address needs."""

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import SLUICE_BIN, RawConn, base_config, free_port, run_sluice, wait_until

PROMTOOL = shutil.which("promtool")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def http_get(port, path, headers=None, method="GET", host="127.0.0.1", timeout=5):
    req = urllib.request.Request("http://%s:%d%s" % (host, port, path), headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def start(sluice, upstreams, n=1, admin=None, pool=None, **kw):
    ups = upstreams(n)
    aport = free_port()
    a = {"http": "127.0.0.1:%d" % aport}
    a.update(admin or {})
    gw = sluice(base_config(free_port(), [u.address for u in ups], admin=a, pool=pool or {}, **kw))
    gw.aport = aport
    gw.ups = ups
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    return gw


def _can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def parse_metrics(text):
    """{(name, frozenset(labels)): value} from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, rest = series.split("{", 1)
            labels = frozenset((k, v.replace('\\"', '"').replace("\\\\", "\\"))
                               for k, v in LABEL_RE.findall(rest))
        else:
            name, labels = series, frozenset()
        out[(name, labels)] = float(value)
    return out


def metric(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def test_endpoints_and_promtool(sluice, upstreams):
    gw = start(sluice, upstreams, n=2)
    st, h, body = http_get(gw.aport, "/healthz")
    assert st == 200 and body == b"ok\n"
    st, h, body = http_get(gw.aport, "/readyz")
    assert st == 200 and body == b"ready\n"
    st, h, body = http_get(gw.aport, "/metrics")
    assert st == 200
    assert h["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    if PROMTOOL:
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
    m = parse_metrics(text)
    assert metric(m, "sluice_ready") == 1
    assert metric(m, "sluice_config_generation") == 1
    assert metric(m, "sluice_pool_servers", pool="web") == 2
    for u in gw.ups:
        assert metric(m, "sluice_server_up", pool="web", server=u.address) == 1
        assert metric(m, "sluice_server_breaker_state", pool="web", server=u.address, state="closed") == 1
        assert metric(m, "sluice_server_breaker_state", pool="web", server=u.address, state="open") == 0
    assert metric(m, "sluice_service_pool_weight", service="web", pool="web") == 100
    assert metric(m, "sluice_listener_info", listener="public", address="127.0.0.1:%d" % gw.port, tls="false") == 1
    assert any(k[0] == "sluice_build_info" for k in m)


def test_openmetrics_when_asked(sluice, upstreams):
    gw = start(sluice, upstreams)
    st, h, body = http_get(gw.aport, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert st == 200 and h["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE sluice_build info\n" in text and "\nsluice_build_info{" in text


def test_not_found_method_and_bad_requests(sluice, upstreams):
    gw = start(sluice, upstreams)
    for path in ("/nope", "/metrics/", "/healthz/x", "/../metrics"):
        st, _, body = http_get(gw.aport, path)
        assert st == 404, path
    st, h, _ = http_get(gw.aport, "/metrics", method="POST")
    assert st == 405 and h["Allow"] == "GET, HEAD"
    st, h, body = http_get(gw.aport, "/metrics", method="HEAD")
    assert st == 200 and body == b"" and int(h["Content-Length"]) > 100
    with RawConn(gw.aport) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        r = c.read_response()
        assert r.status == 413 and c.is_closed()
    with RawConn(gw.aport) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
        r = c.read_response()
        assert r.status == 400 and c.is_closed()
    with RawConn(gw.aport) as c:
        c.send(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 414
    with RawConn(gw.aport) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"b" * 9000 + b"\r\n\r\n")
        assert c.read_response().status == 431
    # the listener still answers after all that
    assert http_get(gw.aport, "/healthz")[0] == 200


def test_keep_alive_and_pipelining(sluice, upstreams):
    gw = start(sluice, upstreams)
    with RawConn(gw.aport) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\r\n"
               b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [c.read_response().status for _ in range(3)] == [200, 200, 404]
        r = c.request("GET", "/metrics", headers=[("Connection", "close")])
        assert r.status == 200 and b"sluice_ready 1" in r.body
        assert c.is_closed()


def test_connection_limit_and_idle_connections_do_not_block(sluice, upstreams):
    gw = start(sluice, upstreams)
    idle = [socket.create_connection(("127.0.0.1", gw.aport)) for _ in range(80)]
    try:
        # beyond the limit connections are closed at accept; the listener is not stuck
        wait_until(lambda: idle[-1].recv(1, socket.MSG_DONTWAIT) == b"" if _readable(idle[-1]) else False,
                   what="the 80th connection closed")
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: http_get(gw.aport, "/healthz")[0] == 200, what="healthz after the idle connections")


def _readable(s):
    import select
    return bool(select.select([s], [], [], 0)[0])


def test_status_page_and_json(sluice, upstreams):
    gw = start(sluice, upstreams, n=2)
    st, h, body = http_get(gw.aport, "/")
    assert st == 200 and h["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert '<meta http-equiv="refresh"' in page and "<script" not in page and "http://" not in page.split("</head>")[0]
    for u in gw.ups:
        assert 'data-server="%s"' % u.address in page
    st, h, body = http_get(gw.aport, "/?json")
    assert st == 200 and h["Content-Type"] == "application/json"
    j = json.loads(body)
    assert j["ready"] is True and j["generation"] == 1
    assert j["listeners"][0]["name"] == "public"
    assert j["services"][0] == {"name": "web", "split": [{"pool": "web", "weight": 100, "weight_set": False}]}
    servers = j["pools"][0]["servers"]
    assert sorted(s["address"] for s in servers) == sorted(u.address for u in gw.ups)
    assert all(s["health"] == "up" and s["breaker"] == "closed" for s in servers)


BREAKER = {"consecutive_failures": 3, "error_rate": 0.5, "min_requests": 20, "open_for": "30s",
           "max_open_for": "60s", "half_open_probes": 2, "window": "10s"}


def test_breaker_open_shows_in_metrics_and_status(sluice, upstreams):
    gw = start(sluice, upstreams, pool={"breaker": BREAKER}, workers=1)
    addr = gw.ups[0].address
    for i in range(3):
        with RawConn(gw.port) as c:
            assert c.request("GET", "/status/503?i=%d" % i).status == 503
    m = parse_metrics(http_get(gw.aport, "/metrics")[2].decode())
    assert metric(m, "sluice_server_breaker_state", pool="web", server=addr, state="open") == 1
    assert metric(m, "sluice_server_breaker_state", pool="web", server=addr, state="closed") == 0
    assert metric(m, "sluice_pool_servers_usable", pool="web") == 0
    j = json.loads(http_get(gw.aport, "/?json")[2])
    s = j["pools"][0]["servers"][0]
    assert s["breaker"] == "open" and s["usable"] is False and s["health"] == "up"
    assert isinstance(s["error_rate_pct"], int) and isinstance(s["in_flight"], int)


def test_reload_outcome_and_generation(sluice, upstreams):
    gw = start(sluice, upstreams)
    good = gw.conf_path.read_text()
    gw.conf_path.write_text(good.replace("return {", "return { nonsense_key = 1,", 1))
    gw.send_signal(signal.SIGHUP)

    def reload_state():
        m = parse_metrics(http_get(gw.aport, "/metrics")[2].decode())
        return metric(m, "sluice_config_last_reload_successful"), metric(m, "sluice_config_generation")

    wait_until(lambda: reload_state() == (0, 1), what="the failed reload in /metrics")
    gw.conf_path.write_text(good)
    gw.send_signal(signal.SIGHUP)
    wait_until(lambda: reload_state() == (1, 2), what="the successful reload in /metrics")


def drain_with_a_request_in_flight(gw):
    """SIGTERM while a 3 s request is in flight; returns (thread, result dict)."""
    result = {}

    def slow():
        with RawConn(gw.port, timeout=15) as c:
            result["status"] = c.request("GET", "/delay/3000").status

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    gw.send_signal(signal.SIGTERM)
    return t, result


def test_readyz_503_while_draining(sluice, upstreams):
    gw = start(sluice, upstreams, drain_timeout="10s")
    t, result = drain_with_a_request_in_flight(gw)
    # the admin loop keeps answering while the in-flight request finishes
    wait_until(lambda: http_get(gw.aport, "/readyz")[0] == 503, what="readyz 503 while draining")
    st, _, body = http_get(gw.aport, "/readyz")
    assert body == b"not ready: draining\n"
    assert http_get(gw.aport, "/healthz")[0] == 200
    t.join(15)
    assert result.get("status") == 200
    assert gw.wait(15) == 0


def write_token(tmp_path, token="s3cr3t-token-0123456789abcdef"):
    p = tmp_path / "admin.token"
    p.write_text(token + "\n")
    return p, token


def test_token_required_and_checked(sluice, upstreams, tmp_path):
    path, token = write_token(tmp_path)
    gw = start(sluice, upstreams, admin={"http_token_file": str(path)})
    st, h, _ = http_get(gw.aport, "/metrics")
    assert st == 401 and h["WWW-Authenticate"].startswith("Bearer")
    assert http_get(gw.aport, "/metrics", headers={"Authorization": "Bearer " + token[:-1] + "x"})[0] == 401
    assert http_get(gw.aport, "/metrics", headers={"Authorization": "Bearer " + token + "x"})[0] == 401
    assert http_get(gw.aport, "/metrics", headers={"Authorization": "Basic " + token})[0] == 401
    st, _, body = http_get(gw.aport, "/metrics", headers={"Authorization": "Bearer " + token})
    assert st == 200 and b"sluice_ready 1" in body
    assert http_get(gw.aport, "/readyz", headers={"Authorization": "bearer " + token})[0] == 200
    assert token.encode() not in open(gw.err_path, "rb").read()


def test_non_loopback_listens_with_a_token(sluice, upstreams, tmp_path):
    path, token = write_token(tmp_path)
    ups = upstreams(1)
    aport = free_port()
    gw = sluice(base_config(free_port(), [ups[0].address],
                            admin={"http": "0.0.0.0:%d" % aport, "http_token_file": str(path)}))
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    # health and readiness answer without the token (kubelets and load balancers
    # probe them); everything else needs it
    assert http_get(aport, "/healthz")[0] == 200
    assert http_get(aport, "/readyz")[0] == 200
    assert http_get(aport, "/metrics")[0] == 401
    assert http_get(aport, "/")[0] == 401
    assert http_get(aport, "/nope")[0] == 401
    assert http_get(aport, "/metrics", headers={"Authorization": "Bearer " + token})[0] == 200
    assert http_get(aport, "/healthz", headers={"Authorization": "Bearer " + token})[0] == 200


def check_config(tmp_path, admin):
    cfg = base_config(free_port(), ["127.0.0.1:9"], admin=admin)
    from conftest import config_to_lua
    p = tmp_path / "c.lua"
    p.write_text(config_to_lua(cfg))
    return run_sluice(["check", "-c", str(p)])


def test_config_errors(tmp_path):
    p = check_config(tmp_path, {"http": "0.0.0.0:9901"})
    assert p.returncode == 1 and "admin.http: 0.0.0.0:9901 is not a loopback address" in p.stderr, p.stderr
    assert "http_token_file" in p.stderr
    p = check_config(tmp_path, {"http": "127.0.0.1:9901", "http_token_file": str(tmp_path / "missing")})
    assert p.returncode == 1 and "admin.http_token_file: cannot read" in p.stderr, p.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    p = check_config(tmp_path, {"http": "127.0.0.1:9901", "http_token_file": str(short)})
    assert p.returncode == 1 and "16 to 512 printable characters" in p.stderr, p.stderr
    p = check_config(tmp_path, {"http": "not an address"})
    assert p.returncode == 1 and "admin.http" in p.stderr, p.stderr
    p = check_config(tmp_path, {"http": "127.0.0.1:9901"})
    assert p.returncode == 0, p.stderr
    p = check_config(tmp_path, {"http": "[::1]:9901"})
    assert p.returncode == 0, p.stderr


def test_address_in_use_is_a_clear_error(sluice, upstreams):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        ups = upstreams(1)
        gw = sluice(base_config(free_port(), [ups[0].address], admin={"http": "127.0.0.1:%d" % port}), ready=False)
        assert gw.wait(10) == 1
        assert "admin.http: cannot listen on 127.0.0.1:%d" % port in gw.stderr()
    finally:
        busy.close()


def test_certificate_expiry_metric(sluice, upstreams, tmp_path):
    from test_tls_certs import Certs, tls_config
    certs = Certs(tmp_path / "pki")
    a = certs.issue("a", dns=["a.test"])
    b = certs.issue("b", dns=["b.test", "www.b.test"], startdate="20260101000000Z", enddate="20270102030405Z")
    (u,) = upstreams(1)
    aport = free_port()
    cfg = tls_config(free_port(), [u.address], [{"cert": c, "key": k} for c, k in (a, b)],
                     admin={"http": "127.0.0.1:%d" % aport})
    gw = sluice(cfg)
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    text = http_get(aport, "/metrics")[2].decode()
    m = parse_metrics(text)
    series = {dict(k[1])["names"]: v for k, v in m.items() if k[0] == "sluice_tls_certificate_expiry_timestamp_seconds"}
    assert series["b.test,www.b.test"] == 1798859045  # 2027-01-02T03:04:05Z
    now = time.time()
    assert 29 * 86400 < series["a.test"] - now < 31 * 86400
    if PROMTOOL:
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr


# --------------------------------------------- sluice probe http (the image's HEALTHCHECK)
def probe(*args):
    return run_sluice(["probe", "http"] + list(args))


def test_probe_http_follows_readiness(sluice, upstreams, tmp_path):
    path, token = write_token(tmp_path)
    gw = start(sluice, upstreams, admin={"http_token_file": str(path)}, drain_timeout="10s")
    base = "http://127.0.0.1:%d" % gw.aport
    r = probe(base + "/readyz")
    assert r.returncode == 0, r.stderr
    assert probe(base + "/healthz", "--timeout", "1s").returncode == 0
    # /metrics needs the token: 401 without, 200 with --token-file
    r = probe(base + "/metrics")
    assert r.returncode == 1 and "answered 401" in r.stderr, r.stderr
    r = probe(base + "/metrics", "--token-file", str(path))
    assert r.returncode == 0, r.stderr
    assert probe(base + "/nope", "--token-file", str(path)).returncode == 1
    # draining: /readyz 503 -> exit 1 while a request is in flight
    t, done = drain_with_a_request_in_flight(gw)
    wait_until(lambda: probe(base + "/readyz").returncode == 1, what="probe failing while draining")
    r = probe(base + "/readyz")
    assert "answered 503" in r.stderr, r.stderr
    t.join(15)
    assert done.get("status") == 200
    assert gw.wait(15) == 0


def test_probe_http_failures_say_why(tmp_path):
    # refused
    port = free_port()
    r = probe("http://127.0.0.1:%d/readyz" % port)
    assert r.returncode == 1 and "refused" in r.stderr.lower(), r.stderr
    # a server that answers garbage, and one that never answers
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen(4)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    def serve():
        c, _ = garbage.accept()
        c.recv(4096)
        c.sendall(b"SSH-2.0-OpenSSH\r\n")
        c.close()
    t = threading.Thread(target=serve)
    t.start()
    try:
        r = probe("http://127.0.0.1:%d/readyz" % garbage.getsockname()[1])
        assert r.returncode == 1 and "not an HTTP answer" in r.stderr, r.stderr
        t0 = time.monotonic()
        r = probe("http://127.0.0.1:%d/readyz" % silent.getsockname()[1], "--timeout", "300ms")
        assert r.returncode == 1 and "within the timeout" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 10
    finally:
        t.join(5)
        garbage.close()
        silent.close()


@pytest.mark.parametrize("args, words", [
    ([], "needs a URL"),
    (["https://127.0.0.1:9901/readyz"], "https is not supported"),
    (["127.0.0.1:9901/readyz"], "not an http:// URL"),
    (["http:///readyz"], "no host"),
    (["http://127.0.0.1:99999/readyz"], "port out of range"),
    (["http://127.0.0.1:9901/a b"], "space or a control character"),
    (["http://127.0.0.1:9901/readyz", "--token-file", "/nonexistent/token"], "--token-file"),
    (["http://127.0.0.1:9901/readyz", "--timeout", "soon"], "not a duration"),
    (["http://127.0.0.1:9901/readyz", "extra"], "unexpected argument"),
])
def test_probe_http_usage_errors_exit_2(args, words):
    r = probe(*args)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert words in r.stderr, r.stderr
