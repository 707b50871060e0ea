"""scripts/bench --help answers however it is started: run directly (python3 by its
shebang), or handed to bash or sh, which used to read the python source as shell and
run the backticks of its help text."""

import os
import subprocess

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "bench")


@pytest.mark.parametrize("runner", [[], ["bash"], ["sh"]], ids=["direct", "bash", "sh"])
def test_bench_help(runner):
    p = subprocess.run(runner + [BENCH, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: bench"), p.stdout[:200]
    assert "sluice against nginx and HAProxy" in p.stdout
    assert "--callgrind-requests" in p.stdout
    assert p.stderr == "", p.stderr


def test_cpu_ticks_split():
    """The throughput table splits CPU per request into user and system time: cpu_ticks with
    split gives the two parts of the same /proc figures, and a busy loop shows up as user time."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("bench_mod", BENCH)
    spec = importlib.util.spec_from_loader("bench_mod", loader)
    bench = importlib.util.module_from_spec(spec)
    loader.exec_module(bench)
    me = os.getpid()
    u0, s0 = bench.cpu_ticks([me], split=True)
    x = 0
    for i in range(3_000_000):
        x += i
    u1, s1 = bench.cpu_ticks([me], split=True)
    assert isinstance(u0, int) and isinstance(s0, int)
    assert u1 > u0, (u0, u1)
    assert s1 >= s0
    assert bench.cpu_ticks([me]) >= u1 + s1
    assert bench.cpu_ticks([2 ** 22 + 12345]) == 0  # a process that does not exist counts for nothing
