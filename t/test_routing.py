"""Routing: exact and wildcard hosts, exact path, prefix, PCRE2 regex, methods, header
matches, first match wins, direct `respond` routes, service weights, 404."""

import pytest

from conftest import RawConn, free_port


@pytest.fixture
def rgw(sluice, upstreams):
    a, b, c = upstreams(3, ["A", "B", "C"])
    port = free_port()
    cfg = {
        "workers": 2,
        "listeners": [{"name": "public", "address": "127.0.0.1:%d" % port}],
        "pools": {
            "a": {"servers": [{"address": a.address}]},
            "b": {"servers": [{"address": b.address}]},
            "c": {"servers": [{"address": c.address}]},
        },
        "services": {
            "svc_b": {"pools": {"b": 100}},
            "split_a": {"pools": {"a": 100, "b": 0}},
            "split_b": {"pools": {"a": 0, "b": 100}},
        },
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "respond": {"status": 200, "body": "ok\n"}},
            {"name": "static", "match": {"host": "*.example.com", "path_prefix": "/static/"}, "pool": "a"},
            {"name": "api", "match": {"path_regex": "^/api/v[0-9]+/", "methods": ["GET", "POST"],
                                      "headers": {"x-env": "prod"}}, "service": "svc_b"},
            {"name": "exact-host", "match": {"host": "exact.test"},
             "respond": {"status": 201, "body": "exact host\n", "content_type": "application/x-demo"}},
            {"name": "exact-path", "match": {"path": "/exact"}, "pool": "c"},
            {"name": "first", "match": {"path_prefix": "/first/"}, "pool": "a"},
            {"name": "second", "match": {"path_prefix": "/first/second/"}, "pool": "b"},
            {"name": "split-a", "match": {"path_prefix": "/split-a/"}, "service": "split_a"},
            {"name": "split-b", "match": {"path_prefix": "/split-b/"}, "service": "split_b"},
            {"name": "teapot", "match": {"path": "/teapot", "methods": ["DELETE"]}, "respond": {"status": 418}},
        ],
        "access_log": {"path": "stdout"},
        "drain_timeout": "5s",
    }
    gw = sluice(cfg)
    gw.upstreams = [a, b, c]
    return gw


def get(gw, target, host="plain.test", method="GET", headers=None, body=None):
    with RawConn(gw.port) as c:
        return c.request(method, target, host=host, headers=headers, body=body)


def server_of(resp):
    if resp.status != 200 or not (resp.header("content-type") or "").startswith("application/json"):
        return resp.status
    return resp.json().get("server")


def test_respond_route(rgw):
    r = get(rgw, "/healthz")
    assert r.status == 200 and r.body == b"ok\n"
    assert (r.header("content-type") or "").startswith("text/plain")
    assert r.header("content-length") == "3"
    assert get(rgw, "/healthz?probe=1").body == b"ok\n"
    assert all(u.stats()["requests"] == 0 for u in rgw.upstreams)
    e = rgw.wait_log(target="/healthz")[0]
    assert e["route"] == "health" and e["status"] == 200 and e["upstream"] == ""


def test_respond_route_content_type_and_empty_body(rgw):
    r = get(rgw, "/anything", host="exact.test")
    assert r.status == 201 and r.body == b"exact host\n"
    assert r.header("content-type") == "application/x-demo"
    r = get(rgw, "/teapot", method="DELETE")
    assert r.status == 418 and r.body == b""
    assert r.header("content-length") == "0"


@pytest.mark.parametrize("host", ["sub.example.com", "a.b.example.com", "SUB.Example.COM", "sub.example.com:8080"])
def test_wildcard_host_matches(rgw, host):
    assert server_of(get(rgw, "/static/x.css", host=host)) == "A"


@pytest.mark.parametrize("host", ["example.com", "badexample.com", "example.com.evil.test", "sub.example.org"])
def test_wildcard_host_does_not_match(rgw, host):
    assert server_of(get(rgw, "/static/x.css", host=host)) == 404


def test_prefix(rgw):
    assert server_of(get(rgw, "/static/", host="s.example.com")) == "A"
    assert server_of(get(rgw, "/static/a/b/c?x=1", host="s.example.com")) == "A"
    assert server_of(get(rgw, "/static", host="s.example.com")) == 404
    assert server_of(get(rgw, "/staticx/", host="s.example.com")) == 404


