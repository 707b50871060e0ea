"""TLS termination: SNI with several certificates (ECDSA and RSA side by side),
TLS 1.2+ only, ALPN, session resumption, mTLS, OCSP stapling, upstream TLS,
config errors naming the file, and aborted handshakes that must not leak."""

import json
import os
import socket
import ssl
import subprocess

import pytest

from conftest import base_config, curl, free_port, run_sluice, sha256
from test_tls_certs import Certs, certs, tls_config, tls_listener  # noqa: F401  (fixture)


def s_client(port, *args, servername=None, data=b"", timeout=10, brief=True):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + (["-brief"] if brief else [])
    if servername:
        cmd += ["-servername", servername]
    else:
        cmd += ["-noservername"]
    cmd += list(args)
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)


def peer_cert_text(port, *args, servername=None):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-showcerts"]
    cmd += ["-servername", servername] if servername else ["-noservername"]
    r = subprocess.run(cmd + list(args), input=b"", capture_output=True, timeout=10)
    pem = r.stdout.decode()
    start = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----")
    assert start >= 0, r.stderr.decode()
    x = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem[start:end + 25].encode(),
                       capture_output=True, timeout=10)
    return x.stdout.decode()


@pytest.fixture
def multi(certs, sluice, upstreams):
    """A gateway with an ECDSA and an RSA certificate for a.test, one for b.test and a wildcard."""
    (u,) = upstreams(1)
    a_ec = certs.issue("a-ec", dns=["a.test"])
    a_rsa = certs.issue("a-rsa", dns=["a.test"], kind="rsa")
    b = certs.issue("b", dns=["b.test"])
    w = certs.issue("w", dns=["*.w.test"])
    port = free_port()
    cfg = tls_config(port, [u.address], [{"cert": c, "key": k} for c, k in (a_ec, a_rsa, b, w)])
    gw = sluice(cfg)
    gw.certs = certs
    return gw


def curl_https(gw, host, path="/", *args):
    return curl(["--cacert", str(gw.certs.ca), "--resolve", "%s:%d:127.0.0.1" % (host, gw.port),
                 "https://%s:%d%s" % (host, gw.port, path)] + list(args))


def test_sni_picks_certificate_by_exact_and_wildcard_name(multi):
    assert "DNS:b.test" in peer_cert_text(multi.port, servername="b.test")
    assert "DNS:*.w.test" in peer_cert_text(multi.port, servername="x.w.test")
    assert "DNS:a.test" in peer_cert_text(multi.port, servername="a.test")
    # no SNI, or an unknown name: the first certificate is the default
    assert "DNS:a.test" in peer_cert_text(multi.port)
    assert "DNS:a.test" in peer_cert_text(multi.port, servername="unknown.test")
    # a wildcard covers one label only
    assert "DNS:*.w.test" not in peer_cert_text(multi.port, servername="a.b.w.test")


def test_ecdsa_and_rsa_side_by_side(multi):
    ec = peer_cert_text(multi.port, "-tls1_2", "-sigalgs", "ECDSA+SHA256", servername="a.test")
    rsa = peer_cert_text(multi.port, "-tls1_2", "-sigalgs", "RSA+SHA256:RSA-PSS+SHA256", servername="a.test")
    assert "id-ecPublicKey" in ec
    assert "rsaEncryption" in rsa


