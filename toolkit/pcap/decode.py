"""Compiled kernels: walk the records of a chunk and decode every header into columns.

Theory of operation
-------------------
The reader hands a kernel a byte buffer holding whole records (plus maybe a partial one
at the end) and the output columns (a tuple of typed arrays in PACKET_COLUMNS order, plus
the sparse SACK and UDP tables). The kernel walks record after record, decodes link layer
-> IP -> TCP/UDP straight into row `row` of every column, and returns how far it got: to
the end of the last complete record, to a block it leaves to Python (pcapng section and
interface blocks, which are rare), to the end of the columns' room, or to the first
damaged record, with a status code.

Lengths follow Wireshark: a TCP segment's length comes from the IP header's length field,
not from what the snaplen kept (RFC 791 total length; RFC 8200 payload length less the
extension headers), so a truncated capture still tells how much data was sent. Every
read is bounds-checked against the captured bytes, so a lying length field can make a
frame undecodable but never reads outside the record.
"""

from __future__ import annotations

import numpy as np

from .columns import PACKET_COLUMNS, UDP_HEAD
from .jit import inline, kernel

# Index of each column in the output tuple (PACKET_COLUMNS order).
(TS, CAPLEN, WIRELEN, IFACE, L3, SRC_HI, SRC_LO, DST_HI, DST_LO, IP_PROTO, IP_FRAG, IP_ID,
 FRAG_OFF, FRAG_LEN, FRAG_MORE, L4, L4_TRUNC, SPORT, DPORT, SEQ, ACK, TCP_FLAGS, WIN,
 TCP_HLEN, PAYLEN, OPT_MSS, OPT_WSCALE, OPT_SACKPERM, HAS_TS, TSVAL, TSECR,
 SACK_N, OPT_SACK_EMPTY) = range(33)
assert list(PACKET_COLUMNS)[OPT_SACK_EMPTY] == "opt_sack_empty"
assert len(PACKET_COLUMNS) == OPT_SACK_EMPTY + 1
# the per-frame record: the columns' slots, then what goes to the side tables
R_SACK_LE, R_SACK_RE, R_UDP_AT, R_UDP_HAVE = 33, 37, 41, 42
R_Q_PROTO, R_Q_SRC_HI, R_Q_SRC_LO, R_Q_DST_HI, R_Q_DST_LO, R_Q_SPORT, R_Q_DPORT = range(43, 50)
N_RECORD = 50
# ... and of each sparse table in the side tuple (store.SIDE_TABLES order)
(SACK_ROWS, SACK_LE, SACK_RE, UDP_ROWS, UDP_HEAD_BYTES, UDP_HEAD_LEN, ICMP_ROWS, ICMP_PROTO,
 ICMP_SRC_HI, ICMP_SRC_LO, ICMP_DST_HI, ICMP_DST_LO, ICMP_SPORT, ICMP_DPORT) = range(14)

# status codes returned by the scanners
OK, NEED_MORE, CONTROL_BLOCK, FULL = 0, 1, 2, 3
# an index pass marks the record of every MARK_STEP-th frame
MARK_STEP = 1024
E_RECORD_TOO_BIG, E_BLOCK_LENGTH, E_BLOCK_TRAILER, E_CAPLEN_BEYOND_BLOCK = 10, 11, 12, 13
E_UNKNOWN_INTERFACE, E_BLOCK_TOO_SHORT = 14, 15
# Wireshark's and libpcap's largest packet (WTAP_MAX_PACKET_SIZE_STANDARD, MAXIMUM_SNAPLEN)
MAX_PACKET = 262144
# A sanity cap on pcapng blocks, so an absurd length fails fast instead of buffering GBs.
MAX_BLOCK = 16 << 20
MAPPED = np.uint64(0xFFFF << 32)   # ::ffff:0:0/96, IPv4-mapped (RFC 4291 2.5.5.2)
# pcapng blocks that Wireshark 4.0 shows as frames though they carry no packet
CUSTOM_COPY, CUSTOM_NOCOPY = 0x00000BAD, 0x40000BAD


@inline
def _be16(b, i):
    return (np.int64(b[i]) << 8) | np.int64(b[i + 1])


