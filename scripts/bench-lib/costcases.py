"""What scripts/bench's WAF and policy cost cases send, and the sluice configs they compare
(issue 13's goals: CPU per request with the WAF at paranoia 1, with a trivial policy, against
the same route without it). scripts/bench-waf sends the same browser GET under callgrind.

- BROWSER_GET: a typical browser GET (a query string of three arguments, User-Agent, Accept,
  Accept-Language, three cookies) as raw HTTP/1.1 text with two %s: a suffix of the
  User-Agent and one of the session cookie (scripts/bench-waf --vary makes both new in every
  request); BROWSER_FILL fills them the same way every time.
- browser_headers(): the same request's header lines, for `wrk -H`.
- json_body(): a JSON document of product records just under 64 KiB (inside the WAF's default
  `body_limit`, so the WAF reads all of it), the body of the 64 KiB POST case; with
  attack=True one value in the middle is an SQL injection (the check that the WAF really
  inspects a body of that size in the gateway).
- waf_config(), policy_config(): the bench's sluice config (scripts/bench-lib/sluice.lua.in,
  rendered) with the WAF, or a trivial policy, added to its one route.
"""

import json

BROWSER_PATH = "/small?q=red+running+shoes&page=2&sort=price_asc"
BROWSER_HEADERS = [
    ("Host", "shop.example"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0%s"),
    ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("Cookie", "session=8f14e45fceea167a5a36dedd4bea%s; theme=dark; consent=yes"),
]
BROWSER_GET = ("GET %s HTTP/1.1\r\n" % BROWSER_PATH
               + "".join("%s: %s\r\n" % hv for hv in BROWSER_HEADERS) + "\r\n")
BROWSER_FILL = ("", "2543")

# An SQL injection in a query argument: what the WAF route must refuse (403) and the plain
# route pass, checked before measuring, so a WAF that is not on cannot be measured as cheap.
ATTACK_PATH = "/small?q=1%27+union+select+password+from+users--"

JSON_PATH = "/small"
JSON_MAX = 65536 - 256  # below the WAF's default body_limit ("64k") with room to spare


def browser_headers(fill=BROWSER_FILL):
    """["Host: shop.example", "User-Agent: ...", ...] with the two %s filled."""
    ua, session = fill
    out = []
    for name, value in BROWSER_HEADERS:
        if "%s" in value:
            value = value % (ua if name == "User-Agent" else session)
        out.append("%s: %s" % (name, value))
    return out


def json_headers():
    """The browser's headers as an application's script would send a JSON POST."""
    out = []
    for line in browser_headers():
        if line.startswith("Accept:"):
            line = "Accept: application/json"
        out.append(line)
    return out + ["Content-Type: application/json"]


def json_body(attack=False, limit=JSON_MAX):
    """{"items": [...]}: as many records of six fields (id, name, sku, price, color, stock) as
    fit in limit bytes. Deterministic: the same bytes in every run."""
    colors = ("red", "blue", "black", "white", "green", "grey")
    items, size = [], len('{"items": []}')
    i = 0
    while True:
        i += 1
        rec = json.dumps({"id": i, "name": "Trail running shoe %d" % i, "sku": "TRS-%06d" % i,
                          "price": round(49.99 + (i * 7) % 100, 2), "color": colors[i % len(colors)],
                          "stock": (i * 13) % 250})
        add = len(rec) + (2 if items else 0)
        if size + add > limit:
            break
        items.append(rec)
        size += add
    if attack:
        mid = len(items) // 2
        items[mid] = items[mid].replace('"Trail running shoe %d"' % (mid + 1),
                                        '"1\' union select password from users--"')
    return ('{"items": [' + ", ".join(items) + "]}").encode()


def raw_post(path, headers, body):
    """A raw HTTP/1.1 POST (for `sluice waf test` and the bench's own checks)."""
    return ("POST %s HTTP/1.1\r\n" % path + "".join(h + "\r\n" for h in headers)
            + "Content-Length: %d\r\n\r\n" % len(body)).encode() + body


# The bench's sluice config has one route; the variants add one thing to it.
ROUTE = 'routes = { { match = { path_prefix = "/" }, pool = "origin" } },'

# The trivial policy of issue 13 (the same as scripts/bench-policy's): one request header set.
TRIVIAL_POLICY = """\
-- the trivial policy of docs/benchmarks.md: one request header set
return {
  access = function(r)
    r.req_headers:set("x-policy", "1")
  end,
}
"""


def _replace_route(text, new):
    if ROUTE not in text:
        raise ValueError("scripts/bench-lib/sluice.lua.in changed: its route line is not %r" % ROUTE)
    return text.replace(ROUTE, new)


def waf_config(text, rules_dir):
    """The WAF on every route at paranoia 1, blocking, with the rules in rules_dir."""
    return _replace_route(text, 'waf = { paranoia = 1, mode = "block", rules = "%s" },\n  %s'
                          % (rules_dir, ROUTE))


def policy_config(text, policy_path):
    """The route with the trivial policy (TRIVIAL_POLICY written to policy_path)."""
    return _replace_route(text, 'policies = { trivial = { file = "%s" } },\n  '
                          'routes = { { match = { path_prefix = "/" }, pool = "origin", '
                          'policies = { "trivial" } } },' % policy_path)
