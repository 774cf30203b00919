"""IP reassembly, as Wireshark shows it: the datagram appears in the frame that completes it.

A fragmented datagram (RFC 791 section 3.2; RFC 8200 section 4.5) is dissected by Wireshark
once, in the frame whose fragment makes the data whole from offset 0 to the end marked by
the fragment without "more fragments". Its transport header is the one the first fragment
carried. Here the completing frame takes over that header, with the reassembled length;
the other fragments stay fragments (no transport header). Fragments are rare, so this is
plain numpy and a loop over the fragmented datagrams only.
"""

from __future__ import annotations

import numpy as np

from .columns import FRAG_NONE

# transport-header columns a completed datagram takes from its first fragment
CARRIED = ["l4", "l4_trunc", "sport", "dport", "seq", "ack", "tcp_flags", "win", "tcp_hlen",
           "opt_mss", "opt_wscale", "opt_sackperm", "has_ts", "tsval", "tsecr", "sack_n",
           "opt_sack_empty"]


def _completing_rows(cols: dict[str, np.ndarray], rows: np.ndarray):
    """Yield (first fragment row, completing row, total length) per whole datagram."""
    key = np.stack([cols["src_hi"][rows], cols["src_lo"][rows], cols["dst_hi"][rows],
                    cols["dst_lo"][rows], cols["ip_id"][rows].astype(np.uint64),
                    cols["ip_proto"][rows].astype(np.uint64)], axis=1)
    # one sort groups the fragments of each datagram, in arrival order within a group
    order = np.lexsort((rows,) + tuple(key[:, i] for i in range(key.shape[1] - 1, -1, -1)))
    key, grouped = key[order], rows[order]
    starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
    bounds = np.r_[starts, len(grouped)]
    offs = cols["frag_off"][grouped].tolist()
    lens = cols["frag_len"][grouped].tolist()
    more = cols["frag_more"][grouped].tolist()
    members_all = grouped.tolist()
    for lo_i, hi_i in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        have: list[tuple[int, int]] = []
        end = None
        first = None
        for j in range(lo_i, hi_i):
            r = members_all[j]
            off, ln = int(offs[j]), int(lens[j])
            if off == 0 and first is None:
                first = r
            if not more[j]:
                end = off + ln
            have.append((off, off + ln))
            if first is None or end is None:
                continue
            reach = 0
            for a, b in sorted(have):
                if a > reach:
                    break
                reach = max(reach, b)
            if reach >= end:
                yield first, r, end
                break


def reassemble(cols: dict[str, np.ndarray]) -> None:
    """Give each completed datagram's transport header to the frame that completed it."""
    rows = np.flatnonzero(cols["ip_frag"] != FRAG_NONE)
    if len(rows) < 2:
        return
    udp_extra, sack_extra = [], []
    for first, carrier, total in _completing_rows(cols, rows):
        if cols["l4"][first] == 0 or carrier == first:
            continue
        for name in CARRIED:
            cols[name][carrier] = cols[name][first]
        cols["ip_frag"][carrier] = FRAG_NONE
        header = 8 if cols["l4"][first] == 17 else int(cols["tcp_hlen"][first])
        cols["paylen"][carrier] = max(total - header, 0)
        udp_extra.append((first, carrier))
        sack_extra.append((first, carrier))
    _copy_side_rows(cols, "udp_rows", ("udp_head", "udp_head_len"), udp_extra)
    _copy_side_rows(cols, "sack_rows", ("sack_le", "sack_re"), sack_extra)


def _copy_side_rows(cols, rows_name, value_names, pairs) -> None:
    """Give `carrier` a copy of `first`'s entry in a sparse side table (kept sorted)."""
    side = cols[rows_name]
    add_rows, add_src = [], []
    for first, carrier in pairs:
        i = np.searchsorted(side, first)
        if i < len(side) and side[i] == first:
            add_rows.append(carrier)
            add_src.append(i)
    if not add_rows:
        return
    new_rows = np.concatenate([side, np.array(add_rows, side.dtype)])
    order = np.argsort(new_rows, kind="stable")
    cols[rows_name] = new_rows[order]
    for name in value_names:
        v = cols[name]
        cols[name] = np.concatenate([v, v[np.array(add_src)]])[order]