@inline
def _be32(b, i):
    return ((np.int64(b[i]) << 24) | (np.int64(b[i + 1]) << 16) | (np.int64(b[i + 2]) << 8)
            | np.int64(b[i + 3]))


@inline
def _u32(b, i, big):
    if big:
        return _be32(b, i)
    return ((np.int64(b[i + 3]) << 24) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 1]) << 8)
            | np.int64(b[i]))


@inline
def _u16(b, i, big):
    if big:
        return _be16(b, i)
    return (np.int64(b[i + 1]) << 8) | np.int64(b[i])


@inline
def _be64(b, i):
    v = np.uint64(0)
    for j in range(8):
        v = (v << np.uint64(8)) | np.uint64(b[i + j])
    return v


@inline
def _link(b, p, end, lt):
    """(ethertype, offset of the network header) for link type lt; ethertype -1 if none."""
    off = p
    etype = -1
    if lt == 1:                                   # Ethernet II, 802.1Q/802.1ad tag stacks
        if off + 14 <= end:
            etype = _be16(b, off + 12)
            off += 14
            while (etype == 0x8100 or etype == 0x88A8 or etype == 0x9100) and off + 4 <= end:
                etype = _be16(b, off + 2)
                off += 4
    elif lt == 113:                               # Linux cooked v1: protocol at 14-15
        if off + 16 <= end:
            etype = _be16(b, off + 14)
            off += 16
    elif lt == 276:                               # Linux cooked v2: protocol at 0-1
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
    elif lt == 0 or lt == 108:                    # BSD loopback: a 4-byte address family
        if off + 4 <= end:
            if lt == 108:                         # DLT_LOOP: network byte order
                fam = _be32(b, off)
            else:
                # DLT_NULL: the writing host's order. Wireshark (packet-null.c) reads it
                # little-endian here; a value with upper bits set was written the other
                # way, except a 16-bit family in the upper half (IRIX), which is shifted.
                fam = _u32(b, off, False)
                if fam > 0xFFFF:
                    if (fam & 0xFF000000) == 0 and (fam & 0x00FF0000) < 0x00060000:
                        fam = fam >> 16
                    else:
                        fam = _be32(b, off)
            off += 4
            # the families Wireshark's null.type table knows: AF_INET 2 and the BSDs'
            # AF_INET6 values 24 (Net/OpenBSD), 28 (FreeBSD), 30 (Darwin)
            if fam == 2:
                etype = 0x0800
            elif fam == 24 or fam == 28 or fam == 30:
                etype = 0x86DD
    return etype, off


