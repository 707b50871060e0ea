-- policies.lua - Lua policies on a route (docs/policies.md).
--
-- The "tenant" policy (conf/examples/policies/tenant.lua) runs before the rate
-- limit, so the limit counts per tenant (key "policy:tenant", set by the
-- script with r:set_limit_key). Check it: sluice check -c conf/examples/policies.lua
return {
  workers = 2,
  listeners = { { name = "public", address = "127.0.0.1:8080" } },
  pools = {
    stable = { servers = { "127.0.0.1:9001" } },
    canary = { servers = { "127.0.0.1:9002" } },
  },
  -- the canary gets no share of its own: only the policy sends beta testers there
  services = { api = { pools = { stable = 100, canary = 0 } } },

  policies = {
    tenant = {
      file = "policies/tenant.lua",          -- relative to this file's directory
      config = { header = "x-tenant", blocked = { "evil-corp" }, beta_pool = "canary" },
      on_error = "pass",                     -- a failing script lets the request through (logged, counted)
      instructions = 1000000,                -- per call
      memory = "8m",                         -- per call
    },
  },

  rate_limits = {
    per_tenant = { key = "policy:tenant", rate = 100, per = "1s", burst = 200 },
  },

  routes = {
    { name = "health", match = { path = "/healthz" }, respond = { status = 200, body = "ok\n" } },
    { name = "api", match = { path_prefix = "/" }, service = "api", policies = { "tenant" }, rate_limit = "per_tenant" },
  },

  access_log = { path = "stdout" },
}
