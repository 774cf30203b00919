"""Quantities written as tc writes them: `5%`, `20ms`, `10mbit`, `64kb`.

Pure parsers; each raises UnitError naming the text and what was expected, so a lab line or
a command-line option can be reported exactly. tc's conventions (tc(8), "PARAMETERS"):
rates in bits unless the unit says bytes (`bps` is BYTES per second in tc, a classic trap);
sizes in bytes, `kb`/`mb` being 1024-based; times in seconds unless a unit is given.
"""

from __future__ import annotations

import re


class UnitError(ValueError):
    """A quantity could not be read; the message quotes it and says what was expected."""


_NUM = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"

# rate units -> bits per second (tc: bit/kbit/mbit/gbit are SI, bps/kbps/... are bytes/s)
_RATE = {"": 1, "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
         "k": 1e3, "m": 1e6, "g": 1e9,
         "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,
         "kibit": 1024, "mibit": 1024 ** 2, "gibit": 1024 ** 3}
_TIME = {"": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "ms": 1e-3, "msec": 1e-3,
         "msecs": 1e-3, "us": 1e-6, "usec": 1e-6, "usecs": 1e-6, "ns": 1e-9}
_SIZE = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
         "g": 1024 ** 3, "gb": 1024 ** 3, "kbit": 128, "mbit": 128 * 1024}


def _split(text, kind: str, example: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise UnitError(f"{kind} {text!r}: expected a {kind} such as {example}")
    if isinstance(text, (int, float)):
        return float(text), ""
    m = re.fullmatch(_NUM + r"([A-Za-z%]*)\s*", str(text))
    if not m:
        raise UnitError(f"{kind} {text!r}: expected a {kind} such as {example}")
    return float(m.group(1)), m.group(2).lower()


def rate(text) -> int:
    """Bits per second from `10mbit`, `1gbit`, `500kbit`, `125kbps` (bytes!), or a number."""
    value, unit = _split(text, "rate", "'10mbit' or '1gbit'")
    if unit not in _RATE:
        raise UnitError(f"rate {text!r}: unknown unit {unit!r} "
                        f"(use bit, kbit, mbit, gbit; or bps, kbps, mbps for bytes/s)")
    bps = int(round(value * _RATE[unit]))
    if bps <= 0:
        raise UnitError(f"rate {text!r}: must be above zero")
    return bps


def seconds(text) -> float:
    """Seconds from `20ms`, `1.5s`, `300us`, or a number of seconds."""
    value, unit = _split(text, "time", "'20ms' or '1s'")
    if unit not in _TIME:
        raise UnitError(f"time {text!r}: unknown unit {unit!r} (use s, ms, us)")
    return value * _TIME[unit]


def size(text) -> int:
    """Bytes from `64kb`, `1mb`, `1500`, `1500b` (tc: k and m are 1024-based)."""
    value, unit = _split(text, "size", "'64kb' or '1500'")
    if unit not in _SIZE:
        raise UnitError(f"size {text!r}: unknown unit {unit!r} (use b, kb, mb)")
    return int(round(value * _SIZE[unit]))


def fraction(text) -> float:
    """A probability from `5%` or `0.05`; a bare number above 1 is refused (ambiguous)."""
    value, unit = _split(text, "percentage", "'5%' or '0.05'")
    if unit == "%":
        value /= 100.0
    elif unit:
        raise UnitError(f"percentage {text!r}: unknown unit {unit!r} (write e.g. '5%')")
    elif value > 1:
        raise UnitError(f"percentage {text!r}: a bare number must be a fraction in [0, 1]; "
                        f"write '{value:g}%' for percent")
    if not 0.0 <= value <= 1.0:
        raise UnitError(f"percentage {text!r}: must be between 0% and 100%")
    return value


def show_rate(bps: float) -> str:
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"


def show_time(s: float) -> str:
    if s >= 1:
        return f"{s:g}s"
    if s >= 1e-3:
        return f"{s * 1e3:g}ms"
    return f"{s * 1e6:g}us"
