"""Control messages: what a sender tells a receiver in-band, and what comes back.

A control message is a lab-header frame of kind KIND_CONTROL whose body is a small JSON
object with a `type`:

    hello   first on every TCP connection (and sent three times at the start of a UDP flow):
            proto, mode, flow, the sender's boot id (same boot id = same clock, so one-way
            delay means something), and the mode's parameters (response_size, message sizes,
            framing, file name/size/sha256)
    end     UDP only, three times at the end: how many datagrams the sender sent, so the
            receiver sees losses at the tail too (iperf3 carries this on its control
            connection; a lab flow has only the one path). The count is also in the
            header's seq field, which a capture keeps, so the analyzer sees it as well
    report  the receiver's totals, sent back when the sender half-closes (TCP)
    ready   the receiver accepts a file hello: the sender waits for it before sending data
    file    the receiver's verdict on a file transfer: ok, or why not
    error   the receiver refuses the connection (a protocol error: a bad hello, a refused
            file, a malformed frame), sent just before it closes, so the sender can say why

UDP request/response carries the wanted response size in the request itself (the first
4 bytes of the body), so a lost hello cannot stall the exchange.

Everything in a control message is the peer's to choose: `decode` turns any body that is not
a JSON object with a string `type` into ProtocolError (including nesting too deep for the
parser and integers too long to convert), and `shown` is how a peer's value may appear in a
log line: quoted, control characters escaped, cut short.
"""

from __future__ import annotations

import json
import os
import struct
import time

from .. import wire

MAX_CONTROL = 64 << 10
RESPONSE_SIZE = struct.Struct("!I")


class ProtocolError(ValueError):
    """A peer broke the protocol; the message says how (and at which stream byte)."""


def boot_id() -> str | None:
    """Identifies this machine's current boot: equal boot ids share CLOCK_REALTIME (network
    namespaces do not virtualise it)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def encode(flow: int, msg: dict, seq: int = 0) -> bytes:
    body = json.dumps(msg, separators=(",", ":")).encode()
    if len(body) > MAX_CONTROL:
        raise ValueError(f"control message of {len(body)} bytes exceeds {MAX_CONTROL}")
    return wire.frame(wire.Header(flow, seq, time.time_ns(), 0, wire.KIND_CONTROL), body)


def decode(header: wire.Header, body: bytes) -> dict:
    if header.kind != wire.KIND_CONTROL:
        raise ProtocolError(f"expected a control message, got kind {header.kind}")
    try:
        msg = json.loads(body)
    except RecursionError:
        raise ProtocolError("control message is not JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        # ValueError covers JSONDecodeError and integers too long to convert (int_max_str_digits)
        raise ProtocolError(f"control message is not JSON: {e}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("control message without a type")
    return msg


def shown(value, limit: int = 60) -> str:
    """A peer's value for a log line or an error message: repr() escapes control characters
    (a terminal would obey escape sequences) and the result is cut to about `limit`."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def clean(text, limit: int = 300) -> str:
    """Text from a peer for a terminal, unquoted: what is not printable is escaped as repr()
    would escape it, and the text is cut to about `limit` characters."""
    text = str(text)
    text = text if len(text) <= limit else text[:limit] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def error(why: str) -> dict:
    return {"type": "error", "error": why}


def hello(proto: str, mode: str, flow: int, **params) -> dict:
    return {"type": "hello", "version": 1, "proto": proto, "mode": mode, "flow": flow,
            "boot_id": boot_id(), "pid": os.getpid(), **params}


class HelloReader:
    """Reads the first frame of a TCP connection (the hello) and hands back whatever bytes
    followed it in the same read, untouched: the rest of the stream may be unframed."""

    def __init__(self):
        self._buf = bytearray()
        self.header: wire.Header | None = None

    def feed(self, data: bytes) -> tuple[dict, bytes] | None:
        self._buf += data
        if self.header is None:
            if len(self._buf) < wire.HEADER_LEN:
                return None
            try:
                self.header = wire.Header.unpack(bytes(self._buf[:wire.HEADER_LEN]))
            except wire.FramingError as e:
                raise ProtocolError(f"at stream byte 0: {e}") from None
            if self.header.kind != wire.KIND_CONTROL:
                raise ProtocolError(f"at stream byte 0: the first message must be a hello "
                                    f"(kind {wire.KIND_CONTROL}), got kind {self.header.kind}")
            if self.header.length > MAX_CONTROL:
                raise ProtocolError(f"at stream byte 0: hello length {self.header.length} "
                                    f"exceeds the limit of {MAX_CONTROL}")
        end = wire.HEADER_LEN + self.header.length
        if len(self._buf) < end:
            return None
        msg = decode(self.header, bytes(self._buf[wire.HEADER_LEN:end]))
        if msg["type"] != "hello":
            raise ProtocolError(f"at stream byte 0: expected hello, got {shown(msg['type'])}")
        rest = bytes(self._buf[end:])
        self._buf = bytearray()
        return msg, rest

    def eof_error(self) -> str:
        got = len(self._buf)
        if self.header is None:
            return f"stream ended inside the hello header, truncated header ({got} of " \
                   f"{wire.HEADER_LEN} bytes)"
        return f"stream ended inside the hello ({got} of {wire.HEADER_LEN + self.header.length})"
