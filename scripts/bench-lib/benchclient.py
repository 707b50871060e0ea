"""Tiny HTTP/1.1 clients for scripts/bench (stdlib only, 127.0.0.1 only).

- request_once(): one request on a fresh connection (sanity checks);
  tls_request_once(): the same over TLS, plus which protocol the server picks
  when offered h2 by ALPN.
- Conn: one keep-alive connection; .get(path) sends one request and reads the
  whole response (Content-Length or chunked); .send(raw) the same for a request
  given as bytes. raw_request_once(): one such request on a fresh connection.
- run_requests(): exactly N requests, keep-alive on one connection or a new
  connection per request; wrk has no request-count option, and the callgrind
  figures need a fixed count.
- open_idle(): COUNT keep-alive connections, each after one request, left open.
"""

import socket
import ssl

HOST = "127.0.0.1"


def _client_tls_context(alpn):
    # The bench certificate is self-signed and made per run: nothing to verify it against.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    return ctx


class HTTPError(Exception):
    pass


class Conn:
    def __init__(self, port, timeout=30.0, tls=False):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            self.sock = _client_tls_context(["http/1.1"]).wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.port = port

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HTTPError("connection closed by peer")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def get(self, path, close=False):
        """Send GET path; return (status, body_bytes, peer_wants_close)."""
        req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: sluice-bench\r\n%s\r\n" % (
            path, self.port, "Connection: close\r\n" if close else "")
        return self.send(req.encode())

    def send(self, raw):
        """Send one raw request (bytes); read its response as get() does."""
        self.sock.sendall(raw)
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            self._fill()
        head, self.buf = self.buf[:i], self.buf[i + 4:]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HTTPError("bad status line %r" % lines[0][:80])
        status = int(parts[1])
        clen, chunked, peer_close = None, False, False
        for ln in lines[1:]:
            name, _, value = ln.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                clen = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and b"close" in value:
                peer_close = True
        if chunked:
            body = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body.append(self._take(size))
                self._take(2)
            body = b"".join(body)
        elif clen is not None:
            body = self._take(clen)
        else:  # read to close
            try:
                while True:
                    self._fill()
            except HTTPError:
                pass
            body, self.buf, peer_close = self.buf, b"", True
        return status, body, peer_close


def request_once(port, path, timeout=10.0):
    c = Conn(port, timeout)
    try:
        status, body, _ = c.get(path, close=True)
        return status, body
    finally:
        c.close()


def raw_request_once(port, raw, timeout=10.0):
    """(status, body) of one raw HTTP/1.1 request (bytes, e.g. a POST) on a fresh connection."""
    c = Conn(port, timeout)
    try:
        status, body, _ = c.send(raw)
        return status, body
    finally:
        c.close()


def tls_request_once(port, path, timeout=10.0):
    """(status, body, protocol chosen when h2 and http/1.1 are offered by ALPN, TLS version
    negotiated with this client's default offer, e.g. "TLSv1.3"); two connections, since this
    client speaks only HTTP/1.1."""
    c = Conn(port, timeout, tls=True)
    try:
        status, body, _ = c.get(path, close=True)
    finally:
        c.close()
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        with _client_tls_context(["h2", "http/1.1"]).wrap_socket(raw, server_hostname="localhost") as s:
            alpn, version = s.selected_alpn_protocol(), s.version()
    return status, body, alpn, version


def run_requests(port, path, n, close=False, expect_len=None, timeout=120.0):
    """Exactly n requests. Returns the number that failed (status != 200,
    wrong length, or a connection error, after which a new connection is made)."""
    errors = 0
    c = None
    for _ in range(n):
        try:
            if c is None:
                c = Conn(port, timeout)
            status, body, peer_close = c.get(path, close=close)
            if status != 200 or (expect_len is not None and len(body) != expect_len):
                errors += 1
            if close or peer_close:
                c.close()
                c = None
        except (OSError, HTTPError, ValueError):
            errors += 1
            if c is not None:
                c.close()
            c = None
    if c is not None:
        c.close()
    return errors


def open_idle(port, path, count, timeout=10.0):
    """Open count keep-alive connections, one request on each; return
    (open connections, failures). The caller closes them."""
    conns, failures = [], 0
    for _ in range(count):
        c = None
        try:
            c = Conn(port, timeout)
            status, _, peer_close = c.get(path)
            if status != 200 or peer_close:
                raise HTTPError("status %d close=%s" % (status, peer_close))
            conns.append(c)
        except (OSError, HTTPError, ValueError):
            failures += 1
            if c is not None:
                c.close()
    return conns, failures
