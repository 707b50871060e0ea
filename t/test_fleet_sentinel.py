"""Fleet control behind Redis Sentinel (docs/runbooks/fleet.md, "Redis
behind Sentinel"): two real sluice instances share their runtime changes
through the master that three real redis-sentinel processes name (a real
master and replica, test_sentinel.py's cluster). A SENTINEL FAILOVER, and
separately a killed master: both instances follow to the new master (checked
with ROLE), say so once in their log and in `ctl show control`, and a change
made on one instance after the failover still reaches the other, written
into the new master. Both ways of configuring it: `control.redis = "main"`
with a Sentinel-based top-level block, and control's own `sentinels`. The
follow time is printed, never asserted as performance."""

import datetime
import os
import time

import pytest

from conftest import base_config, free_port, wait_until
from test_fleet import control, ctl_ok, log_msgs, propagation, sockdir, start_fleet, weights  # noqa: F401
from test_sentinel import MASTER, SENTINEL, StaleSentinel, cluster, promote_replica, resp, switch_seen_at  # noqa: F401
from test_ratelimit import REDIS

pytestmark = pytest.mark.skipif(not REDIS or not SENTINEL,
                                reason="redis-server and redis-sentinel are needed (scripts/install-deps)")

PREFIX = "t-fleet"  # start_fleet's


def sentinel_block(sentinels):
    return {"sentinels": ["127.0.0.1:%d" % s.port for s in sentinels], "master": MASTER,
            "connect_timeout": "300ms"}


def on_master(gw, port):
    c = control(gw)
    return c["state"] == "up" and c["synced"] and c["master"] == "127.0.0.1:%d" % port


