"""limits.regex_match_limit (issue 17): a route's path_regex that gives up at
PCRE2's match limit is taken as no match (the next routes are tried), and a
warning naming the route is logged (at most one a second per worker)."""

import time

from conftest import free_port, http_client


def config(port, limit):
    return ('return { workers = 1, listeners = { { address = "127.0.0.1:%d" } },\n'
            '  limits = { regex_match_limit = %d },\n'
            '  routes = {\n'
            '    { name = "evil", match = { path_regex = "^/(a+)+$" }, respond = { status = 200, body = "evil" } },\n'
            '    { name = "fallback", respond = { status = 200, body = "fallback" } },\n'
            '  } }\n' % (port, limit))


def gave_up_lines(gw):
    return [e for e in gw.log_entries() if e.get("route") == "evil" and "gave up" in e.get("msg", "")]


def test_regex_at_the_limit_falls_through_and_is_logged(sluice):
    port = free_port()
    gw = sluice(config(port, 1000), ports=[port])
    with http_client(gw) as c:
        # a path the pattern matches quickly is unaffected
        assert c.get("/aaa").text == "evil"
        assert gave_up_lines(gw) == []
        # 14 letters and a mismatch backtrack far past 1000 steps
        for _ in range(3):
            assert c.get("/" + "a" * 14 + "!").text == "fallback"
    deadline = time.monotonic() + 5
    while not gave_up_lines(gw) and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = gave_up_lines(gw)
    assert lines, gw.stderr()
    assert lines[0]["level"] == "warn"
    assert lines[0]["regex_match_limit"] == 1000
    assert lines[0]["error"] == "match limit exceeded"
    # rate-limited: three requests within a second make one line (or two if the machine stalled)
    assert 1 <= len(lines) <= 2, lines


def test_default_limit_lets_a_moderate_pattern_finish(sluice):
    port = free_port()
    gw = sluice(config(port, 1000000), ports=[port])
    with http_client(gw) as c:
        assert c.get("/" + "a" * 14 + "!").text == "fallback"
    time.sleep(0.2)
    assert gave_up_lines(gw) == []
