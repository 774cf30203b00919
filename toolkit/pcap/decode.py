"""Compiled kernels: walk the records of a chunk and decode every header into columns.

Theory of operation
-------------------
The reader hands a kernel a bytes buffer holding whole records (plus maybe a partial one
at the end). The kernel walks record after record, decodes link layer -> IP -> TCP/UDP
straight into preallocated numpy arrays (one row per frame), and returns how far it got:
to the end of the last complete record, to a block it leaves to Python (pcapng section and
interface blocks, which are rare), or to the first damaged record, with an error code.

Lengths follow Wireshark: a TCP segment's length comes from the IP header's length field,
not from what the snaplen kept (RFC 791 total length; RFC 8200 payload length less the
extension headers), so a truncated capture still tells how much data was sent.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .columns import PACKET_COLUMNS, UDP_HEAD

# The scalar columns live side by side in one uint64 matrix M[column, row] while a chunk is
# decoded (one array to pass around, not thirty), in PACKET_COLUMNS order; the reader casts
# each column to its dtype when it flushes. Signed values (-1 = absent) wrap and cast back.
(TS, CAPLEN, WIRELEN, IFACE, L3, SRC_HI, SRC_LO, DST_HI, DST_LO, IP_PROTO, IP_FRAG, IP_ID,
 FRAG_OFF, FRAG_LEN, FRAG_MORE, L4, L4_TRUNC, SPORT, DPORT, SEQ, ACK, TCP_FLAGS, WIN,
 TCP_HLEN, PAYLEN, OPT_MSS, OPT_WSCALE, OPT_SACKPERM, HAS_TS, TSVAL, TSECR,
 SACK_N) = range(len(PACKET_COLUMNS))
assert list(PACKET_COLUMNS)[SACK_N] == "sack_n" and len(PACKET_COLUMNS) == SACK_N + 1

# error codes returned by the scanners
OK, NEED_MORE, CONTROL_BLOCK = 0, 1, 2
E_RECORD_TOO_BIG, E_BLOCK_LENGTH, E_BLOCK_TRAILER, E_CAPLEN_BEYOND_BLOCK = 10, 11, 12, 13
E_UNKNOWN_INTERFACE = 14
MAX_PACKET = 262144
MAX_BLOCK = 16 << 20
MAPPED = np.uint64(0xFFFF << 32)   # ::ffff:0:0/96, IPv4-mapped (RFC 4291 2.5.5.2)


def alloc(rows: int) -> tuple:
    """(M, sack_rows, sack_le, sack_re, udp_rows, udp_head, udp_head_len) for `rows` frames."""
    m = np.zeros((len(PACKET_COLUMNS), rows), np.uint64)
    m[OPT_MSS] = np.uint64(2**64 - 1)          # -1: options absent until a frame has them
    m[OPT_WSCALE] = np.uint64(2**64 - 1)
    return (m, np.zeros(rows, np.int64), np.zeros((rows, 4), np.uint32),
            np.zeros((rows, 4), np.uint32), np.zeros(rows, np.int64),
            np.zeros((rows, UDP_HEAD), np.uint8), np.zeros(rows, np.uint8))


@njit(inline="always")
def _be16(b, i):
    return (np.int64(b[i]) << 8) | np.int64(b[i + 1])


@njit(inline="always")
def _be32(b, i):
    return ((np.int64(b[i]) << 24) | (np.int64(b[i + 1]) << 16) | (np.int64(b[i + 2]) << 8)
            | np.int64(b[i + 3]))


@njit(inline="always")
def _u32(b, i, big):
    if big:
        return _be32(b, i)
    return ((np.int64(b[i + 3]) << 24) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 1]) << 8)
            | np.int64(b[i]))


@njit(inline="always")
def _u16(b, i, big):
    if big:
        return _be16(b, i)
    return (np.int64(b[i + 1]) << 8) | np.int64(b[i])


@njit(inline="always")
def _be64(b, i):
    v = np.uint64(0)
    for j in range(8):
        v = (v << np.uint64(8)) | np.uint64(b[i + j])
    return v


@njit(inline="always")
def decode_packet(b, p, caplen, wirelen, lt, row, M, sack_rows, sack_le, sack_re, udp_rows,
                  udp_head, udp_head_len, sk, uk):
    """Decode one frame at b[p:p+caplen] into row `row`. Returns the side-table counters."""
    end = p + caplen
    off = p
    etype = -1
    # ---- link layer -> ethertype of the network layer
    if lt == 1:                                   # Ethernet II, 802.1Q/802.1ad tags
        if off + 14 <= end:
            etype = _be16(b, off + 12)
            off += 14
            while (etype == 0x8100 or etype == 0x88A8 or etype == 0x9100) and off + 4 <= end:
                etype = _be16(b, off + 2)
                off += 4
    elif lt == 113:                               # Linux cooked v1
        if off + 16 <= end:
            etype = _be16(b, off + 14)
            off += 16
    elif lt == 276:                               # Linux cooked v2
        if off + 20 <= end:
            etype = _be16(b, off)
            off += 20
    elif lt == 101 or lt == 12 or lt == 14:       # raw IP, version from the first nibble
        if off < end:
            v = b[off] >> 4
            etype = 0x0800 if v == 4 else 0x86DD if v == 6 else -1
    elif lt == 228:
        etype = 0x0800
    elif lt == 229:
        etype = 0x86DD
    elif lt == 0 or lt == 108:                    # BSD loopback: address family
        if off + 4 <= end:
            fam = _u32(b, off, True) if lt == 108 else _u32(b, off, False)
            if lt == 0 and fam > 0xFFFF:           # written on a host of the other order
                fam = _u32(b, off, True)
            off += 4
            if fam == 2:
                etype = 0x0800
            elif fam == 10 or fam == 24 or fam == 28 or fam == 30:
                etype = 0x86DD
    # bytes of the frame on the wire from `off` on (the IP length is trusted up to this)
    wire_left = wirelen - (off - p)

    proto = -1
    l4off = 0
    l4len = 0           # reported (on-the-wire) length of the transport segment
    if etype == 0x0800:
        if off + 20 <= end and (b[off] >> 4) == 4:
            ihl = (b[off] & 0x0F) * 4
            tot = _be16(b, off + 2)
            if tot == 0:                          # TSO: length not filled in
                tot = wire_left
            if tot > wire_left:
                tot = wire_left
            if ihl >= 20 and tot >= ihl:
                frag = _be16(b, off + 6)
                M[L3, row] = 4
                M[SRC_HI, row] = 0
                M[DST_HI, row] = 0
                M[SRC_LO, row] = MAPPED | np.uint64(_be32(b, off + 12))
                M[DST_LO, row] = MAPPED | np.uint64(_be32(b, off + 16))
                proto = b[off + 9]
                M[IP_PROTO, row] = proto
                if frag & 0x3FFF:
                    # a fragment (RFC 791): remember where it fits for reassembly
                    M[IP_ID, row] = _be16(b, off + 4)
                    M[FRAG_OFF, row] = (frag & 0x1FFF) * 8
                    M[FRAG_LEN, row] = tot - ihl
                    M[FRAG_MORE, row] = 1 if frag & 0x2000 else 0
                    if frag & 0x1FFF:
                        M[IP_FRAG, row] = 2
                        proto = -1
                    else:
                        M[IP_FRAG, row] = 1
                l4off = off + ihl
                l4len = tot - ihl
    elif etype == 0x86DD:
        if off + 40 <= end and (b[off] >> 4) == 6:
            plen = _be16(b, off + 4)
            if plen == 0 or plen > wire_left - 40:
                plen = max(wire_left - 40, 0)
            M[L3, row] = 6
            M[SRC_HI, row] = _be64(b, off + 8)
            M[SRC_LO, row] = _be64(b, off + 16)
            M[DST_HI, row] = _be64(b, off + 24)
            M[DST_LO, row] = _be64(b, off + 32)
            nxt = b[off + 6]
            q = off + 40
            left = plen
            # extension headers (RFC 8200 section 4)
            while True:
                if nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51:
                    if q + 2 > end:
                        nxt = -1
                        break
                    hl = (b[q + 1] + 2) * 4 if nxt == 51 else (b[q + 1] + 1) * 8
                    nxt = b[q]
                    q += hl
                    left -= hl
                elif nxt == 44:
                    if q + 8 > end:
                        nxt = -1
                        break
                    fo = _be16(b, q + 2)
                    nh = b[q]
                    M[IP_ID, row] = _be32(b, q + 4)
                    q += 8
                    left -= 8
                    M[FRAG_OFF, row] = (fo >> 3) * 8
                    M[FRAG_LEN, row] = max(left, 0)
                    M[FRAG_MORE, row] = fo & 1
                    if fo >> 3:
                        M[IP_FRAG, row] = 2
                        M[IP_PROTO, row] = nh
                        nxt = -1
                        break
                    if fo & 1:
                        M[IP_FRAG, row] = 1
                    nxt = nh
                else:
                    break
            if nxt >= 0:
                M[IP_PROTO, row] = nxt
                if left >= 0:
                    proto = nxt
                    l4off = q
                    l4len = left

    # ---- transport
    if proto == 6 and l4off + 20 <= end:
        hlen = (b[l4off + 12] >> 4) * 4
        M[L4, row] = 6
        M[SPORT, row] = _be16(b, l4off)
        M[DPORT, row] = _be16(b, l4off + 2)
        M[SEQ, row] = _be32(b, l4off + 4)
        M[ACK, row] = _be32(b, l4off + 8)
        M[TCP_FLAGS, row] = _be16(b, l4off + 12) & 0x0FFF
        M[WIN, row] = _be16(b, l4off + 14)
        M[TCP_HLEN, row] = hlen
        M[PAYLEN, row] = max(l4len - hlen, 0)
        opt_end = l4off + hlen
        if opt_end > end:
            M[L4_TRUNC, row] = 1
            opt_end = end
        q = l4off + 20
        nsack = 0
        while q < opt_end:
            kind = b[q]
            if kind == 0:
                break
            if kind == 1:
                q += 1
                continue
            if q + 2 > opt_end:
                break
            ln = b[q + 1]
            if ln < 2 or q + ln > opt_end:
                if q + 2 <= end and ln >= 2 and q + ln > end:
                    M[L4_TRUNC, row] = 1
                break
            if kind == 2 and ln == 4:
                M[OPT_MSS, row] = _be16(b, q + 2)
            elif kind == 3 and ln == 3:
                M[OPT_WSCALE, row] = b[q + 2]
            elif kind == 4 and ln == 2:
                M[OPT_SACKPERM, row] = 1
            elif kind == 5 and ln >= 10:
                nb = min((ln - 2) // 8, 4)
                for j in range(nb):
                    sack_le[sk, j] = _be32(b, q + 2 + 8 * j)
                    sack_re[sk, j] = _be32(b, q + 6 + 8 * j)
                nsack = nb
            elif kind == 8 and ln == 10:
                M[HAS_TS, row] = 1
                M[TSVAL, row] = _be32(b, q + 2)
                M[TSECR, row] = _be32(b, q + 6)
            q += ln
        if nsack:
            M[SACK_N, row] = nsack
            sack_rows[sk] = row
            sk += 1
    elif proto == 6 and l4off < end:
        M[L4_TRUNC, row] = 1
    elif proto == 17 and l4off + 8 <= end:
        M[L4, row] = 17
        M[SPORT, row] = _be16(b, l4off)
        M[DPORT, row] = _be16(b, l4off + 2)
        ulen = _be16(b, l4off + 4)
        if ulen < 8 or ulen > l4len:               # RFC 768 length absent or bogus
            ulen = l4len
        M[PAYLEN, row] = max(ulen - 8, 0)
        q = l4off + 8
        have = min(min(end - q, ulen - 8), UDP_HEAD)
        if have < 0:
            have = 0
        for j in range(have):
            udp_head[uk, j] = b[q + j]
        udp_head_len[uk] = have
        udp_rows[uk] = row
        uk += 1
    elif proto == 17 and l4off < end:
        M[L4_TRUNC, row] = 1
    return sk, uk


@njit(cache=True)
def scan_pcap(b, pos, end, big, tick_ns, lt, at_eof, M, sack_rows, sack_le, sack_re,
              udp_rows, udp_head, udp_head_len, row0, sk, uk):
    """Walk pcap records in b[pos:end]. Returns (pos, rows, sk, uk, status, err_pos, value)."""
    row = row0
    cap = M.shape[1]
    while row < cap:
        if pos + 16 > end:
            return pos, row, sk, uk, NEED_MORE, pos, 0
        caplen = _u32(b, pos + 8, big)
        if caplen > MAX_PACKET:
            return pos, row, sk, uk, E_RECORD_TOO_BIG, pos, caplen
        if pos + 16 + caplen > end:
            return pos, row, sk, uk, NEED_MORE, pos, caplen
        sec = _u32(b, pos, big)
        frac = _u32(b, pos + 4, big)
        wirelen = _u32(b, pos + 12, big)
        if wirelen < caplen:
            wirelen = caplen
        M[TS, row] = sec * 1_000_000_000 + frac * tick_ns
        M[CAPLEN, row] = caplen
        M[WIRELEN, row] = wirelen
        sk, uk = decode_packet(b, pos + 16, caplen, wirelen, lt, row, M, sack_rows, sack_le,
                               sack_re, udp_rows, udp_head, udp_head_len, sk, uk)
        row += 1
        pos += 16 + caplen
    return pos, row, sk, uk, OK, pos, 0


@njit(cache=True)
def scan_pcapng(b, pos, end, big, if_lt, if_mul, if_div, if_shift, if_off, if_snap, if_base, M,
                sack_rows, sack_le, sack_re, udp_rows, udp_head, udp_head_len, row0, sk, uk,
                comment_rows, comment_pos, nc, base):
    """Walk pcapng packet blocks in b[pos:end]; stop at any block Python must read.

    Returns (pos, rows, sk, uk, nc, status, err_pos, value).
    """
    row = row0
    cap = M.shape[1]
    n_if = if_lt.shape[0]
    while row < cap:
        if pos + 12 > end:
            return pos, row, sk, uk, nc, NEED_MORE, pos, 0
        btype = _u32(b, pos, big)
        if btype == 0x0A0D0D0A or btype == 1:
            return pos, row, sk, uk, nc, CONTROL_BLOCK, pos, btype
        blen = _u32(b, pos + 4, big)
        if blen < 12 or blen % 4 != 0 or blen > MAX_BLOCK:
            return pos, row, sk, uk, nc, E_BLOCK_LENGTH, pos, blen
        if pos + blen > end:
            return pos, row, sk, uk, nc, NEED_MORE, pos, blen
        if _u32(b, pos + blen - 4, big) != blen:
            return pos, row, sk, uk, nc, E_BLOCK_TRAILER, pos, blen
        if btype == 6 or btype == 2:              # enhanced / obsolete packet block
            if blen < 32:
                return pos, row, sk, uk, nc, E_BLOCK_LENGTH, pos, blen
            iface = _u32(b, pos + 8, big) if btype == 6 else _u16(b, pos + 8, big)
            if iface >= n_if:
                return pos, row, sk, uk, nc, E_UNKNOWN_INTERFACE, pos, iface
            hi = np.uint64(_u32(b, pos + 12, big))
            lo = np.uint64(_u32(b, pos + 16, big))
            caplen = _u32(b, pos + 20, big)
            wirelen = _u32(b, pos + 24, big)
            if 28 + caplen + 4 > blen:
                return pos, row, sk, uk, nc, E_CAPLEN_BEYOND_BLOCK, pos, caplen
            if wirelen < caplen:
                wirelen = caplen
            ticks = (hi << np.uint64(32)) | lo
            M[TS, row] = _ticks_to_ns(ticks, if_mul[iface], if_div[iface], if_shift[iface]) \
                + if_off[iface]
            M[IFACE, row] = if_base + iface
            M[CAPLEN, row] = caplen
            M[WIRELEN, row] = wirelen
            sk, uk = decode_packet(b, pos + 28, caplen, wirelen, if_lt[iface], row, M,
                                   sack_rows, sack_le, sack_re, udp_rows, udp_head,
                                   udp_head_len, sk, uk)
            opt = 28 + ((caplen + 3) // 4) * 4
            if opt + 4 <= blen - 4 and nc < comment_rows.shape[0]:
                # options present: remember where, if one of them is a comment
                q = pos + opt
                while q + 4 <= pos + blen - 4:
                    code = _u16(b, q, big)
                    ln = _u16(b, q + 2, big)
                    if code == 0:
                        break
                    if code == 1:
                        comment_rows[nc] = row
                        comment_pos[nc] = base + pos
                        nc += 1
                        break
                    q += 4 + ((ln + 3) // 4) * 4
            row += 1
        elif btype == 3:                          # simple packet block: interface 0
            if n_if == 0:
                return pos, row, sk, uk, nc, E_UNKNOWN_INTERFACE, pos, 0
            wirelen = _u32(b, pos + 8, big)
            caplen = min(wirelen, blen - 16)
            if if_snap[0] > 0:
                caplen = min(caplen, if_snap[0])
            M[TS, row] = 0
            M[IFACE, row] = if_base
            M[CAPLEN, row] = caplen
            M[WIRELEN, row] = wirelen
            sk, uk = decode_packet(b, pos + 12, caplen, wirelen, if_lt[0], row, M, sack_rows,
                                   sack_le, sack_re, udp_rows, udp_head, udp_head_len, sk,
                                   uk)
            row += 1
        # any other block (name resolution, statistics, secrets, custom): skipped
        pos += blen
    return pos, row, sk, uk, nc, OK, pos, 0


@njit(inline="always")
def _ticks_to_ns(ticks, mul, div, shift):
    if shift >= 0:                                # resolution 2**-shift seconds
        sec = ticks >> np.uint64(shift)
        frac = ticks - (sec << np.uint64(shift))
        return np.int64(sec) * 1_000_000_000 + np.int64(
            (frac * np.uint64(1_000_000_000)) >> np.uint64(shift))
    return np.int64(ticks // np.uint64(div)) * mul