@inline
def decode_packet(b, p, caplen, wirelen, lt, fcs, R):
    """Decode one frame at b[p:p+caplen] into the record R (zeroed: PACKET_COLUMNS slots,
    then the R_* slots). The caller moves the record to the columns: the columns and side
    tables are not passed down here, because numba counts references to every array of a
    tuple handed to a function, on every frame."""
    end = p + caplen
    # Bytes the frame had on the wire, which bound the IP length. Wireshark keeps a
    # reported length below the captured one as the captured one (tested with tshark 4.0).
    reported = wirelen if wirelen > caplen else caplen
    if fcs > 0 and lt == 1:
        # an Ethernet FCS at the end of every frame (pcap linktype FCS bits, if_fcslen)
        reported = max(reported - fcs, 0)
        end = min(end, p + reported)
    etype, off = _link(b, p, end, lt)
    wire_left = reported - (off - p)

    proto = -1
    l4off = 0
    l4len = 0           # reported (on-the-wire) length of the transport segment
    if etype == 0x0800:
        if off + 20 <= end and (b[off] >> 4) == 4:
            ihl = (b[off] & 0x0F) * 4
            tot = _be16(b, off + 2)
            if tot == 0:
                # TSO: the stack left the length to the NIC; Wireshark then takes the
                # frame's reported length (packet-ip.c)
                tot = wire_left
            if tot > wire_left:
                tot = wire_left
            # Wireshark stops at a header length under 20 or a total length under it
            if ihl >= 20 and tot >= ihl:
                frag = _be16(b, off + 6)
                R[L3] = 4
                R[SRC_LO] = np.int64(MAPPED | np.uint64(_be32(b, off + 12)))
                R[DST_LO] = np.int64(MAPPED | np.uint64(_be32(b, off + 16)))
                proto = b[off + 9]
                R[IP_PROTO] = proto
                if frag & 0x3FFF:
                    # a fragment (RFC 791 3.2): where it fits, for reassembly
                    R[IP_ID] = _be16(b, off + 4)
                    R[FRAG_OFF] = (frag & 0x1FFF) * 8
                    R[FRAG_LEN] = tot - ihl
                    R[FRAG_MORE] = 1 if frag & 0x2000 else 0
                    if frag & 0x1FFF:
                        R[IP_FRAG] = 2      # no transport header in a later fragment
                        proto = -1
                    else:
                        R[IP_FRAG] = 1
                l4off = off + ihl
                l4len = tot - ihl
    elif etype == 0x86DD:
        if off + 40 <= end and (b[off] >> 4) == 6:
            plen = _be16(b, off + 4)
            if plen == 0 or plen > wire_left - 40:
                # 0: a jumbogram (RFC 2675) or TSO; too big: cut to what the frame holds
                plen = max(wire_left - 40, 0)
            R[L3] = 6
            R[SRC_HI] = np.int64(_be64(b, off + 8))
            R[SRC_LO] = np.int64(_be64(b, off + 16))
            R[DST_HI] = np.int64(_be64(b, off + 24))
            R[DST_LO] = np.int64(_be64(b, off + 32))
            nxt = np.int64(b[off + 6])
            q = off + 40
            left = plen
            # extension headers (RFC 8200 section 4); ESP (50), no next header (59) and
            # anything unknown end the chain
            while True:
                if nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51:
                    if q + 2 > end:
                        nxt = -1
                        break
                    # AH counts 4-byte units less 2 (RFC 4302), the others 8-byte units
                    # less 1
                    hl = (np.int64(b[q + 1]) + 2) * 4 if nxt == 51 else \
                        (np.int64(b[q + 1]) + 1) * 8
                    nxt = np.int64(b[q])
                    q += hl
                    left -= hl
                elif nxt == 44:                       # fragment header (RFC 8200 4.5)
                    if q + 8 > end:
                        nxt = -1
                        break
                    fo = _be16(b, q + 2)
                    nh = np.int64(b[q])
                    R[IP_ID] = _be32(b, q + 4)
                    q += 8
                    left -= 8
                    R[FRAG_OFF] = (fo >> 3) * 8
                    R[FRAG_LEN] = max(left, 0)
                    R[FRAG_MORE] = fo & 1
                    if fo >> 3:
                        R[IP_FRAG] = 2
                        R[IP_PROTO] = nh
                        nxt = -1
                        break
                    if fo & 1:
                        R[IP_FRAG] = 1
                    nxt = nh
                else:
                    break
            if nxt >= 0:
                R[IP_PROTO] = nxt
                if left >= 0:
                    proto = nxt
                    l4off = q
                    l4len = left

    # ---- transport
    if proto == 6:
        if l4off + 20 > end:
            # the fixed header is not all there: Wireshark cannot analyse the segment
            R[L4_TRUNC] = 1
        else:
            hlen = (b[l4off + 12] >> 4) * 4
            R[L4] = 6
            R[SPORT] = _be16(b, l4off)
            R[DPORT] = _be16(b, l4off + 2)
            R[SEQ] = _be32(b, l4off + 4)
            R[ACK] = _be32(b, l4off + 8)
            R[TCP_FLAGS] = _be16(b, l4off + 12) & 0x0FFF
            R[WIN] = _be16(b, l4off + 14)
            R[TCP_HLEN] = hlen
            # tcp.len: the IP payload less the TCP header (RFC 9293 3.1), never negative
            R[PAYLEN] = max(l4len - hlen, 0)
            _tcp_options(b, l4off, hlen, end, R)
    elif proto == 17:
        if l4off + 8 > end:
            R[L4_TRUNC] = 1
        else:
            R[L4] = 17
            R[SPORT] = _be16(b, l4off)
            R[DPORT] = _be16(b, l4off + 2)
            ulen = _be16(b, l4off + 4)
            if ulen < 8 or ulen > l4len:      # RFC 768 length absent (0) or bogus
                ulen = l4len
            R[PAYLEN] = max(ulen - 8, 0)
            q = l4off + 8
            R[R_UDP_AT] = q
            R[R_UDP_HAVE] = max(min(min(end - q, ulen - 8), UDP_HEAD), 0)
    elif proto == 1 or proto == 58:
        _icmp_quoted(b, l4off, end, proto, R)


