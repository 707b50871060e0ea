#!/usr/bin/env python3
"""demo_upstream.py - a small HTTP/1.1 origin server for the sluice quickstart and tests.

Standard library only (sockets + one thread per connection), so that framing
is under exact control: every behaviour below writes its bytes itself.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse

HELP_EPILOG = """\
behaviours (by request path; the query string is passed in ?key=value form):
  /                   (any path not listed) 200 application/json echo:
                      {"server": NAME, "method", "target", "version",
                       "headers": [[name, value], ...] in received order,
                       "body_len", "body_sha256", "trailers": [[name, value], ...],
                       "peer": "ip:port", "conn_id", "conn_request" (1-based
                       index of this request on its connection), "expect_100"}
  /status/NNN         answer with status NNN (small text body, none for 1xx/204/304)
  /status-if/NAME/NNN the server named NAME (--name) answers like /status/NNN, the
                      others with the echo (a failing canary among healthy servers)
  /bytes/N            N bytes with Content-Length (pattern: see PATTERN below);
                      ?pause_after=K&pause_ms=MS stalls MS ms after the first K bytes
  /chunked/N          N bytes with Transfer-Encoding: chunked (?chunk=SIZE, default 4096);
                      ?trailer=1 announces and sends trailers x-trailer: yes and
                      x-body-sha256: <hex of the body>
  /close/N            N bytes delimited by closing the connection (no Content-Length)
  /truncate/N         announces Content-Length N, sends N/2 bytes, then closes
  /delay/MS           wait MS milliseconds, then the echo
  /slow/N?rate=BPS    N bytes with Content-Length, sent at BPS bytes per second (default 1000)
  /reset              read the request, then close with RST (SO_LINGER 0), no response
  /hang               read the request, never answer (closes when the peer closes)
  /bad                garbage instead of a response, then close; ?kind= selects the
                      garbage: junk (default), status (bad status line), header
                      (header line without colon), cl (non-numeric Content-Length),
                      clte (both Content-Length and Transfer-Encoding), badchunk
                      (invalid chunk size)
  /early              answer 200 ({"early": true}) right after the request head, before
                      reading the request body (then read and discard the body)
  /hop                echo, with hop-by-hop response headers that a proxy must remove:
                      Connection: x-hop-resp, X-Hop-Resp: secret, Keep-Alive: timeout=5
                      (and an end-to-end X-End-To-End: yes that must survive)
  /close-after        the echo (keep-alive, nothing announced), then close the
                      connection (?delay=MS waits first): the "upstream closed an idle
                      connection" race
  /stats              JSON: {"server", "accepted" (all connections), "connections" and
                      "open" (connections that carried something other than /stats
                      requests, or nothing at all), "requests" (excluding /stats),
                      "per_connection": [request count, ...] (same filter, accept order)}

  Any path: ?read_delay_ms=MS waits MS ms before reading the request body.
  HEAD gets the same head as GET without a body. Expect: 100-continue is
  answered with "100 Continue" (and reported as "expect_100": true in the echo).
  Request bodies with Content-Length or chunked (trailers kept) are accepted.
  HTTP/1.1 keeps connections alive unless "Connection: close"; HTTP/1.0 only
  with "Connection: keep-alive".

PATTERN: byte i of a generated body is
  "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 62]
