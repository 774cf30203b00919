"""TCP server models, the ones socket-programming courses compare, all driving one Session.

    iterative   one client at a time; the others wait in the listen backlog (and SYNs
                beyond it are dropped or answered by syncookies)
    thread      a thread per connection
    process     a process per connection (fork); the child sends its report to the parent
    selectors   one thread, non-blocking sockets, readiness from epoll/kqueue
    asyncio     one thread, coroutines over the same readiness machinery

Each serves every mode of sessions.py and tells apart how a client left:
    half-close  its FIN came, our final report was sent and read, then it closed
    close       its FIN came and it had closed entirely: our report was answered by a RST
    reset       a RST while the connection was open (recv raised ConnectionResetError)
    error       the client broke the protocol (malformed frame): we closed on it
It logs which, and keeps serving the others. A slow reader (--pause, --slow-read) delays
or paces recv() so the client's window fills (zero windows, window-full in the capture).

No model reads more from a client while replies to it are still unsent or owed (the
session's `pending` rr responses): a client that sends and never reads stops being read, and
the server's memory per connection stays bounded. A protocol error is answered with the
session's error message before the connection is closed, so the client can say why. Files
are received only into `receive_dir`, when one is given (see sessions.py for the rules).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import wire
from . import resources, sockopts
from .report import Report
from .sessions import Session

MODELS = ("iterative", "thread", "process", "selectors", "asyncio")
RECV = 1 << 18
ACCEPT_BACKOFF_S = 0.05          # after EMFILE: how long before accept() is tried again
CLOSE_WAIT_S = 2.0


@dataclass
class ServerConfig:
    port: int = 5201
    host: str = ""
    model: str = "thread"
    limit: int = wire.DEFAULT_LIMIT
    receive_dir: Path | None = None      # None: file mode is refused (receiving is opt-in)
    options: sockopts.SocketOptions = field(default_factory=sockopts.SocketOptions)
    pause_s: float = 0.0             # wait this long before the first read
    slow_read_bps: float = 0.0       # then read no faster than this
    max_connections: int | None = None   # stop after this many (iperf3 -1 is 1)
    max_seconds: float | None = None     # stop after this long
    interval: float = 1.0


class Server:
    def __init__(self, cfg: ServerConfig, report: Report | None = None):
        if cfg.model not in MODELS:
            raise ValueError(f"model {cfg.model!r}: expected one of {', '.join(MODELS)}")
        self.cfg = cfg
        self.report = report or Report("server", "tcp", cfg.model)
        self.report.doc["connections"] = []
        self._starved = False
        self.lock = threading.Lock()
        self.done = 0
        self.live: set[Session] = set()
        self.peak_live = 0                    # most connections held at once (exact)
        self.child_pids: set[int] = set()     # process model: the live children
        self.sampler: resources.Sampler | None = None
        self.stopping = threading.Event()
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        granted = sockopts.apply(self.sock, cfg.options, listening=True)
        self.sock.bind((cfg.host, cfg.port))
        self.sock.listen(cfg.options.backlog)
        self.port = self.sock.getsockname()[1]
        self.report.doc["start"].update({"local": f"{cfg.host or '*'}:{self.port}",
                                         "options": {**cfg.options.as_dict(), **granted},
                                         "model": cfg.model,
                                         "receive_dir": None if cfg.receive_dir is None
                                         else str(cfg.receive_dir)})

    # ---- bookkeeping shared by every model ----

    def _finished(self, session: Session, how: str) -> None:
        rec = session.report()
        rec["how"] = how
        with self.lock:
            self.live.discard(session)
            self.report.doc["connections"].append(rec)
            self.done += 1
        session.release()
        self._log(rec)

    def _log(self, rec: dict, **extra) -> None:
        """The log line of a finished connection: how it ended, and why when it failed."""
        details = {"peer": rec["peer"], "mode": rec["mode"],
                   "payload_bytes": rec["payload_bytes"], **extra}
        if rec.get("error"):
            details["error"] = rec["error"]
        fr = rec.get("file")
        if isinstance(fr, dict):
            details["file"] = (f"stored {fr.get('name')!r} ({fr.get('bytes')} bytes)"
                               if fr.get("ok") else f"refused: {fr.get('error')}")
        self.report.event(f"client {rec['how']}", **details)

    def _enough(self) -> bool:
        cfg = self.cfg
        if self.stopping.is_set():
            return True
        if cfg.max_connections is not None and self.done >= cfg.max_connections:
            return True
        return cfg.max_seconds is not None and self.report.elapsed() >= cfg.max_seconds

    def _new_session(self, peer) -> Session:
        s = Session(f"{peer[0]}:{peer[1]}", limit=self.cfg.limit,
                    receive_dir=self.cfg.receive_dir)
        with self.lock:
            self.live.add(s)
            self.peak_live = max(self.peak_live, len(self.live))
        return s

    def _ticker(self) -> None:
        last_t, last_bytes = 0.0, 0
        while not self.stopping.wait(self.cfg.interval):
            with self.lock:
                now_bytes = sum(s.bytes_in for s in self.live) + sum(
                    c["payload_bytes"] for c in self.report.doc["connections"])
                clients = len(self.live)
            t = self.report.elapsed()
            if now_bytes != last_bytes or clients:
                self.report.interval(last_t, t, {"payload_bytes": now_bytes - last_bytes,
                                                 "clients": clients})
            last_t, last_bytes = t, now_bytes

    # ---- one blocking connection (iterative, thread, process) ----

    def _serve_blocking(self, conn: socket.socket, peer) -> tuple[Session, str]:
        session = self._new_session(peer)
        conn.settimeout(60.0)
        how = "error"
        try:
            if self.cfg.pause_s:
                time.sleep(self.cfg.pause_s)
            start, got = time.monotonic(), 0
            buf = bytearray(RECV)
            view = memoryview(buf)
            while True:
                if self.cfg.slow_read_bps:
                    ahead = got * 8 / self.cfg.slow_read_bps - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                size = 4096 if self.cfg.slow_read_bps else RECV
                n = conn.recv_into(view[:size])
                data = view[:n]
                got += n
                if not n:
                    how = _closing(conn, session.peer_closed())
                    break
                reply = session.received(data)
                while reply:              # rr responses owed go out before the next read
                    conn.sendall(reply)
                    reply = session.more()
                if session.error:
                    how = "error"
                    break
        except ConnectionResetError:
            session.reset()
            how = "reset"
        except (OSError, TimeoutError) as e:
            session.reset()
            session.error = session.error or f"{type(e).__name__}: {e}"
            how = "error"
        finally:
            session.release()
            conn.close()
        return session, how

    def run(self) -> dict:
        ticker = threading.Thread(target=self._ticker, daemon=True)
        ticker.start()
        # memory, descriptors, threads and processes, while it serves (resources.py)
        self.sampler = resources.Sampler(children=lambda: tuple(self.child_pids)).start()
        try:
            getattr(self, f"_run_{self.cfg.model}")()
        finally:
            self.stopping.set()
            self.sock.close()
            ticker.join(timeout=2)
            res = self.sampler.stop(self.peak_live)
        conns = self.report.doc["connections"]
        # a server's lifetime includes waiting for clients: no rate over it
        self.report.finish({"duration_s": self.report.elapsed(), "connections": len(conns),
                            "payload_bytes": sum(c["payload_bytes"] for c in conns),
                            "goodput_bps": None,
                            "by_ending": _count(c["how"] for c in conns),
                            "resources": res, **resources.flat(res)})
        return self.report.doc

    def stop(self) -> None:
        self.stopping.set()

    def _accept(self, timeout: float = 0.2):
        """accept() that wakes up to check whether to stop (one system call per client:
        under load the accepting thread competes for the GIL with every client thread)."""
        self.sock.settimeout(timeout)
        while not self._enough():
            try:
                return self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError as e:
                if self._starving(e):
                    time.sleep(ACCEPT_BACKOFF_S)
                continue                 # ECONNABORTED and the like: that client left
        return None

    def _starving(self, e: OSError) -> bool:
        """Out of descriptors or memory? Then the connection waits in the backlog, and
        retrying at once would spin a core until one frees: the caller backs off. Said
        once in the log."""
        if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            return False
        if not self._starved:
            self._starved = True
            self.report.event("accept starved", errno=errno.errorcode[e.errno])
        return True

    def _run_iterative(self) -> None:
        while (got := self._accept()) is not None:
            self._finished(*self._serve_blocking(*got))

    def _run_thread(self) -> None:
        threads = []

        def one(conn, peer):
            self._finished(*self._serve_blocking(conn, peer))

        while (got := self._accept()) is not None:
            t = threading.Thread(target=one, args=got, daemon=True)
            t.start()
            threads.append(t)
            if len(threads) % 256 == 0:            # prune now and then, not per accept
                threads = [x for x in threads if x.is_alive()]
        for t in threads:
            t.join(timeout=CLOSE_WAIT_S + 60)

    def _run_process(self) -> None:
        children: dict[int, tuple[int, bytearray]] = {}     # read fd -> (pid, buffer)

        def reap(block: bool) -> None:
            fds = list(children)
            if not fds:
                return
            ready, _, _ = select.select(fds, [], [], 0.2 if block else 0)
            for fd in ready:
                pid, buf = children[fd]
                chunk = os.read(fd, 65536)
                if chunk:
                    buf += chunk
                    continue
                os.close(fd)
                del children[fd]
                _, _, usage = os.wait4(pid, 0)
                self.child_pids.discard(pid)
                if self.sampler is not None:
                    self.sampler.reaped(usage)
                try:
                    rec = json.loads(buf)
                except json.JSONDecodeError:
                    rec = {"peer": "?", "mode": None, "payload_bytes": 0, "how": "error",
                           "error": "the child process died without a report"}
                with self.lock:
                    self.report.doc["connections"].append(rec)
                    self.done += 1
                self._log(rec, pid=pid)

        while not self._enough():
            r, _, _ = select.select([self.sock, *children], [], [], 0.2)
            if self.sock in r:
                try:
                    conn, peer = self.sock.accept()
                except OSError as e:
                    if self._starving(e):
                        time.sleep(ACCEPT_BACKOFF_S)
                    continue
                try:
                    rfd, wfd = os.pipe()
                except OSError as e:
                    conn.close()           # this client goes; the others are served
                    if self._starving(e):
                        time.sleep(ACCEPT_BACKOFF_S)
                    continue
                pid = os.fork()
                if pid == 0:                      # the child: one connection, then exit
                    code = 0
                    try:
                        os.close(rfd)
                        self.sock.close()
                        _close_inherited(keep=(conn.fileno(), wfd))
                        # fork() copies only the calling thread: a lock another thread
                        # (the ticker) held at that moment would stay held in the child
                        self.lock = threading.Lock()
                        session, how = self._serve_blocking(conn, peer)
                        rec = session.report()
                        rec["how"] = how
                        os.write(wfd, json.dumps(rec, default=str).encode())
                    except BaseException:
                        code = 1
                    finally:
                        os._exit(code)
                os.close(wfd)
                conn.close()
                children[rfd] = (pid, bytearray())
                self.child_pids.add(pid)
                self.peak_live = max(self.peak_live, len(children))
            reap(block=False)
        deadline = time.monotonic() + CLOSE_WAIT_S + 60
        while children and time.monotonic() < deadline:
            reap(block=True)

    def _run_selectors(self) -> None:
        sel = selectors.DefaultSelector()
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, None)
        conns: dict[socket.socket, _Conn] = {}
        paused_until = 0.0           # the listener unwatched until then (out of descriptors)
        try:
            while not self._enough() or conns:
                if self._enough() and not conns:
                    break
                now = time.monotonic()
                timeout = 0.2
                if paused_until and now >= paused_until:
                    sel.register(self.sock, selectors.EVENT_READ, None)
                    paused_until = 0.0
                elif paused_until:
                    timeout = min(timeout, paused_until - now)
                for c in conns.values():
                    if c.resume_at:
                        timeout = min(timeout, max(0.0, c.resume_at - now))
                for key, events in sel.select(timeout):
                    if key.data is None:
                        if self._enough():
                            continue
                        try:
                            conn, peer = self.sock.accept()
                        except BlockingIOError:
                            continue
                        except OSError as e:
                            if self._starving(e):
                                # the listener stays readable: stop watching it a while
                                sel.unregister(self.sock)
                                paused_until = time.monotonic() + ACCEPT_BACKOFF_S
                            continue
                        conn.setblocking(False)
                        c = _Conn(conn, self._new_session(peer), self.cfg)
                        conns[conn] = c
                        sel.register(conn, c.interest(), c)
                        continue
                    c = key.data
                    c.on_events(events)
                    if c.finished:
                        sel.unregister(c.sock)
                        c.sock.close()
                        del conns[c.sock]
                        self._finished(c.session, c.how)
                    else:
                        sel.modify(c.sock, c.interest(), c)
                now = time.monotonic()
                for c in list(conns.values()):
                    if c.resume_at and now >= c.resume_at:
                        c.resume_at = 0.0
                        sel.modify(c.sock, c.interest(), c)
                    elif c.closing_since and now - c.closing_since > CLOSE_WAIT_S:
                        c.how, c.finished = "close", True
                        sel.unregister(c.sock)
                        c.sock.close()
                        del conns[c.sock]
                        self._finished(c.session, c.how)
        finally:
            for c in conns.values():
                c.session.release()
                c.sock.close()
            sel.close()

    def _run_asyncio(self) -> None:
        asyncio.run(self._asyncio_main())

    async def _asyncio_main(self) -> None:
        self.sock.setblocking(False)
        # start_server listens again on the socket it is given, with its own default
        # backlog of 100 unless told otherwise: a burst of clients beyond that would see
        # dropped SYNs and handshake ACKs, and wait seconds on retransmission timers
        server = await asyncio.start_server(self._asyncio_client, sock=self.sock,
                                            limit=RECV, backlog=self.cfg.options.backlog)
        tasks: set[asyncio.Task] = set()
        self._tasks = tasks
        async with server:
            while not self._enough():
                await asyncio.sleep(0.1)
            server.close()
            if tasks:
                await asyncio.wait(tasks, timeout=CLOSE_WAIT_S + 60)

    async def _asyncio_client(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        session = self._new_session(peer)
        how = "error"
        try:
            if self.cfg.pause_s:
                await asyncio.sleep(self.cfg.pause_s)
            start, got = time.monotonic(), 0
            while True:
                if self.cfg.slow_read_bps:
                    ahead = got * 8 / self.cfg.slow_read_bps - (time.monotonic() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                data = await reader.read(4096 if self.cfg.slow_read_bps else RECV)
                got += len(data)
                if not data:
                    final = session.peer_closed()
                    try:
                        writer.write(final)
                        await writer.drain()
                        writer.write_eof()
                        rest = await asyncio.wait_for(reader.read(1), CLOSE_WAIT_S)
                        how = "half-close" if rest == b"" else "close"
                    except asyncio.TimeoutError:
                        how = "half-close"
                    except OSError:                # the RST that answered our report
                        how = "close"
                    break
                reply = session.received(data)
                while reply:              # rr responses owed go out before the next read
                    writer.write(reply)
                    await writer.drain()
                    reply = session.more()
                if session.error:
                    break
        except ConnectionResetError:
            session.reset()
            how = "reset"
        except OSError as e:
            session.reset()
            session.error = session.error or str(e)
        finally:
            writer.close()
            self._finished(session, how)
            self._tasks.discard(task)


def _close_inherited(keep: tuple[int, ...]) -> None:
    """Close every descriptor a forked child inherited but its connection, its report pipe
    and stdio. A TCP connection is closed (FIN) only when the last copy of its descriptor
    is: a child that kept copies of other sockets of its parent (another client's end,
    when the server runs inside a program that is also a client) would hold those
    connections open, and their peers would wait for a FIN that never comes."""
    lo = 3
    for fd in sorted(keep):
        if fd >= lo:
            os.closerange(lo, fd)
            lo = fd + 1
    os.closerange(lo, os.sysconf("SC_OPEN_MAX"))


def _closing(conn: socket.socket, final: bytes) -> str:
    """The peer's FIN came: send our final report, close our side, and see whether the
    peer reads it (half-close) or answers with a RST (it had closed entirely)."""
    try:
        if final:
            conn.sendall(final)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(CLOSE_WAIT_S)
        rest = conn.recv(1)
        return "half-close" if rest == b"" else "close"
    except (TimeoutError, socket.timeout):
        return "half-close"
    except OSError:
        # reset, broken pipe, or ENOTCONN from shutdown(): the RST that answered our report
        # already came, so the peer had closed entirely
        return "close"


class _Conn:
    """One connection of the selectors model: a Session plus an output buffer."""

    def __init__(self, sock: socket.socket, session: Session, cfg: ServerConfig):
        self.sock, self.session, self.cfg = sock, session, cfg
        self.out = bytearray()
        self.finished = False
        self.how = "error"
        self.eof = False                   # the peer's FIN came; we are flushing the report
        self.closing_since = 0.0
        self.start = time.monotonic()
        self.got = 0
        self.resume_at = self.start + cfg.pause_s if cfg.pause_s else 0.0

    def interest(self) -> int:
        ev = 0
        # nothing more is read while replies wait: a client that never reads is not read
        if not self.resume_at and ((not self.eof and not self.out) or self.closing_since):
            ev |= selectors.EVENT_READ
        if self.out:
            ev |= selectors.EVENT_WRITE
        return ev or selectors.EVENT_READ

    def on_events(self, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE and self.out:
                n = self.sock.send(self.out)
                del self.out[:n]
                if not self.out:
                    self.out += self.session.more()
                if not self.out and self.eof and not self.closing_since:
                    self.sock.shutdown(socket.SHUT_WR)
                    self.closing_since = time.monotonic()
            if events & selectors.EVENT_READ and not self.resume_at:
                if self.closing_since:
                    rest = self.sock.recv(1)
                    self.how = "half-close" if rest == b"" else "close"
                    self.finished = True
                    return
                if self.eof:
                    return
                data = self.sock.recv(4096 if self.cfg.slow_read_bps else RECV)
                self.got += len(data)
                if not data:
                    self.eof = True
                    self.out += self.session.peer_closed()
                    if not self.out:
                        self.sock.shutdown(socket.SHUT_WR)
                        self.closing_since = time.monotonic()
                    return
                self.out += self.session.received(data)
                if self.session.error:
                    try:                       # the error message, if the socket takes it now
                        self.sock.send(self.out)
                    except OSError:
                        pass
                    self.how, self.finished = "error", True
                    return
                if self.cfg.slow_read_bps:
                    due = self.start + self.got * 8 / self.cfg.slow_read_bps
                    if due > time.monotonic():
                        self.resume_at = due
        except BlockingIOError:
            return
        except (ConnectionResetError, BrokenPipeError):
            if self.eof:
                self.how = "close"
            else:
                self.session.reset()
                self.how = "reset"
            self.finished = True
        except OSError as e:
            if self.eof:                   # ENOTCONN after the peer's RST: it had closed
                self.how, self.finished = "close", True
                return
            self.session.reset()
            self.session.error = self.session.error or str(e)
            self.how, self.finished = "error", True


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out
