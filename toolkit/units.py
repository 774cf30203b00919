"""Times, rates, sizes and fractions: the one parser for every place the kit reads them.

The command line, a lab's lab.toml, `--set`, the impairment spec and the scenarios all call
these functions, so `20ms`, `10mbit`, `10M` and `64K` mean the same wherever they are written.
Two families of tools set the conventions users bring with them:

- tc (tc(8), "PARAMETERS"): rates in bits (`10mbit`), sizes in bytes with 1024-based `kb`,
  `mb`, times with a unit (`20ms`). A bare time is MICROseconds to tc.
- iperf3 (iperf3(1)): `-b 10M` is 10,000,000 bit/s (SI), `-l 64K` is 65,536 bytes (binary),
  `-t 10` is seconds.

Both agree on rates (bits, SI prefixes) and sizes (bytes, binary prefixes), so every form of
either is accepted. They disagree on two things, and there the kit refuses rather than guess:

- a bare time: seconds to iperf3, microseconds to tc. Options that iperf3 has too (`-t`, `-i`)
  and the kit's own command-line times read a bare number as seconds (`bare_time="s"`); the
  link spec and lab files, written as tc writes them, refuse a bare non-zero time.
- `bps`: BYTES per second to tc, bits to most readers. Refused; write bits (`kbit`, `M`).

Each function raises UnitError quoting the text and showing the accepted forms, so the caller
can prefix the option or the lab key it came from.
"""

from __future__ import annotations

import math
import re


class UnitError(ValueError):
    """A quantity could not be read; the message quotes it and shows the accepted forms."""


_NUM = r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"

RATE_FORMS = "'10mbit', '10M', '500kbit', '1gbit' or a number of bits/s"
SIZE_FORMS = "'64K', '64kb', '1M', '1500b' or a number of bytes"
TIME_FORMS = "'20ms', '1.5s', '300us'"
FRACTION_FORMS = "'5%' or '0.05'"

# bits per second: tc's bit/kbit/mbit/gbit and iperf3's K/M/G are SI; tc's kibit is 1024-based
_RATE = {"": 1, "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
         "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
         "kibit": 1024, "mibit": 1024 ** 2, "gibit": 1024 ** 3}
_BYTE_RATES = {"bps", "kbps", "mbps", "gbps", "tbps"}
_TIME = {"s": 1.0, "sec": 1.0, "secs": 1.0, "ms": 1e-3, "msec": 1e-3, "msecs": 1e-3,
         "us": 1e-6, "usec": 1e-6, "usecs": 1e-6, "ns": 1e-9}
# bytes: tc's kb/mb/gb and iperf3's K/M/G are both 1024-based
_SIZE = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
         "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
         "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def _split(text, kind: str, forms: str) -> tuple[float, str, bool]:
    """(value, unit in lower case, whether the text was a bare number)."""
    if isinstance(text, bool) or text is None:
        raise UnitError(f"{kind} {text!r}: expected a {kind} such as {forms}")
    if isinstance(text, (int, float)):
        value, unit, bare = float(text), "", True
    else:
        m = re.fullmatch(_NUM + r"([A-Za-z%]*)\s*", str(text))
        if not m:
            raise UnitError(f"{kind} {text!r}: expected a {kind} such as {forms}")
        value, unit, bare = float(m.group(1)), m.group(2).lower(), not m.group(2)
    if not math.isfinite(value):
        raise UnitError(f"{kind} {text!r}: too large; expected a {kind} such as {forms}")
    return value, unit, bare


def _not_negative(value: float, text, kind: str) -> None:
    if value < 0:
        raise UnitError(f"{kind} {text!r}: must not be negative")


def rate(text, *, zero_ok: bool = False) -> int:
    """Bits per second: `10mbit` and `10M` -> 10e6, `500kbit`, `1.5G`, `64kibit`, or a bare
    number of bits/s. Zero is refused unless `zero_ok` (where 0 means unlimited)."""
    value, unit, _ = _split(text, "rate", RATE_FORMS)
    if unit in _BYTE_RATES:
        raise UnitError(f"rate {text!r}: {unit!r} is ambiguous (tc reads it as BYTES per "
                        f"second, most people as bits); write bits, e.g. {RATE_FORMS}")
    if unit not in _RATE:
        raise UnitError(f"rate {text!r}: unknown unit {unit!r}; expected e.g. {RATE_FORMS}")
    _not_negative(value, text, "rate")
    bps = int(round(value * _RATE[unit]))        # a fraction of a bit per second means nothing
    if bps == 0 and not zero_ok:
        raise UnitError(f"rate {text!r}: must be above zero")
    return bps


def size(text) -> int:
    """Bytes: `64K`, `64kb`, `64KiB` -> 65536, `1M` -> 1048576, `1500b`, or a bare number."""
    value, unit, _ = _split(text, "size", SIZE_FORMS)
    if unit not in _SIZE:
        hint = " (sizes are in bytes; a rate in bits goes elsewhere)" if "bit" in unit else ""
        raise UnitError(f"size {text!r}: unknown unit {unit!r}{hint}; expected e.g. "
                        f"{SIZE_FORMS}")
    _not_negative(value, text, "size")
    out = value * _SIZE[unit]
    if out != int(out):
        raise UnitError(f"size {text!r}: not a whole number of bytes")
    return int(out)


def seconds(text, *, bare_time: str | None = None) -> float:
    """Seconds from `20ms`, `1.5s`, `300us`, `5ns`. A bare number is read as seconds when
    `bare_time="s"` (iperf3's convention, the command line's) and otherwise refused unless
    it is zero, since tc would read it as microseconds."""
    value, unit, bare = _split(text, "time", TIME_FORMS)
    _not_negative(value, text, "time")
    if bare:
        if bare_time == "s" or value == 0:
            return value
        raise UnitError(f"time {text!r}: a bare number is ambiguous here (tc reads it as "
                        f"microseconds, iperf3 as seconds); give the unit, e.g. "
                        f"'{value:g}ms' or '{value:g}s' ({TIME_FORMS})")
    if unit not in _TIME:
        raise UnitError(f"time {text!r}: unknown unit {unit!r}; expected e.g. {TIME_FORMS}")
    return value * _TIME[unit]


def fraction(text) -> float:
    """A probability from `5%` or `0.05`; a bare number above 1 is refused (ambiguous)."""
    value, unit, _ = _split(text, "percentage", FRACTION_FORMS)
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


def option(parse, text, flag: str, default=None, **kw):
    """`parse(text)` for a command-line option, the error prefixed with the option's name;
    `default` when the option was not given."""
    if text is None:
        return default
    try:
        return parse(text, **kw)
    except UnitError as e:
        raise UnitError(f"{flag}: {e}") from None


# ---- writing quantities for people (the machine-readable outputs stay in SI base units) ----

def show_rate(bps: float) -> str:
    """`12.35 Mbit/s`: SI prefixes, as iperf3 prints bitrates."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("Kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.0f} bit/s"


def show_bytes(n: float) -> str:
    """`1.50 MBytes`: binary prefixes, as iperf3 prints transfers."""
    for unit, scale in (("GBytes", 1 << 30), ("MBytes", 1 << 20), ("KBytes", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} Bytes"


def spec_rate(bps: float) -> str:
    """A rate as a lab file would write it: `10mbit`."""
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"


def show_time(s: float) -> str:
    """A time as a lab file would write it: `20ms`, `1.5s`, `300us`."""
    if s >= 1:
        return f"{s:g}s"
    if s >= 1e-3:
        return f"{s * 1e3:g}ms"
    return f"{s * 1e6:g}us"
