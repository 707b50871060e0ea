-- tenant.lua - an example Lua policy (docs/policies.md).
--
-- Every request on the route must name its tenant in a header; blocked tenants
-- are refused, the others get their own rate-limit bucket (rate limit key
-- "policy:tenant"), beta testers go to the canary pool, and the tenant is
-- echoed back and written into the access-log line.
local config = ...

local header = config.header or "x-tenant"
local blocked = {}
for _, name in ipairs(config.blocked or {}) do
  blocked[name] = true
end

-- a tenant name: letters, digits, "-" and "_", 1 to 64 of them
local function valid(name)
  return #name <= 64 and name:match("^[%w_-]+$") ~= nil
end

return {
  access = function(r)
    local tenant = r:header(header)
    if not tenant then
      return r:deny(401, "missing " .. header)
    end
    if not valid(tenant) or blocked[tenant] then
      return r:deny(403, "tenant not allowed")
    end
    r.ctx.tenant = tenant
    r:set_limit_key("tenant", tenant)
    if r:cookie("beta") == "1" and config.beta_pool then
      r:set_pool(config.beta_pool)
    end
    -- the upstream learns who called, and never sees the client's credentials
    r.req_headers:set("x-tenant-id", tenant)
    r.req_headers:remove("authorization")
  end,

  response = function(r)
    r.resp_headers:set("x-tenant", r.ctx.tenant)
    r.resp_headers:remove("server")
  end,

  log = function(r)
    r:log("tenant", r.ctx.tenant or "")
  end,
}
