"""The hand-off of an accepted connection once its protocol is known
(src/tls_accept.c -> the worker's dispatcher, docs/architecture.md "Layers"):
the protocol chosen (ALPN, the h2c preface), the scheme and the client's
address and port must reach the request, over IPv4 and IPv6, and a failed
handshake is logged with the client's address."""
import json
import socket
import time

import pytest

from conftest import base_config, curl, free_port, wait_until
from test_tls_certs import certs, tls_config  # noqa: F401  (fixture)


def access_lines(gw, n):
    wait_until(lambda: len([x for x in gw.stdout().splitlines() if x.strip()]) >= n, what="%d access log lines" % n)
    return [json.loads(x) for x in gw.stdout().splitlines() if x.strip()]


def curl_port(args):
    """Runs curl; returns (status, the local port it used)."""
    r = curl(args + ["-o", "/dev/null", "-w", "%{http_code} %{local_port}"])
    status, port = r.stdout.decode().split()
    return status, int(port)


def test_tls_alpn_picks_the_protocol_and_the_peer_reaches_the_request(certs, sluice, upstreams):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}]))
    base = ["--cacert", str(certs.ca), "--resolve", "a.test:%d:127.0.0.1" % port]
    url = "https://a.test:%d/" % port
    s1, p1 = curl_port(base + ["--http1.1", url + "one"])
    s2, p2 = curl_port(base + ["--http2", url + "two"])
    assert (s1, s2) == ("200", "200")
    lines = {x["target"]: x for x in access_lines(gw, 2)}
    assert (lines["/one"]["scheme"], lines["/one"]["protocol"]) == ("https", "HTTP/1.1")
    assert (lines["/two"]["scheme"], lines["/two"]["protocol"]) == ("https", "HTTP/2.0")
    assert lines["/one"]["client_ip"] == lines["/two"]["client_ip"] == "127.0.0.1"
    assert (lines["/one"]["client_port"], lines["/two"]["client_port"]) == (p1, p2)


def test_h2c_sniffing_picks_the_protocol_and_the_peer_reaches_the_request(sluice, upstreams):
    (u,) = upstreams(1)
    port = free_port()
    cfg = base_config(port, [u.address])
    cfg["listeners"][0]["h2c"] = True
    gw = sluice(cfg)
    s1, p1 = curl_port(["http://127.0.0.1:%d/one" % port])
    s2, p2 = curl_port(["--http2-prior-knowledge", "http://127.0.0.1:%d/two" % port])
    assert (s1, s2) == ("200", "200")
    lines = {x["target"]: x for x in access_lines(gw, 2)}
    assert (lines["/one"]["scheme"], lines["/one"]["protocol"]) == ("http", "HTTP/1.1")
    assert (lines["/two"]["scheme"], lines["/two"]["protocol"]) == ("http", "HTTP/2.0")
    assert (lines["/one"]["client_port"], lines["/two"]["client_port"]) == (p1, p2)


def wait_listening_v6(gw, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        assert gw.proc.poll() is None, gw.stderr()
        try:
            socket.create_connection(("::1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_ipv6_peers_over_tls_and_h2c(certs, sluice, upstreams):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    tls_port, h2c_port = free_port(), free_port()
    cfg = tls_config(tls_port, [u.address], [{"cert": c, "key": k}])
    cfg["listeners"][0]["address"] = "[::1]:%d" % tls_port
    cfg["listeners"].append({"name": "plain", "address": "[::1]:%d" % h2c_port, "h2c": True})
    gw = sluice(cfg, ports=[], ready=False)
    wait_listening_v6(gw, tls_port)
    wait_listening_v6(gw, h2c_port)
    s1, p1 = curl_port(["--cacert", str(certs.ca), "--resolve", "a.test:%d:[::1]" % tls_port, "--http2",
                        "https://a.test:%d/tls" % tls_port])
    s2, p2 = curl_port(["--http2-prior-knowledge", "-g", "http://[::1]:%d/h2c" % h2c_port])
    assert (s1, s2) == ("200", "200")
    lines = {x["target"]: x for x in access_lines(gw, 2)}
    assert (lines["/tls"]["client_ip"], lines["/tls"]["client_port"]) == ("::1", p1)
    assert (lines["/tls"]["scheme"], lines["/tls"]["protocol"]) == ("https", "HTTP/2.0")
    assert (lines["/h2c"]["client_ip"], lines["/h2c"]["client_port"]) == ("::1", p2)
    assert (lines["/h2c"]["scheme"], lines["/h2c"]["protocol"]) == ("http", "HTTP/2.0")


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_failed_handshake_is_logged_with_the_client_address(certs, sluice, upstreams, family, host):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    cfg = tls_config(port, [u.address], [{"cert": c, "key": k}])
    cfg["listeners"][0]["address"] = ("[%s]:%d" if family == socket.AF_INET6 else "%s:%d") % (host, port)
    gw = sluice(cfg, ports=[], ready=False, env={"SLUICE_LOG_LEVEL": "debug"})
    deadline = time.monotonic() + 10
    while True:
        assert gw.proc.poll() is None, gw.stderr()
        try:
            s = socket.create_connection((host, port), timeout=2)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # plain HTTP on a TLS port
    s.settimeout(5)
    try:
        s.recv(100)
    except OSError:
        pass
    s.close()

    def failed():
        return [json.loads(x) for x in gw.stderr().splitlines() if '"TLS handshake failed"' in x]
    wait_until(lambda: any(x.get("reason") == "not_tls" for x in failed()), what="the handshake failure line")
    assert {x["client_ip"] for x in failed() if x.get("reason") == "not_tls"} == {host}
