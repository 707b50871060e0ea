-- blue-green.lua - two complete versions side by side, all traffic on one.
-- Runs with the demo upstreams:
--   scripts/quickstart -c conf/examples/blue-green.lua
-- then, in another shell:
--   curl -s localhost:8080/                                   # served by blue
--   sluice ctl -s /tmp/sluice-blue-green.sock switch web green   # every request to green, at once
--   sluice ctl -s /tmp/sluice-blue-green.sock switch web --back  # and back to the split before
-- The runbook: docs/runbooks/blue-green.md.
return {
  workers = 2,
  listeners = { { name = "public", address = "127.0.0.1:8080" } },

  pools = {
    blue = { servers = { "127.0.0.1:9001" } },
    green = { servers = { "127.0.0.1:9002" } },
  },

  services = {
    -- green is deployed but takes no traffic until the switch; testers reach
    -- it with the header before
    web = {
      pools = { blue = 100, green = 0 },
      overrides = { { header = "x-version", value = "green", pool = "green" } },
    },
  },

  routes = { { match = { path_prefix = "/" }, service = "web" } },

  admin = { socket = "/tmp/sluice-blue-green.sock" },
  state_file = "/tmp/sluice-blue-green.state",

  access_log = { path = "stdout" },
}
