-- Scanner and bot signatures: tools that announce themselves.
return {
  { id = 11001, paranoia = 1, severity = "critical",
    targets = { "headers:user-agent" },
    transforms = { "lowercase" },
    operator = { phrases = {
      "sqlmap", "nikto", "nmap scripting", "nmap nse", "masscan", "dirbuster", "gobuster", "wfuzz",
      "acunetix", "nessus", "openvas", "w3af", "zgrab", "nuclei", "havij", "arachni", "skipfish",
      "wpscan", "zmeu", "morfeus", "netsparker", "appscan", "commix", "xsstrike", "feroxbuster",
      "fuzz faster u fool", "dirb/", "hydra", "jorgee", "brutus", "paros", "webinspect", "whatweb",
      "bsqlbf", "pangolin", "sqlninja", "grabber", "vega/", "qualys", "detectify", "struts-pwn",
      "log4shell", "interactsh", "masscan-ng", "zmap", "httpx - open-source", "censysinspect",
    } },
    message = "Security scanner user agent",
    tags = { "scanner", "bot" } },

  { id = 11002, paranoia = 1, severity = "critical",
    targets = { "headers_names" },
    transforms = { "lowercase" },
    operator = { phrases = { "acunetix-", "x-scanner", "x-wipp", "x-request-memo", "x-ray-" } },
    message = "Security scanner header",
    tags = { "scanner", "bot" } },

  { id = 11010, paranoia = 2, severity = "notice",
    targets = { "headers:user-agent" },
    transforms = { "lowercase" },
    operator = { phrases = {
      "python-requests", "python-urllib", "go-http-client", "libwww-perl", "curl/", "wget/",
      "java/", "okhttp", "aiohttp", "httpclient", "scrapy", "masscan", "phantomjs", "headlesschrome",
    } },
    message = "Scripting library or headless browser user agent",
    tags = { "scanner", "bot", "automation" } },
}
