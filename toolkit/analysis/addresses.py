"""Text forms of the 128-bit addresses held in the columns (IPv4 in its mapped form)."""

from __future__ import annotations

import ipaddress

MAPPED_HI = 0
MAPPED_PREFIX = 0xFFFF << 32


def address_text(hi: int, lo: int) -> str:
    """'192.0.2.1' for an IPv4-mapped address, compressed IPv6 text otherwise."""
    hi, lo = int(hi), int(lo)
    if hi == MAPPED_HI and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def addresses_text(hi, lo) -> list[str]:
    return [address_text(h, v) for h, v in zip(hi.tolist(), lo.tolist())]
