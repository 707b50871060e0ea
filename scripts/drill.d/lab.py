"""lab.py - what every drill stands on: the processes it starts, the gateway, the report.

Processes come from scripts/bench (its Proc: own session, PR_SET_PDEATHSIG, killpg on
stop), configs are rendered by t/conftest.py's config_to_lua, origins are
scripts/demo_upstream.py (few requests, exact behaviours) or the bench's origin
nginx (load). Every process is registered in bench.STARTED and Lab.close() stops
them all, also on SIGINT/SIGTERM/SIGHUP (turned into SystemExit) and on any
exception; PR_SET_PDEATHSIG covers a SIGKILL of the drill itself.
"""

import calendar
import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(HERE)
TOP = os.path.dirname(SCRIPTS)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(TOP, "t"))
sys.path.insert(0, SCRIPTS)


def _load_script(name, path):
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


bench = _load_script("sluice_bench", os.path.join(SCRIPTS, "bench"))


def default_binary():
    for cand in (os.environ.get("SLUICE_BIN"), os.path.join(TOP, "build", "sluice")):
        if cand and os.access(cand, os.X_OK):
            return os.path.abspath(cand)
    return None


SLUICE_BIN = default_binary()
if SLUICE_BIN:
    os.environ["SLUICE_BIN"] = SLUICE_BIN
import conftest  # noqa: E402  (the test helpers: config rendering, raw HTTP, demo upstreams)

ALL_CPUS = "0-%d" % ((os.cpu_count() or 1) - 1)


