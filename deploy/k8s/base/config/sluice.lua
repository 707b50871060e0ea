-- deploy/k8s/base/config/sluice.lua - sluice's config in Kubernetes: the
-- ConfigMap sluice-config (kustomize configMapGenerator), mounted read-only at
-- /etc/sluice/k8s. The file is the same in every environment; what differs
-- (upstreams, Redis, rate limits, TLS on or off) comes from the ConfigMap
-- sluice-env through env(). Secrets are files mounted from Kubernetes Secrets:
-- /etc/sluice/redis/password, /etc/sluice/admin/token (the admin HTTP
-- listener's bearer token) and /etc/sluice/tls/tls.{crt,key}. The listen
-- addresses match the Deployment's containerPorts; SLUICE_HTTP_LISTEN and
-- SLUICE_HTTPS_LISTEN exist for `podman kube play` with host networking, and
-- so does SLUICE_ADMIN_HTTP (default 0.0.0.0:9901: the kubelet's readiness
-- probe and Prometheus reach /readyz and /metrics on the pod's address;
-- /metrics needs the token, /healthz and /readyz do not).
-- A change to this file or to sluice-env changes the ConfigMaps' hashed names,
-- so the Deployment rolls its pods (docs/deploy.md, "Kubernetes").

-- luacheck: read globals env file

local function setting(name, default)
  local v = env(name)
  if v == nil or v == "" then
    return default
  end
  return v
end

local function number(name, default)
  local v = setting(name, nil)
  local n = v and math.tointeger(tonumber(v))
  if v and not n then
    error(name .. "=" .. v .. ": expected a whole number", 0)
  end
  return n or default
end

local function servers(name)
  local out = {}
  for item in string.gmatch(setting(name, ""), "[^,%s]+") do
    out[#out + 1] = item
  end
  if #out == 0 then
    error(name .. " is empty: list the pool's servers as host:port,host:port", 0)
  end
  return out
end

local pool_defaults = {
  keepalive = { idle = 64, idle_timeout = "60s" },
  timeouts = { connect = "1s", response = "30s" },
  health_check = { type = "http", path = setting("SLUICE_UPSTREAM_HEALTH_PATH", "/healthz"), interval = "5s" },
  breaker = { consecutive_failures = 5, error_rate = 0.5, window = "10s", open_for = "5s" },
}

local function pool(name)
  local p = { servers = servers(name) }
  for k, v in pairs(pool_defaults) do
    p[k] = v
  end
  return p
end

local listeners = { { name = "http", address = setting("SLUICE_HTTP_LISTEN", "0.0.0.0:8080") } }
if setting("SLUICE_TLS", "off") == "on" then
  listeners[2] = {
    name = "https",
    address = setting("SLUICE_HTTPS_LISTEN", "0.0.0.0:8443"),
    tls = { certificates = { { cert = "/etc/sluice/tls/tls.crt", key = "/etc/sluice/tls/tls.key" } } },
  }
end

local pools = { stable = pool("SLUICE_UPSTREAMS") }
local split = { stable = 100 }
if setting("SLUICE_CANARY_UPSTREAMS", nil) then
  pools.canary = pool("SLUICE_CANARY_UPSTREAMS")
  split = { stable = 100, canary = 0 }
end

local rate = number("SLUICE_RATE_LIMIT", 200)
return {
  workers = number("SLUICE_WORKERS", nil),
  -- below terminationGracePeriodSeconds minus the preStop pause
  drain_timeout = setting("SLUICE_DRAIN_TIMEOUT", "25s"),
  listeners = listeners,
  pools = pools,
  services = { web = { pools = split } },
  rate_limits = {
    per_client = { key = "client_ip", rate = rate, per = "1s", burst = number("SLUICE_RATE_BURST", rate * 2),
                   shared = true, headers = true },
  },
  redis = {
    address = setting("SLUICE_REDIS_ADDRESS", "redis:6379"),
    password_file = "/etc/sluice/redis/password",
    on_failure = setting("SLUICE_REDIS_ON_FAILURE", "local"),
  },
  routes = {
    { name = "healthz", match = { path = "/healthz" }, respond = { status = 200, body = "ok\n" } },
    { name = "default", match = { path_prefix = "/" }, service = "web", rate_limit = "per_client" },
  },
  admin = {
    socket = "/run/sluice/admin.sock",
    mode = "0600",
    http = setting("SLUICE_ADMIN_HTTP", "0.0.0.0:9901"),
    http_token_file = "/etc/sluice/admin/token",
  },
  state_file = "/var/lib/sluice/state",
  access_log = { path = "stdout" },
}
