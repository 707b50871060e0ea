"""probe.py - the load drill's latency probe: what a client on another machine would see.

The load generator (h2load) runs at the lowest CPU priority (load.py): on a saturated machine
it waits for a CPU between a response's arrival and its read, and that wait is in every latency
it logs. The probe is a small client at normal priority beside it: a few dozen requests a second
of the same mix (GET /small : /16k = 14 : 5, every 20th a POST of the same body) and the same
protocol (HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over TLS), on connections of its own (requests
take turns over SPREAD of them, so that both workers are sampled), sent on a fixed schedule (open loop: a slow answer does not delay the next request). Its cost is a few
thousandths of the load, so it measures the gateway, the origin and the kernel's queues, not
itself. Each request's latency runs from the moment it is written (after a connect when it
needs a new connection: a client pays that too) to the last byte of its response.

Outcomes per request: its status (200, 429, 503, ...), or an error: "reset" (the connection
closed or failed before a whole response), "timeout" (no whole response within TIMEOUT_S: a
hung request), "connect" (no connection).
"""

import asyncio
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from steady import read_response

TIMEOUT_S = 10.0
H1_CONNS = 16  # at most this many HTTP/1.1 connections (one request in flight on each)
# requests take turns over this many connections (HTTP/1.1: at least; HTTP/2: exactly), so that
# the kernel's SO_REUSEPORT hash puts some on each worker (one connection would see one worker only)
SPREAD = 6


class Probe:
    def __init__(self, proto, port, rate, duration, uris, headers, post_body, post_every=20, cafile=None):
        self.proto, self.port, self.rate, self.duration = proto, port, rate, duration
        self.uris, self.headers, self.post_body, self.post_every = list(uris), list(headers), post_body, post_every
        self.cafile = cafile
        self.results = []  # (method, status or error string, latency ms)
        self.connects = 0  # connections opened
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    # -- the caller's side ------------------------------------------------
    def start(self):
        self._thread.start()
        return self

    def join(self):
        self._thread.join(self.duration + TIMEOUT_S + 10)

    def summary(self, pct):
        """Counts, the accepted (200) latencies' p50/p99/max and the refused (429, 503) ones' p99
        (PCT(sorted, p) gives a percentile)."""
        ok = sorted(lat for _, st, lat in self.results if st == 200)
        statuses, errors = {}, {}
        for _, st, _ in self.results:
            if isinstance(st, int):
                statuses[st] = statuses.get(st, 0) + 1
            else:
                errors[st] = errors.get(st, 0) + 1
        shed = sorted(lat for _, st, lat in self.results if st in (429, 503))
        return {"n": len(self.results), "statuses": statuses, "errors": errors, "ok": len(ok),
                "p50": pct(ok, 50), "p99": pct(ok, 99), "max": ok[-1] if ok else None,
                "shed": len(shed), "shed_p99": pct(shed, 99)}

    # -- the probe's thread -------------------------------------------------
    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    def _ssl(self, alpn):
        ctx = ssl.create_default_context(cafile=self.cafile)
        ctx.set_alpn_protocols([alpn])
        return ctx

    async def _main(self):
        client = _H2Spread(self) if self.proto == "h2" else _H1(self)
        t0 = time.monotonic()
        tasks = []
        n = int(self.rate * self.duration)
        for i in range(n):
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            post = i % self.post_every == self.post_every - 1
            path = "/small" if post else self.uris[i % len(self.uris)]
            tasks.append(self._loop.create_task(self._one(client, post, path)))
        if tasks:
            await asyncio.wait(tasks)
        await client.close()

    async def _one(self, client, post, path):
        method = "POST" if post else "GET"
        t = time.monotonic()
        try:
            st = await asyncio.wait_for(client.request(method, path, self.post_body if post else None), TIMEOUT_S)
        except asyncio.TimeoutError:
            st = "timeout"
        except ConnectionRefusedError:
            st = "connect"
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError, h2.exceptions.ProtocolError):
            st = "reset"
        self.results.append((method, st, (time.monotonic() - t) * 1000.0))


