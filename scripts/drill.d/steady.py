"""steady.py - an open-loop HTTP/1.1 client and a misbehaving relay, for the chaos drills.

Steady(port, rate): in a thread of its own (asyncio), GET requests are scheduled at a fixed
rate whatever happens to earlier ones (open loop), over a pool of keep-alive connections;
every request's outcome is kept with the time it was due, so a drill can count what failed
between two instants. Outcomes:
  ok        a response below 500 other than 429
  shed      429, or 503 with Retry-After (a limit or an open breaker answered fast)
  5xx       any other 5xx (502 from a dead upstream, 504, ...)
  reset     the connection closed or was reset after the request was sent, before a whole
            response (an accepted request lost)
  timeout   no whole response within `timeout` seconds (a hung request)
  refused   the TCP connect failed (nothing was accepted: the gateway was not listening)
A GET whose reused keep-alive connection was closed before any byte of the answer is
retried once on a new connection (RFC 9112 9.3.1, what clients do for an idempotent
request: the server may close an idle connection as it is reused); counted as `retried`.

Relay(target_port): a TCP relay in front of one upstream whose mode can be switched:
  pass      forwards both ways
set_mode() closes the connections already relayed, so new requests meet the new mode.
  slow      each new connection waits `delay` s first; a share `loss` of them is reset
  error500  answers every request itself with 500 (reads request heads, no bodies)
"""

import asyncio
import random
import socket
import struct
import threading
import time


class _Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer, self.used = reader, writer, 0

    def close(self):
        try:
            self.writer.close()
        except Exception:
            pass


class Steady:
    def __init__(self, port, rate, conns=32, paths=("/",), timeout=5.0, host="127.0.0.1"):
        self.port, self.rate, self.max_conns, self.paths = port, rate, conns, list(paths)
        self.timeout, self.host = timeout, host
        self.results = []  # (due monotonic, outcome, latency s, status)
        self.retried = 0
        self.reset_details = []  # (due, reused, got bytes, exception) of each request lost to a reset
        self._idle = []
        self._open = 0
        self._stop = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._inflight = set()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        self._thread.join(self.timeout + 10)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self):
        t0 = time.monotonic()
        i = 0
        while not self._stop:
            due = t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = self._loop.create_task(self._one(due, self.paths[i % len(self.paths)]))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            i += 1
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=self.timeout + 2)
        for c in self._idle:
            c.close()

    async def _conn(self, fresh=False):
        while True:
            if self._idle and not fresh:
                return self._idle.pop()
            if self._open < self.max_conns or fresh:
                self._open += 1
                try:
                    r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 2.0)
                except Exception:
                    self._open -= 1
                    raise ConnectionRefusedError()
                return _Conn(r, w)
            await asyncio.sleep(0.002)

    def _release(self, c, keep):
        if keep and not self._stop:
            self._idle.append(c)
        else:
            self._open -= 1
            c.close()

    async def _one(self, due, path):
        outcome, status = None, 0
        for attempt in (1, 2):
            try:
                c = await asyncio.wait_for(self._conn(fresh=attempt == 2), self.timeout)
            except (ConnectionRefusedError, asyncio.TimeoutError):
                outcome = "refused"
                break
            reused = c.used > 0
            c.used += 1
            got_bytes = [False]
            try:
                status, keep, retry_after = await asyncio.wait_for(self._exchange(c, path, got_bytes),
                                                                   max(0.1, due + self.timeout - time.monotonic()))
                self._release(c, keep)
            except asyncio.TimeoutError:
                self._release(c, False)
                outcome = "timeout"
                break
            except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError) as e:
                self._release(c, False)
                if reused and not got_bytes[0] and attempt == 1:
                    self.retried += 1
                    continue
                self.reset_details.append((due, reused, got_bytes[0], attempt, repr(e)[:80]))
                outcome = "reset"
                break
            if status == 429 or (status == 503 and retry_after):
                outcome = "shed"
            elif status >= 500:
                outcome = "5xx"
            else:
                outcome = "ok"
            break
        self.results.append((due, outcome, time.monotonic() - due, status))

    async def _exchange(self, c, path, got_bytes):
        c.writer.write(("GET %s HTTP/1.1\r\nHost: drill.test\r\nUser-Agent: sluice-drill\r\n\r\n" % path).encode())
        await c.writer.drain()
        status, hdr = await read_response(c.reader, got_bytes)
        keep = "close" not in hdr.get("connection", "").lower()
        return status, keep, "retry-after" in hdr

    # -- reading the results ---------------------------------------------
    def window(self, t0, t1=None):
        """Counts of outcomes for requests due in [t0, t1)."""
        out = {}
        for due, o, _, _ in list(self.results):
            if due >= t0 and (t1 is None or due < t1):
                out[o] = out.get(o, 0) + 1
        return out

    def statuses(self, t0, t1=None):
        out = {}
        for due, o, _, st in list(self.results):
            if due >= t0 and (t1 is None or due < t1) and st:
                out[st] = out.get(st, 0) + 1
        return out

    def last_bad(self, t0, t1=None, kinds=("5xx", "reset", "timeout", "refused", "shed")):
        """Due time of the last non-ok request in [t0, t1), or None."""
        bad = [due for due, o, _, _ in list(self.results)
               if due >= t0 and (t1 is None or due < t1) and o in kinds]
        return max(bad) if bad else None

    def longest_gap(self, t0, t1):
        """The longest time in [t0, t1) between two requests due that were answered ok."""
        oks = sorted(due for due, o, _, _ in list(self.results) if t0 <= due < t1 and o == "ok")
        marks = [t0] + oks + [t1]
        return max(b - a for a, b in zip(marks, marks[1:]))

    def first_ok_after(self, t0):
        oks = [due for due, o, _, _ in list(self.results) if due >= t0 and o == "ok"]
        return min(oks) if oks else None


