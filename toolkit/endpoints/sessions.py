"""One TCP connection as the server sees it: a protocol with no I/O (h11's habit).

Every server model (servers.py) drives the same Session: it calls `received(data, now_ns)`
with whatever recv() returned and sends back what that returns; `peer_closed(now_ns)` when
recv() returns b'' (an orderly close or a half-close: the peer's FIN, RFC 9293 3.6);
`reset()` when the peer reset the connection. The session decides by the hello:

    bulk, paced, stream   framed data messages: counted into SequenceStats
    rr                    each request answered at once with a response of response_size
    echo                  each request sent back unchanged but for its kind (a response)
    file                  file data into a FileSink; verified by size and SHA-256 at the end
    unframed              the hello's promise of message sizes, then raw bytes: every recv()
                          is recorded, to show how reads line up with messages

A malformed stream (bad magic, unknown version, a length beyond the limit, a truncated
header at the end) ends the session with `error` set; memory stays bounded (the Deframer
never buffers beyond the limit, and an unframed session keeps one number per read, capped).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from array import array
from pathlib import Path

from .. import wire
from . import control
from .stats import SequenceStats, align_reads

MODES = ("bulk", "paced", "stream", "rr", "echo", "file", "unframed")
MAX_READS_KEPT = 1 << 22          # unframed mode keeps one uint32 per read, at most this many
MAX_RESPONSE = 16 << 20


class FileSink:
    """Receives a file into a temporary file beside its destination; `commit` verifies size
    and SHA-256 and renames it into place atomically (a reader never sees half a file)."""

    def __init__(self, out_dir: Path, name: str, size: int, sha256: str):
        safe = Path(name).name                     # never a path: no ../ escapes
        if not safe or safe in (".", ".."):
            raise control.ProtocolError(f"unusable file name {name!r}")
        self.dest = Path(out_dir) / safe
        self.size, self.sha256 = size, sha256.lower()
        fd, tmp = tempfile.mkstemp(prefix=f".{safe}.", suffix=".part", dir=out_dir)
        self.tmp = Path(tmp)
        self.f = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.received = 0

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.size:
            raise control.ProtocolError(f"file data beyond the announced size {self.size}")
        self.f.write(data)
        self.hash.update(data)
        self.received += len(data)

    def commit(self) -> dict:
        # durable before visible: the rename must never expose a file the disk does not hold
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        digest = self.hash.hexdigest()
        if self.received != self.size:
            self.abort()
            return {"type": "file", "ok": False, "name": self.dest.name,
                    "error": f"got {self.received} of {self.size} bytes"}
        if digest != self.sha256:
            self.abort()
            return {"type": "file", "ok": False, "name": self.dest.name,
                    "error": f"SHA-256 mismatch: got {digest}, announced {self.sha256}"}
        os.replace(self.tmp, self.dest)
        return {"type": "file", "ok": True, "name": self.dest.name, "bytes": self.received,
                "sha256": digest}

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


class Session:
    def __init__(self, peer: str = "", *, limit: int = wire.DEFAULT_LIMIT,
                 out_dir: Path | None = None, now_ns: int | None = None):
        self.peer = peer
        self.limit = limit
        self.out_dir = Path(out_dir) if out_dir else Path.cwd()
        self.started_ns = now_ns or time.time_ns()
        self.hello: dict | None = None
        self.mode: str | None = None
        self.flow = 0
        self.stats = SequenceStats()
        self.same_clock = False
        self._hello = control.HelloReader()
        self._deframer: wire.Deframer | None = None
        self._reads = array("I")
        self.read_count = 0
        self.bytes_in = 0
        self.responses = 0
        self.file: FileSink | None = None
        self.file_result: dict | None = None
        self.error: str | None = None
        self.ended: str | None = None       # "closed", "half-closed", "reset", "error"
        self.ended_ns: int | None = None

    # ---- events from the connection ----

    def received(self, data: bytes, now_ns: int | None = None) -> bytes:
        """Bytes from recv(); returns the bytes to send back (possibly b'')."""
        if self.error or not data:
            return b""
        now_ns = now_ns or time.time_ns()
        self.bytes_in += len(data)
        self.read_count += 1
        try:
            if self.hello is None:
                got = self._hello.feed(data)
                if got is None:
                    return b""
                self._start(got[0])
                data = got[1]
                if not data:
                    return b""
            return self._data(data, now_ns)
        except (control.ProtocolError, wire.FramingError, OSError) as e:
            self._fail(str(e))
            return b""

    def peer_closed(self, now_ns: int | None = None) -> bytes:
        """recv() returned b''. Returns the final report frame to send: a peer that only
        half-closed reads it; one that closed entirely answers it with a reset."""
        self.ended_ns = now_ns or time.time_ns()
        if self.error:
            return b""
        try:
            if self.hello is None:
                raise control.ProtocolError(self._hello.eof_error())
            if self._deframer is not None:
                self._deframer.close()
        except (control.ProtocolError, wire.FramingError) as e:
            self._fail(str(e))
            return b""
        out = b""
        if self.file is not None:
            self.file_result = self.file.commit()
            self.file = None
            out += control.encode(self.flow, self.file_result)
        self.ended = "closed"
        return out + control.encode(self.flow, {"type": "report", **self.report()})

    def reset(self) -> None:
        self.ended, self.ended_ns = "reset", time.time_ns()
        if self.file is not None:
            self.file.abort()
            self.file = None

    # ---- internals ----

    def _fail(self, why: str) -> None:
        self.error, self.ended, self.ended_ns = why, "error", time.time_ns()
        if self.file is not None:
            self.file.abort()
            self.file = None

    def _start(self, hello: dict) -> None:
        mode = hello.get("mode")
        if hello.get("proto") != "tcp" or mode not in MODES:
            raise control.ProtocolError(f"hello asks for {hello.get('proto')}/{mode}; this "
                                        f"server speaks tcp with modes {', '.join(MODES)}")
        self.hello, self.mode = hello, mode
        self.flow = int(hello.get("flow", 0)) & 0xFFFFFFFF
        self.same_clock = hello.get("boot_id") is not None and \
            hello.get("boot_id") == control.boot_id()
        if mode == "rr":
            size = hello.get("response_size", 0)
            if not isinstance(size, int) or not 0 <= size <= MAX_RESPONSE:
                raise control.ProtocolError(f"response_size {size!r} out of range")
            self._response_body = bytes(size)
        if mode == "file":
            meta = hello.get("file") or {}
            try:
                size, name, digest = int(meta["size"]), str(meta["name"]), str(meta["sha256"])
            except (KeyError, TypeError, ValueError):
                raise control.ProtocolError("file hello needs name, size and sha256") from None
            if size < 0:
                raise control.ProtocolError(f"file size {size} is negative")
            self.file = FileSink(self.out_dir, name, size, digest)
        if mode == "unframed":
            sizes = hello.get("message_sizes")
            if not isinstance(sizes, list) or not sizes or not all(
                    isinstance(s, int) and s > 0 for s in sizes) or len(sizes) > 4096:
                raise control.ProtocolError("unframed hello needs message_sizes (1 to 4096 "
                                            "positive integers)")
        else:
            # only file and echo need the bytes of a body; the others count them
            self._deframer = wire.Deframer(self.limit, keep_bodies=mode in ("file", "echo"))

    def _data(self, data: bytes, now_ns: int) -> bytes:
        if self.mode == "unframed":
            if len(self._reads) < MAX_READS_KEPT:
                self._reads.append(len(data))
            return b""
        out = []
        rows = []
        for h, body in self._deframer.feed(data):
            n = wire.HEADER_LEN + h.length
            if self.mode in ("rr", "echo"):
                if h.kind != wire.KIND_REQUEST:
                    raise control.ProtocolError(f"{self.mode} expects requests, got kind "
                                                f"{h.kind}")
                rows.append((h.seq, h.send_ns, n))
                if self.mode == "echo":
                    out.append(wire.frame(wire.Header(h.flow, h.seq, h.send_ns, 0,
                                                      wire.KIND_RESPONSE), body))
                else:
                    out.append(wire.frame(wire.Header(h.flow, h.seq, time.time_ns(), 0,
                                                      wire.KIND_RESPONSE), self._response_body))
                self.responses += 1
            elif self.mode == "file":
                if h.kind != wire.KIND_FILE:
                    raise control.ProtocolError(f"file transfer expects file data, got kind "
                                                f"{h.kind}")
                self.file.write(body)
                rows.append((h.seq, h.send_ns, n))
            else:
                if h.kind != wire.KIND_DATA:
                    raise control.ProtocolError(f"{self.mode} expects data messages, got "
                                                f"kind {h.kind}")
                rows.append((h.seq, h.send_ns, n))
        if rows:        # one batch per read: the statistics cost per read, not per message
            seqs, sends, sizes = zip(*rows)
            self.stats.add_batch(seqs, sends, [now_ns] * len(rows), sizes)
        return b"".join(out)

    # ---- results ----

    def report(self) -> dict:
        end = self.ended_ns or time.time_ns()
        out = {"peer": self.peer, "mode": self.mode, "flow": self.flow,
               "bytes": self.bytes_in, "reads": self.read_count,
               "seconds": (end - self.started_ns) / 1e9, "ended": self.ended,
               "error": self.error}
        if self.mode == "unframed":
            out["alignment"] = align_reads(self._reads, self.hello["message_sizes"])
        elif self.mode is not None:
            out["messages"] = self.stats.totals(self.same_clock)
        if self.mode in ("rr", "echo"):
            out["responses"] = self.responses
        if self.file_result is not None:
            out["file"] = self.file_result
        return out
