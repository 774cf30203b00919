"""The endpoints' names for the kit's one unit parser (toolkit/units.py).

Command-line options read times as iperf3 does: a bare number is seconds (`-t 10`), and a
rate of 0 means unlimited where an option allows it.
"""

from __future__ import annotations

from .. import units
from ..units import UnitError as QuantityError  # noqa: F401  (the endpoints' name for it)
from ..units import show_bytes, show_rate, size  # noqa: F401


def seconds(text) -> float:
    return units.seconds(text, bare_time="s")


def rate(text) -> int:
    return units.rate(text, zero_ok=True)
