"""The pipeline's application canary (deploy/ci/canary-rollout.sh) against a
real gateway: it starts `sluice ctl rollout`, follows it, and exits 0 when
sluice promoted the canary to 100%, 1 (weights back) when sluice rolled it
back. Real upstreams: a demo upstream as the stable pool and a canary that
can be told to answer 500s (the fixtures of test_rollout.py)."""

import os
import subprocess

from conftest import SLUICE_BIN, SRC_DIR
from test_rollout import Traffic, canary, sockdir, start_gateway, status  # noqa: F401 (fixtures)

SCRIPT = SRC_DIR / "deploy" / "ci" / "canary-rollout.sh"


def run_script(gw, **env):
    e = dict(os.environ, SLUICE_CTL="%s ctl -s %s" % (SLUICE_BIN, gw.sock), SERVICE="web", CANARY="green",
             STEPS="50 100", INTERVAL="1s", MIN_REQUESTS="10", MAX_ERROR_RATE="5%", POLL_SECONDS="1",
             TIMEOUT_SECONDS="60")
    e.update(env)
    return subprocess.run(["bash", str(SCRIPT)], env=e, capture_output=True, text=True, timeout=120)


def test_healthy_canary_is_promoted(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    traffic = Traffic(gw.port)
    try:
        r = run_script(gw)
    finally:
        traffic.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: green at 100% on every gateway" in r.stdout, r.stdout
    st = status(gw.sock)
    assert st["state"] == "completed" and st["weights"] == "blue 0, green 1000", st


def test_failing_canary_fails_the_pipeline_and_weights_go_back(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    canary["fail"]()
    traffic = Traffic(gw.port)
    try:
        r = run_script(gw)
    finally:
        traffic.stop()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ROLLBACK: local rolled the canary back at step 1: rolled back: error rate" in r.stdout, r.stdout
    st = status(gw.sock)
    assert st["state"] == "rolled_back" and st["weights"] == "blue 100, green 0", st


def test_timeout_aborts_the_rollout(sluice, upstreams, sockdir, canary):
    # no traffic: the canary never gets --min-requests, the script gives up and aborts
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    r = run_script(gw, TIMEOUT_SECONDS="3")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not finished after 3s" in r.stdout, r.stdout
    st = status(gw.sock)
    assert st["state"] == "aborted" and st["weights"] == "blue 100, green 0", st


def test_refused_start_is_a_failure(sluice, upstreams, sockdir, canary):
    gw = start_gateway(sluice, upstreams, sockdir, canary)
    r = run_script(gw, CANARY="nope")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "refused the rollout" in r.stdout, r.stdout