def test_curl_http2_and_http11_over_tls_with_sni(multi):
    for flag, want in (("--http2", "2"), ("--http1.1", "1.1")):
        r = curl_https(multi, "b.test", "/x", flag, "-o", "/dev/null", "-w", "%{http_code} %{http_version}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode() == "200 " + want
    entries = multi.wait_log(count=2, scheme="https")
    assert {e["protocol"] for e in entries} == {"HTTP/2.0", "HTTP/1.1"}
    for e in entries:
        assert e["tls_sni"] == "b.test"
        assert e["tls_version"] == "TLSv1.3"
        assert e["tls_cipher"]


def test_old_protocols_and_weak_ciphers_refused(multi):
    for proto in ("-tls1", "-tls1_1"):
        r = s_client(multi.port, proto, "-cipher", "DEFAULT@SECLEVEL=0", servername="a.test")
        assert b"Protocol version: TLSv1" not in r.stderr or r.returncode != 0
        assert r.returncode != 0
    for weak in ("RC4-SHA", "DES-CBC3-SHA", "AES128-SHA", "NULL-SHA256", "ECDHE-RSA-AES128-SHA"):
        r = s_client(multi.port, "-tls1_2", "-cipher", weak + "@SECLEVEL=0", servername="a.test")
        assert r.returncode != 0, weak
    r = s_client(multi.port, "-tls1_2", servername="a.test")
    assert r.returncode == 0 and b"Protocol version: TLSv1.2" in r.stderr
    r = s_client(multi.port, "-tls1_3", servername="a.test")
    assert r.returncode == 0 and b"Protocol version: TLSv1.3" in r.stderr


def test_sslscan_finds_nothing_weak(multi):
    if subprocess.run(["which", "sslscan"], capture_output=True).returncode != 0:
        pytest.skip("sslscan not installed")
    r = subprocess.run(["sslscan", "--no-colour", "--sni-name=a.test", "127.0.0.1:%d" % multi.port],
                       capture_output=True, text=True, timeout=120)
    out = r.stdout
    for proto in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
        assert "%s     disabled" % proto in out or "%s   disabled" % proto in out or \
            ("%s" % proto in out and "enabled" not in [ln for ln in out.splitlines() if ln.startswith(proto)][0]), out
    accepted = [ln for ln in out.splitlines() if ln.startswith(("Preferred", "Accepted"))]
    assert accepted
    for ln in accepted:
        for weak in ("RC4", "DES", "NULL", "EXP", "MD5", "CBC", "SHA "):
            assert weak not in ln.split("bits", 1)[1].split()[0] if "bits" in ln else True, ln


def test_alpn_offers_h2_and_http11(multi):
    for offer, want in (("h2,http/1.1", b"ALPN protocol: h2"), ("http/1.1", b"ALPN protocol: http/1.1")):
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % multi.port, "-servername", "a.test",
                            "-alpn", offer], input=b"", capture_output=True, timeout=10)
        assert want in r.stdout, r.stdout[-800:]