@inline
def _icmp_quoted(b, q, end, proto, R):
    """An ICMP (RFC 792) or ICMPv6 (RFC 4443 section 2.4) error quotes the start of the
    datagram that caused it: its IP header and at least 8 bytes after it. Note the quoted
    datagram's endpoints and transport protocol (UDP or TCP), as it was sent, when the
    transport header's first 8 bytes are there: Wireshark dissects them, and gives the
    error the quoted datagram's udp.stream."""
    if q + 8 > end:
        return
    t = b[q]
    if proto == 1:
        # destination unreachable, source quench, redirect, time exceeded, parameter problem
        if not (t == 3 or t == 4 or t == 5 or t == 11 or t == 12):
            return
    elif not (t >= 1 and t <= 4):
        # destination unreachable, packet too big, time exceeded, parameter problem
        return
    p = q + 8
    src_hi = dst_hi = src_lo = dst_lo = np.uint64(0)
    nxt = -1
    l4 = 0
    if p + 20 <= end and (b[p] >> 4) == 4:
        ihl = (b[p] & 0x0F) * 4
        # a later fragment quotes no transport header
        if ihl >= 20 and (_be16(b, p + 6) & 0x1FFF) == 0:
            src_lo = MAPPED | np.uint64(_be32(b, p + 12))
            dst_lo = MAPPED | np.uint64(_be32(b, p + 16))
            nxt = np.int64(b[p + 9])
            l4 = p + ihl
    elif p + 40 <= end and (b[p] >> 4) == 6:
        src_hi = _be64(b, p + 8)
        src_lo = _be64(b, p + 16)
        dst_hi = _be64(b, p + 24)
        dst_lo = _be64(b, p + 32)
        nxt = np.int64(b[p + 6])
        l4 = p + 40
        # extension headers, as for the outer header (RFC 8200 section 4)
        while nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51 or nxt == 44:
            if l4 + 8 > end:
                nxt = -1
                break
            if nxt == 44:
                if _be16(b, l4 + 2) >> 3:
                    nxt = -1                       # a later fragment
                    break
                hl = 8
            elif nxt == 51:
                hl = (np.int64(b[l4 + 1]) + 2) * 4
            else:
                hl = (np.int64(b[l4 + 1]) + 1) * 8
            nxt = np.int64(b[l4])
            l4 += hl
    if (nxt != 17 and nxt != 6) or l4 + 8 > end:
        return
    R[R_Q_PROTO] = nxt
    R[R_Q_SRC_HI] = np.int64(src_hi)        # the bits of the uint64, as the column keeps them
    R[R_Q_SRC_LO] = np.int64(src_lo)
    R[R_Q_DST_HI] = np.int64(dst_hi)
    R[R_Q_DST_LO] = np.int64(dst_lo)
    R[R_Q_SPORT] = _be16(b, l4)
    R[R_Q_DPORT] = _be16(b, l4 + 2)


