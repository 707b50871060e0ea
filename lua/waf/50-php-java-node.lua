-- PHP, Java (and expression-language/template) and Node.js injection.
local targets = { "args", "args_names", "cookies", "headers:user-agent", "headers:referer", "files", "path",
  "body" }

return {
  { id = 15001, paranoia = 1, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "remove_comments", "cmdline" },
    operator = { phrases = {
      "<?php", "<?=", "phpinfo(", "shell_exec(", "passthru(", "proc_open(", "pcntl_exec(",
      "base64_decode(", "gzinflate(", "gzuncompress(", "str_rot13(", "$_get[", "$_post[", "$_request[",
      "$_server[", "$_cookie[", "$_files[", "$_env[", "$globals[", "create_function(", "call_user_func",
      "file_put_contents(", "move_uploaded_file(", "system($_", "assert($_", "eval($_", "eval(base64",
      "eval(gz", "preg_replace(/", "allow_url_include", "auto_prepend_file", "disable_functions",
      "php_uname(", "posix_getpwuid(", "popen($_", "include($_", "require($_", "${@", "@print(",
      "@eval(", "@system(", "@assert(",
    } },
    message = "PHP code injection",
    tags = { "attack-php" } },

  { id = 15002, paranoia = 1, severity = "critical",
    targets = { "args", "cookies", "body" },
    transforms = { "url_decode" },
    operator = { regex = "(?:^|[;{(|\\s])[OC]:\\d+:\"[A-Za-z_\\\\][\\w\\\\]*\":\\d+:\\{|^a:\\d+:\\{[si]:\\d" },
    message = "PHP serialized object (object injection)",
    tags = { "attack-php", "deserialization" } },

  { id = 15003, paranoia = 1, severity = "critical",
    targets = { "files" },
    transforms = { "lowercase" },
    operator = { regex = "\\.(?:php[0-9s]?|phtml|phar|pht|shtml|jsp|jspx|asp|aspx|ashx|cer|cgi|pl|"
      .. "py|sh|exe|war|htaccess|config)(?:$|[.\\x00;:%/\\s])" },
    message = "Upload of a server-side script",
    tags = { "attack-php", "attack-rce", "upload" } },

  { id = 15010, paranoia = 2, severity = "critical",
    targets = targets,
    transforms = { "url_decode", "remove_comments", "cmdline" },
    operator = { regex = "\\b(?:eval|system|exec|popen|assert|include|require|include_once|require_once|"
      .. "file_get_contents|fopen|readfile|unserialize|fsockopen|highlight_file|show_source)\\(" },
    message = "PHP function call",
    tags = { "attack-php" } },

  { id = 16001, paranoia = 1, severity = "critical",
    targets = { "args", "args_names", "cookies", "headers", "path", "body" },
    transforms = { "url_decode", "url_decode", "lowercase" },
    operator = { phrases = {
      "${jndi:", "${${", "${lower:", "${upper:", "${::-", "${env:", "${sys:", "${java:", "${date:",
      "${base64:", "${main:", "${ctx:", "${spring:", "${k8s:", "${docker:", "${bundle:", "${web:",
      "${log4j:", "${marker:", "${event:", "${sd:", "jndi:ldap:", "jndi:rmi:", "jndi:dns:",
    } },
    message = "Log4j lookup (JNDI injection)",
    tags = { "attack-java", "log4shell" } },

  { id = 16002, paranoia = 1, severity = "critical",
    targets = { "args", "args_names", "cookies", "headers", "path", "body" },
    transforms = { "url_decode", "js_decode", "compress_whitespace", "lowercase" },
    operator = { phrases = {
      "java.lang.runtime", "java.lang.processbuilder", "getruntime().exec(", "runtime.getruntime",
      "new processbuilder", "javax.script.scriptenginemanager", "java.io.objectinputstream",
      "class.module.classloader", "class.classloader", "@java.lang", "#_memberaccess", "%{(#",
      "%{#", "#context[", "@ognl", "ognlcontext", "freemarker.template.utility.execute",
      "t(java.lang", "new java.", "java.net.url", "java.lang.system", "rO0AB", "aced0005",
      "org.apache.commons.collections", "com.sun.org.apache", "xwork.methodaccessor",
      "#request.get", "java.beans.xmldecoder", "<java version=",
    } },
    message = "Java code, expression-language or deserialization injection",
    tags = { "attack-java" } },

  { id = 16003, paranoia = 1, severity = "critical",
    targets = { "args", "args_names", "cookies", "headers:user-agent", "headers:referer", "path", "body" },
    transforms = { "url_decode", "compress_whitespace", "lowercase" },
    operator = { regex = "__(?:class|globals|builtins|import|subclasses|mro|init|bases|getattribute)__|"
      .. "\\{\\{\\s*(?:config|self|request|lipsum|cycler|joiner|namespace|url_for|get_flashed_messages)\\b|"
      .. "\\{\\{\\s*\\d+\\s*[*+]\\s*['\"]?\\d+|\\$\\{\\s*\\d+\\s*\\*\\s*\\d+\\s*\\}|#\\{\\s*\\d+\\s*\\*\\s*\\d+\\s*\\}|"
      .. "<%=?\\s*\\d+\\s*\\*\\s*\\d+\\s*%>|\\{\\{.{0,40}\\b(?:popen|os\\.system|subprocess|eval|exec)\\b" },
    message = "Server-side template injection",
    tags = { "attack-java", "attack-ssti" } },

  { id = 17001, paranoia = 1, severity = "critical",
    targets = { "args", "args_names", "cookies", "headers:user-agent", "headers:referer", "path", "body" },
    transforms = { "url_decode", "js_decode", "cmdline" },
    operator = { phrases = {
      "child_process", "process.mainmodule", "process.binding(", "global.process", "require(fs)",
      "require(net)", "require(vm)", ".constructor.constructor(", "constructor.constructor(",
      "this.constructor.constructor", "execsync(", "spawnsync(", "fs.readfilesync(", "fs.writefilesync(",
      "new function(", "function(return", "process.kill(", "process.exit(", "vm.runinnewcontext",
      "vm.runinthiscontext", "require(child", "import(child", "__defineGetter__",
    } },
    message = "Node.js code injection",
    tags = { "attack-node" } },

  { id = 17002, paranoia = 1, severity = "critical",
    targets = { "args_names", "args", "cookies", "headers:user-agent", "headers:referer" },
    transforms = { "url_decode", "lowercase" },
    operator = { regex = "__proto__|\\bconstructor\\]?\\[?\\.?prototype\\b|constructor\\.prototype" },
    message = "Prototype pollution",
    tags = { "attack-node", "prototype-pollution" } },

  { id = 17003, paranoia = 1, severity = "critical",
    targets = { "args_names", "args", "cookies", "headers:user-agent", "headers:referer" },
    transforms = { "url_decode" },
    operator = { regex = "\\[\\s*\\$(?:ne|gt|gte|lt|lte|nin|in|regex|where|exists|expr|or|and|not|elemMatch)\\s*\\]"
      .. "|^\\$(?:ne|gt|gte|lt|lte|nin|regex|where|expr|elemMatch)$|\\{\\s*\"?\\$(?:ne|gt|where|regex|nin)\"?\\s*:" },
    message = "NoSQL (MongoDB) operator injection",
    tags = { "attack-node", "nosql" } },

  { id = 17010, paranoia = 2, severity = "critical",
    targets = { "args", "cookies", "body" },
    transforms = { "url_decode", "js_decode", "lowercase" },
    operator = { phrases = { "process.env", "require(", "eval(", "settimeout(", "setinterval(", "function(" } },
    message = "JavaScript code in a value",
    tags = { "attack-node" } },
}
