-- canary.lua - a canary release: most users on "blue", a sticky 10% on
-- "green", testers on green by header or cookie. Runs with the demo upstreams:
--   scripts/quickstart -c conf/examples/canary.lua
-- then, in another shell:
--   curl -s -H 'cookie: uid=alice' localhost:8080/      # alice stays on one version
--   curl -s -H 'x-canary: 1' localhost:8080/            # always green
--   sluice ctl -s /tmp/sluice-canary.sock set service-weights web blue=80 green=20
--   sluice ctl -s /tmp/sluice-canary.sock show services
-- The runbook: docs/runbooks/canary.md. The keys: docs/configuration.md#services.
return {
  workers = 2,
  listeners = { { name = "public", address = "127.0.0.1:8080" } },

  -- the stable version and the new one (scripts/quickstart starts both)
  pools = {
    blue = { servers = { "127.0.0.1:9001" } },
    green = { servers = { "127.0.0.1:9002" } },
  },

  services = {
    web = {
      -- relative weights: 10% of users on green
      pools = { blue = 90, green = 10 },
      -- a user's pool follows the hash of cookie "uid": the same user always
      -- lands on the same version, and moving green from 10 to 20 moves only
      -- the 10% of users that must move, from blue to green
      sticky = "cookie:uid",
      -- checked before the split: testers and internal users reach green now
      overrides = {
        { header = "x-canary", value = "1", pool = "green" },
        { cookie = "version", value = "green", pool = "green" },
      },
    },
  },

  routes = { { match = { path_prefix = "/" }, service = "web" } },

  -- sluice ctl talks to this socket; changes are kept in the state file
  admin = { socket = "/tmp/sluice-canary.sock" },
  state_file = "/tmp/sluice-canary.state",

  access_log = { path = "stdout" },
}
