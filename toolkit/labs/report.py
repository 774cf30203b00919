"""report.md: what ran, TCP and UDP side by side, the ground truth reconciled, and the
expectations; the same text is printed at the end of `labkit run`."""

from __future__ import annotations

from pathlib import Path


def _fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if unit == "bps":
            for scale, name in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
                if v >= scale:
                    return f"{v / scale:.2f} {name}"
            return f"{v:.0f} bit/s"
        if unit == "s":
            return f"{v:.3f} s"
        if unit == "%":
            return f"{v * 100:.2f}%"
        return f"{v:.4g}"
    if isinstance(v, int) and unit == "bytes":
        return f"{v:,}"
    return str(v)


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def side_by_side(rows: list[dict]) -> str:
    headers = ["flow", "proto", "sent (payload bytes)", "delivered (payload bytes)",
               "goodput", "completion", "lost as the application saw it",
               "TCP_INFO retransmissions"]
    body = []
    for r in rows:
        if r["proto"] == "udp":
            lost = (f"{_fmt(r.get('app_lost_units'))} datagrams "
                    f"({_fmt(r.get('app_lost_fraction'), '%')})")
        else:
            lost = f"{_fmt(r.get('app_lost_bytes'), 'bytes')} bytes"
        body.append([r["flow"], r["proto"].upper(), _fmt(r.get("sent_payload_bytes"), "bytes"),
                     _fmt(r.get("delivered_payload_bytes"), "bytes"),
                     _fmt(r.get("goodput_bps"), "bps"), _fmt(r.get("completion_s"), "s"),
                     lost, _fmt(r.get("tcpinfo_total_retrans"))])
    return table(headers, body)


def build(run, results) -> str:
    doc = run.doc
    eng = doc.get("engine") or {}
    priv = (doc.get("environment") or {}).get("privilege") or {}
    lines = [f"# {doc['lab']['name']}: {doc['lab']['title']}", "",
             f"- status: {doc.get('status')}; seed {doc.get('seed')}; "
             f"{priv.get('mode', '?')} on kernel {(doc.get('environment') or {}).get('kernel')}",
             f"- link: {eng.get('name') or 'none'} engine ({eng.get('reason', '')}); "
             f"timing {'reliable' if run.timing_reliable else 'NOT reliable'}"]
    for note in doc.get("timing", {}).get("notes", []):
        lines.append(f"  - {note}")
    if doc.get("overrides"):
        lines.append(f"- overrides: {' '.join(doc['overrides'])}")
    caps = doc.get("captures", {})
    if caps:
        lines.append("- captures: " + ", ".join(
            f"{p} ({(c.get('counters') or {}).get('captured', '?')} frames, "
            f"{(c.get('counters') or {}).get('dropped', '?')} dropped by the capture)"
            for p, c in caps.items()))
    for e in doc.get("events", []):
        lines.append(f"- {e}")
    side = doc.get("summary", {}).get("side_by_side") or []
    if side:
        lines += ["", "## TCP and UDP side by side", "", side_by_side(side)]
    figures = doc.get("figures") or []
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in figures]
    recon = run.reconciliation()
    lines += ["", "## Ground truth, reconciled", "", recon.to_markdown()]
    lines += ["", "## Expectations", ""]
    if results:
        lines += ["```"] + [r.line() for r in results] + ["```"]
    else:
        lines.append("(this lab states none)")
    return "\n".join(lines) + "\n"


def write_report(run, results) -> str:
    text = build(run, results)
    Path(run.path, "report.md").write_text(text)
    return text
