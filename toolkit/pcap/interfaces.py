"""Capture interfaces: link type, snaplen and how their timestamps count.

A pcap file has one implicit interface; a pcapng section has one per Interface
Description Block, numbered from 0 in each section (draft-ietf-opsawg-pcapng, "Interface
Description Block"). A timestamp is a count of ticks of if_tsresol seconds (option 9:
10^-v, or 2^-v with the high bit set; default 10^-6) plus if_tsoffset seconds (option 14).
The kernels get each interface as one row of integers (`kernel_row`) so they can turn
ticks into ns exactly for every power-of-10 resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from . import formats as F

INT64_MAX = 2**63 - 1


@dataclass
class Interface:
    index: int                      # position in Capture.interfaces (the iface column)
    linktype: int
    name: str = ""
    description: str = ""
    snaplen: int = 0
    tsresol: Fraction = Fraction(1000)   # ns per timestamp tick (microseconds: 1000)
    tsoffset_s: int = 0
    comments: list[str] = field(default_factory=list)
    fcs_len: int = 0                # bytes of frame check sequence ending each frame

    @property
    def linktype_name(self) -> str:
        return F.LINKTYPE_NAMES.get(self.linktype, f"linktype {self.linktype}")

    # the resolution as (base, exponent): 10^-e or 2^-e seconds per tick
    resolution: tuple[int, int] = (10, 6)

    def set_tsresol(self, code: int) -> None:
        """if_tsresol: 10^-code s, or 2^-(code & 0x7F) s when the high bit is set."""
        self.resolution = (2, code & 0x7F) if code & 0x80 else (10, code)
        base, e = self.resolution
        self.tsresol = Fraction(10**9, base**e)

    def kernel_row(self) -> list[int]:
        """(linktype, mul, div, shift, offset_ns, snaplen, fcs) for the kernels:
        ns = ticks // div * mul (10^-e), or ticks * 1e9 >> shift (2^-e); plus offset_ns.
        Absurd values are clamped so that nothing overflows: a damaged IDB gives wrong
        times, never an error."""
        base, e = self.resolution
        mul, div, shift = 1, 1, -1
        if base == 2:
            shift = min(e, 63)
        elif e <= 9:
            mul = 10 ** (9 - e)
        else:
            div = 10 ** min(e - 9, 18)
        off = max(min(self.tsoffset_s * 10**9, INT64_MAX // 2), -INT64_MAX // 2)
        return [self.linktype, mul, div, shift, off, min(self.snaplen, INT64_MAX),
                self.fcs_len]


def kernel_table(interfaces: list[Interface]) -> np.ndarray:
    """The kernels' per-interface table for one section's interfaces."""
    if not interfaces:
        return np.zeros((0, 7), np.int64)
    return np.array([i.kernel_row() for i in interfaces], np.int64)
