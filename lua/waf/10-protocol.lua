-- Protocol enforcement and anomalies. The HTTP/1 parser already refuses
-- malformed framing, bare CR/LF, obs-fold, CONNECT and conflicting lengths
-- (docs/architecture.md, "The HTTP/1 parser"); these rules look at what a
-- well-formed request can still carry.
local all_text = { "args", "args_names", "cookies", "cookies_names", "headers", "path", "files" }

return {
  { id = 10001, paranoia = 1, severity = "critical",
    targets = { "method" },
    operator = { not_within = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" } },
    message = "Method not allowed by policy",
    tags = { "protocol", "method-enforcement" } },

  { id = 10002, paranoia = 1, severity = "critical",
    targets = { "headers:content-type" },
    operator = { not_within = {
      "application/x-www-form-urlencoded", "multipart/form-data", "multipart/related",
      "application/json", "*+json", "text/xml", "application/xml", "*+xml",
      "text/plain", "application/octet-stream", "application/graphql", "application/csp-report",
      "application/x-ndjson", "application/grpc-web", "application/x-protobuf",
    } },
    message = "Content type not allowed by policy",
    tags = { "protocol", "content-type-enforcement" } },

  { id = 10003, paranoia = 1, severity = "critical",
    targets = { "body_error" },
    operator = { length_over = 0 },
    message = "Request body could not be parsed as its content type says",
    tags = { "protocol", "body-parse-error" } },

  { id = 10004, paranoia = 1, severity = "critical",
    targets = all_text,
    operator = { regex = "\\x00" },
    message = "NUL byte in a request value",
    tags = { "protocol", "invalid-character" } },

  { id = 10005, paranoia = 1, severity = "critical",
    targets = { "args", "args_names", "cookies", "path" },
    transforms = { "url_decode", "lowercase" },
    operator = { regex = "[\\r\\n]\\s*(?:set-cookie|location|content-(?:type|length)|refresh|"
                      .. "x-xss-protection|access-control-[a-z-]+)\\s*:" },
    message = "HTTP response splitting: a header line inside a value",
    tags = { "protocol", "response-splitting" } },

  { id = 10006, paranoia = 1, severity = "critical",
    targets = { "headers", "args", "cookies" },
    operator = { phrases = { "() {" } },
    message = "Shellshock function definition",
    tags = { "attack-rce", "shellshock" } },

  { id = 10010, paranoia = 2, severity = "notice",
    targets = { "headers:user-agent" },
    operator = { missing = true },
    message = "Request without a User-Agent",
    tags = { "protocol", "missing-header" } },

  { id = 10011, paranoia = 2, severity = "warning",
    targets = { "headers:host" },
    operator = { regex = "^[\\d.:\\[\\]]+$" },
    message = "Host is a numeric IP address",
    tags = { "protocol", "ip-host" } },

  { id = 10012, paranoia = 3, severity = "notice",
    targets = { "headers:accept" },
    operator = { missing = true },
    message = "Request without an Accept header",
    tags = { "protocol", "missing-header" } },

  { id = 10013, paranoia = 2, severity = "warning",
    targets = { "args", "args_names" },
    operator = { length_over = 8000 },
    message = "Argument longer than 8,000 bytes",
    tags = { "protocol", "argument-length" } },

  { id = 10014, paranoia = 3, severity = "warning",
    targets = { "args", "cookies" },
    operator = { regex = "[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]" },
    message = "Control character in a value",
    tags = { "protocol", "invalid-character" } },
}
