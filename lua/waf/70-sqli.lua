-- SQL injection: the tokenizer (src/waf_sqli.c) and database-specific phrases.
local targets = { "args", "args_names", "cookies", "headers:user-agent", "headers:referer",
  "headers:x-forwarded-for", "path" }

return {
  { id = 19001, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "remove_nulls" },
    operator = { sqli = true },
    message = "SQL injection found by the tokenizer",
    tags = { "attack-sqli" } },

  { id = 19002, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "remove_nulls", "remove_comments", "compress_whitespace", "lowercase" },
    operator = { phrases = {
      "information_schema", "@@version", "@@datadir", "@@hostname", "sysobjects", "syscolumns",
      "sys.tables", "pg_catalog", "pg_shadow", "sqlite_master", "mysql.user", "xp_cmdshell",
      "sp_executesql", "sp_oacreate", "waitfor delay", "pg_sleep(", "benchmark(", "sleep(",
      "load_file(", "into outfile", "into dumpfile", "union select", "union all select",
      "union distinct select", "utl_http.", "utl_inaddr.", "dbms_pipe.", "dbms_lock.sleep",
      "extractvalue(", "updatexml(", "group_concat(", "concat_ws(", "char(0x", "concat(0x",
      "randomblob(", "sqlite_version(", "version()", "current_user()", "database()", "having 1=1",
      "order by 1--", "or 1=1", "and 1=1", "and 1=2", "or true--", "' or '", "\" or \"",
      "'='", "'or'", "' or 1", "' and 1", "admin'--", "' --", "';", "/*!", "1=1--",
    } },
    message = "SQL injection keyword or idiom",
    tags = { "attack-sqli" } },

  { id = 19003, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "url_decode", "remove_nulls" },
    operator = { sqli = true },
    message = "SQL injection found by the tokenizer after double decoding",
    tags = { "attack-sqli", "encoded" } },

  { id = 19010, paranoia = 2, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "remove_comments", "compress_whitespace", "lowercase" },
    operator = { regex = "\\b(?:select|union|insert|update|delete|drop|alter|create|exec)\\b.{0,60}?"
      .. "\\b(?:from|into|table|where|set|values|database|procedure)\\b" },
    message = "SQL statement words",
    tags = { "attack-sqli" } },

  { id = 19011, paranoia = 2, severity = "warning",
    targets = targets,
    transforms = { "url_decode" },
    operator = { regex = "['\"`]\\s*(?:;|--|#|/\\*|\\)\\s*(?:;|--|#))" },
    message = "Quote followed by a statement end or comment",
    tags = { "attack-sqli" } },

  { id = 19012, paranoia = 2, severity = "critical",
    targets = { "headers", "cookies_names" },
    transforms = { "url_decode", "remove_nulls" },
    operator = { sqli = true },
    message = "SQL injection in any header",
    tags = { "attack-sqli" } },

  { id = 19020, paranoia = 3, severity = "warning",
    targets = targets,
    transforms = { "url_decode" },
    operator = { regex = "(?:['\"`;=()#]|--|/\\*).*?(?:['\"`;=()#]|--|/\\*).*?(?:['\"`;=()#]|--|/\\*).*?"
      .. "(?:['\"`;=()#]|--|/\\*)" },
    message = "Many SQL special characters",
    tags = { "attack-sqli" } },
}
