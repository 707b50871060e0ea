-- Cross-site scripting: the HTML/JS detector (src/waf_xss.c) and phrases.
local targets = { "args", "args_names", "cookies", "headers:user-agent", "headers:referer", "path", "files" }

return {
  { id = 18001, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "url_decode", "html_entity_decode", "remove_nulls" },
    operator = { xss = true },
    message = "XSS found by the HTML/JS detector",
    tags = { "attack-xss" } },

  { id = 18002, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "html_entity_decode", "js_decode", "remove_nulls", "lowercase" },
    operator = { phrases = {
      "<script", "</script", "<iframe", "<frameset", "<object", "<embed", "<applet", "<svg/on",
      "<svg on", "<img src=x on", "javascript:alert", "javascript:prompt", "javascript:confirm",
      "javascript:eval", "vbscript:", "document.write(", "string.fromcharcode(", ".innerhtml=",
      "onerror=alert", "onload=alert", "alert(document.", "<x onclick", "srcdoc=", "-moz-binding",
      "expression(", "<meta http-equiv", "<base href", "<form action=javascript", "formaction=javascript",
      "xlink:href=javascript", "href=javascript", "src=javascript", "data:text/html",
    } },
    message = "XSS keyword",
    tags = { "attack-xss" } },

  { id = 18003, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "base64_decode" },
    operator = { xss = true },
    message = "XSS inside a base64 value",
    tags = { "attack-xss", "encoded" } },

  { id = 18010, paranoia = 2, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "html_entity_decode", "js_decode", "url_decode", "remove_nulls" },
    operator = { xss = true },
    message = "XSS found by the detector after JS and double decoding",
    tags = { "attack-xss", "encoded" } },

  { id = 18011, paranoia = 2, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "html_entity_decode", "lowercase" },
    operator = { regex = "\\bon[a-z]{3,40}\\s*=|document\\.(?:cookie|domain|location)|window\\.location|"
      .. "\\b(?:alert|prompt|confirm)\\s*[(`]|javascript\\s*:|<[a-z]+[^>]*\\bstyle\\s*=[^>]*url\\(" },
    message = "XSS: event handler, DOM sink or script call",
    tags = { "attack-xss" } },

  { id = 18020, paranoia = 3, severity = "warning",
    targets = targets,
    transforms = { "url_decode", "html_entity_decode" },
    operator = { regex = "<[a-zA-Z!/?][^>]*>?" },
    message = "HTML markup in a value",
    tags = { "attack-xss" } },
}