"""

PATTERN = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BLOCK = PATTERN * 1057  # 65534 bytes: a whole number of periods, so blocks chain
MAX_HEAD = 256 * 1024
STATUS_TEXT = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    206: "Partial Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    418: "I'm a teapot", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}


def pattern_bytes(n, offset=0):
    """Generated body bytes [offset, offset+n) (used by tests too)."""
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + n]


class BadRequest(Exception):
    pass


class PeerClosed(Exception):
    pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.next_id = 0
        self.conns = {}  # id -> {"requests", "stats", "open"}

    def open_conn(self):
        with self.lock:
            self.next_id += 1
            self.conns[self.next_id] = {"requests": 0, "stats": 0, "open": True}
            return self.next_id

    def close_conn(self, cid):
        with self.lock:
            self.conns[cid]["open"] = False

    def count(self, cid, is_stats):
        with self.lock:
            c = self.conns[cid]
            if is_stats:
                c["stats"] += 1
            else:
                c["requests"] += 1
            return c["requests"]

    def snapshot(self, name):
        with self.lock:
            real = [c for _, c in sorted(self.conns.items()) if not (c["requests"] == 0 and c["stats"] > 0)]
            return {
                "server": name,
                "accepted": len(self.conns),
                "connections": len(real),
                "open": sum(1 for c in real if c["open"]),
                "requests": sum(c["requests"] for c in real),
                "per_connection": [c["requests"] for c in real],
            }


class Conn:
    """One client connection: a buffered reader over the socket."""

    def __init__(self, server, sock, addr, cid):
        self.server = server
        self.sock = sock
        self.addr = addr
        self.cid = cid
        self.buf = bytearray()

    # -- reading -------------------------------------------------------
    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise PeerClosed()
        self.buf += data

    def read_line(self, limit=MAX_HEAD):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                if not line.endswith(b"\r\n"):
                    raise BadRequest("bare LF line ending")
                return line[:-2]
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            self.fill()

    def read_exact_into(self, n, sink):
        while n > 0:
            if not self.buf:
                self.fill()
            take = min(n, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take

    def read_head(self):
        # skip empty lines before a request line (RFC 9112 2.2)
        while True:
            if not self.buf:
                self.fill()
            line = self.read_line()
            if line:
                break
        parts = line.split(b" ")
        if len(parts) != 3:
            raise BadRequest("bad request line")
        method, target, version = (p.decode("latin-1") for p in parts)
        headers = []
        total = len(line)
        while True:
            hl = self.read_line()
            total += len(hl)
            if total > MAX_HEAD:
                raise BadRequest("head too large")
            if not hl:
                break
            if hl[:1] in (b" ", b"\t"):
                raise BadRequest("obs-fold")
            name, sep, value = hl.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadRequest("bad header line")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        return method, target, version, headers

    def read_chunked(self, sink):
        trailers = []
        while True:
            line = self.read_line()
            size_s = line.split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise BadRequest("bad chunk size")
            if size == 0:
                break
            self.read_exact_into(size, sink)
            if self.read_line() != b"":
                raise BadRequest("missing CRLF after chunk")
        while True:
            tl = self.read_line()
            if not tl:
                break
            name, sep, value = tl.partition(b":")
            if sep:
                trailers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        return trailers

    # -- writing -------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def send_head(self, status, headers, version="HTTP/1.1"):
        out = ["%s %d %s\r\n" % (version, status, STATUS_TEXT.get(status, "Unknown"))]
        for k, v in headers:
            out.append("%s: %s\r\n" % (k, v))
        out.append("\r\n")
        self.send("".join(out).encode("latin-1"))

    def send_pattern(self, n, rate=None):
        off = 0
        if rate:
            slice_len = max(1, rate // 20)
            t0 = time.monotonic()
            while off < n:
                k = min(slice_len, n - off)
                self.send(pattern_bytes(k, off))
                off += k
                due = t0 + off / rate
                d = due - time.monotonic()
                if d > 0:
                    time.sleep(d)
            return
        while off < n:
            k = min(len(BLOCK), n - off)
            self.send(BLOCK[:k])  # BLOCK is a whole number of periods, offset stays aligned
            off += k

    # -- main loop -----------------------------------------------------
    def serve(self):
        while True:
            try:
                method, target, version, headers = self.read_head()
            except PeerClosed:
                return
            except BadRequest as e:
                self.simple(400, "demo_upstream: bad request: %s\n" % e, keep=False)
                return
            lower = [(k.lower(), v) for k, v in headers]
            hmap = {}
            for k, v in lower:
                hmap.setdefault(k, []).append(v)
            conn_tokens = set()
            for v in hmap.get("connection", []):
                conn_tokens.update(t.strip().lower() for t in v.split(","))
            if version == "HTTP/1.1":
                keep = "close" not in conn_tokens
            else:
                keep = "keep-alive" in conn_tokens
            self.resp_version = "HTTP/1.1"
            self.keep_header = [] if version == "HTTP/1.1" or not keep else [("Connection", "keep-alive")]
            if not keep:
                self.keep_header = [("Connection", "close")]

            path, _, query = target.partition("?")
            q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
            is_stats = path == "/stats"
            conn_request = self.server.stats.count(self.cid, is_stats)

            expect_100 = any(v.lower() == "100-continue" for v in hmap.get("expect", []))
            if expect_100 and version == "HTTP/1.1":
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")

            if path == "/early":
                # answer before reading the request body, then read and discard it
                body = b'{"early": true}\n'
                try:
                    self.send_head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                         ("X-Upstream", self.server.name)] + self.keep_header)
                    self.send(body)
                except OSError:
                    return
            rd = q.get("read_delay_ms")
            if rd:  # leave the request body unread for a while (back-pressure tests)
                try:
                    time.sleep(int(rd) / 1000.0)
                except ValueError:
                    pass
            # read the body
            h = hashlib.sha256()
            body_len = [0]

            def sink(b):
                h.update(b)
                body_len[0] += len(b)

            trailers = []
            try:
                te = ",".join(hmap.get("transfer-encoding", [])).lower()
                if te:
                    if [t.strip() for t in te.split(",")][-1] != "chunked":
                        raise BadRequest("unsupported transfer-encoding %r" % te)
                    trailers = self.read_chunked(sink)
                elif "content-length" in hmap:
                    try:
                        cl = int(hmap["content-length"][0])
                    except ValueError:
                        raise BadRequest("bad content-length")
                    self.read_exact_into(cl, sink)
            except BadRequest as e:
                self.simple(400, "demo_upstream: bad request: %s\n" % e, keep=False)
                return
            except PeerClosed:
                return

            info = {
                "server": self.server.name,
                "method": method,
                "target": target,
                "version": version,
                "headers": [[k, v] for k, v in headers],
                "body_len": body_len[0],
                "body_sha256": h.hexdigest(),
                "trailers": [[k, v] for k, v in trailers],
                "peer": "%s:%d" % self.addr[:2],
                "conn_id": self.cid,
                "conn_request": conn_request,
                "expect_100": expect_100,
            }
            head_only = method == "HEAD"
            if path == "/early":
                if not keep:
                    return
                continue
            try:
                cont = self.dispatch(method, path, q, info, head_only, keep)
            except (PeerClosed, BrokenPipeError, ConnectionResetError):
                return
            if not cont or not keep:
                return

    def simple(self, status, text, keep=True, extra=()):
        body = text.encode()
        hdrs = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        hdrs += list(extra)
        if not keep:
            hdrs.append(("Connection", "close"))
        else:
            hdrs += self.keep_header if hasattr(self, "keep_header") else []
        self.send_head(status, hdrs)
        self.send(body)

    def echo(self, info, head_only, extra=()):
        body = (json.dumps(info) + "\n").encode()
        hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("X-Upstream", self.server.name)] + list(extra) + self.keep_header
        self.send_head(200, hdrs)
        if not head_only:
            self.send(body)

    def dispatch(self, method, path, q, info, head_only, keep):
        seg = path.split("/")
        first = seg[1] if len(seg) > 1 else ""
        arg = seg[2] if len(seg) > 2 else ""

        def num(s, default=0):
            try:
                return int(s)
            except ValueError:
                return default

        base = [("X-Upstream", self.server.name)]
        if first == "status-if" and arg and len(seg) > 3:
            # only server NAME answers the status; the others fall through to the echo
            first, arg = ("status", seg[3]) if arg == self.server.name else ("", "")
        if first == "status" and arg:
            st = num(arg, 200)
            if st < 200 or st in (204, 304):
                self.send_head(st, base + self.keep_header)
            else:
                body = ("status %d\n" % st).encode()
                self.send_head(st, base + [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
                               + self.keep_header)
                if not head_only:
                    self.send(body)
            return True
        if first == "bytes" and arg:
            n = num(arg)
            self.send_head(200, base + [("Content-Type", "application/octet-stream"),
                                        ("Content-Length", str(n))] + self.keep_header)
            if not head_only:
                pause_after = num(q.get("pause_after", "-1"), -1)
                if 0 <= pause_after < n:
                    self.send_pattern(pause_after)
                    time.sleep(num(q.get("pause_ms", "0")) / 1000.0)
                    self.send(pattern_bytes(n - pause_after, pause_after))
                else:
                    self.send_pattern(n)
            return True
        if first == "chunked" and arg:
            n = num(arg)
            csize = max(1, num(q.get("chunk", "4096"), 4096))
            trailer = q.get("trailer") in ("1", "true", "yes")
            hdrs = base + [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]
            if trailer:
                hdrs.append(("Trailer", "x-trailer, x-body-sha256"))
            self.send_head(200, hdrs + self.keep_header)
            if head_only:
                return True
            off = 0
            while off < n:
                k = min(csize, n - off)
                self.send(b"%x\r\n" % k + pattern_bytes(k, off) + b"\r\n")
                off += k
            if trailer:
                sha = hashlib.sha256(pattern_bytes(n)).hexdigest()
                self.send(b"0\r\nx-trailer: yes\r\nx-body-sha256: " + sha.encode() + b"\r\n\r\n")
            else:
                self.send(b"0\r\n\r\n")
            return True
        if first == "close" and arg:
            n = num(arg)
            self.send_head(200, base + [("Content-Type", "application/octet-stream"), ("Connection", "close")])
            if not head_only:
                self.send_pattern(n)
            self.sock.shutdown(socket.SHUT_WR)
            return False
        if first == "truncate" and arg:
            n = num(arg)
            self.send_head(200, base + [("Content-Type", "application/octet-stream"),
                                        ("Content-Length", str(n))] + self.keep_header)
            self.send_pattern(n // 2)
            time.sleep(0.05)
            self.sock.shutdown(socket.SHUT_RDWR)
            return False
        if first == "delay":
            time.sleep(num(arg) / 1000.0)
            self.echo(info, head_only)
            return True
        if first == "slow" and arg:
            n = num(arg)
            rate = max(1, num(q.get("rate", "1000"), 1000))
            self.send_head(200, base + [("Content-Type", "application/octet-stream"),
                                        ("Content-Length", str(n))] + self.keep_header)
            if not head_only:
                self.send_pattern(n, rate=rate)
            return True
        if first == "reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if first == "hang":
            try:
                while self.sock.recv(65536):
                    pass
            except OSError:
                pass
            return False
        if first == "bad":
            kind = q.get("kind", "junk")
            garbage = {
                "junk": b"THIS IS NOT HTTP AT ALL\r\n\r\n",
                "status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
                "header": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nthis line has no colon\r\n\r\nok",
                "cl": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok",
                "clte": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                "badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
            }.get(kind, b"THIS IS NOT HTTP AT ALL\r\n\r\n")
            self.send(garbage)
            time.sleep(0.05)
            return False
        if first == "hop":
            self.echo(info, head_only, extra=[("Connection", "x-hop-resp"), ("X-Hop-Resp", "secret"),
                                              ("Keep-Alive", "timeout=5"), ("X-End-To-End", "yes")])
            return True
        if first == "close-after":
            self.echo(info, head_only)
            d = num(q.get("delay", "0"))
            if d > 0:
                time.sleep(d / 1000.0)
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False
        if first == "stats":
            body = (json.dumps(self.server.stats.snapshot(self.server.name)) + "\n").encode()
            self.send_head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                           + self.keep_header)
            if not head_only:
                self.send(body)
            return True
        self.echo(info, head_only)
        return True


class Server:
    def __init__(self, host, port, name):
        self.stats = Stats()
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.name = name or "%s:%d" % (host, self.port)

    def handle(self, sock, addr):
        cid = self.stats.open_conn()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Conn(self, sock, addr, cid).serve()
        except Exception as e:  # never let client misbehaviour kill anything
            if os.environ.get("DEMO_UPSTREAM_DEBUG"):
                print("connection %d: %r" % (cid, e), file=sys.stderr, flush=True)
        finally:
            self.stats.close_conn(cid)
            try:
                sock.close()
            except OSError:
                pass

    def run(self):
        while True:
            try:
                s, addr = self.sock.accept()
            except InterruptedError:
                continue
            except OSError:
                time.sleep(0.01)
                continue
            t = threading.Thread(target=self.handle, args=(s, addr), daemon=True)
            t.start()


def main(argv=None):
    ap = argparse.ArgumentParser(description="HTTP/1.1 origin server for the sluice demo and tests",
                                 epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: pick a free one)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--name", default=None, help='name reported as "server" (default HOST:PORT)')
    args = ap.parse_args(argv)

    def on_term(signum, frame):
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    srv = Server(args.host, args.port, args.name)
    print("listening on %s:%d" % (srv.host, srv.port), flush=True)
    srv.run()


if __name__ == "__main__":
    main()
