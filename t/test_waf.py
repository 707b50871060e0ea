"""sluice waf test: the shipped rule set against t/waf/'s corpus, and the
command's behaviour (verdict lines, exit status, errors by file and rule)."""

import json
import re

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