@pytest.mark.parametrize("tickets", [True, False], ids=["tickets", "session-cache"])
def test_session_resumption(certs, sluice, upstreams, tmp_path, tickets):
    """With tickets (the default) and, with session_tickets = false, from the session cache that
    the workers share (one SSL_CTX per listener): TLS 1.2 by session id, TLS 1.3 by a stateful
    ticket naming a cache entry."""
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], tls={"session_tickets": tickets}))
    for proto in ("-tls1_2", "-tls1_3"):
        sess = tmp_path / ("sess-%d%s" % (tickets, proto))
        # a full request (the server closes after it) so that the TLS 1.3 ticket is read
        r1 = s_client(port, proto, "-ign_eof", "-sess_out", str(sess), servername="a.test",
                      data=b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        assert b"HTTP/1.1 200" in r1.stdout and sess.exists()
        # both workers share the keys/cache: try several times so both get the resumption
        for _ in range(4):
            r2 = s_client(port, proto, "-sess_in", str(sess), servername="a.test", data=b"", brief=False)
            assert b"Reused, TLS" in r2.stdout, (tickets, proto, r2.stdout[-500:])
            if proto == "-tls1_2":
                # TLS 1.2 resumes by ticket only with tickets on, by session id from the cache without
                assert (b"TLS session ticket:" in r2.stdout) == tickets, r2.stdout[-800:]


def test_every_tls13_resumption_brings_a_fresh_ticket(certs, sluice, upstreams, tmp_path):
    """A client that keeps only the session of its last connection (wrk, browsers' single-use
    tickets) resumes every time: each resumed TLS 1.3 connection carries a new ticket."""
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    sluice(tls_config(port, [u.address], [{"cert": c, "key": k}]))
    req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    prev = tmp_path / "sess-0"
    r = s_client(port, "-tls1_3", "-ign_eof", "-sess_out", str(prev), servername="a.test", data=req)
    assert b"HTTP/1.1 200" in r.stdout and prev.exists()
    for i in range(1, 5):
        nxt = tmp_path / ("sess-%d" % i)
        r = s_client(port, "-tls1_3", "-ign_eof", "-sess_in", str(prev), "-sess_out", str(nxt),
                     servername="a.test", data=req, brief=False)
        assert b"Reused, TLS" in r.stdout, (i, r.stdout[-500:])
        assert nxt.exists(), "resumed connection %d brought no new ticket" % i
        prev = nxt


def python_resumption(port, version, reuse):
    """Full request on one connection, then `reuse` more connections offering its session;
    returns the list of session_reused flags (Python's ssl, another client than s_client)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"

    def exchange(session=None):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="a.test", session=session) as s:
                s.sendall(req)
                data = b""
                while True:  # to the end: a TLS 1.3 session arrives after the handshake
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
                return s.session, s.session_reused

    session, reused = exchange()
    assert not reused and session is not None
    return [exchange(session)[1] for _ in range(reuse)]


@pytest.mark.parametrize("tickets", [True, False], ids=["tickets", "session-cache"])
def test_session_resumption_python_client(certs, sluice, upstreams, tickets):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], tls={"session_tickets": tickets}))
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        # 6 connections: with 2 workers, both serve some of them
        assert python_resumption(port, version, 6) == [True] * 6, (tickets, version)


def test_session_cache_off_means_no_resumption_without_tickets(certs, sluice, upstreams, tmp_path):
    """The test above could pass for a wrong reason (tickets on after all): with neither tickets nor
    a cache, nothing may resume."""
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    sluice(tls_config(port, [u.address], [{"cert": c, "key": k}],
                      tls={"session_tickets": False, "session_cache": 0}))
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert python_resumption(port, version, 2) == [False, False], version


def test_ticket_keys_rotate(certs, sluice, upstreams, tmp_path):
    import time
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], tls={"ticket_rotate": "1s"}))
    sess = tmp_path / "sess"
    assert s_client(port, "-tls1_2", "-sess_out", str(sess), servername="a.test").returncode == 0
    r = s_client(port, "-tls1_2", "-sess_in", str(sess), servername="a.test", brief=False)
    assert b"Reused, TLS" in r.stdout
    time.sleep(2.5)  # two rotations: the key that sealed the ticket is gone
    r = s_client(port, "-tls1_2", "-sess_in", str(sess), servername="a.test", brief=False)
    assert r.returncode == 0 and b"New, TLS" in r.stdout


def test_mtls_verified_subject_in_log_and_missing_cert_refused(certs, sluice, upstreams):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    cc, ck = certs.issue("alice", client=True, cn="alice")
    port = free_port()
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], tls={"client_ca": str(certs.ca)}))
    base = ["--cacert", str(certs.ca), "--resolve", "a.test:%d:127.0.0.1" % port, "https://a.test:%d/m" % port]
    r = curl(base + ["--cert", cc, "--key", ck, "-o", "/dev/null", "-w", "%{http_code}"])
    assert r.stdout == b"200", r.stderr
    (e,) = gw.wait_log(count=1, target="/m")
    assert e["tls_client_subject"] == "CN=alice"
    r = curl(base + ["-o", "/dev/null", "-w", "%{http_code}"])
    assert r.returncode != 0 and r.stdout != b"200"
    # a certificate from another CA is refused too
    other = Certs(certs.dir.parent / "other")
    oc, ok_ = other.issue("mallory", client=True, cn="mallory")
    r = curl(base + ["--cert", oc, "--key", ok_, "-o", "/dev/null", "-w", "%{http_code}"])
    assert r.returncode != 0


def test_ocsp_stapling(certs, sluice, upstreams):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    der = certs.ocsp_response(c)
    port = free_port()
    sluice(tls_config(port, [u.address], [{"cert": c, "key": k, "ocsp": der}]))
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", "a.test", "-status"],
                       input=b"", capture_output=True, timeout=10)
    assert b"OCSP Response Status: successful" in r.stdout, r.stdout[-1500:]
    assert b"Cert Status: good" in r.stdout


def check_error(tmp_path, cfg, *needles):
    from conftest import config_to_lua
    p = tmp_path / "bad.lua"
    p.write_text(config_to_lua(cfg))
    r = run_sluice(["check", "-c", str(p)])
    assert r.returncode != 0
    for n in needles:
        assert n in r.stderr, r.stderr
    r = run_sluice(["run", "-c", str(p)], timeout=10)
    assert r.returncode != 0
    return r.stderr


def test_config_errors_name_the_file(certs, tmp_path):
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    # key readable by others
    os.chmod(k, 0o644)
    err = check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c, "key": k}]),
                      "listeners[1].tls.certificates[1].key", k, "chmod 600")
    assert "PRIVATE KEY" not in err and "BEGIN" not in err  # never the key itself
    os.chmod(k, 0o600)
    # missing files
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c + ".nope", "key": k}]),
                "certificates[1].cert", c + ".nope")
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c, "key": k + ".nope"}]),
                "certificates[1].key", k + ".nope")
    # mismatched key
    c2, k2 = certs.issue("b", dns=["b.test"])
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c, "key": k}, {"cert": c, "key": k2}]),
                "certificates[2].key", k2, "does not match", c)
    # expired
    ce, ke = certs.issue("old", dns=["old.test"], startdate="20200101000000Z", enddate="20200201000000Z")
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": ce, "key": ke}]),
                "certificates[1].cert", ce, "expired")
    # old protocols, bad ciphers, unknown keys
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c, "key": k}],
                                     tls={"protocols": ["TLSv1.1"]}), "TLSv1.1", "insecure")
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c, "key": k}],
                                     tls={"ciphers": "NOPE-CIPHER"}), "tls.ciphers")
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c, "key": k}],
                                     tls={"certificats": []}), "certificats")
    # OCSP file that is not a response
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"not der")
    check_error(tmp_path, tls_config(port, ["127.0.0.1:1"], [{"cert": c, "key": k, "ocsp": str(junk)}]),
                "certificates[1].ocsp", str(junk))


def test_unknown_user_is_a_config_error(certs, tmp_path):
    cfg = base_config(free_port(), ["127.0.0.1:1"], user="no-such-user-sluice")
    check_error(tmp_path, cfg, "unknown user")


@pytest.mark.timeout(120)
def test_privileges_dropped_after_reading_keys(certs, sluice, upstreams):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if subprocess.run(["getent", "passwd", "nobody"], capture_output=True).returncode != 0:
        pytest.skip("no user nobody")
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])  # key mode 0600 owned by root: only readable before the drop
    port = free_port()
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], user="nobody"))
    status = open("/proc/%d/status" % gw.pid).read()
    uid_line = [ln for ln in status.splitlines() if ln.startswith("Uid:")][0]
    assert set(uid_line.split()[1:]) == {str(int(subprocess.check_output(["id", "-u", "nobody"])))}
    r = curl(["--cacert", str(certs.ca), "--resolve", "a.test:%d:127.0.0.1" % port,
              "https://a.test:%d/" % port, "-o", "/dev/null", "-w", "%{http_code}"])
    assert r.stdout == b"200"
    assert '"privileges dropped"' in gw.stderr()


def test_upstream_tls_verifies_by_default(certs, sluice, upstreams, tmp_path):
    """sluice (plaintext front) -> sluice (TLS listener) -> demo upstream."""
    (u,) = upstreams(1)
    c, k = certs.issue("origin", dns=["origin.test"])
    inner = free_port()
    sluice(tls_config(inner, [u.address], [{"cert": c, "key": k}]), name="inner")
    front = free_port()
    cfg = base_config(front, ["127.0.0.1:%d" % inner], pool={"tls": {"ca": str(certs.ca), "sni": "origin.test"}})
    gw = sluice(cfg, name="front")
    r = curl(["http://127.0.0.1:%d/hello" % front, "-o", "/dev/null", "-w", "%{http_code}"])
    assert r.stdout == b"200", r.stderr
    # wrong name: verification fails -> 502
    front2 = free_port()
    cfg = base_config(front2, ["127.0.0.1:%d" % inner], pool={"tls": {"ca": str(certs.ca), "sni": "other.test"}})
    sluice(cfg, name="front2")
    r = curl(["http://127.0.0.1:%d/hello" % front2, "-o", "/dev/null", "-w", "%{http_code}"])
    assert r.stdout == b"502"
    # verification needs a name
    check_error(tmp_path, base_config(free_port(), ["127.0.0.1:1"], pool={"tls": {"ca": str(certs.ca)}}),
                "pools.web.tls", "sni")


@pytest.mark.timeout(180)
def test_aborted_handshakes_are_counted_and_do_not_leak(certs, sluice, upstreams):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    port = free_port()
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], tls={"handshake_timeout": "1s"}))
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    hello = None
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        kind = i % 5
        if kind == 0:
            s.close()  # connect and go
        elif kind == 1:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # plain HTTP on a TLS port
            s.settimeout(2)
            try:
                s.recv(100)
            except OSError:
                pass
            s.close()
        elif kind == 2:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40))  # truncated ClientHello
            s.close()
        elif kind == 3:
            s.sendall(os.urandom(200))
            s.close()
        else:
            # a full handshake cut before any request
            t = ctx.wrap_socket(s, server_hostname="a.test")
            t.close()
    # a few left hanging in the handshake until the timeout
    hanging = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    import time
    time.sleep(1.6)
    for s in hanging:
        s.close()
    r = curl(["--cacert", str(certs.ca), "--resolve", "a.test:%d:127.0.0.1" % port, "https://a.test:%d/" % port,
              "-o", "/dev/null", "-w", "%{http_code}"])
    assert r.stdout == b"200"
    assert gw.stop() == 0
    lines = [json.loads(ln) for ln in gw.stderr().splitlines() if '"TLS handshakes"' in ln]
    failed = sum(ln.get("failed", 0) for ln in lines)
    assert failed >= 200, lines
    assert sum(ln.get("timeout", 0) for ln in lines) >= 5
    assert sum(ln.get("not_tls", 0) for ln in lines) >= 50
