-- sluice.lua - the default config: what scripts/quickstart runs.
--
-- It fronts the two demo upstreams that the quickstart starts (blue on
-- 127.0.0.1:9001, green on 127.0.0.1:9002) and shows the main features.
-- The file is Lua that returns a table, evaluated once in a sandbox that offers
-- only env("NAME") and file("PATH") besides string/table/math/utf8. Check a
-- change before (re)loading it:   sluice check -c conf/sluice.lua
-- Every key is described in docs/configuration.md.

return {
  -- Worker threads, each with its own event loop. Leave it out to get one per CPU.
  workers = 2,

  -- How long a graceful shutdown waits for in-flight requests.
  drain_timeout = "30s",

  -- Where clients connect. The name labels metrics and log lines.
  listeners = {
    { name = "public", address = "127.0.0.1:8080" },
  },

  -- Pools: interchangeable upstream servers and how to spread requests over them.
  pools = {
    -- The current version (the "blue" demo upstream).
    web = {
      servers = { { address = "127.0.0.1:9001", weight = 1 } },
      balance = "round_robin",
      keepalive = { idle = 32, idle_timeout = "60s" },
      timeouts = { connect = "1s", response = "30s" },
    },
    -- The next version (the "green" demo upstream). A server can also be
    -- written as a plain "host:port" string (weight 1).
    canary = {
      servers = { "127.0.0.1:9002" },
      -- Requests from one user stick to one server (matters once a pool has several).
      balance = "hash",
      hash_key = "header:x-user-id",
      timeouts = { connect = "500ms", response = "30s" },
    },
  },

  -- Services split traffic over pools by weight: here 90% to web, 10% to canary.
  -- Deployers shift these weights at run time with `sluice ctl`, no reload needed.
  services = {
    web = { pools = { web = 90, canary = 10 } },
  },

  -- Routes, tried in order; the first whose every criterion matches wins (else 404).
  routes = {
    -- Answered by the gateway itself: a liveness check for load balancers.
    {
      name = "healthz",
      match = { path = "/healthz" },
      respond = { status = 200, body = "ok\n" },
    },
    -- Static files of any *.example.com host go straight to the web pool
    -- (pool = shorthand for a service made of that one pool).
    {
      name = "static",
      match = { host = "*.example.com", path_prefix = "/static/" },
      pool = "web",
    },
    -- Versioned API calls, only GET and POST, only from clients sending x-env: prod.
    {
      name = "api",
      match = {
        path_regex = "^/api/v[0-9]+/",
        methods = { "GET", "POST" },
        headers = { ["x-env"] = "prod" },
      },
      service = "web",
    },
    -- Everything else.
    {
      name = "default",
      match = { path_prefix = "/" },
      service = "web",
    },
  },

  -- What a client may send, and how long it may take.
  -- Sizes are bytes or strings with k, m, g; durations need a unit.
  limits = {
    header_bytes = "16k",
    body_bytes = "10m",
    client_header_timeout = "10s",
    keepalive_timeout = "75s",
    -- connections one client address may hold open (0: no cap, the default);
    -- keep it 0 behind a load balancer (sluice sees every client at its address)
    -- max_connections_per_client = 200,
  },

  -- One JSON object per request and line ("off" disables it).
  access_log = { path = "stdout" },
}
