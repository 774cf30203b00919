"""Readable text for people: conversation tables and a tshark-like packet list.

The tables' columns are in SI base units (docs/columns.md); here they are shown as people
read them, the same way for TCP and UDP: payload bytes in kB/MB beside payload bytes,
times in ms where they are short."""

from __future__ import annotations

import math
import numbers
from types import SimpleNamespace

from .analysis import verdicts as V

# the labels Wireshark puts in the Info column, most telling first
LABELS = [
    ("reused_ports", "TCP Port numbers reused"),
    ("spurious_retransmission", "TCP Spurious Retransmission"),
    ("fast_retransmission", "TCP Fast Retransmission"),
    ("retransmission", "TCP Retransmission"),
    ("out_of_order", "TCP Out-Of-Order"),
    ("lost_segment", "TCP Previous segment not captured"),
    ("ack_lost_segment", "TCP ACKed unseen segment"),
    ("window_update", "TCP Window Update"),
    ("window_full", "TCP Window Full"),
    ("keep_alive", "TCP Keep-Alive"),
    ("keep_alive_ack", "TCP Keep-Alive ACK"),
    ("duplicate_ack", "TCP Dup ACK"),
    ("zero_window_probe", "TCP ZeroWindowProbe"),
    ("zero_window", "TCP ZeroWindow"),
    ("zero_window_probe_ack", "TCP ZeroWindowProbeAck"),
]
FLAG_NAMES = [(0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"),
              (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"), (0x100, "AE")]


def endpoint(addr: str, port) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def human_rate(bps: float) -> str:
    if bps is None or (isinstance(bps, float) and math.isnan(bps)):
        return "-"
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if abs(bps) < 1000 or unit == "Gbit/s":
            return f"{bps:.1f} {unit}"
        bps /= 1000
    return str(bps)


def _ms(seconds) -> str:
    """Seconds shown as milliseconds, "-" when missing."""
    if seconds is None or isinstance(seconds, str) or \
            (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1e3:.3f}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(out)


def _records(table) -> list[dict]:
    """Rows of an analysis Table (or of a DataFrame) as dicts, missing values None."""
    if hasattr(table, "records"):
        return table.records()
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in table.to_dict("records")]


def tcp_table(table) -> str:
    header = ["#", "A", "B", "pkts A>B/B>A", "payload A>B/B>A", "duration", "hs rtt ms",
              "retx", "dupack", "ooo", "lost", "zwin", "close", "history", "state"]
    rows = []
    for r in map(lambda d: SimpleNamespace(**d), _records(table)):
        rows.append([
            str(r.stream), endpoint(r.a_addr, r.a_port), endpoint(r.b_addr, r.b_port),
            f"{r.packets_a_to_b}/{r.packets_b_to_a}",
            f"{human_bytes(r.payload_bytes_a_to_b)}/{human_bytes(r.payload_bytes_b_to_a)}",
            f"{r.duration_s:.3f} s", _ms(r.handshake_rtt_s), str(r.retransmissions),
            str(r.duplicate_acks), str(r.out_of_order), str(r.lost_segments),
            str(r.zero_windows), r.close, r.history, r.conn_state])
    return _table(rows, header)


def udp_table(table) -> str:
    records = _records(table)
    if not records:
        return "(none)"

    def get(r, *names, default="-"):
        for name in names:
            if r.get(name) is not None:
                return r[name]
        return default

    header = ["#", "A", "B", "dgrams A>B/B>A", "payload A>B/B>A", "duration",
              "jitter ms A>B/B>A"]
    rows = []
    for r in records:
        rows.append([
            str(get(r, "stream")),
            endpoint(get(r, "a_addr"), get(r, "a_port")),
            endpoint(get(r, "b_addr"), get(r, "b_port")),
            f"{get(r, 'datagrams_a_to_b', 'packets_a_to_b')}/"
            f"{get(r, 'datagrams_b_to_a', 'packets_b_to_a')}",
            f"{_bytes(get(r, 'payload_bytes_a_to_b'))}/{_bytes(get(r, 'payload_bytes_b_to_a'))}",
            f"{float(get(r, 'duration_s', default=0.0)):.3f} s",
            f"{_ms(get(r, 'jitter_a_to_b_s'))}/{_ms(get(r, 'jitter_b_to_a_s'))}",
        ])
    return _table(rows, header)


def _bytes(n) -> str:
    return human_bytes(n) if isinstance(n, numbers.Real) and not isinstance(n, bool) \
        else str(n)


def flags_text(f: int) -> str:
    return ", ".join(name for bit, name in FLAG_NAMES if f & bit)


def packet_lines(pk) -> str:
    """One line per frame, in the spirit of tshark's default output (pk: a.packets)."""
    import pandas as pd

    out = []
    for r in pk.itertuples(index=False):
        src = "" if pd.isna(r.src) else endpoint(r.src, r.sport) if r.proto else r.src
        dst = "" if pd.isna(r.dst) else endpoint(r.dst, r.dport) if r.proto else r.dst
        info = ""
        if r.proto == "TCP":
            labels = [label for name, label in LABELS if getattr(r, name)]
            if r.duplicate_ack:
                labels = [f"TCP Dup ACK {r.duplicate_ack_frame}#{r.duplicate_ack_num}"
                          if lab == "TCP Dup ACK" else lab for lab in labels]
            info = "".join(f"[{lab}] " for lab in labels)
            info += (f"[{flags_text(r.tcp_flags)}] Seq={r.seq} Ack={r.ack} Win={r.window} "
                     f"Len={r.tcp_len}")
            if not math.isnan(r.ack_rtt_s):
                info += f"  rtt={r.ack_rtt_s * 1000:.3f}ms"
        elif r.proto == "UDP":
            info = f"UDP stream {r.udp_stream}"
        stream = f"tcp.stream={r.tcp_stream}" if r.tcp_stream >= 0 else ""
        out.append(f"{r.frame:>7} {r.time_s:12.6f} {src:>24} -> {dst:<24} {r.proto:<4} "
                   f"{r.frame_bytes:>6} {info} {stream}".rstrip())
    return "\n".join(out)


def text_report(a, stream: int | None = None, packets: bool = False) -> str:
    s = a.summary()
    parts = [f"{s['file']}: {s['format']}{' (gzip)' if s['compressed'] else ''}, "
             f"{s['frames']} frames over {s['duration_s']:.3f} s; "
             f"{s['tcp_conversations']} TCP and {s['udp_conversations']} UDP conversations"]
    tcp = a.tcp_table if stream is None else a.tcp_table.take(a.tcp_table["stream"] == stream)
    parts += ["", "TCP conversations (A = the originator, as Zeek judges it: the side that "
              "opened; history: Zeek letters, upper case from A)",
              tcp_table(tcp) if len(tcp) else "(none)"]
    if stream is None:
        parts += ["", "UDP conversations", udp_table(a.udp_result.conversation_table)]
    verdict_totals = {}
    if packets:
        pk = a.packets if stream is None else a.packets[a.packets["tcp_stream"] == stream]
        parts += ["", "Packets", packet_lines(pk)]
        # the frames shown: with --stream, that stream's alone
        verdict_totals = {name: int(pk[name].sum()) for name in V.VERDICTS}
    if any(verdict_totals.values()):
        parts += ["", "Verdicts" + (f" (stream {stream})" if stream is not None else "") +
                  ": " + ", ".join(f"{k} {v}" for k, v in verdict_totals.items() if v)]
    return "\n".join(parts)