@inline
def _tcp_options(b, l4off, hlen, end, R):
    """Walk the TCP options (RFC 9293 3.1; 7323 timestamps and window scale; 2018 SACK)."""
    opt_end = l4off + hlen
    if opt_end > end:
        R[L4_TRUNC] = 1                     # options cut by the snaplen
        opt_end = end
    q = l4off + 20
    nsack = 0
    empty = 0          # opt_sack_empty's bits
    while q < opt_end:
        kind = b[q]
        if kind == 0:                            # end of option list
            break
        if kind == 1:                            # no-operation
            q += 1
            continue
        if q + 2 > opt_end:
            break
        ln = np.int64(b[q + 1])
        if ln < 2 or q + ln > opt_end:
            break                                # a bad length: nothing after it is trusted
        if kind == 2 and ln == 4:
            R[OPT_MSS] = _be16(b, q + 2)
        elif kind == 3 and ln == 3:
            R[OPT_WSCALE] = min(np.int64(b[q + 2]), 127)
            if empty:
                empty |= 2
        elif kind == 4 and ln == 2:
            R[OPT_SACKPERM] = 1
        elif kind == 5 and ln >= 10:
            nb = min((ln - 2) // 8, 4)
            for j in range(nb):
                R[R_SACK_LE + j] = _be32(b, q + 2 + 8 * j)
                R[R_SACK_RE + j] = _be32(b, q + 6 + 8 * j)
            nsack = nb
            if empty:
                empty |= 4
        elif kind == 5:
            # a SACK option without a complete block (length 2 to 9)
            if nsack == 0 and not empty:
                empty = 1
        elif kind == 8 and ln == 10:
            R[HAS_TS] = 1
            R[TSVAL] = _be32(b, q + 2)
            R[TSECR] = _be32(b, q + 6)
        q += ln
    R[SACK_N] = nsack
    R[OPT_SACK_EMPTY] = empty


@inline
def _ticks_to_ns(ticks, mul, div, shift):
    """Timestamp ticks to ns: exact for 10^-r resolutions, to the ns for 2^-s ones."""
    if shift >= 0:                               # resolution 2**-shift s (shift <= 63)
        sh = np.uint64(shift)
        sec = ticks >> sh
        frac = ticks - (sec << sh)
        if shift <= 34:                          # frac * 1e9 fits in 64 bits
            ns = (frac * np.uint64(1_000_000_000)) >> sh
        else:
            drop = np.uint64(shift - 34)
            ns = ((frac >> drop) * np.uint64(1_000_000_000)) >> np.uint64(34)
        return np.int64(sec) * 1_000_000_000 + np.int64(ns)
    if div == 1:                                 # 10^-9 ... 10^-0: no division
        return np.int64(ticks) * mul
    return np.int64(ticks // np.uint64(div)) * mul


@kernel
def scan(decode, b, pos, end, big, pcapng, tick_ns, ifs, if_base, C, S, row, limit, sk, uk,
         qk, notes, nn, base, marks):
    """Walk the records of b[pos:end], frame `row` first.

    One kernel makes two passes over the same records (so it is compiled, and loaded from
    numba's cache, once):
    - index (decode False): check every record's framing and count the frames, `limit` at
      most; marks[j] gets the offset of the record of frame row + j * MARK_STEP, so that
      threads can decode parts of the buffer that start at known records and rows.
      Nothing is written.
    - decode (decode True): decode the frames of b[pos:end], checked by an index pass, into
      rows row.. of the columns C and entries sk, uk, qk.. of the side tables S. notes:
      (row, file offset) of packet blocks with comments (Python reads those).
    pcap (pcapng False): 16-byte record headers, one interface (ifs row 0), timestamps of
    seconds and tick_ns-ns fractions. pcapng: blocks; ifs holds this section's
    interfaces as (lt, mul, div, shift, offset_ns, snaplen, fcs); the walk stops at any
    block Python must read.
    Returns (pos, row, sk, uk, qk, nn, status, value): pos is the first byte not consumed.
    """
    row0 = row
    n_if = ifs.shape[0]
    R = np.zeros(N_RECORD, np.int64)
    while True:
        if not decode:
            k = row - row0
            if k >= limit:
                return pos, row, sk, uk, qk, nn, FULL, 0
            if k % MARK_STEP == 0:
                marks[k // MARK_STEP] = pos
        elif nn >= notes.shape[0]:
            return pos, row, sk, uk, qk, nn, FULL, 0
        if not pcapng:
            if pos + 16 > end:
                return pos, row, sk, uk, qk, nn, NEED_MORE, 0
            caplen = _u32(b, pos + 8, big)
            if caplen > MAX_PACKET:
                return pos, row, sk, uk, qk, nn, E_RECORD_TOO_BIG, caplen
            if pos + 16 + caplen > end:
                return pos, row, sk, uk, qk, nn, NEED_MORE, 16 + caplen
            advance = 16 + caplen
            if not decode:
                row += 1
                pos += advance
                continue
            ts = _u32(b, pos, big) * 1_000_000_000 + _u32(b, pos + 4, big) * tick_ns
            wirelen = _u32(b, pos + 12, big)
            data = pos + 16
            i = 0
        else:
            if pos + 12 > end:
                return pos, row, sk, uk, qk, nn, NEED_MORE, 0
            btype = _u32(b, pos, big)
            if btype == 0x0A0D0D0A or btype == 1:     # section header, interface descr.
                return pos, row, sk, uk, qk, nn, CONTROL_BLOCK, btype
            blen = _u32(b, pos + 4, big)
            if blen < 12 or blen % 4 != 0 or blen > MAX_BLOCK:
                return pos, row, sk, uk, qk, nn, E_BLOCK_LENGTH, blen
            if pos + blen > end:
                return pos, row, sk, uk, qk, nn, NEED_MORE, blen
            if _u32(b, pos + blen - 4, big) != blen:
                return pos, row, sk, uk, qk, nn, E_BLOCK_TRAILER, blen
            advance = blen
            if btype == 6 or btype == 2:              # enhanced / obsolete packet block
                if blen < 32:
                    return pos, row, sk, uk, qk, nn, E_BLOCK_TOO_SHORT, blen
                i = _u32(b, pos + 8, big) if btype == 6 else _u16(b, pos + 8, big)
                if i >= n_if:
                    return pos, row, sk, uk, qk, nn, E_UNKNOWN_INTERFACE, i
                caplen = _u32(b, pos + 20, big)
                if caplen > MAX_PACKET:               # as wiretap: "cap_len N is larger"
                    return pos, row, sk, uk, qk, nn, E_RECORD_TOO_BIG, caplen
                if 28 + caplen + 4 > blen:
                    return pos, row, sk, uk, qk, nn, E_CAPLEN_BEYOND_BLOCK, caplen
                if not decode:
                    row += 1
                    pos += advance
                    continue
                wirelen = _u32(b, pos + 24, big)
                ticks = (np.uint64(_u32(b, pos + 12, big)) << np.uint64(32)) | \
                    np.uint64(_u32(b, pos + 16, big))
                ts = _ticks_to_ns(ticks, ifs[i, 1], ifs[i, 2], ifs[i, 3]) + ifs[i, 4]
                data = pos + 28
                q = data + ((caplen + 3) // 4) * 4
                # options: note the block if one of them is a comment (Python reads it)
                while q + 4 <= pos + blen - 4:
                    code = _u16(b, q, big)
                    if code == 0:
                        break
                    if code == 1:
                        notes[nn, 0] = row
                        notes[nn, 1] = base + pos
                        nn += 1
                        break
                    q += 4 + ((_u16(b, q + 2, big) + 3) // 4) * 4
            elif btype == 3:                          # simple packet block: interface 0
                if blen < 16:
                    return pos, row, sk, uk, qk, nn, E_BLOCK_TOO_SHORT, blen
                if n_if == 0:
                    return pos, row, sk, uk, qk, nn, E_UNKNOWN_INTERFACE, 0
                if not decode:
                    row += 1
                    pos += advance
                    continue
                i = 0
                wirelen = _u32(b, pos + 8, big)
                # no captured length field: the original length, cut to the block's room
                # and to the interface's snaplen (pcapng draft, "Simple Packet Block")
                caplen = min(wirelen, blen - 16)
                if ifs[0, 5] > 0:
                    caplen = min(caplen, ifs[0, 5])
                ts = 0                                # an SPB has no timestamp
                data = pos + 12
            elif btype == CUSTOM_COPY or btype == CUSTOM_NOCOPY:
                # Wireshark 4.0 shows a custom block as a frame of its data (after the
                # 4-byte Private Enterprise Number): a row without a packet keeps the
                # frame numbers equal
                if blen < 16:
                    return pos, row, sk, uk, qk, nn, E_BLOCK_TOO_SHORT, blen
                if decode:
                    C[IFACE][row] = if_base
                    C[CAPLEN][row] = blen - 16
                    C[WIRELEN][row] = blen - 16
                    C[OPT_MSS][row] = -1
                    C[OPT_WSCALE][row] = -1
                row += 1
                pos += blen
                continue
            else:
                # name resolution, interface statistics, decryption secrets, unknown
                pos += blen
                continue
        for j in range(N_RECORD):
            R[j] = 0
        R[OPT_MSS] = -1
        R[OPT_WSCALE] = -1
        R[TS] = ts
        R[IFACE] = if_base + i
        R[CAPLEN] = caplen
        R[WIRELEN] = wirelen
        decode_packet(b, data, caplen, wirelen, ifs[i, 0], ifs[i, 6], R)
        # the record to the columns, here in straight-line code (see decode_packet)
        C[TS][row] = R[TS]
        C[CAPLEN][row] = R[CAPLEN]
        C[WIRELEN][row] = R[WIRELEN]
        C[IFACE][row] = R[IFACE]
        C[L3][row] = R[L3]
        C[SRC_HI][row] = R[SRC_HI]
        C[SRC_LO][row] = R[SRC_LO]
        C[DST_HI][row] = R[DST_HI]
        C[DST_LO][row] = R[DST_LO]
        C[IP_PROTO][row] = R[IP_PROTO]
        C[IP_FRAG][row] = R[IP_FRAG]
        C[IP_ID][row] = R[IP_ID]
        C[FRAG_OFF][row] = R[FRAG_OFF]
        C[FRAG_LEN][row] = R[FRAG_LEN]
        C[FRAG_MORE][row] = R[FRAG_MORE]
        C[L4][row] = R[L4]
        C[L4_TRUNC][row] = R[L4_TRUNC]
        C[SPORT][row] = R[SPORT]
        C[DPORT][row] = R[DPORT]
        C[SEQ][row] = R[SEQ]
        C[ACK][row] = R[ACK]
        C[TCP_FLAGS][row] = R[TCP_FLAGS]
        C[WIN][row] = R[WIN]
        C[TCP_HLEN][row] = R[TCP_HLEN]
        C[PAYLEN][row] = R[PAYLEN]
        C[OPT_MSS][row] = R[OPT_MSS]
        C[OPT_WSCALE][row] = R[OPT_WSCALE]
        C[OPT_SACKPERM][row] = R[OPT_SACKPERM]
        C[HAS_TS][row] = R[HAS_TS]
        C[TSVAL][row] = R[TSVAL]
        C[TSECR][row] = R[TSECR]
        C[SACK_N][row] = R[SACK_N]
        C[OPT_SACK_EMPTY][row] = R[OPT_SACK_EMPTY]
        if R[SACK_N]:
            S[SACK_ROWS][sk] = row
            for j in range(R[SACK_N]):
                S[SACK_LE][sk, j] = R[R_SACK_LE + j]
                S[SACK_RE][sk, j] = R[R_SACK_RE + j]
            sk += 1
        if R[L4] == 17:
            S[UDP_ROWS][uk] = row
            S[UDP_HEAD_LEN][uk] = R[R_UDP_HAVE]
            for j in range(R[R_UDP_HAVE]):
                S[UDP_HEAD_BYTES][uk, j] = b[R[R_UDP_AT] + j]
            uk += 1
        if R[R_Q_PROTO]:
            S[ICMP_ROWS][qk] = row
            S[ICMP_PROTO][qk] = R[R_Q_PROTO]
            S[ICMP_SRC_HI][qk] = R[R_Q_SRC_HI]
            S[ICMP_SRC_LO][qk] = R[R_Q_SRC_LO]
            S[ICMP_DST_HI][qk] = R[R_Q_DST_HI]
            S[ICMP_DST_LO][qk] = R[R_Q_DST_LO]
            S[ICMP_SPORT][qk] = R[R_Q_SPORT]
            S[ICMP_DPORT][qk] = R[R_Q_DPORT]
            qk += 1
        row += 1
        pos += advance
