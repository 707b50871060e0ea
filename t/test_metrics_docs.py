"""docs/observability.md documents every metric family a running sluice
exports (issue 14: "every metric with its labels and meaning"): the families
are read from a real scrape, so one added to the counter registry or to
src/metrics.c without a row in the docs fails here."""

import re
from pathlib import Path

from conftest import base_config, free_port, wait_until
from test_admin_http import http_get, _can_connect

DOC = Path(__file__).resolve().parent.parent / "docs" / "observability.md"


def documented():
    """Metric names in the first column of the doc's tables."""
    return set(re.findall(r"^\| `(sluice_[a-z0-9_]+)` \|", DOC.read_text(), re.M))


def exported(text):
    """Family names as a scrape declares them (# TYPE), with the sample name of an info family."""
    out = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        out.add(name + "_info" if kind == "info" else name)
    return out


def test_every_exported_family_is_documented(sluice, upstreams):
    (u,) = upstreams(1)
    aport = free_port()
    sluice(base_config(free_port(), [u.address], admin={"http": "127.0.0.1:%d" % aport}))
    wait_until(lambda: _can_connect(aport), what="admin http listener")
    for om in (False, True):
        st, _, body = http_get(aport, "/metrics",
                               headers={"Accept": "application/openmetrics-text"} if om else None)
        assert st == 200
        names = exported(body.decode())
        if om:  # OpenMetrics declares counters without _total; the docs name the samples
            names = {n if n in documented() else n + "_total" for n in names}
        assert len(names) > 30, names
        missing = names - documented()
        assert not missing, "exported but not in docs/observability.md: %s" % sorted(missing)


def test_the_check_can_fail():
    assert "sluice_no_such_family_total" not in documented()
    assert exported("# TYPE sluice_x counter\n") - documented() == {"sluice_x"}
