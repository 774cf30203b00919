"""One TCP connection as the server sees it: a protocol with no I/O (h11's habit).

Every server model (servers.py) drives the same Session: it calls `received(data, now_ns)`
with whatever recv() returned and sends back what that returns, then, while `pending`, what
`more()` returns (rr responses still owed) before it reads again; `peer_closed(now_ns)` when
recv() returns b'' (an orderly close or a half-close: the peer's FIN, RFC 9293 3.6);
`reset()` when the peer reset the connection; `release()` when it is done with the session
however it ended (a file still open is then abandoned and its temporary file removed). The
session decides by the hello:

    bulk, paced, stream   framed data messages: counted into SequenceStats
    rr                    each request answered with a response of response_size (at most
                          the server's limit); requests that arrive together are answered
                          about RESPONSE_BUDGET bytes at a time, through more(), so a batch
                          of small requests cannot make the server build gigabytes at once
    echo                  each request sent back unchanged but for its kind (a response)
    file                  file data into a FileSink, only when the server receives files
                          (a receive_dir); verified by size and SHA-256 at the end
    unframed              the hello's promise of message sizes, then raw bytes: every recv()
                          is recorded, to show how reads line up with messages

A malformed stream (bad magic, unknown version, a length beyond the limit, a truncated
header at the end, a hello whose values are out of range) ends the session with `error`
set, and the bytes returned are then one control message {"type": "error"} saying why, for
the server to send before it closes; memory stays bounded (the Deframer never buffers
beyond the limit, and an unframed session keeps one number per read, capped). Peer values
appear in errors only through control.shown (quoted, control characters escaped, cut short).

Receiving files is off unless the server was given a folder (receive_dir: `labkit serve
--receive-dir DIR`); without one a file hello is refused. With one, a file is accepted only
when all of these hold, checked before anything is created:

- its name is a plain file name: not empty, no leading dot (hidden names, `.` and `..`), no
  `/` or `\\`, no NUL or other control or format character, at most 255 bytes in UTF-8;
- its announced size is a whole number within the server's limit (`--limit`) and the
  folder's free space, and its SHA-256 is 64 hex digits;
- no file (or link, or anything) of that name is in the folder: nothing is ever replaced.

The bytes go to a new temporary file in the folder (`.labkit-<random>.part`, created with
O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600); a frame that would take the data past the announced
size ends the transfer before it is written. At the end the size and SHA-256 are checked,
the data is fsynced, and the file gets its name by link(2) (renameat2 RENAME_NOREPLACE where
the filesystem has no hard links), which fails rather than replace a name that appeared in
the meantime; then the temporary name is removed. On every failure (refused, reset, short,
long, wrong digest, an I/O error, the server stopping) the temporary file is removed.
Received files are mode 0600: readable and writable by the server's user only.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import secrets
import time
import unicodedata
from array import array
from collections import deque
from pathlib import Path

import numpy as np

from .. import wire
from . import control
from .control import ProtocolError, shown
from .stats import SequenceStats, align_reads

MODES = ("bulk", "paced", "stream", "rr", "echo", "file", "unframed")
MAX_READS_KEPT = 1 << 22          # unframed mode keeps one uint32 per read, at most this many
MAX_RESPONSE = 16 << 20           # rr: the largest response_size, and never above the limit
RESPONSE_BUDGET = 1 << 20         # rr: bytes of responses made per call; more() makes the rest
# messages held before the statistics take them, in one numpy batch: a bulk read completes
# about one message, and taking it alone (4.5 us) was half of a read's work; 256 cost
# 0.5 us a message, and at most 8 KB held a connection
HELD_ROWS = 256
SEQ_TOP = 1 << 63                  # the first seq that is no int64
_pack_ids = wire.IDS.pack_into
MAX_MESSAGE_SIZES = 4096          # unframed: how many sizes a hello may promise
MAX_UNFRAMED_SIZE = (1 << 32) - 1
MAX_NAME_BYTES = 255              # NAME_MAX of Linux filesystems
FILE_MODE = 0o600
RENAME_NOREPLACE = 1
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_HEX = frozenset("0123456789abcdef")
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK,
                       errno.ENOSYS})


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_file_name(name) -> str:
    """The name a peer asked for, if it is a plain file name; ProtocolError if not."""
    if not isinstance(name, str):
        raise ProtocolError(f"file name {shown(name)} is not a string")
    if not name:
        raise ProtocolError("file name is empty")
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        size = None                                # a lone surrogate: refused below
    if size is not None and size > MAX_NAME_BYTES:
        raise ProtocolError(f"file name of {size} bytes is too long (at most "
                            f"{MAX_NAME_BYTES})")
    if name.startswith("."):
        raise ProtocolError(f"file name {shown(name)} starts with a dot: hidden names, "
                            f"`.` and `..` are refused")
    if "/" in name or "\\" in name:
        raise ProtocolError(f"file name {shown(name)} holds a path separator: a name, "
                            f"never a path")
    for c in name:
        if unicodedata.category(c) in _REFUSED_CATEGORIES:
            raise ProtocolError(f"file name {shown(name)} holds the control character "
                                f"U+{ord(c):04X}")
    return name


def _rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    """renameat2(RENAME_NOREPLACE): for filesystems without hard links (Linux 3.15)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        fn = None
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
        if fn(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err))
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
    raise ProtocolError("the receiving folder's filesystem has neither hard links nor a "
                        "rename that never replaces: files cannot be stored there safely")


