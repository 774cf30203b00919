"""How a server reads a client, whatever its concurrency model: the slow reader's pacing
(--pause, --slow-read) and how the client left. Pure logic: no sockets, and no clock but
the one it is given.

`ReadPacer` is the slow reader's schedule, for TCP (servers.py) and UDP (udp.py) alike: no
read before the pause has passed, then no faster than the rate: after a read of n bytes
that returned at t, the next waits until t + 8n/rate. Time spent waiting for data is no
credit for a burst of reads later.

`Conversation` is one TCP connection from the server's side, as a sequence of operations:
wait (pacing), read, send, shut down our side. The five server models of servers.py differ
only in how they carry an operation out (a blocking call in a thread or a forked process,
readiness from a selector, a coroutine); what comes next is decided here, once:

    read (paced), hand the bytes to the Session, send what it returns and what it still
    owes (nothing more is read while replies are unsent), until the Session fails (error)
    or the read returns b'': the peer's FIN. Then our final report and our FIN, and one
    more read, at most CLOSE_WAIT_S, tells how the client left:

    half-close  it read our report and closed: that read returned b'' (or nothing came)
    close       it had closed entirely: the report was answered by a RST (or data)
    reset       a RST while the connection was open
    error       a protocol error (the Session's), a timeout (a client silent, or not
                reading our replies, for IDLE_S), or another socket error

A driver calls `done(result)` when an operation succeeded (a read's result is the bytes
read) and `failed(error)` when it raised; both return the next operation, None at the end,
and then `how` says how the client left.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

# bytes a read asks for: a bulk receiver's reads, batched to this size (servers._Blocking),
# were 0.98x iperf3's goodput at 256 KiB and 1.10x at 512 KiB (offloads on, three pairs
# each, interleaved). The blocking models read into an anonymous map, whose pages exist
# only as far as reads have filled them; selectors' recv() allocates without zeroing.
RECV = 1 << 19
SLOW_READ = 4096                 # a slow reader's read, so that its pacing is smooth
IDLE_S = 60.0                    # a read or a send that waits longer has failed
CLOSE_WAIT_S = 2.0               # after our FIN: how long the peer's answer is waited for

WAIT, READ, SEND, SHUTDOWN = "wait", "read", "send", "shutdown"


class Op(NamedTuple):
    """An operation for the driver: WAIT `arg` seconds; READ at most `arg` bytes; SEND all
    of `arg`; SHUTDOWN our sending side (our FIN). `timeout`: a READ or SEND not done by
    then has failed (TimeoutError)."""
    kind: str
    arg: float | int | bytes = 0
    timeout: float = IDLE_S


# an Op from its three fields, unchecked: NamedTuple's own __new__ is a Python call, and a
# request/response exchange makes two operations a transaction
_new_op = tuple.__new__


class ReadPacer:
    """When a slow reader may read next, and how much."""

    def __init__(self, pause_s: float = 0.0, rate_bps: float = 0.0, now: float = 0.0):
        if pause_s < 0 or rate_bps < 0:
            raise ValueError("--pause and --slow-read cannot be negative")
        self.rate_bps = rate_bps
        self.due = now + pause_s
        # False once nothing is left to pace (no rate, the pause over): reads go unchecked
        self.active = bool(rate_bps or pause_s)

    def wait(self, now: float) -> float:
        """Seconds to wait before the next read (0: read now)."""
        if not self.rate_bps and now >= self.due:
            self.active = False
        return max(0.0, self.due - now)

    def size(self, most: int = RECV) -> int:
        return min(most, SLOW_READ) if self.rate_bps else most

    def read(self, nbytes: int, now: float) -> None:
        """A read of `nbytes` returned at `now`."""
        if self.rate_bps and nbytes:
            self.due = now + nbytes * 8 / self.rate_bps


class Conversation:
    """One connection's operations, in order (see the module's docstring)."""

    def __init__(self, session, pacer: ReadPacer,
                 clock: Callable[[], float] = time.monotonic):
        self.how: str | None = None
        self.op: Op | None = None
        self._pacer = pacer
        self._steps = _talk(session, pacer, clock)
        self._send = self._steps.send
        self._next(self._send, None)

    @property
    def free(self) -> bool:
        """Reads go unpaced (no --pause or --slow-read left to keep)."""
        return not self._pacer.active

    def done(self, result=None) -> Op | None:
        # _next's work inline: two of these a request/response transaction
        try:
            self.op = op = self._send(result)
        except StopIteration as end:
            self.op, self.how = None, end.value
            return None
        return op

    def failed(self, error: BaseException) -> Op | None:
        return self._next(self._steps.throw, error)

    def abandon(self) -> None:
        """The driver could not carry the conversation on (a fault in serving it, not the
        peer's doing): it ends here, as an error."""
        self._steps.close()
        self.op, self.how = None, "error"

    def _next(self, step, value) -> Op | None:
        try:
            self.op = step(value)
        except StopIteration as end:
            self.op, self.how = None, end.value
        return self.op


def _talk(session, pacer: ReadPacer, clock):
    try:
        while True:
            if pacer.active:
                wait = pacer.wait(clock())
                if wait > 0:
                    yield Op(WAIT, wait)
                data = yield Op(READ, pacer.size())
                pacer.read(len(data), clock())
            else:
                # a new Op each time: a driver tells operations apart by identity (the
                # selectors model starts an operation's timeout when it first sees it)
                data = yield _new_op(Op, (READ, RECV, IDLE_S))
            if not data:
                return (yield from _leaving(session))
            reply = session.received(data)
            while reply:                # rr responses owed go out before the next read
                yield _new_op(Op, (SEND, reply, CLOSE_WAIT_S if session.error else IDLE_S))
                reply = session.more()
            if session.error:
                return "error"
    except (ConnectionResetError, BrokenPipeError):
        session.reset()
        return "reset"
    except OSError as e:               # TimeoutError among them
        session.reset()
        session.error = session.error or f"{type(e).__name__}: {e}"
        return "error"


def _leaving(session):
    """The peer's FIN came: our final report and our FIN, then its answer."""
    final = session.peer_closed()
    try:
        if final:
            yield Op(SEND, final, CLOSE_WAIT_S)
        yield Op(SHUTDOWN)
        rest = yield Op(READ, 1, CLOSE_WAIT_S)
    except TimeoutError:
        return "half-close"
    except OSError:
        # reset, broken pipe, or ENOTCONN from shutdown(): the RST that answered our report
        # already came, so the peer had closed entirely
        return "close"
    return "half-close" if not rest else "close"
