-- luacheck configuration for sluice's Lua: lua/ (policy SDK, WAF rules,
-- Redis-side scripts) and conf/ (config files). Run: luacheck lua conf
std = "lua54"
max_line_length = 120
codes = true

-- Config files are evaluated in an empty sandbox that offers only two helpers:
-- env("NAME") and file("PATH") (DESIGN.md "Config versus runtime state").
-- Config files are documentation too (worked examples with trailing comments):
-- no line-length limit there.
files["conf/"] = {
	std = "lua54",
	read_globals = { "env", "file" },
	max_line_length = false,
}

-- Lua policies (docs/policies.md) run in the policy sandbox: their config
-- arrives as `...` (and the global `config`), and the helper libraries are
-- globals.
files["conf/examples/policies/"] = {
	std = "lua54",
	read_globals = { "config", "url", "html", "base64", "json", "re", "cache" },
}

-- Scripts that run inside Redis (EVAL/EVALSHA) see Redis's globals, and Redis's Lua is 5.1.
files["lua/redis/"] = {
	std = "lua51",
	read_globals = { "redis", "KEYS", "ARGV", "cjson", "cmsgpack", "bit", "struct" },
}

exclude_files = { "build/", "build-*/", "**/corpus/" }
