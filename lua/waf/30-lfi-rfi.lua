-- Path traversal, local and remote file inclusion.
-- Not the raw "query": every byte of it but the '&' and '=' that separate
-- arguments is in an argument's name or value, which are read (decoded once
-- more) anyway; no match of these rules holds a '&' or '=', and a "/../"
-- that path normalization would resolve across arguments is itself a match
-- of 12001 in the argument that holds it (docs/waf.md, "Cost").
local targets = { "args", "args_names", "cookies", "path", "files", "headers:referer", "headers:user-agent",
  "headers:x-file" }

return {
  { id = 12001, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "url_decode", "remove_nulls" },
    operator = { regex = "(?:^|[\\\\/;])\\.{2,}(?:[\\\\/]|\\xc0[\\xaf\\xae]|\\xc1[\\x9c\\x1c])|(?:^|[\\\\/])\\.\\.$" },
    message = "Path traversal (../)",
    tags = { "attack-lfi", "path-traversal" } },

  { id = 12002, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "url_decode", "remove_nulls", "normalize_path", "lowercase" },
    operator = { phrases = {
      "etc/passwd", "etc/shadow", "etc/group", "etc/hosts", "etc/issue", "etc/motd", "etc/crontab",
      "proc/self/", "proc/version", "boot.ini", "win.ini", "system.ini", "windows/system32",
      "winnt/system32", ".htpasswd", ".htaccess", "web.config", "wp-config.php", ".ssh/id_rsa",
      ".ssh/authorized_keys", ".bash_history", ".aws/credentials", ".git/config", ".git/head",
      ".svn/entries", ".docker/config.json", "/var/log/apache", "/var/log/nginx", "/var/log/auth.log",
      "/usr/local/etc/", "c:/windows/", "applicationhost.config", "web-inf/web.xml", "meta-inf/",
    } },
    message = "Access to an operating-system or application file",
    tags = { "attack-lfi", "os-file" } },

  { id = 12003, paranoia = 1, severity = "critical",
    targets = { "args", "cookies", "path", "headers:referer" },
    transforms = { "url_decode", "lowercase" },
    operator = { phrases = {
      "php://filter", "php://input", "php://stdin", "php://fd", "php://memory", "expect://", "zip://",
      "phar://", "glob://", "data://text/plain", "file:///", "file://localhost", "jar:file:",
      "dict://", "gopher://", "ldap://", "tftp://", "netdoc:", "compress.zlib://",
    } },
    message = "Stream wrapper or file URL in a value",
    tags = { "attack-lfi", "attack-rfi", "wrapper" } },

  { id = 12004, paranoia = 1, severity = "critical",
    targets = { "path", "args" },
    transforms = { "url_decode", "lowercase" },
    operator = { regex = "(?:^|/)\\.(?:env|git|svn|hg|ds_store|bzr)(?:$|[/.?])" },
    message = "Access to a hidden project file",
    tags = { "attack-lfi", "restricted-file" } },

  { id = 13001, paranoia = 1, severity = "critical",
    targets = { "args", "cookies", "headers:user-agent" },
    transforms = { "url_decode", "trim", "lowercase" },
    operator = { regex = "^(?:https?|ftps?|s?ftp)://(?:[^/@]*@)?(?:\\d{1,3}\\.){3}\\d{1,3}" },
    message = "Remote file inclusion: URL with an IP address",
    tags = { "attack-rfi" } },

  { id = 13002, paranoia = 1, severity = "critical",
    -- not the Referer: a page address may end in '?'
    targets = { "args", "cookies", "headers:user-agent" },
    transforms = { "url_decode", "trim", "lowercase" },
    operator = { regex = "^(?:https?|ftps?)://[^\\s]+?\\?+$|^(?:https?|ftps?)://[^\\s]+\\.(?:txt|php|jpg)\\?+$" },
    message = "Remote file inclusion: URL ending in '?'",
    tags = { "attack-rfi" } },

  { id = 13003, paranoia = 1, severity = "critical",
    targets = { "args", "cookies", "headers:user-agent", "headers:referer" },
    transforms = { "url_decode", "lowercase", "compress_whitespace" },
    operator = { regex = "\\b(?:include|require)(?:_once)?\\s*\\(?\\s*['\"]?\\s*(?:https?|ftp|php|data)://" },
    message = "Remote file inclusion: include of a URL",
    tags = { "attack-rfi", "attack-php" } },

  { id = 13010, paranoia = 2, severity = "critical",
    targets = { "args" },
    transforms = { "url_decode", "trim", "lowercase" },
    operator = { regex = "^(?:https?|ftps?)://" },
    message = "A URL as an argument value (possible remote file inclusion)",
    tags = { "attack-rfi" } },
}
