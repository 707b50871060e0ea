"""Test certificates made with the openssl CLI at test time (never committed keys),
and a TLS gateway fixture. Imported by t/test_tls.py and t/test_h2.py; its own
tests check the helper itself."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import base_config, free_port


def _run(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=str(cwd), capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))
    return r


CA_CNF = """\
[ ca ]
default_ca = test
[ test ]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
"""


class Certs:
    """A private CA in a directory, issuing server and client certificates."""

    def __init__(self, d):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              "ca.key", "-out", "ca.crt", "-days", "30", "-subj", "/CN=sluice test CA", "-addext",
              "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.dir)
        (self.dir / "ca.cnf").write_text(CA_CNF)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")

    def _key(self, name, kind):
        key = "%s.key" % name
        if kind == "rsa":
            _run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key], self.dir)
        else:
            _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key], self.dir)
        os.chmod(self.dir / key, 0o600)
        return key

    def issue(self, name, dns=(), kind="ec", client=False, cn=None, startdate=None, enddate=None):
        """Returns (cert path, key path). dns: SAN names; client: clientAuth usage."""
        key = self._key(name, kind)
        subj = "/CN=%s" % (cn or (dns[0] if dns else name))
        if client:
            subj = "/O=sluice tests" + subj
        ext = ["-addext", "basicConstraints=critical,CA:FALSE",
               "-addext", "extendedKeyUsage=%s" % ("clientAuth" if client else "serverAuth")]
        if dns:
            ext += ["-addext", "subjectAltName=" + ",".join("DNS:" + d for d in dns)]
        _run(["req", "-new", "-key", key, "-out", name + ".csr", "-subj", subj] + ext, self.dir)
        args = ["ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key", "-in", name + ".csr",
                "-out", name + ".crt", "-notext"]
        if startdate:
            args += ["-startdate", startdate, "-enddate", enddate]
        else:
            args += ["-days", "30"]
        _run(args, self.dir)
        return str(self.dir / (name + ".crt")), str(self.dir / (name + ".key"))

    def ocsp_response(self, cert, name="ocsp"):
        """A DER OCSP response (good) for cert, signed by the CA."""
        _run(["ocsp", "-issuer", "ca.crt", "-cert", cert, "-reqout", name + ".req", "-no_nonce"], self.dir)
        _run(["ocsp", "-index", "index.txt", "-rsigner", "ca.crt", "-rkey", "ca.key", "-CA", "ca.crt",
              "-reqin", name + ".req", "-respout", name + ".der", "-ndays", "1"], self.dir)
        return str(self.dir / (name + ".der"))


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path / "pki")


def tls_listener(port, certificates, name="tls", **tls):
    t = {"certificates": [dict(c) for c in certificates]}
    t.update(tls)
    return {"name": name, "address": "127.0.0.1:%d" % port, "tls": t}


def tls_config(port, servers, certificates, listener_extra=None, tls=None, **kw):
    cfg = base_config(port, servers, **kw)
    cfg["listeners"] = [tls_listener(port, certificates, **(tls or {}))]
    if listener_extra:
        cfg["listeners"][0].update(listener_extra)
    return cfg


def test_helper_issues_a_chain_that_verifies(certs):
    crt, key = certs.issue("site", dns=["site.test"])
    r = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), crt], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"


def test_helper_makes_expired_certificates(certs):
    crt, _ = certs.issue("old", dns=["old.test"], startdate="20200101000000Z", enddate="20200201000000Z")
    r = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-checkend", "0"], capture_output=True, text=True)
    assert r.returncode != 0