async def read_response(reader, got_head=None):
    """One whole HTTP/1.1 response from READER (its body read and dropped): (status, fields with
    lower-case names). GOT_HEAD, a one-item list, becomes [True] once the head is in."""
    head = await reader.readuntil(b"\r\n\r\n")
    if got_head is not None:
        got_head[0] = True
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdr = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdr[k.strip().lower()] = v.strip()
    if "content-length" in hdr:
        await reader.readexactly(int(hdr["content-length"]))
    elif "chunked" in hdr.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailer fields
                break
            await reader.readexactly(size + 2)
    return status, hdr


class Relay:
    """A TCP relay in front of 127.0.0.1:target whose behaviour can be switched at run time."""

    def __init__(self, target_port, delay=1.5, loss=0.1):
        self.target_port, self.delay, self.loss = target_port, delay, loss
        self.mode = "pass"
        self._writers = set()  # the client side of every relayed connection
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server = None

    def start(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("relay did not start")
        return self

    def set_mode(self, mode):
        """Switch the behaviour; connections already relayed are closed (FIN), so that the next requests
        come on new connections and meet the new mode (as after a restart of the upstream)."""
        self.mode = mode

        def _close_all():
            for w in list(self._writers):
                try:
                    w.close()
                except Exception:
                    pass
        self._loop.call_soon_threadsafe(_close_all)

    def stop(self):
        def _close():
            self._server.close()
            for t in asyncio.all_tasks(self._loop):
                t.cancel()
            self._loop.call_later(0.2, self._loop.stop)
        self._loop.call_soon_threadsafe(_close)
        self._thread.join(10)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _client(self, reader, writer):
        self._writers.add(writer)
        try:
            if self.mode == "error500":
                await self._answer_500(reader, writer)
                return
            if self.mode == "slow":
                if random.random() < self.loss:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.close()
                    return
                await asyncio.sleep(self.delay)
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pipe(reader, uw), self._pipe(ur, writer))
        except Exception:
            pass
        finally:
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    async def _pipe(self, r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        finally:
            try:
                w.close()
            except Exception:
                pass

    async def _answer_500(self, reader, writer):
        body = b"upstream broken\n"
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except Exception:
                return
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