def test_exact_path(rgw):
    assert server_of(get(rgw, "/exact")) == "C"
    assert server_of(get(rgw, "/exact?q=1")) == "C"
    assert server_of(get(rgw, "/exact/")) == 404
    assert server_of(get(rgw, "/exactly")) == 404


def test_exact_host(rgw):
    assert get(rgw, "/x", host="exact.test").status == 201
    assert get(rgw, "/x", host="EXACT.test:80").status == 201
    assert get(rgw, "/x", host="sub.exact.test").status == 404


def test_regex_methods_headers(rgw):
    prod = [("x-env", "prod")]
    assert server_of(get(rgw, "/api/v1/items", headers=prod)) == "B"
    assert server_of(get(rgw, "/api/v22/items?x=1", headers=prod)) == "B"
    assert server_of(get(rgw, "/api/v1/items", method="POST", headers=prod, body=b"{}")) == "B"
    assert server_of(get(rgw, "/api/v1/items", headers=[("X-Env", "prod")])) == "B"
    assert server_of(get(rgw, "/api/v1/items", method="DELETE", headers=prod)) == 404
    assert server_of(get(rgw, "/api/v1/items")) == 404
    assert server_of(get(rgw, "/api/v1/items", headers=[("x-env", "dev")])) == 404
    assert server_of(get(rgw, "/api/v1/items", headers=[("x-env", "Prod")])) == 404
    assert server_of(get(rgw, "/api/vx/items", headers=prod)) == 404
    assert server_of(get(rgw, "/xapi/v1/items", headers=prod)) == 404
    assert server_of(get(rgw, "/other?p=/api/v1/", headers=prod)) == 404


def test_first_match_wins(rgw):
    assert server_of(get(rgw, "/first/second/x")) == "A"
    e = rgw.wait_log(target="/first/second/x")[0]
    assert e["route"] == "first"


def test_service_pool_weights(rgw):
    for i in range(12):
        assert server_of(get(rgw, "/split-a/%d" % i)) == "A"
        assert server_of(get(rgw, "/split-b/%d" % i)) == "B"
    e = rgw.wait_log(target="/split-b/0")[0]
    assert e["service"] == "split_b" and e["pool"] == "b"


def test_pool_shorthand_logged(rgw):
    get(rgw, "/exact")
    e = rgw.wait_log(target="/exact")[0]
    assert e["pool"] == "c" and e["route"] == "exact-path"


def test_no_route_404(rgw):
    with RawConn(rgw.port) as c:
        r = c.request("GET", "/nowhere")
        assert r.status == 404
        assert (r.header("content-type") or "").startswith("text/plain")
        assert 0 < len(r.body) <= 1024 and int(r.header("content-length")) == len(r.body)
        r2 = c.request("GET", "/healthz")  # a 404 does not cost the connection
        assert r2.status == 200
    e = rgw.wait_log(target="/nowhere")[0]
    assert e["status"] == 404 and e["reason"] == "no_route"
    assert e["upstream"] == "" and e["upstream_status"] == 0
    assert all(u.stats()["requests"] == 0 for u in rgw.upstreams)


@pytest.mark.parametrize("target", ["/x/../teapot", "//teapot", "/./teapot", "/%74eapot", "/x/%2e%2e/teapot",
                                    "/x/..%2Fteapot"])
def test_routes_match_the_normalized_path(rgw, target):
    """A route sees the path as an origin that decodes and resolves it will (route_path_normalize):
    a respond/deny route cannot be walked around with dot segments, "//" or escapes."""
    r = get(rgw, target, method="DELETE")
    assert r.status == 418, (target, r.status)


def test_normalized_path_only_for_matching(rgw):
    """The target goes upstream as the client sent it."""
    r = get(rgw, "/first/./x/%2e%2e/y//z?q=%2e")
    assert r.status == 200 and r.json()["server"] == "A"
    assert r.json()["target"] == "/first/./x/%2e%2e/y//z?q=%2e"
    assert server_of(get(rgw, "/other/../first/second/")) == "A"   # first match wins on /first/second/ too
    assert server_of(get(rgw, "/first/..//first/second/x")) == "A"
