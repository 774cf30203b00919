"""Rates, sizes and durations written as iperf3 writes them: `10M`, `64K`, `1G`, `30`.

iperf3's conventions (iperf3(1)): a rate (-b) is in bits per second with SI suffixes
(10M = 10,000,000 bit/s); a size (-l, -n) is in bytes with binary suffixes (64K = 65,536
bytes); a time (-t) is in seconds. Lower- and upper-case suffixes mean the same.
"""

from __future__ import annotations

import re


class QuantityError(ValueError):
    """A quantity could not be read; the message quotes it and gives an example."""


_RE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)\s*")
_SI = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BIN = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _split(text, what: str, example: str) -> tuple[float, str]:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text), ""
    m = _RE.fullmatch(str(text))
    if not m:
        raise QuantityError(f"{what} {text!r}: expected e.g. {example}")
    return float(m.group(1)), m.group(2).lower()


def rate(text) -> float:
    """Bits per second: `10M` -> 10e6, `1.5G` -> 1.5e9, `0` -> 0 (unlimited)."""
    value, unit = _split(text, "rate", "'10M' (bits/s)")
    return value * _SI[unit]


def size(text) -> int:
    """Bytes: `64K` -> 65536, `1M` -> 1048576, `1400` -> 1400."""
    value, unit = _split(text, "size", "'64K' or '1400'")
    out = value * _BIN[unit]
    if out != int(out):
        raise QuantityError(f"size {text!r}: not a whole number of bytes")
    return int(out)


def seconds(text) -> float:
    value, unit = _split(text, "time", "'10' (seconds)")
    if unit:
        raise QuantityError(f"time {text!r}: give seconds as a plain number")
    return value


def show_rate(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("Kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.0f} bit/s"


def show_bytes(n: float) -> str:
    for unit, scale in (("GBytes", 1 << 30), ("MBytes", 1 << 20), ("KBytes", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} Bytes"
