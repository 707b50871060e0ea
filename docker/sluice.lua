-- docker/sluice.lua - the container image's config (/etc/sluice/sluice.lua).
--
-- One file for every environment: whatever differs between them comes from
-- environment variables (env) or mounted files (file, *_file keys), so the
-- same image runs on a laptop, in the compose stack, in Kubernetes and on ECS.
-- docs/deploy.md ("Configuring the image") lists the variables; secrets are
-- only ever read from mounted files, never from this file.
--
--   SLUICE_LISTEN              plaintext listener            "0.0.0.0:8080"
--   SLUICE_TLS_LISTEN          TLS listener (with the cert)  "0.0.0.0:8443"
--   SLUICE_TLS_CERT_FILE       PEM certificate chain; set with the key to enable TLS
--   SLUICE_TLS_KEY_FILE        PEM private key (mode 0600, owned by the sluice user)
--   SLUICE_UPSTREAMS           servers of pool "stable", comma-separated  "127.0.0.1:9001"
--   SLUICE_CANARY_UPSTREAMS    servers of pool "canary" (optional)
--   SLUICE_CANARY_WEIGHT       canary's share of 100 at start              "0"
--   SLUICE_UPSTREAM_TLS_SNI    TLS to the upstreams with this name (system CAs)
--   SLUICE_REDIS_ADDRESS       Redis for shared rate limits (optional)      "redis:6379"
--   SLUICE_REDIS_PASSWORD_FILE file holding the Redis password (optional)
--   SLUICE_RATE_LIMIT          requests per second per client IP            "100"
--   SLUICE_RATE_BURST          burst per client IP                          twice the rate
--   SLUICE_WORKERS             worker threads                               one per CPU
--   SLUICE_DRAIN_TIMEOUT       graceful shutdown bound                      "25s"
--   SLUICE_ADMIN_SOCKET        admin socket (sluice ctl reads it too)       "/run/sluice/admin.sock"
--   SLUICE_ADMIN_HTTP          admin HTTP listener: /metrics, /healthz, /readyz  "127.0.0.1:9901"
--                              ("off": none; the HEALTHCHECK probes /readyz on it); a
--                              non-loopback address needs the token file
--   SLUICE_ADMIN_HTTP_TOKEN_FILE  file holding the admin HTTP bearer token
--   SLUICE_STATE_FILE          runtime changes kept across restarts         "/var/lib/sluice/state"
--   SLUICE_ACCESS_LOG          "stdout", "stderr", "off" or a path          "stdout"
--   SLUICE_LOG_LEVEL           debug, info, warn, error (read by sluice run) "info"

-- luacheck: read globals env file

local function setting(name, default)
  local v = env(name)
  if v == nil or v == "" then
    return default
  end
  return v
end

local function number_setting(name, default)
  local v = setting(name, nil)
  if v == nil then
    return default
  end
  local n = tonumber(v)
  if n == nil or n ~= math.floor(n) or n < 0 then
    error(name .. "=" .. v .. ": expected a whole number", 0)
  end
  return math.tointeger(n)
end

local function list_setting(name, default)
  local out = {}
  for item in string.gmatch(setting(name, default or ""), "[^,%s]+") do
    out[#out + 1] = item
  end
  return out
end

local upstream_tls = nil
if setting("SLUICE_UPSTREAM_TLS_SNI", nil) then
  upstream_tls = { sni = setting("SLUICE_UPSTREAM_TLS_SNI", nil) }
end

local pools = {
  stable = {
    servers = list_setting("SLUICE_UPSTREAMS", "127.0.0.1:9001"),
    keepalive = { idle = 32, idle_timeout = "60s" },
    timeouts = { connect = "1s", response = "30s" },
    tls = upstream_tls,
  },
}
local split = { stable = 100 }
local canary = list_setting("SLUICE_CANARY_UPSTREAMS", nil)
if #canary > 0 then
  pools.canary = {
    servers = canary,
    keepalive = { idle = 32, idle_timeout = "60s" },
    timeouts = { connect = "1s", response = "30s" },
    tls = upstream_tls,
  }
  local w = number_setting("SLUICE_CANARY_WEIGHT", 0)
  split = { stable = 100 - w, canary = w }
end

local listeners = {
  { name = "public", address = setting("SLUICE_LISTEN", "0.0.0.0:8080") },
}
local cert, key = setting("SLUICE_TLS_CERT_FILE", nil), setting("SLUICE_TLS_KEY_FILE", nil)
if cert or key then
  if not (cert and key) then
    error("SLUICE_TLS_CERT_FILE and SLUICE_TLS_KEY_FILE go together: set both or neither", 0)
  end
  listeners[2] = {
    name = "public-tls",
    address = setting("SLUICE_TLS_LISTEN", "0.0.0.0:8443"),
    tls = { certificates = { { cert = cert, key = key } } },
  }
end

local rate = number_setting("SLUICE_RATE_LIMIT", 100)
local redis = nil
if setting("SLUICE_REDIS_ADDRESS", nil) then
  redis = {
    address = setting("SLUICE_REDIS_ADDRESS", nil),
    password_file = setting("SLUICE_REDIS_PASSWORD_FILE", nil),
    on_failure = "local",
  }
end

local admin = { socket = setting("SLUICE_ADMIN_SOCKET", "/run/sluice/admin.sock"), mode = "0600" }
local admin_http = setting("SLUICE_ADMIN_HTTP", "127.0.0.1:9901")
if admin_http ~= "off" then
  admin.http = admin_http
  admin.http_token_file = setting("SLUICE_ADMIN_HTTP_TOKEN_FILE", nil)
end

return {
  workers = number_setting("SLUICE_WORKERS", nil),
  -- Below Kubernetes' terminationGracePeriodSeconds (30 s) and ECS's stopTimeout.
  drain_timeout = setting("SLUICE_DRAIN_TIMEOUT", "25s"),
  listeners = listeners,
  pools = pools,
  services = { web = { pools = split } },
  rate_limits = {
    per_client = {
      key = "client_ip",
      rate = rate,
      per = "1s",
      burst = number_setting("SLUICE_RATE_BURST", rate * 2),
      shared = redis ~= nil,
      headers = true,
    },
  },
  redis = redis,
  routes = {
    -- Answered by the gateway itself: liveness for load balancers and probes.
    { name = "healthz", match = { path = "/healthz" }, respond = { status = 200, body = "ok\n" } },
    { name = "default", match = { path_prefix = "/" }, service = "web", rate_limit = "per_client" },
  },
  admin = admin,
  state_file = setting("SLUICE_STATE_FILE", "/var/lib/sluice/state"),
  access_log = { path = setting("SLUICE_ACCESS_LOG", "stdout") },
}
