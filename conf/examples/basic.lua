-- basic.lua - the smallest config that shows every part of sluice's routing.
--
-- A config file is Lua that returns one table. It runs once, in an empty
-- sandbox (only env("NAME") and file("PATH") plus string/table/math/utf8),
-- and the table is then checked: every mistake is reported with its path,
-- e.g. "routes[2].service: unknown service "api"". Check it without starting
-- anything:   sluice check -c conf/examples/basic.lua
-- The reference for every key is docs/configuration.md.
return {
  -- Worker threads; each runs its own event loop. Default: one per CPU.
  workers = 2,

  -- Where clients connect. The name labels metrics and logs.
  listeners = { { name = "public", address = "127.0.0.1:8080" } },

  -- A pool is a set of interchangeable upstream servers and how to spread
  -- requests over them. Weights are relative: 9001 gets 3 of every 4 requests.
  pools = {
    web = {
      servers = { { address = "127.0.0.1:9001", weight = 3 }, { address = "127.0.0.1:9002", weight = 1 } },
      balance = "round_robin",            -- also "least_conn", "hash" (with hash_key = "header:x-user-id" / "client_ip" / "path")
      -- Up to 64 idle upstream connections kept per worker per server, each for 60s at most.
      keepalive = { idle = 64, idle_timeout = "60s" },
      -- Durations are strings with a unit: "500ms", "1s", "1.5s", "5m", "1h".
      timeouts = { connect = "1s", response = "30s" },
    },
  },

  -- A service is what routes point at; deployers shift its weights at run time
  -- (canary, blue-green) with `sluice ctl`, without touching routes.
  services = { web = { pools = { web = 100 } } },   -- a service splits traffic over pools by weight

  -- Routes are tried in order; the first whose every match criterion holds wins.
  -- No match: 404.
  routes = {
    -- Answered by the gateway itself, no upstream involved.
    { match = { path = "/healthz" }, respond = { status = 200, body = "ok\n" } },
    -- Any subdomain of example.com (not example.com itself), paths under /static/.
    { match = { host = "*.example.com", path_prefix = "/static/" }, pool = "web" },  -- pool = shorthand for a one-pool service
    -- A PCRE2 regex on the path, only GET and POST, only with header x-env: prod.
    { match = { path_regex = "^/api/v[0-9]+/", methods = { "GET", "POST" }, headers = { ["x-env"] = "prod" } }, service = "web" },
    -- Everything else.
    { match = { path_prefix = "/" }, service = "web" },
  },

  -- Bounds on what a client may send and how long it may take. Sizes are bytes
  -- or strings with k, m or g (powers of 1024).
  limits = { header_bytes = 16384, body_bytes = "10m", client_header_timeout = "10s", keepalive_timeout = "75s" },

  access_log = { path = "stdout" },     -- one JSON object a line
}
