"""docs/runbooks and docs/incidents: every `sluice ctl ...` command line they show is one the real
binary knows, every alert of deploy/prometheus has its page, and the pages' links resolve.

A command is sent to a running sluice over its admin socket with the placeholders as they are
written (POOL, ADDRESS, SERVICE, ...): the gateway must answer with something else than
"unknown command" or a usage error (an unknown pool or service is fine: the command parsed).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import SLUICE_BIN, SRC_DIR, base_config, free_port, wait_until

DOCS = SRC_DIR / "docs"
PAGES = sorted((DOCS / "runbooks").rglob("*.md")) + sorted((DOCS / "incidents").rglob("*.md"))
# sluice ctl's own options, dropped before the command words
CTL_OPTS_WITH_ARG = {"-s", "--timeout"}
CTL_OPTS = {"--json"}
# client-side commands: they carry a file, not words of the line (src/ctl.c)
CLIENT_SIDE = {"dump-state", "restore-state"}
VERBS = {"help", "show", "set", "clear", "drain", "disable", "enable", "reset", "switch", "rollout", "reload",
         "reopen-logs", "save-state"}


def ctl_lines():
    """(page, line number, command words) for each `sluice ctl` in the runbooks and playbooks."""
    out = []
    for page in PAGES:
        # an inline `sluice ctl ...` that wraps at the end of a line is one command
        text = re.sub(r"(`sluice ctl [^`\n]*)\n([^`\n]*`)", r"\1 \2", page.read_text())
        for n, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"sluice ctl ([^`|;&>#\n]*)", line):
                words = m.group(1).split()
                while words and (words[0] in CTL_OPTS or words[0] in CTL_OPTS_WITH_ARG):
                    words = words[2:] if words[0] in CTL_OPTS_WITH_ARG else words[1:]
                words = [w for w in words if w != "--json" and not w.startswith("\\")]
                # prose after the command ("sluice ctl show diff lists them") is not part of it
                if words and words[0] in VERBS | CLIENT_SIDE:
                    out.append((page.relative_to(SRC_DIR), n, words))
    return out


def test_pages_have_commands():
    lines = ctl_lines()
    assert len(lines) > 40, lines
    assert {p.name for p, _, _ in lines} >= {"SluiceBreakerOpen.md", "shift-traffic.md", "rollback.md"}


@pytest.mark.timeout(120)
def test_every_ctl_command_in_the_runbooks_parses(sluice, upstreams):
    up, = upstreams(1)
    port = free_port()
    sock = "admin.sock"
    cfg = base_config(port, [up.address], admin={"socket": sock})
    gw = sluice(cfg)
    sock_path = str(gw.workdir / sock)
    wait_until(lambda: os.path.exists(sock_path), what="the admin socket")
    helptext = subprocess.run([SLUICE_BIN, "ctl", "-s", sock_path, "help"], capture_output=True, text=True,
                              timeout=15).stdout
    bad = []
    for page, n, words in ctl_lines():
        if words[0] in CLIENT_SIDE:
            if words[0] not in helptext:
                bad.append("%s:%d: sluice ctl %s: not a command of this binary" % (page, n, " ".join(words)))
            continue
        if words[0] == "reload":
            words = ["reload"]
        r = subprocess.run([SLUICE_BIN, "ctl", "-s", sock_path] + words, capture_output=True, text=True,
                           timeout=15)
        said = (r.stdout + r.stderr).strip()
        if "unknown command" in said or "usage" in said or r.returncode == 2:
            bad.append("%s:%d: sluice ctl %s -> %s" % (page, n, " ".join(words), said.splitlines()[0][:120]))
    assert not bad, "\n".join(bad)


def alert_names():
    names = []
    for f in (SRC_DIR / "deploy" / "prometheus" / "rules").glob("*.yml"):
        names += re.findall(r"^\s*- alert: (\w+)", f.read_text(), re.M)
    return names


def test_every_alert_has_a_page_with_the_four_parts():
    want = set(alert_names()) | {"SluiceInstanceDown", "SluiceNotReady", "SluiceReloadFailed", "SluiceBreakerOpen",
                                 "SluicePoolAllServersDown", "SluiceCertificateExpiringSoon", "SluiceHighErrorRate",
                                 "SluiceLatencyP99High", "SluiceRedisFallbackActive", "SluiceWafBlockSpike"}
    for name in sorted(want):
        page = DOCS / "runbooks" / "alerts" / ("%s.md" % name)
        assert page.is_file(), page
        text = page.read_text()
        assert text.startswith("# Alert: %s" % name), page
        for part in ("## Look", "## Fix", "## Verify"):
            assert part in text, (page, part)
        assert "sluice ctl" in text or "PromQL" in text, page


def test_links_resolve():
    bad = []
    for page in PAGES + [DOCS / "security.md"]:
        if not page.is_file():
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (page.parent / target).exists():
                bad.append("%s: %s" % (page.relative_to(SRC_DIR), target))
    # the runbooks other helpers write may land after these pages: only those are allowed missing
    pending = {"redis-failover.md", "backup-restore.md", "fleet.md"}
    bad = [b for b in bad if Path(b.split(": ", 1)[1]).name not in pending]
    assert not bad, "\n".join(bad)
