"""Routing on the verified client-certificate subject (mTLS): match.client_cert_subject
is an exact comparison with the RFC 2253 subject that the access log prints as
tls_client_subject; requests without a verified certificate never match such a route."""

import subprocess

from conftest import curl, free_port, run_sluice
from test_tls_certs import certs, tls_config  # noqa: F401  (fixture)


def rfc2253_subject(cert):
    r = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-subject", "-nameopt", "RFC2253"],
                       capture_output=True, text=True, timeout=10, check=True)
    return r.stdout.strip().split("=", 1)[1]


def mtls_routing_gw(certs, sluice, upstreams, verify="optional"):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    ops = certs.issue("ops", client=True, cn="ops")
    alice = certs.issue("alice", client=True, cn="alice")
    ops_subject = rfc2253_subject(ops[0])
    assert ops_subject != rfc2253_subject(alice[0])
    routes = [
        {"name": "ops-admin", "match": {"path_prefix": "/admin/", "client_cert_subject": ops_subject},
         "respond": {"status": 200, "body": "ops only\n"}},
        {"name": "public", "match": {"path_prefix": "/public/"}, "service": "web"},
    ]
    port = free_port()
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], routes=routes,
                           tls={"client_ca": str(certs.ca), "client_verify": verify}))
    gw.ops, gw.alice, gw.ops_subject = ops, alice, ops_subject
    gw.ca = certs.ca
    return gw


def get(gw, path, cert=None, *extra):
    args = ["--cacert", str(gw.ca), "--resolve", "a.test:%d:127.0.0.1" % gw.port,
            "https://a.test:%d%s" % (gw.port, path), "-w", "\n%{http_code} %{http_version}"]
    if cert:
        args += ["--cert", cert[0], "--key", cert[1]]
    r = curl(args + list(extra))
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition(b"\n")
    status, version = tail.decode().split()
    return int(status), version, body


def test_route_matches_only_the_verified_subject(certs, sluice, upstreams):
    gw = mtls_routing_gw(certs, sluice, upstreams)
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        status, v, body = get(gw, "/admin/x", gw.ops, flag)
        assert (status, v, body) == (200, version, b"ops only\n")
        # another verified subject, and no certificate at all: the route does not match,
        # the request falls through to the next routes (here: none for /admin/, so 404)
        status, v, _ = get(gw, "/admin/x", gw.alice, flag)
        assert (status, v) == (404, version)
        status, v, _ = get(gw, "/admin/x", None, flag)
        assert (status, v) == (404, version)
        # routes without the key are unaffected by who the client is
        for cert in (gw.ops, gw.alice, None):
            assert get(gw, "/public/y", cert, flag)[0] == 200
    entries = gw.wait_log(count=2, target="/admin/x", status=200)
    assert {e["route"] for e in entries} == {"ops-admin"}
    assert {e["tls_client_subject"] for e in entries} == {gw.ops_subject}
    misses = gw.wait_log(count=4, target="/admin/x", status=404)
    assert {e["reason"] for e in misses} == {"no_route"}


def test_subject_route_falls_through_to_the_next_route(certs, sluice, upstreams):
    (u,) = upstreams(1)
    c, k = certs.issue("a", dns=["a.test"])
    ops = certs.issue("ops", client=True, cn="ops")
    alice = certs.issue("alice", client=True, cn="alice")
    routes = [
        {"name": "ops", "match": {"client_cert_subject": rfc2253_subject(ops[0])},
         "respond": {"status": 200, "body": "ops\n"}},
        {"name": "everyone", "match": {"path_prefix": "/"}, "respond": {"status": 200, "body": "everyone\n"}},
    ]
    port = free_port()
    gw = sluice(tls_config(port, [u.address], [{"cert": c, "key": k}], routes=routes,
                           tls={"client_ca": str(certs.ca)}))
    gw.ca = certs.ca
    assert get(gw, "/", ops)[2] == b"ops\n"
    assert get(gw, "/", alice)[2] == b"everyone\n"
    assert get(gw, "/", ops, "--http2")[2] == b"ops\n"
    assert get(gw, "/", alice, "--http2")[2] == b"everyone\n"


def test_subject_route_never_matches_plaintext(gateway):
    gw = gateway(routes=[
        {"name": "ops", "match": {"client_cert_subject": "CN=ops"}, "respond": {"status": 200, "body": "ops\n"}},
        {"name": "rest", "match": {"path_prefix": "/"}, "respond": {"status": 200, "body": "rest\n"}},
    ])
    r = curl(["http://127.0.0.1:%d/" % gw.port])
    assert r.returncode == 0 and r.stdout == b"rest\n"


def test_empty_subject_is_a_config_error(tmp_path):
    from conftest import base_config, config_to_lua
    cfg = base_config(free_port(), ["127.0.0.1:1"], routes=[
        {"match": {"client_cert_subject": ""}, "service": "web"}])
    p = tmp_path / "bad.lua"
    p.write_text(config_to_lua(cfg))
    r = run_sluice(["check", "-c", str(p)])
    assert r.returncode != 0
    assert "routes[1].match.client_cert_subject: must not be empty" in r.stderr, r.stderr