class FileSink:
    """Receives one file into `receive_dir` under the rules of this module's docstring:
    checked before anything is created, written to a temporary file, linked into place by
    `commit` only when complete and verified, never replacing anything."""

    def __init__(self, receive_dir: Path, name, size, sha256, limit: int):
        self.dir_fd = self.fd = -1
        self.tmp: str | None = None
        self.name = check_file_name(name)
        if not _whole(size) or size < 0:
            raise ProtocolError(f"file size {shown(size)} is not a whole number of bytes")
        if size > limit:
            raise ProtocolError(f"file size {size} exceeds the server's limit of {limit} "
                                f"bytes (--limit)")
        if not isinstance(sha256, str) or len(sha256) != 64 or not set(sha256.lower()) <= _HEX:
            raise ProtocolError(f"file sha256 {shown(sha256)} is not 64 hex digits")
        self.size, self.sha256 = size, sha256.lower()
        self.hash = hashlib.sha256()
        self.received = 0
        try:
            self.dir_fd = os.open(receive_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            if self._exists(self.name):
                raise ProtocolError(f"a file named {shown(self.name)} is already in the "
                                    f"receiving folder (a file is never replaced)")
            room = os.fstatvfs(self.dir_fd)
            if size > room.f_bavail * room.f_frsize:
                raise ProtocolError(f"file size {size} exceeds the receiving folder's free "
                                    f"space")
            self._create_temporary()
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                # no path in what goes back to the peer: the folder is the server's business
                raise ProtocolError(f"the server cannot store the file ({e.strerror})") from None
            raise

    def _exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _create_temporary(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(16):
            tmp = f".labkit-{secrets.token_hex(8)}.part"
            try:
                self.fd = os.open(tmp, flags, FILE_MODE, dir_fd=self.dir_fd)
            except FileExistsError:
                continue
            self.tmp = tmp
            os.fchmod(self.fd, FILE_MODE)         # exactly 0600, whatever the umask
            return
        raise ProtocolError("the server cannot create a temporary file")

    @property
    def remaining(self) -> int:
        return self.size - self.received

    def write(self, data: bytes) -> None:
        if len(data) > self.remaining:
            raise ProtocolError(f"file data beyond the announced size of {self.size} bytes")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.hash.update(data)
        self.received += len(data)

    def commit(self) -> dict:
        """Verify, then give the file its name; the verdict for the sender. Whatever the
        verdict, nothing temporary is left."""
        try:
            return self._publish()
        except ProtocolError as e:
            return {"type": "file", "ok": False, "name": self.name, "error": str(e)}
        except OSError as e:
            return {"type": "file", "ok": False, "name": self.name,
                    "error": f"the server cannot store the file ({e.strerror})"}
        finally:
            self.abort()

    def _publish(self) -> dict:
        if self.received != self.size:
            raise ProtocolError(f"got {self.received} of {self.size} bytes")
        digest = self.hash.hexdigest()
        if digest != self.sha256:
            raise ProtocolError(f"SHA-256 mismatch: got {digest}, announced {self.sha256}")
        # durable before visible: the name must never point at data the disk does not hold
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        try:
            try:
                os.link(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            except OSError as e:
                if isinstance(e, FileExistsError) or e.errno not in _NO_LINKS:
                    raise
                _rename_noreplace(self.dir_fd, self.tmp, self.name)
                self.tmp = None                   # renamed: nothing left to remove
        except FileExistsError:
            raise ProtocolError(f"a file named {shown(self.name)} appeared in the receiving "
                                f"folder meanwhile (a file is never replaced)") from None
        # the file is in place: what follows is tidying (abort() retries the unlink)
        try:
            if self.tmp is not None:
                os.unlink(self.tmp, dir_fd=self.dir_fd)
                self.tmp = None
            os.fsync(self.dir_fd)
        except OSError:
            pass
        return {"type": "file", "ok": True, "name": self.name, "bytes": self.received,
                "sha256": digest}

    def abort(self) -> None:
        """Close everything and remove the temporary file, if any; safe to call again."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if self.tmp is not None:
            try:
                os.unlink(self.tmp, dir_fd=self.dir_fd)
            except OSError:
                pass
            self.tmp = None
        if self.dir_fd >= 0:
            try:
                os.close(self.dir_fd)
            except OSError:
                pass
            self.dir_fd = -1


class Session:
    def __init__(self, peer: str = "", *, limit: int = wire.DEFAULT_LIMIT,
                 receive_dir: Path | None = None, now_ns: int | None = None):
        self.peer = peer
        self.limit = limit
        # None: this server does not receive files (a file hello is refused)
        self.receive_dir = Path(receive_dir) if receive_dir is not None else None
        self.started_ns = now_ns or time.time_ns()
        self.hello: dict | None = None
        self.mode: str | None = None
        self.flow = 0
        self.stats = SequenceStats()
        # seq, send_ns, recv_ns, bytes of messages the statistics have not taken yet
        self._held = (array("q"), array("q"), array("q"), array("q"))
        self.same_clock = False
        self._hello = control.HelloReader()
        self._deframer: wire.Deframer | None = None
        self._reads = array("I")
        self.read_count = 0
        self.bytes_in = 0
        self.responses = 0
        self._response_size = 0
        # rr: the one response buffer, its header made whole at the hello (None: not rr)
        self._reply: bytearray | None = None
        self._owed: deque[tuple[int, int]] = deque()      # rr requests not yet answered
        self.file: FileSink | None = None
        self.file_result: dict | None = None
        self.error: str | None = None
        self._unsent = b""                  # an error answer() made, for received() to send
        self.ended: str | None = None       # "closed", "half-closed", "reset", "error"
        self.ended_ns: int | None = None
        # how the server's reads were batched, when they were: servers._Blocking's
        # {"way", "runs", "reads"}, which it keeps up to date
        self.read_batches: dict | None = None

    # ---- events from the connection ----

    def received(self, data: bytes, now_ns: int | None = None) -> bytes:
        """Bytes from recv(); returns the bytes to send back (possibly b''). While `pending`
        is true after it, the server sends what more() returns before reading again."""
        if self.error or not data:
            return self._take_unsent()
        now_ns = now_ns or time.time_ns()
        try:
            reply = self.answer(data, now_ns)    # rr's usual read: one whole request
            if reply is not None:
                return reply
            if self.error:                       # a fault inside answer(): say it
                return self._take_unsent()
            self.bytes_in += len(data)
            self.read_count += 1
            out = b""
            if self.hello is None:
                got = self._hello.feed(data)
                if got is None:
                    return b""
                out = self._start(got[0])
                data = got[1]
                if not data:
                    return out
            return out + self._data(data, now_ns)
        except (ProtocolError, wire.FramingError, OSError) as e:
            return self._fail(self._explain(e))
        except Exception as e:    # noqa: BLE001 - no input may take the server down
            return self._internal(e)

    def _internal(self, e: Exception) -> bytes:
        return self._fail(f"internal error on this input: {type(e).__name__}: "
                          f"{shown(str(e), 200)}")

    def _take_unsent(self) -> bytes:
        out, self._unsent = self._unsent, b""
        return out

    @property
    def answering(self) -> bool:
        """rr, with nothing owed: a read of one whole request may go to answer()."""
        return self._reply is not None and not self._owed and self.error is None

    def answer(self, data, now_ns: int | None = None) -> bytes | None:
        """received() for request/response's usual read: exactly one whole request, with
        nothing owed before it. Its response, without the deframer's lists and the queue
        (a transaction is tens of microseconds, and Python's part of it runs with caches
        the kernel's wake-up has just emptied). None, with nothing taken, for any other
        read: give that to received()."""
        if not self.answering:
            return None
        h = self._deframer.one(data, wire.KIND_REQUEST)
        if h is None:
            return None
        try:
            self.bytes_in += len(data)
            self.read_count += 1
            flow, seq, send_ns, length, _ = h
            self._hold(seq, send_ns, now_ns or time.time_ns(), wire.HEADER_LEN + length)
            return self._respond(flow, seq)
        except Exception as e:  # noqa: BLE001 - as in received(): the session's error
            # None, as for a read that is not a lone request: the driver gives the read
            # to received(), which sends the peer this error and ends the conversation
            self._unsent = self._internal(e)
            return None

    @property
    def pending(self) -> bool:
        """Responses are still owed: call more() (and send it) before reading again."""
        return bool(self._owed) and self.error is None

    def more(self) -> bytes:
        """The next responses owed to rr requests already received, about RESPONSE_BUDGET
        bytes of them (at least one); b'' when none are owed."""
        owed = self._owed
        if not owed or self.error is not None:
            return b""
        if len(owed) == 1:
            return self._respond(*owed.popleft())
        out = bytearray()
        while owed and len(out) < RESPONSE_BUDGET:
            out += self._respond(*owed.popleft())
        return bytes(out)

    def peer_closed(self, now_ns: int | None = None) -> bytes:
        """recv() returned b''. Returns the final report frame to send: a peer that only
        half-closed reads it; one that closed entirely answers it with a reset."""
        self.ended_ns = now_ns or time.time_ns()
        if self.error:
            return b""
        try:
            if self.hello is None:
                raise ProtocolError(self._hello.eof_error())
            if self._deframer is not None:
                self._deframer.close()
        except (ProtocolError, wire.FramingError) as e:
            return self._fail(str(e))
        out = b""
        if self.file is not None:
            self.file_result = self.file.commit()
            self.file = None
            out += control.encode(self.flow, self.file_result)
        self.ended = "closed"
        try:
            report = self.report()
        except Exception as e:    # noqa: BLE001 - no input may take the server down
            return out + self._fail(f"internal error in the report: {type(e).__name__}")
        return out + control.encode(self.flow, {"type": "report", **report})

    def reset(self) -> None:
        self.ended, self.ended_ns = "reset", time.time_ns()
        self.release()

    def release(self) -> None:
        """The server is done with this connection, however it ended: a file still being
        received is abandoned (its temporary file removed)."""
        self._owed.clear()
        if self.file is not None:
            self.file.abort()
            self.file = None

    # ---- internals ----

    def _fail(self, why: str) -> bytes:
        """End the session on a protocol error; the error message to send before closing."""
        why = why if len(why) <= 1000 else why[:1000] + "..."
        self.error, self.ended, self.ended_ns = why, "error", time.time_ns()
        self.release()
        return control.encode(self.flow, control.error(why))

    def _explain(self, e: Exception) -> str:
        why = str(e)
        if (self.mode == "file" and isinstance(e, wire.FramingError)
                and "exceeds the limit" in why and self._deframer is not None
                and self._deframer.limit < self.limit):
            return f"{why}: file data beyond the announced size"
        return why

    def _start(self, hello: dict) -> bytes:
        mode, proto = hello.get("mode"), hello.get("proto")
        if proto != "tcp" or not isinstance(mode, str) or mode not in MODES:
            raise ProtocolError(f"hello asks for {shown(proto)}/{shown(mode)}; this server "
                                f"speaks tcp with modes {', '.join(MODES)}")
        flow = hello.get("flow", 0)
        if not _whole(flow) or not 0 <= flow <= 0xFFFFFFFF:
            raise ProtocolError(f"hello flow {shown(flow)}: a flow id is 0 to 4294967295")
        self.hello, self.mode, self.flow = hello, mode, flow
        self.same_clock = hello.get("boot_id") is not None and \
            hello.get("boot_id") == control.boot_id()
        out = b""
        if mode == "rr":
            size = hello.get("response_size", 0)
            top = min(MAX_RESPONSE, self.limit)
            if not _whole(size) or not 0 <= size <= top:
                raise ProtocolError(f"response_size {shown(size)} out of range (0 to {top} "
                                    f"bytes, the server's limit)")
            self._response_size = size
            self._reply = bytearray(wire.HEADER_LEN + size)
            wire.pack_header_into(self._reply, 0, 0, 0, 0, size, wire.KIND_RESPONSE)
        if mode == "file":
            if self.receive_dir is None:
                raise ProtocolError("file mode refused: this server does not receive files "
                                    "(its user can start it with --receive-dir DIR)")
            meta = hello.get("file")
            if not isinstance(meta, dict) or not all(k in meta for k in
                                                     ("name", "size", "sha256")):
                raise ProtocolError("file hello needs name, size and sha256")
            self.file = FileSink(self.receive_dir, meta["name"], meta["size"],
                                 meta["sha256"], self.limit)
            out = control.encode(self.flow, {"type": "ready", "name": self.file.name,
                                             "size": self.file.size})
        if mode == "unframed":
            sizes = hello.get("message_sizes")
            if not isinstance(sizes, list) or not 1 <= len(sizes) <= MAX_MESSAGE_SIZES or \
                    not all(_whole(s) and 0 < s <= MAX_UNFRAMED_SIZE for s in sizes):
                raise ProtocolError(f"unframed hello needs message_sizes (1 to "
                                    f"{MAX_MESSAGE_SIZES} whole numbers, each 1 to "
                                    f"{MAX_UNFRAMED_SIZE})")
        else:
            # only file and echo need the bytes of a body; the others count them
            self._deframer = wire.Deframer(self.limit, keep_bodies=mode in ("file", "echo"))
            if self.file is not None:
                # a frame longer than what is left of the file is refused at its header
                self._deframer.limit = min(self.limit, self.file.remaining)
        return out

    def _data(self, data: bytes, now_ns: int) -> bytes:
        if self.mode == "unframed":
            if len(self._reads) < MAX_READS_KEPT:
                self._reads.append(len(data))
            return b""
        if not self._deframer.keep_bodies:
            return self._count(data, now_ns)
        messages = self._deframer.feed(data)
        out = []
        for h, body in messages:
            if self.mode == "echo":
                if h.kind != wire.KIND_REQUEST:
                    raise ProtocolError(f"echo expects requests, got kind {h.kind}")
                out.append(wire.frame(wire.Header(h.flow, h.seq, h.send_ns, 0,
                                                  wire.KIND_RESPONSE), body))
                self.responses += 1
            else:
                if h.kind != wire.KIND_FILE:
                    raise ProtocolError(f"file transfer expects file data, got kind {h.kind}")
                self.file.write(body)
                self._deframer.limit = min(self.limit, self.file.remaining)
            self._hold(h.seq, h.send_ns, now_ns, wire.HEADER_LEN + h.length)
        return b"".join(out)

    def _count(self, data: bytes, now_ns: int) -> bytes:
        """bulk, paced, stream and rr: each message's header is all they need, and at tens of
        thousands of messages a second this loop is most of a bulk receiver's own work."""
        heads = self._deframer.heads(data)
        if not heads:                   # a read inside a message: nothing more to do
            return b""
        rr = self.mode == "rr"
        expected = wire.KIND_REQUEST if rr else wire.KIND_DATA
        seqs, sends, recvs, sizes = self._held
        for flow, seq, send_ns, length, kind in heads:
            if kind != expected:
                raise ProtocolError(f"{self.mode} expects "
                                    f"{'requests' if rr else 'data messages'}, got kind {kind}")
            if rr:
                self._owed.append((flow, seq))
            # seq is an unsigned 64-bit field: past int64 it is no number a sender makes,
            # and it counts as stray (-1)
            seqs.append(seq if seq < SEQ_TOP else -1)
            sends.append(send_ns)
            recvs.append(now_ns)
            sizes.append(wire.HEADER_LEN + length)
        if len(seqs) >= HELD_ROWS:
            self._take_held()
        return self.more() if rr else b""

    def _respond(self, flow: int, seq: int) -> bytes:
        """One rr response, in the one buffer kept for it: its header was made whole at the
        hello, and only flow, seq and send time change."""
        _pack_ids(self._reply, wire.IDS_AT, flow, seq, time.time_ns())
        self.responses += 1
        return bytes(self._reply)

    def _hold(self, seq: int, send_ns: int, recv_ns: int, size: int) -> None:
        """One message for the statistics (see _count)."""
        seqs, sends, recvs, sizes = self._held
        seqs.append(seq if seq < SEQ_TOP else -1)
        sends.append(send_ns)
        recvs.append(recv_ns)
        sizes.append(size)
        if len(seqs) >= HELD_ROWS:
            self._take_held()

    def _take_held(self) -> None:
        """The held messages into the statistics, in arrival order (add_batch: the rules
        of one at a time, except that a batch's stray check counts from the highest
        number before it: a jump of about the window, 2**24, may count as stray)."""
        if self._held[0]:
            self.stats.add_batch(*(np.array(a, np.int64) for a in self._held))
            for a in self._held:
                del a[:]

    # ---- results ----

    def report(self) -> dict:
        self._take_held()
        end = self.ended_ns or time.time_ns()
        out = {"peer": self.peer, "mode": self.mode, "flow": self.flow,
               "payload_bytes": self.bytes_in, "reads": self.read_count,
               "duration_s": (end - self.started_ns) / 1e9, "ended": self.ended,
               "error": self.error}
        if self.mode == "unframed":
            out["alignment"] = align_reads(self._reads, self.hello["message_sizes"])
        elif self.mode is not None:
            out["messages"] = self.stats.totals(self.same_clock)
        if self.mode in ("rr", "echo"):
            out["responses"] = self.responses
        if self.file_result is not None:
            out["file"] = self.file_result
        if self.read_batches and self.read_batches["runs"]:
            out["read_batches"] = dict(self.read_batches)
        return out