class _H1:
    """HTTP/1.1 (plain or TLS) over a pool of keep-alive connections, one request in flight on each."""

    def __init__(self, probe):
        self.p = probe
        self.idle = []
        self.open = 0

    async def _conn(self):
        while True:
            if self.idle and self.open >= SPREAD:
                return self.idle.pop(0)  # the longest idle: turns over all of them
            if self.open < H1_CONNS:
                self.open += 1
                try:
                    ctx = self.p._ssl("http/1.1") if self.p.proto == "https" else None
                    conn = await asyncio.open_connection("127.0.0.1", self.p.port, ssl=ctx,
                                                         server_hostname="127.0.0.1" if ctx else None)
                    self.p.connects += 1
                    return conn
                except OSError:
                    self.open -= 1
                    raise ConnectionRefusedError()
            await asyncio.sleep(0.001)

    async def request(self, method, path, body):
        r, w = await self._conn()
        keep = False
        try:
            head = "%s %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % (method, path, self.p.port)
            head += "".join(h + "\r\n" for h in self.p.headers)
            if body is not None:
                head += "content-type: application/x-www-form-urlencoded\r\ncontent-length: %d\r\n" % len(body)
            w.write(head.encode() + b"\r\n" + (body or b""))
            await w.drain()
            status, hdr = await read_response(r)
            keep = "close" not in hdr.get("connection", "").lower()
            return status
        finally:
            if keep:
                self.idle.append((r, w))
            else:
                self.open -= 1
                w.close()

    async def close(self):
        for _, w in self.idle:
            w.close()
        self.idle = []


class _H2Spread:
    """HTTP/2 over TLS: SPREAD connections, each request a stream on the next one in turn."""

    def __init__(self, probe):
        self.conns = [_H2(probe) for _ in range(SPREAD)]
        self.turn = 0

    async def request(self, method, path, body):
        self.turn += 1
        return await self.conns[self.turn % len(self.conns)].request(method, path, body)

    async def close(self):
        for c in self.conns:
            await c.close()


class _H2:
    """HTTP/2 over TLS: one connection, every request a stream on it (a new connection after a failure)."""

    def __init__(self, probe):
        self.p = probe
        self.conn = self.reader = self.writer = self.read_task = None
        self.waiting = {}  # stream id -> [future, status]
        self.connecting = None

    async def _connect(self):
        r, w = await asyncio.open_connection("127.0.0.1", self.p.port, ssl=self.p._ssl("h2"),
                                             server_hostname="127.0.0.1")
        self.p.connects += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        w.write(conn.data_to_send())
        self.conn, self.reader, self.writer = conn, r, w
        self.read_task = asyncio.get_running_loop().create_task(self._read(conn, r, w))

    async def _ready(self):
        if self.conn is None:
            if self.connecting is None:
                self.connecting = asyncio.get_running_loop().create_task(self._connect())
            try:
                await self.connecting
            except OSError:
                raise ConnectionRefusedError()
            finally:
                self.connecting = None

    def _fail_all(self, conn):
        if self.conn is conn:
            self.conn = None
        for sid, (fut, _) in list(self.waiting.items()):
            if not fut.done():
                fut.set_exception(ConnectionResetError("the connection ended"))
            del self.waiting[sid]

    async def _read(self, conn, r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        if ev.stream_id in self.waiting:
                            self.waiting[ev.stream_id][1] = int(dict(ev.headers)[":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        fut, st = self.waiting.pop(ev.stream_id, (None, None))
                        if fut and not fut.done():
                            fut.set_result(st)
                    elif isinstance(ev, h2.events.StreamReset):
                        fut, _ = self.waiting.pop(ev.stream_id, (None, None))
                        if fut and not fut.done():
                            fut.set_exception(ConnectionResetError("stream reset (%s)" % ev.error_code))
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        raise ConnectionResetError("GOAWAY")
                out = conn.data_to_send()
                if out:
                    w.write(out)
        except (ConnectionError, OSError, ValueError, h2.exceptions.ProtocolError):
            pass
        finally:
            self._fail_all(conn)
            w.close()

    async def request(self, method, path, body):
        await self._ready()
        conn = self.conn
        if conn is None:
            raise ConnectionResetError("no connection")
        sid = conn.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        self.waiting[sid] = [fut, None]
        hdrs = [(":method", method), (":scheme", "https"), (":authority", "127.0.0.1:%d" % self.p.port),
                (":path", path)]
        hdrs += [tuple(x.strip() for x in h.split(":", 1)) for h in self.p.headers]
        if body is not None:
            hdrs += [("content-type", "application/x-www-form-urlencoded"), ("content-length", str(len(body)))]
        try:
            conn.send_headers(sid, hdrs, end_stream=body is None)
            if body is not None:
                conn.send_data(sid, body, end_stream=True)
            self.writer.write(conn.data_to_send())
        except Exception:
            self.waiting.pop(sid, None)
            raise
        try:
            return await fut
        finally:
            self.waiting.pop(sid, None)

    async def close(self):
        if self.conn is not None:
            try:
                self.conn.close_connection()
                self.writer.write(self.conn.data_to_send())
            except Exception:
                pass
        if self.writer is not None:
            self.writer.close()
        if self.read_task is not None:
            self.read_task.cancel()
