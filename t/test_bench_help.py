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
