"""TCP server models, the ones socket-programming courses compare, all driving one Session.

    iterative   one client at a time; the others wait in the listen backlog (and SYNs
                beyond it are dropped or answered by syncookies)
    thread      a thread per connection
    process     a process per connection (fork); the child sends its report to the parent
    selectors   one thread, non-blocking sockets, readiness from epoll/kqueue
    asyncio     one thread, coroutines over the same readiness machinery

Each serves every mode of sessions.py through one conversation (pacing.py: the slow
reader's pacing, the order of reads and replies, and how a client left: half-close, close,
reset or error); a model only carries out its operations, in its own way. It logs how
each client left, and keeps serving the others. A slow reader (--pause, --slow-read)
delays or paces recv() so the client's window fills (zero windows, window-full in the
capture); while it waits, no model watches the socket or spins: it sleeps, or sets a timer.

No model reads more from a client while replies to it are still unsent or owed (the
session's `pending` rr responses): a client that sends and never reads stops being read, and
the server's memory per connection stays bounded. A protocol error is answered with the
session's error message before the connection is closed, so the client can say why. Files
are received only into `receive_dir`, when one is given (see sessions.py for the rules).
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import json
import mmap
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import wire
from ..readiness import readable
from . import pacing, resources, sockopts, tcpinfo
from .control import shown
from .report import Report
from .sessions import Session

MODELS = ("iterative", "thread", "process", "selectors", "asyncio")
ACCEPT_BACKOFF_S = 0.05          # after EMFILE: how long before accept() is tried again
CLOSE_WAIT_S = pacing.CLOSE_WAIT_S
# send(2)'s "do not block this call" flag; 0 where the platform has none (no fast path)
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
# _Blocking's batched reads: a read's low-water mark (Linux honours it for TCP since 2.4),
# judged by the kernel's counts of bytes received and segments sent (TCP_INFO, 4.2), or
# recv(2)'s MSG_WAITALL
_LOWAT = getattr(socket, "SO_RCVLOWAT", 0)
_WAITALL = getattr(socket, "MSG_WAITALL", 0)
SWEEP_S = 0.25                   # selectors: how often reads and sends are checked for timeouts
# asyncio: bytes its stream reader holds before it stops reading (2x this); a paused
# reader's window closes once they are held
ASYNCIO_LIMIT = 1 << 18
BATCHED_MODES = ("bulk", "stream")   # _Blocking's batched reads, see there


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
        rec = _record(session, how)
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
                # the process model's clients are its children (their bytes come in each
                # child's report, when it ends)
                clients = len(self.live) + len(self.child_pids)
            t = self.report.elapsed()
            if now_bytes != last_bytes or clients:
                self.report.interval(last_t, t, {"payload_bytes": now_bytes - last_bytes,
                                                 "clients": clients})
            last_t, last_bytes = t, now_bytes

    # ---- one blocking connection (iterative, thread, process) ----

    def _conversation(self, session: Session) -> pacing.Conversation:
        cfg = self.cfg
        return pacing.Conversation(session, pacing.ReadPacer(cfg.pause_s, cfg.slow_read_bps,
                                                             time.monotonic()))

    def _serve_blocking(self, conn: socket.socket, peer) -> tuple[Session, str]:
        """One connection, start to end, however it ends (a fault in serving it is its
        error: _fault), so a thread never dies unrecorded."""
        session = self._new_session(peer)
        how = "error"
        try:
            sockopts.accepted(conn, self.cfg.options)
            talk = self._conversation(session)
            # an anonymous map, not a bytearray (which zero-fills, so every connection
            # would hold RECV bytes resident): its pages exist only once reads have filled
            # them (freed with the last view of it: the session and the conversation may
            # still hold slices of it here, so it is not closed)
            view = memoryview(mmap.mmap(-1, pacing.RECV))
            # batches only where the client streams as fast as TCP takes it: a
            # request/response client waits for its answer, so a batch would wait out its
            # timeout on every large request; a paced one's messages would arrive late;
            # unframed reads are the lesson
            carry_out = _Blocking(conn, lambda: session.mode in BATCHED_MODES,
                                  buffer_fixed=bool(self.cfg.options.rcvbuf))
            session.read_batches = carry_out.batching
            while (op := talk.op) is not None:
                try:
                    # (answering first: a bulk session's reads stop at it)
                    if op.kind == pacing.READ and op.arg == pacing.RECV and \
                            session.answering and talk.free:
                        talk.done(carry_out.answer_requests(session.answer, view,
                                                            op.timeout))
                    else:
                        talk.done(carry_out(op, view))
                except OSError as e:
                    talk.failed(e)
            how = talk.how
        except Exception as e:  # noqa: BLE001 - this connection's error, not the server's end
            _fault(session, e)
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
            if self.sampler is not None:
                self.sampler.note(threads=threading.active_count())
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
            ready = readable(fds, 0.2 if block else 0)
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
            r = readable([self.sock, *children], 0.2)
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
                        rec = _record(*self._serve_blocking(conn, peer))
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
                if self.sampler is not None:
                    self.sampler.note(processes=1 + len(children))
            reap(block=False)
        deadline = time.monotonic() + CLOSE_WAIT_S + 60
        while children and time.monotonic() < deadline:
            reap(block=True)

    def _run_selectors(self) -> None:
        sel = selectors.DefaultSelector()
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, None)
        listening = True
        conns: set[_Conn] = set()
        # connections waiting on the clock alone (pacing), unwatched by the selector:
        # (when, n, connection), soonest first
        timers: list[tuple[float, int, _Conn]] = []
        order = itertools.count()
        paused_until = 0.0           # the listener unwatched until then (out of descriptors)
        next_sweep = 0.0             # when reads and sends are next checked for timeouts

        def step(c: _Conn, ready: int) -> None:
            try:
                c.step(ready, time.monotonic())
            except Exception as e:  # noqa: BLE001 - this connection's error, not the server's
                _fault(c.session, e)
                c.talk.abandon()
            if c.talk.op is None:
                if c.events:
                    sel.unregister(c.sock)
                c.sock.close()
                conns.discard(c)
                self._finished(c.session, c.talk.how)
                return
            if c.want != c.events:
                if not c.events:
                    sel.register(c.sock, c.want, c)
                elif not c.want:
                    sel.unregister(c.sock)
                else:
                    sel.modify(c.sock, c.want, c)
                c.events = c.want
            if not c.want:
                heapq.heappush(timers, (c.until, next(order), c))

        try:
            while not self._enough() or conns:
                now = time.monotonic()
                if self._enough() and listening:
                    sel.unregister(self.sock)  # a client still in the backlog must not
                    listening = False          # wake us again and again
                elif paused_until and now >= paused_until and not self._enough():
                    sel.register(self.sock, selectors.EVENT_READ, None)
                    listening, paused_until = True, 0.0
                timeout = 0.2
                if paused_until:
                    timeout = min(timeout, max(0.0, paused_until - now))
                if timers:
                    timeout = min(timeout, max(0.0, timers[0][0] - now))
                for key, events in sel.select(timeout):
                    if key.data is not None:
                        step(key.data, events)
                        continue
                    try:
                        conn, peer = self.sock.accept()
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        if self._starving(e):
                            # the listener stays readable: stop watching it a while
                            sel.unregister(self.sock)
                            listening = False
                            paused_until = time.monotonic() + ACCEPT_BACKOFF_S
                        continue
                    conn.setblocking(False)
                    sockopts.accepted(conn, self.cfg.options)
                    session = self._new_session(peer)
                    c = _Conn(conn, session, self._conversation(session))
                    conns.add(c)
                    step(c, 0)
                now = time.monotonic()
                while timers and timers[0][0] <= now:
                    c = heapq.heappop(timers)[2]
                    if c in conns:
                        step(c, 0)
                if now >= next_sweep:          # a read or a send that waited too long
                    next_sweep = now + SWEEP_S
                    for c in [c for c in conns if c.want and now >= c.until]:
                        step(c, 0)
        finally:
            for c in conns:
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
                                            limit=ASYNCIO_LIMIT,
                                            backlog=self.cfg.options.backlog)
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
        sockopts.accepted(writer.get_extra_info("socket"), self.cfg.options)
        session = self._new_session(writer.get_extra_info("peername"))
        talk = self._conversation(session)
        try:
            while (op := talk.op) is not None:
                try:
                    talk.done(await _coroutine(reader, writer, op))
                except OSError as e:
                    talk.failed(e)
        except Exception as e:  # noqa: BLE001 - this connection's error, not the server's end
            _fault(session, e)
        finally:
            writer.close()
            self._finished(session, talk.how or "error")
            self._tasks.discard(task)


def _fault(session: Session, e: Exception) -> None:
    """Something raised while one connection was served. The peer's doings (a reset, a
    timeout: OSError) are the conversation's to judge where it can; anything else is a
    fault in serving that connection, and becomes its error: the other connections go on,
    and the server still counts this one toward its --clients."""
    what = "" if isinstance(e, OSError) else "internal error serving this connection: "
    session.error = session.error or f"{what}{type(e).__name__}: {shown(str(e), 200)}"
    session.ended = session.ended or "error"
    session.ended_ns = session.ended_ns or time.time_ns()


def _record(session: Session, how: str) -> dict:
    """A finished connection's record. Its report is the session's; one that fails to
    be made (a fault in it, never the peer's doing) still leaves a record of what is
    known, so the connection is counted and the server goes on."""
    try:
        rec = session.report()
    except Exception as e:  # noqa: BLE001 - one connection's report never ends the server
        rec = {"peer": session.peer, "mode": session.mode, "payload_bytes": session.bytes_in,
               "ended": session.ended,
               "error": f"internal error in the report: {type(e).__name__}: "
                        f"{shown(str(e), 200)}"}
    rec["how"] = how
    return rec


class _Blocking:
    """The operations of one connection's conversation (pacing.py), carried out by
    blocking calls. A read's timeout is the kernel's (sockopts.kernel_timeout), set when it
    changes: with Python's timeout mode a read was three system calls (ioctl, poll, recv)
    where one does, and a bulk transfer is mostly reads. A read returns as soon as data
    comes, so the kernel's timeout (from the call's start) is the operation's; its expiry,
    EAGAIN, is reported as the TimeoutError it is.

    Reads in batches while a stream outruns us (where `may_batch()` says the client
    streams: bulk and stream modes). A read that returns BATCH_FROM bytes or more found data
    waiting: the sender is faster than this reader, and each read costs its Python work
    (most of a bulk receiver's own CPU). Then each read asks the kernel for a whole batch
    (up to RECV, at most an eighth of the receive buffer), with a read timeout of
    BATCH_WAIT_S: if the stream pauses, what came is returned then, never held for the
    operation's whole timeout. The kernel counts that timeout in timer ticks (socket(7):
    rounded up, and a tick more), so it is 4-8 ms at 250 Hz (measured: up to 16 ms). A
    read shorter than the batch (the stream slowed, paused or ended) goes back to plain
    reads. A message's arrival time is its read's, so batching can stamp a message that
    late, and only while the receiver is behind and the stream pauses.

    Two ways to ask for a batch, and a trial picks one per connection:
    - SO_RCVLOWAT (socket(7)): the kernel wakes the reader only once the batch has come. The
      fewest wake-ups: with 64 KB segments (GRO, offloads on) a quarter more goodput than
      plain reads. But below the mark Linux acknowledges every second full-sized segment
      at once (__tcp_ack_snd_check), where a reader that is behind otherwise acknowledges
      as it reads: with 1500-byte segments that was ten times the ACKs (one per 3.6 KB
      received against one per 46 KB) and a third less goodput. (The mark stays well below
      the buffer: Linux grows a buffer too small for its mark, and clamps the window to it.)
    - MSG_WAITALL (recv(2)): the read returns once the batch has come, but the kernel
      still wakes the reader as segments arrive, and acknowledges as it copies (one ACK
      per 24 KB): with 1500-byte segments 6-30% more goodput than plain reads on
      2026-12-03, 2% less on 2026-12-04 (within a day's variation), with 64 KB segments
      none (the wake-ups are what cost there).
    The mark is on trial for the connection's first TRIAL_READS whole batches, counted
    across breaks: one whose batches sent back a segment per less than ACK_BYTES received
    asks with MSG_WAITALL from then on (where the kernel's counts cannot be read, from the
    start). `batching` ({"way", "runs": how often batches began, "reads": reads that got a
    whole batch}) goes into the connection's record."""

    BATCH_FROM = 1 << 16
    BATCH_WAIT_S = 0.001
    BUFFER_SHARE = 8
    TRIAL_READS = 16
    ACK_BYTES = 16 << 10

    def __init__(self, conn: socket.socket, may_batch: Callable[[], bool] = lambda: True,
                 buffer_fixed: bool = False):
        self.conn = conn
        self.may_batch = may_batch
        # a receive buffer the user fixed (--rcvbuf) never grows: one look at it is enough
        self.buffer_fixed = buffer_fixed
        self.read_timeout: float | None = None
        self.batch = 0                          # bytes a batch is; 0: plain reads
        self.lowat = 1                          # SO_RCVLOWAT as set: the batch, or 1
        self.proven = False                     # the mark passed its trial
        # the trial: whole batches so far, and the bytes received and segments sent in
        # them (counts at the current run of batches' start, and the sums of runs before)
        self.trial_batches = 0
        self.trial_start: tuple[int, int] | None = None
        self.trial_sums = [0, 0]
        # how a batch is asked for: the mark until the trial says otherwise, or
        # MSG_WAITALL (None: no batching, where the platform has neither)
        self.batching = {"way": "lowat" if _LOWAT else ("waitall" if _WAITALL else None),
                         "runs": 0, "reads": 0}
        conn.settimeout(None)

    def _set_timeout(self, seconds: float) -> None:
        if self.read_timeout != seconds:
            sockopts.kernel_timeout(self.conn, socket.SO_RCVTIMEO, seconds)
            self.read_timeout = seconds

    def _set_lowat(self, nbytes: int) -> None:
        self.conn.setsockopt(socket.SOL_SOCKET, _LOWAT, nbytes)
        self.lowat = nbytes

    def _read(self, size: int, timeout: float, view: memoryview) -> memoryview:
        batch = self.batch
        if batch:
            try:
                n = (self.conn.recv_into(view, size) if self.lowat > 1 else
                     self.conn.recv_into(view, min(size, batch), _WAITALL))
            except BlockingIOError:             # the batch's timeout and nothing: a pause
                n = -1
            if n >= batch:
                self.batching["reads"] += 1
                if self.trial_start is not None:
                    self._judge()
                return view[:n]
            self._unbatch()                     # slower than a batch: plain reads again
            if n >= 0:
                return view[:n]
        self._set_timeout(timeout)
        n = self.conn.recv_into(view, size)
        if n >= self.BATCH_FROM and self.batching["way"] and self.may_batch():
            self._start_batches(size)
        return view[:n]

    def _start_batches(self, size: int) -> None:
        batch = min(size, self.conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                    // self.BUFFER_SHARE)
        if batch < self.BATCH_FROM:
            if self.buffer_fixed:
                self.batching["way"] = None     # no batches on this connection
            return
        if self.batching["way"] == "lowat" and not self.proven:
            self.trial_start = tcpinfo.received_and_sent(self.conn)
            if self.trial_start is None:        # nothing to judge the mark by
                self._give_up_the_mark()
        way = self.batching["way"]
        if way is None:
            return
        if way == "lowat":
            self._set_lowat(batch)
        self.batch = batch
        self.batching["runs"] += 1
        self._set_timeout(self.BATCH_WAIT_S)

    def _unbatch(self) -> None:
        self.batch = 0
        if self.lowat > 1:
            self._set_lowat(1)
        if self.trial_start is not None:        # this run of batches into the trial's sums
            self._add_to_trial()
            self.trial_start = None

    def _add_to_trial(self) -> bool:
        now = tcpinfo.received_and_sent(self.conn)
        if now is None:
            return False
        self.trial_sums[0] += now[0] - self.trial_start[0]
        self.trial_sums[1] += now[1] - self.trial_start[1]
        return True

    def _judge(self) -> None:
        """After TRIAL_READS whole batches with the mark: keep it, or (too many segments
        sent back for the bytes received) ask with MSG_WAITALL from now on."""
        self.trial_batches += 1
        if self.trial_batches < self.TRIAL_READS:
            return
        counted = self._add_to_trial()
        self.trial_start = None
        received, sent = self.trial_sums
        if not counted or (sent and received / sent < self.ACK_BYTES):
            self._set_lowat(1)
            self._give_up_the_mark()
            if self.batching["way"] is None:
                self.batch = 0
        else:
            self.proven = True

    def _give_up_the_mark(self) -> None:
        self.batching["way"] = "waitall" if _WAITALL else None

    def answer_requests(self, answer: Callable, view: memoryview, timeout: float):
        """Request/response's usual transactions, each a read of one whole request and
        its response sent, without the conversation's steps between them (a transaction
        is tens of microseconds, and those steps were a third of the server's instructions).
        `answer(data)` is the response, or None for a read that is anything else (or one
        that answer() failed on, never for the peer's doing): that read is returned, for
        the conversation to take (and to send the peer the session's error)."""
        self._set_timeout(timeout)
        recv_into = self.conn.recv_into
        try:
            while True:
                n = recv_into(view)
                data = view[:n]
                reply = answer(data) if n else None
                if reply is None:
                    return data
                self._send(reply, timeout)
        except BlockingIOError:
            raise TimeoutError(f"timed out ({timeout:g} s)") from None

    def _send(self, data, timeout: float) -> None:
        if _DONTWAIT:
            # a reply usually fits the send buffer whole: one call that cannot block,
            # where the timed send below is four (two ioctls, poll, send) and a
            # request/response transaction is two reads and a reply
            try:
                sent = self.conn.send(data, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        # the timeout bounds the whole send, as in the other models: Python's timeout
        # mode for it (the kernel's would restart at each part a slow reader takes)
        self.conn.settimeout(timeout)
        try:
            self.conn.sendall(data)
        finally:
            self.conn.settimeout(None)

    def __call__(self, op: pacing.Op, view: memoryview):
        kind, arg, timeout = op
        try:
            if kind == pacing.READ:             # first: a bulk transfer is reads
                return self._read(arg, timeout, view)
            if kind == pacing.SEND:
                return self._send(arg, timeout)
        except BlockingIOError:
            raise TimeoutError(f"timed out ({timeout:g} s)") from None
        if kind == pacing.WAIT:
            time.sleep(arg)
        elif kind == pacing.SHUTDOWN:
            self.conn.shutdown(socket.SHUT_WR)
        return None


async def _coroutine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     op: pacing.Op):
    """One operation of a conversation (pacing.py), carried out by a coroutine."""
    if op.kind == pacing.WAIT:
        await asyncio.sleep(op.arg)
    elif op.kind == pacing.SHUTDOWN:
        writer.write_eof()
    else:
        async with asyncio.timeout(op.timeout):
            if op.kind == pacing.READ:
                return await reader.read(op.arg)
            writer.write(op.arg)
            await writer.drain()
    return None


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


class _Conn:
    """One connection of the selectors model: its conversation (pacing.py), carried out
    with non-blocking calls as the selector reports the socket ready. While an operation
    waits on the clock alone (pacing) the socket is not watched at all: a paused reader
    whose client's data waits unread must not be woken by it again and again."""

    def __init__(self, sock: socket.socket, session: Session, talk: pacing.Conversation):
        self.sock, self.session, self.talk = sock, session, talk
        self.current: pacing.Op | None = None    # the operation under way
        self.until = 0.0              # its deadline: a wait's end, a read's or send's timeout
        self.out = memoryview(b"")    # what a send has still to send
        self.want = 0                 # the readiness it waits for (0: the clock)
        self.events = 0               # what the selector watches now (0: not registered)

    def step(self, ready: int, now: float) -> None:
        """Carry out operations until one has to wait for the socket (`want`) or the clock
        (`until`). `ready`: what the selector reported (0: nothing, or a timer)."""
        talk = self.talk
        while (op := talk.op) is not None:
            if op is not self.current:
                self.current = op
                self.until = now + (op.arg if op.kind == pacing.WAIT else op.timeout)
                self.out = memoryview(op.arg) if op.kind == pacing.SEND else memoryview(b"")
            try:
                if op.kind == pacing.WAIT:
                    if now < self.until:
                        self.want = 0
                        return
                    talk.done()
                elif op.kind == pacing.SHUTDOWN:
                    self.sock.shutdown(socket.SHUT_WR)
                    talk.done()
                elif now >= self.until:
                    talk.failed(TimeoutError("timed out"))
                elif op.kind == pacing.READ:
                    if not ready & selectors.EVENT_READ:
                        self.want = selectors.EVENT_READ
                        return
                    ready = 0                # one read a readiness: fair to the others
                    talk.done(self.sock.recv(op.arg))
                else:
                    self.out = self.out[self.sock.send(self.out):]
                    if self.out:
                        raise BlockingIOError
                    talk.done()
            except BlockingIOError:
                self.want = (selectors.EVENT_READ if op.kind == pacing.READ
                             else selectors.EVENT_WRITE)
                return
            except OSError as e:
                talk.failed(e)


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out
