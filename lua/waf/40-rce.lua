-- Remote command execution: shell commands after a separator, command
-- substitution, reverse shells, Windows command lines.
local targets = { "args", "args_names", "cookies", "headers:user-agent", "headers:referer", "files", "path" }
local unix_commands = "cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|dash|python[23]?|perl|"
  .. "ruby|php|nslookup|dig|ping|echo|chmod|chown|rm|touch|sleep|telnet|ifconfig|ps|kill|killall|awk|"
  .. "sed|find|base64|tftp|ftp|scp|ssh|crontab|passwd|useradd|head|tail|more|less|env|printenv|"
  .. "socat|xterm|mkfifo|sudo|su|systemctl|tar|xxd|od|hostname|net|netstat|lsof|eval|exec|expr|busybox"

return {
  { id = 14001, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "cmdline" },
    operator = { regex = "(?:[;|&\\n`]|\\$\\()\\s*(?:/(?:usr/)?(?:s?bin)/)?(?:" .. unix_commands
      .. ")(?:$|\\s+(?:$|[-/$.~0-9'\"])|\\s*[<>|&;`)]|/)" },
    message = "Unix command after a shell separator",
    tags = { "attack-rce", "unix-shell" } },

  { id = 14002, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "lowercase" },
    operator = { regex = "\\$\\((?:[a-z/ ]*?)(?:" .. unix_commands .. ")\\b|`\\s*(?:" .. unix_commands
      .. ")\\b[^`]*`|\\$\\{ifs\\}|\\$ifs\\b" },
    message = "Shell command substitution",
    tags = { "attack-rce", "unix-shell" } },

  { id = 14003, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "cmdline" },
    operator = { phrases = {
      "/bin/sh", "/bin/bash", "/bin/zsh", "/dev/tcp/", "/dev/udp/", "bash -i", "sh -i", "nc -e",
      "nc -c", "ncat -e", "mkfifo /tmp", "/usr/bin/id", "/usr/bin/whoami", "/bin/cat", "/bin/ls",
      "wget http", "curl http", "curl -o", "wget -o", "chmod +x", "chmod 777", "python -c",
      "python3 -c", "perl -e", "ruby -e", "php -r", "lua -e", "busybox ", "xterm -display",
      "socat exec:", "socat tcp", "telnet ", "rm -rf", "/etc/passwd", "cat/etc", "uname -a",
    } },
    message = "Unix shell command line",
    tags = { "attack-rce", "unix-shell" } },

  { id = 14004, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "cmdline" },
    operator = { phrases = {
      "cmd.exe", "cmd/c", "cmd /c", "cmd/k", "command.com", "powershell.exe", "powershell -",
      "pwsh -", "invoke-expression", "iex(", "downloadstring(", "downloadfile(", "new-object net.webclient",
      "certutil -urlcache", "certutil.exe", "bitsadmin /transfer", "mshta ", "mshta.exe",
      "rundll32", "regsvr32", "wscript.exe", "cscript.exe", "net user ", "net localgroup",
      "whoami /", "systeminfo", "tasklist", "wmic ", "-encodedcommand", "start-process",
    } },
    message = "Windows command line",
    tags = { "attack-rce", "windows-shell" } },

  { id = 14010, paranoia = 2, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "cmdline" },
    operator = { regex = "(?:^|[;|&\\n`]|\\$\\()\\s*(?:" .. unix_commands .. ")\\b" },
    message = "Unix command word after a shell separator",
    tags = { "attack-rce", "unix-shell" } },
}
