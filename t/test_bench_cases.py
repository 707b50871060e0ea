"""scripts/bench's cost cases of issue 13 (--cases waf,policy): what they select, the configs
and requests they measure, and one short run of them against the real binary, nginx and wrk
(a smoke test: it checks that the rows and the docs block come out, not any figure)."""

import importlib.machinery
import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import SLUICE_BIN, SRC_DIR, run_sluice

SCRIPTS = SRC_DIR / "scripts"
BENCH = str(SCRIPTS / "bench")
sys.path.insert(0, str(SCRIPTS / "bench-lib"))
import costcases  # noqa: E402


def load(name, path):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(mod)
    return mod


def free_base(count=12):
    """A port base with count free ports after it (the bench's 8 and the cost cases' 4), below
    the ephemeral range (where clients' connections in TIME_WAIT would hold ports), checked the
    way the bench checks them (SO_REUSEADDR)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - count)
        if all(port_free(p) for p in range(base, base + count)):
            return base
    pytest.skip("no %d free ports in a row below 32768" % count)


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.mark.parametrize("spec,message", [
    ("bogus", "unknown case 'bogus'"),
    ("waf:xyz", "unknown request 'xyz' in 'waf:xyz' (one of get, json64k)"),
    ("policy:json64k", "unknown request 'json64k' in 'policy:json64k' (one of get)"),
])
def test_cases_refuses_unknown(spec, message):
    p = subprocess.run([BENCH, "--cases", spec], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr


def test_cases_selection():
    bench = load("bench_for_cases", BENCH)
    protos, cost = bench.parse_cases("")
    assert len(protos) == 10 and cost == {("waf", "get"), ("waf", "json64k"), ("policy", "get")}
    protos, cost = bench.parse_cases("waf,policy")
    assert protos == [] and cost == {("waf", "get"), ("waf", "json64k"), ("policy", "get")}
    protos, cost = bench.parse_cases("h1-keepalive:small,waf:json64k")
    assert [(p["name"], b) for p, b in protos] == [("h1-keepalive", "small")] and cost == {("waf", "json64k")}
    assert bench.parse_cases("h2")[1] == set()
    # every variant is compared with the plain route of the same request, in the same round
    assert bench.cost_plan({("waf", "get"), ("policy", "get"), ("waf", "json64k")}) == [
        ("get", ["sluice", "sluice+waf", "sluice+policy"]), ("json64k", ["sluice", "sluice+waf"])]
    assert bench.cost_plan({("policy", "get")}) == [("get", ["sluice", "sluice+policy"])]


def test_wrk_sends_the_callgrind_request():
    # scripts/bench-waf (callgrind) and the bench's wrk rows send the same browser GET
    waf = load("bench_waf_for_cases", SCRIPTS / "bench-waf")
    raw = waf.REQUEST % costcases.BROWSER_FILL
    head = raw.split("\r\n\r\n")[0].split("\r\n")
    assert head[0] == "GET %s HTTP/1.1" % costcases.BROWSER_PATH
    assert head[1:] == costcases.browser_headers()
    assert sum(h.startswith("Cookie:") for h in head) == 1 and head[-1].count("=") == 3


def test_json_body_is_64k_json():
    body = costcases.json_body()
    assert 63 * 1024 < len(body) <= 65536 - 256
    assert len(json.loads(body)["items"]) > 500
    assert costcases.json_body() == body  # the same bytes in every run
    attack = costcases.json_body(attack=True)
    assert len(attack) <= 65536 - 128 and b"union select" in attack and json.loads(attack)


def test_waf_passes_what_the_bench_sends(tmp_path):
    # The bench measures 200s: a rule change that blocked its requests would make it measure
    # cheap 403s (it checks this too, before measuring). And it refuses the attacks it probes with.
    def row(method, path, headers, body, expect):
        h = dict(line.split(": ", 1) for line in headers)
        r = {"method": method, "path": path, "headers": h, "expect": expect}
        if body is not None:
            r["body"] = body.decode()
        return json.dumps(r)
    rows = [row("GET", costcases.BROWSER_PATH, costcases.browser_headers(), None, "pass"),
            row("POST", costcases.JSON_PATH, costcases.json_headers(), costcases.json_body(), "pass"),
            row("GET", costcases.ATTACK_PATH, costcases.browser_headers(), None, "block"),
            row("POST", costcases.JSON_PATH, costcases.json_headers(), costcases.json_body(attack=True), "block")]
    f = tmp_path / "bench.jsonl"
    f.write_text("\n".join(rows) + "\n")
    r = run_sluice(["waf", "test", "--paranoia", "1", "--rules", str(SRC_DIR / "lua" / "waf"), str(f)],
                   timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" ok") == 4, r.stdout


def test_cost_configs_pass_sluice_check(tmp_path):
    bench = load("bench_for_configs", BENCH)
    os.chmod(tmp_path, 0o755)
    env = bench.Env(str(tmp_path), SLUICE_BIN, free_base())
    env.add_cost_targets()
    for target in ("sluice", "sluice+waf", "sluice+policy"):
        r = run_sluice(["check", "-c", env.conf[target]], timeout=60)
        assert r.returncode == 0, "%s: %s%s" % (target, r.stdout, r.stderr)
    # side by side: each on its own ports, the same upstream
    ports = [env.port[t] for t in ("sluice", "sluice+waf", "sluice+policy")]
    ports += [env.tls_port[t] for t in ("sluice", "sluice+waf", "sluice+policy")]
    assert len(set(ports)) == 6
    with open(env.conf["sluice+waf"]) as f:
        text = f.read()
    assert 'waf = { paranoia = 1, mode = "block"' in text
    assert "127.0.0.1:%d" % env.port["origin"] in text


@pytest.mark.skipif(not all(shutil.which(t) for t in ("wrk", "nginx", "taskset")),
                    reason="wrk and nginx are installed by scripts/install-deps --bench")
@pytest.mark.timeout(240)
def test_cost_cases_quick_run(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nintro\n\n<!-- bench:cost:start -->\nold figures\n<!-- bench:cost:end -->\n\n"
                    "tail\n")
    env = dict(os.environ, SLUICE_BIN=SLUICE_BIN, BENCH_PORT_BASE=str(free_base()))
    p = subprocess.run([BENCH, "--quick", "--cases", "waf,policy", "--duration", "1", "--no-rss",
                        "--no-ratelimit", "--no-callgrind", "--no-syscalls", "--docs", str(docs)],
                       capture_output=True, text=True, timeout=220, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("| browser GET") or ln.startswith("| POST")]
    assert len(rows) == 5, p.stdout
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert cells[-1].startswith("0 / "), ln  # no errors: every request got a 200
        assert cells[3] != "-", ln  # a CPU figure
    for goal in ("**waf, browser GET", "**policy, browser GET", "**waf, POST, 64 KiB JSON"):
        assert goal in p.stdout, p.stdout
    text = docs.read_text()
    assert "old figures" not in text and "intro" in text and text.rstrip().endswith("tail")
    block = text[text.index("<!-- bench:cost:start -->"):text.index("<!-- bench:cost:end -->")]
    assert block.count("| browser GET, query + 3 cookies |") == 3 and block.count("| POST, 64 KiB JSON ") == 2
    assert "Latest results" not in text  # the main block is not written by a run of the cost cases alone