def log(msg):
    print("[drill %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class DrillError(Exception):
    """A drill could not run (a tool missing, a process would not start): not a verdict."""


class Gateway:
    """One `sluice run` with its admin socket; access log and stderr in files."""

    def __init__(self, lab, name, config, extra_env=None):
        self.lab, self.name = lab, name
        self.dir = os.path.join(lab.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "admin.sock")
        self.access_log = os.path.join(self.dir, "access.log")
        self.conf_path = os.path.join(self.dir, "sluice.lua")
        self.write_config(config)
        self.port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
        self.proc = None
        self.generation = 0

    def write_config(self, config):
        """Write CONFIG (a dict) with this gateway's admin socket, and its access log unless set."""
        config = dict(config)
        config["admin"] = dict(config.get("admin", {}), socket=self.sock)
        config.setdefault("access_log", {"path": self.access_log})
        self.config = config
        with open(self.conf_path, "w") as f:
            f.write(conftest.config_to_lua(config))

    def start(self, timeout=20.0, prefix=()):
        self.generation += 1
        logpath = os.path.join(self.dir, "stderr-%d.log" % self.generation)
        self.proc = bench.Proc("sluice-%s" % self.name, list(prefix) + [SLUICE_BIN, "run", "-c", self.conf_path],
                               ALL_CPUS, logpath)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            if not self.proc.alive():
                raise DrillError("sluice %s exited (%s) while starting:\n%s"
                                 % (self.name, self.proc.p.returncode, self.proc.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                if os.path.exists(self.sock):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DrillError("sluice %s not listening on %d after %.0fs:\n%s"
                                 % (self.name, self.port, timeout, self.proc.log_tail()))
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def stop(self, timeout=20.0):
        if self.proc is None:
            return None
        rc = self.proc.stop(timeout)
        return rc

    def ctl(self, *words, check=True, timeout=15):
        r = subprocess.run([SLUICE_BIN, "ctl", "-s", self.sock, "--timeout", str(timeout - 2)] + list(words),
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise DrillError("sluice ctl %s: exit %d: %s%s" % (" ".join(words), r.returncode, r.stdout, r.stderr))
        return r

    def counters(self):
        """{(family, frozenset(labels.items())): value} from `show counters --json` (histograms: count)."""
        r = self.ctl("--json", "show counters")
        out = {}
        for fam in json.loads(r.stdout)["counters"]:
            for s in fam.get("series", []):
                key = (fam["name"], tuple(sorted(s.get("labels", {}).items())))
                out[key] = s.get("value", s.get("count", 0))
        return out

    def stderr_text(self):
        try:
            with open(self.proc.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    def log_entries(self):
        out = []
        for ln in self.stderr_text().splitlines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
        return out

    def log_after(self, t_wall, msg):
        """Wall time of the first log line whose msg starts with MSG at or after t_wall, or None."""
        for e in self.log_entries():
            if str(e.get("msg", "")).startswith(msg):
                w = wall_of(e)
                if w is not None and w >= t_wall - 0.01:
                    return w
        return None

    def wait_log(self, t_wall, msg, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            w = self.log_after(t_wall, msg)
            if w is not None:
                return w
            time.sleep(0.1)
        return None

    def rss_kib(self):
        return self.proc.rss_kib() if self.alive() else 0

    def cpu_ticks(self):
        return bench.cpu_ticks(self.proc.pids()) if self.alive() else 0


def wall_of(entry):
    """A log line's "time" (2026-12-06T03:05:51.448Z) as seconds since the epoch."""
    t = entry.get("time", "")
    try:
        base = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return base + float("0." + t[20:23]) if len(t) >= 23 else base


def counter_delta(after, before, family, **labels):
    """Sum of a family's series (optionally matching some labels) between two counters() snapshots."""
    total = 0
    for (fam, lab), v in after.items():
        if fam != family:
            continue
        d = dict(lab)
        if any(d.get(k) != v2 for k, v2 in labels.items()):
            continue
        total += v - before.get((fam, lab), 0)
    return total


def reasons_delta(after, before, family="sluice_listener_request_reasons_total"):
    out = {}
    for (fam, lab), v in after.items():
        if fam == family:
            r = dict(lab).get("reason")
            d = v - before.get((fam, lab), 0)
            if d:
                out[r] = out.get(r, 0) + d
    return out


class Lab:
    """A temp dir and everything started in it; a context manager that always cleans up."""

    def __init__(self, name, keep=False):
        self.name = name
        self.keep = keep
        self.tmp = tempfile.mkdtemp(prefix="sluice-drill-%s-" % name)
        os.chmod(self.tmp, 0o755)  # nginx workers (an unprivileged user) read www/16k
        self.gateways = []
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, bench._on_signal)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        bench.stop_all()
        for sig, h in self._old.items():
            signal.signal(sig, h)
        if self.keep:
            log("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def port(self):
        return conftest.free_port()

    def gateway(self, name, config):
        g = Gateway(self, name, config)
        self.gateways.append(g)
        return g

    def proc(self, name, argv, wait_port=None, timeout=15.0):
        p = bench.Proc(name, argv, ALL_CPUS, self.path("%s.log" % name))
        if wait_port:
            wait_port_open(wait_port, timeout, p)
        return p

    def demo_upstream(self, name, port=0):
        """scripts/demo_upstream.py on PORT (0: a free one); returns (Proc, port)."""
        if not port:
            port = self.port()
        p = self.proc("upstream-%s" % name, [conftest.PYTHON, str(conftest.DEMO_UPSTREAM), "--port", str(port),
                                             "--name", name], wait_port=port)
        return p, port

    def origin_nginx(self, small_body):
        """The bench's origin nginx (scripts/bench-lib/origin-nginx.conf.in): /small and /16k, TLS too."""
        for d in ("www", "origin-tmp"):
            os.makedirs(self.path(d), exist_ok=True)
        with open(self.path("www", "16k"), "wb") as f:
            f.write((b"0123456789abcdef" * 1024)[:16384])
        port, tls_port = self.port(), self.port()
        cert, key, _ = self.certificate()
        conf = bench.render("origin-nginx.conf.in", self.path("origin.conf"), DIR=self.tmp, ORIGIN_PORT=port,
                            ORIGIN_TLS_PORT=tls_port, CERT=cert, KEY=key,
                            SMALL_BODY=small_body.replace("\n", "\\n").replace('"', '\\"'))
        p = self.proc("origin", ["nginx", "-p", self.tmp, "-e", self.path("origin-error.log"), "-c", conf],
                      wait_port=port)
        return p, port

    def certificate(self):
        if not os.path.exists(self.path("bench.crt")):
            bench.make_certificate(self.tmp)
        return self.path("bench.crt"), self.path("bench.key"), self.path("bench.pem")

    def redis(self, name="redis", port=None, extra=()):
        if not shutil.which("redis-server"):
            raise DrillError("redis-server is not installed (apt-get install redis-server, or scripts/install-deps)")
        port = port or self.port()
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        p = self.proc(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", d] + list(extra), wait_port=port)
        return p, port


def listeners(port, tls_port, cert, key):
    """The drills' two listeners: "public" (plaintext) and "public-tls" (TLS, h2 by ALPN)."""
    return [{"name": "public", "address": "127.0.0.1:%d" % port},
            {"name": "public-tls", "address": "127.0.0.1:%d" % tls_port,
             "tls": {"certificates": [{"cert": cert, "key": key}]}}]


def wait_port_open(port, timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            pass
        if proc is not None and not proc.alive():
            raise DrillError("%s exited (%s) before listening on %d:\n%s"
                             % (proc.name, proc.p.returncode, port, proc.log_tail()))
        if time.monotonic() > deadline:
            raise DrillError("nothing listening on 127.0.0.1:%d after %.0fs" % (port, timeout))
        time.sleep(0.05)


def redis_cli(port, *args, timeout=5):
    r = subprocess.run(["redis-cli", "-p", str(port)] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return r.stdout.strip()


# ---------------------------------------------------------------- the report

READINESS = os.path.join(TOP, "docs", "readiness.md")
HEADER = """# Production readiness: drill results

Written by `scripts/drill` (`scripts/drill --help`; docs/runbooks/README.md maps the drills to runbooks): `scripts/drill all`
regenerates this file, a single drill (`scripts/drill load`, `chaos`, `failover`, `dr`, `pentest`)
appends its section. Every figure below was measured on the machine named in its section, with the
load generator, the origins and the gateway sharing its CPUs (the load drill runs its generator at
the lowest CPU priority, as if its clients were on other machines): compare ratios and verdicts,
not absolute rates, across machines.
"""


def machine():
    info = bench.machine_info(None, SLUICE_BIN)
    return info


def section_head(title, quick):
    info = machine()
    return ("## %s%s\n\n- date: %s\n- commit: %s\n- machine: %s; %s\n- load on the machine at start: %s\n"
            % (title, " (--quick)" if quick else "", info["date"], info["sluice"], info["machine"], info["os"],
               " ".join(open("/proc/loadavg").read().split()[0:3])))


def write_report(sections, regenerate):
    text = "".join(s.rstrip() + "\n\n" for s in sections)
    if regenerate or not os.path.exists(READINESS):
        with open(READINESS, "w") as f:
            f.write(HEADER + "\n" + text)
    else:
        with open(READINESS, "a") as f:
            f.write("\n" + text)
    log("wrote %s" % os.path.relpath(READINESS, os.getcwd()))


def table(headers, rows, align=None):
    return bench.table(headers, [[str(c) for c in r] for r in rows], align)


class deadline:
    """Bound a drill: SIGALRM after SECONDS raises DrillError in the drill (its Lab then stops everything)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def _fire(self, signum, frame):
        raise DrillError("the drill ran past its budget of %d s and was stopped" % self.seconds)

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)
        return self

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def raise_nofile():
    """Soft open-files limit up to the hard one: the fd drill and the load generators hold many sockets."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