def run(sluice, upstreams, sockdir, cluster, how, own):
    master, replica, sentinels = cluster

    def tweak(nm, cfg, blue, green):
        if own:  # control's own block, no top-level redis at all
            del cfg["redis"]
            cfg["control"]["redis"] = sentinel_block(sentinels)
        else:
            cfg["redis"] = sentinel_block(sentinels)
    a, b = start_fleet(sluice, upstreams, sockdir, 0, names=("a", "b"), tweak=tweak)
    for gw in (a, b):
        wait_until(lambda: on_master(gw, master.port), timeout=10, what="%s on the master" % gw.name)
        text = ctl_ok(gw.sock, "show", "control")
        assert "master     127.0.0.1:%d (\"%s\"" % (master.port, MASTER) in text, text
        assert ("control's own" if own else "the top-level redis block") in text, text

    # shared through the master
    ctl_ok(a.sock, "set", "service-weights", "web", "blue=70", "green=30")
    propagation([b], lambda gw: weights(gw) == {"blue": 70, "green": 30}, timeout=3.0)
    assert "service-weight web green 30" in resp(master.port, "HGET", PREFIX + ":state", "service-weight web green")

    t0, t_switch = promote_replica(cluster, how)
    wait_until(lambda: on_master(a, replica.port) and on_master(b, replica.port), timeout=20, interval=0.02,
               what="both instances' fleet control on the new master")
    print("fleet control (%s, %s): sentinels switched after %.2f s, both instances in sync on the new master "
          "after %.2f s" % ("own sentinels" if own else "redis = \"main\"", how, t_switch, time.monotonic() - t0))

    # the state survived on the new master (replicated before the switch), nothing was undone
    assert weights(a) == {"blue": 70, "green": 30} and weights(b) == {"blue": 70, "green": 30}
    # a change after the failover goes through the new master to the other instance
    ctl_ok(b.sock, "set", "service-weights", "web", "blue=10", "green=90")
    took = propagation([a], lambda gw: weights(gw) == {"blue": 10, "green": 90}, timeout=3.0)
    print("fleet control after the failover: b's change applied on a after %.0f ms" % (took["a"] * 1000))
    assert "service-weight web green 90" in resp(replica.port, "HGET", PREFIX + ":state", "service-weight web green")
    assert resp(replica.port, "ROLE")[0] == "master"

    # each instance logs the switch once, naming both masters
    seen = switch_seen_at(sentinels)
    for gw in (a, b):
        sw = log_msgs(gw, "fleet control: Redis master switched")
        assert len(sw) == 1, sw
        assert sw[0]["from"] == "127.0.0.1:%d" % master.port and sw[0]["to"] == "127.0.0.1:%d" % replica.port, sw
        assert sw[0]["master_name"] == MASTER
        down = log_msgs(gw, "fleet control: Redis unreachable")
        assert len(down) == 1, down
        # the sentinels' log and sluice's log share the machine's clock
        at = datetime.datetime.strptime(sw[0]["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        print("  %s: noticed by \"%s\"; on the new master %.0f ms after the sentinels' +switch-master"
              % (gw.name, down[0]["why"], (at - seen) * 1000 if seen else float("nan")))


@pytest.mark.timeout(180)
def test_fleet_follows_sentinel_failover_main_block(sluice, upstreams, sockdir, cluster):
    run(sluice, upstreams, sockdir, cluster, "failover", own=False)


@pytest.mark.timeout(180)
def test_fleet_follows_killed_master_own_sentinels(sluice, upstreams, sockdir, cluster):
    run(sluice, upstreams, sockdir, cluster, "kill", own=True)


@pytest.mark.timeout(120)
def test_fleet_stale_sentinel_first_and_no_switch_message(sluice, upstreams, sockdir, cluster):
    """The first sentinel listed is stale and the subscription (on it) never
    hears of the failover: the demoted master's READONLY (or the dropped
    connection) makes the instance ask again, ROLE refuses the stale answer,
    and the next sentinel names the new master."""
    master, replica, sentinels = cluster
    stale = StaleSentinel(master.port)
    try:
        def tweak(nm, cfg, blue, green):
            del cfg["redis"]
            cfg["control"]["redis"] = sentinel_block([stale] + sentinels)
            # the subscription's deadline: long enough that it stays on the (slow, Python) stale sentinel
            cfg["control"]["redis"]["connect_timeout"] = "2s"
        (gw,) = start_fleet(sluice, upstreams, sockdir, 0, names=("s",), tweak=tweak)
        wait_until(lambda: on_master(gw, master.port), timeout=10, what="on the master (the stale sentinel is right)")
        t0 = time.monotonic()
        assert resp(sentinels[0].port, "SENTINEL", "FAILOVER", MASTER) == "OK"
        wait_until(lambda: on_master(gw, replica.port), timeout=30, interval=0.05,
                   what="fleet control on the new master without the +switch-master message")
        took = time.monotonic() - t0
        down = log_msgs(gw, "fleet control: Redis unreachable")
        back = log_msgs(gw, "fleet control: Redis reachable again")
        gap = datetime.datetime.strptime(back[0]["time"], "%Y-%m-%dT%H:%M:%S.%fZ") - \
            datetime.datetime.strptime(down[0]["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        # until the sentinels demote the old master (their INFO period, up to 10 s) it takes writes:
        # without the switch message nothing tells a client earlier
        print("fleet control, stale sentinel first, no switch message: on the new master %.2f s after "
              "SENTINEL FAILOVER, %.0f ms after the old master dropped it (%s)"
              % (took, gap.total_seconds() * 1000, down[0]["why"]))
        assert len(down) == 1, down
        why = down[0]["why"]
        assert "READONLY" in why or "connection lost" in why or "not the master" in why, why
        assert "switched the master" not in why, why
        ctl_ok(gw.sock, "set", "service-weights", "web", "blue=40", "green=60")
        wait_until(lambda: "service-weight web green 60" in (resp(replica.port, "HGET", PREFIX + ":state",
                                                                   "service-weight web green") or ""),
                   timeout=3, what="the change written into the new master")
    finally:
        stale.stop()


@pytest.mark.timeout(60)
def test_fleet_no_sentinel_answers(sluice, upstreams, sockdir):
    """No sentinel reachable: the instance serves with its own state, says
    why (no sentinel gave the master) in its log and in `ctl show control`,
    and keeps a local change for when Redis is back."""
    dead = ["127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()]
    (u,) = upstreams(1)
    sock = os.path.join(sockdir, "x.sock")
    cfg = base_config(free_port(), [u.address], admin={"socket": sock},
                      control={"redis": {"sentinels": dead, "master": MASTER, "connect_timeout": "200ms"},
                               "prefix": PREFIX, "instance": "x"})
    gw = sluice(cfg, name="x")
    gw.sock = sock
    wait_until(lambda: os.path.exists(sock), what="admin socket")
    wait_until(lambda: log_msgs(gw, "fleet control: Redis unreachable"), timeout=10, what="unreachable logged")
    down = log_msgs(gw, "fleet control: Redis unreachable")
    assert len(down) == 1 and "no sentinel gave the master of %s" % MASTER in down[0]["why"], down
    c = control(gw)
    assert c["state"] != "up" and c["master"] == "", c
    assert c["redis"] == "sentinel master %s via %s" % (MASTER, ",".join(dead)), c
    assert "no sentinel gave the master" in c["error"], c
    ctl_ok(sock, "drain", "web", u.address)
    assert control(gw)["unsynced"] >= 1
    time.sleep(1.5)  # more rounds fail: still one log line
    assert len(log_msgs(gw, "fleet control: Redis unreachable")) == 1
