-- The WAF (docs/waf.md): the shipped rule set at paranoia 1 on every route,
-- an audit log, exclusions for fields that legitimately look like attacks,
-- a route that opts out and one with stricter settings.
--   sluice check -c conf/examples/waf.lua
--   sluice waf test --paranoia 1 t/waf/attacks.jsonl t/waf/benign.jsonl
return {
  workers = 2,
  listeners = { { name = "public", address = "127.0.0.1:8080" } },
  pools = {
    web = { servers = { { address = "127.0.0.1:9001" } } },
    api = { servers = { { address = "127.0.0.1:9002" } } },
  },
  services = {
    web = { pools = { web = 100 } },
    api = { pools = { api = 100 } },
  },
  waf = {
    paranoia = 1,
    mode = "block",            -- "detect": log what would be blocked, block nothing
    threshold = 5,             -- one critical rule blocks
    audit_log = "/tmp/sluice-waf-audit.jsonl",
    exclude = {
      -- passwords and session cookies are random by design: never inspected
      targets = { "args:password", "cookies:session" },
    },
    -- a paranoia-2 rule tried beside the blocking set: it runs and is logged, never blocks
    detect_rules = { 18011 },
  },
  routes = {
    -- health checks and metrics scrapers: no WAF
    { name = "health", match = { path = "/healthz" }, respond = { status = 200, body = "ok\n" }, waf = false },
    -- a code-sharing API: its snippets hold SQL; the SQL tokenizer does not read `code` there
    { name = "snippets", match = { path_prefix = "/api/snippets" }, service = "api",
      waf = { exclude = { targets = { { target = "args:code", rules = { 19001, 19002, 19003 } } } } } },
    -- the admin area: stricter
    { name = "admin", match = { path_prefix = "/admin/" }, service = "web", waf = { paranoia = 2 } },
    { name = "default", match = { path_prefix = "/" }, service = "web" },
  },
  access_log = { path = "stdout" },
}
