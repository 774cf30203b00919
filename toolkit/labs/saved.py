"""Saved reference runs (captures/<lab>/): a run folder made small, plus the exact
expectations blessed from its own analysis, replayed by `labkit check` in CI.

    labkit run 04-loss --save captures/        # run, then save into captures/04-loss/
    labkit check captures/ --update            # re-bless after a deliberate analyzer change

Saving copies what `labkit check` reads (run.json, lab.toml, the endpoint reports and logs)
and compresses what is large (every capture and the ledger, gzip: the analyzer and the
ledger reader open .gz as they are); the analysis tables are not kept, since check analyzes
the captures afresh and never trusts a stored result.

Blessing (Zeek's btest -U, suricata-verify's generated test.yaml): from a fresh analysis of
the saved captures, one exact expectation per stable value: per vantage point the frame
count, each TCP conversation's packets, payload, verdict counts, options and Zeek state,
each lab flow's UDP loss, duplicates and reordering; and the reconciliation's counts.
Volatile values are never blessed raw: no absolute times, ISNs or run ids; conversations are
found by their server port (a lab's client ports are fixed too, but the server port is
what the lab names); the one timing value, the handshake RTT, with a 1% tolerance.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path

BLESSED = "expect.toml"
TCP_EXACT = ("packets_a_to_b", "packets_b_to_a", "payload_bytes_a_to_b", "payload_bytes_b_to_a",
             "retransmissions", "fast_retransmissions", "spurious_retransmissions",
             "out_of_order", "lost_segments", "ack_lost_segments", "duplicate_acks",
             "zero_windows", "keep_alives", "mss_a", "mss_b", "wscale_a", "wscale_b",
             "sack_permitted", "timestamps", "close", "history", "conn_state")
UDP_FLOW_EXACT = ("received", "distinct", "expected", "lost", "duplicates", "reordered")
RECON_EXACT = ("link_frames", "link_dropped", "before_frames", "after_frames",
               "missing_after", "matched_to_ledger", "tcp_drops_repaired",
               "repair_labelled_retransmission", "repair_labelled_fast_retransmission",
               "repair_labelled_out_of_order", "repair_unlabelled", "resends",
               "udp_lost_at_receiver", "udp_lost_link", "unexplained")


def save(run_dir: Path, dest: Path) -> Path:
    """Save the run folder `run_dir` as the reference run `dest` (replacing one there)."""
    from .folder import RunFolder

    run_dir, dest = Path(run_dir), Path(dest)
    src = RunFolder(run_dir)
    doc = json.loads(json.dumps(src.doc))
    tmp = dest.with_name(f".{dest.name}.saving")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for cap in doc.get("captures", {}).values():
            files = []
            for rel in cap.get("files", []):
                files.append(_gzip(run_dir / rel, tmp / (Path(rel).name + ".gz")))
            cap["files"] = files
        ledger = (doc.get("files") or {}).get("ledger")
        if ledger and (run_dir / ledger).exists():
            doc["files"]["ledger"] = _gzip(run_dir / ledger, tmp / (Path(ledger).name + ".gz"))
        obs_files = (doc.get("observe") or {}).get("files") or {}
        for host, rel in list(obs_files.items()):
            if (run_dir / rel).exists():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                _gzip(run_dir / rel, tmp / (rel + ".gz"))
                obs_files[host] = rel + ".gz"        # kept in its folder (kernel/)
        for flow in doc.get("flows", []):
            for side in ("send", "serve"):
                for key in ("report", "log"):
                    rel = (flow.get(side) or {}).get(key)
                    if rel and (run_dir / rel).exists():
                        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(run_dir / rel, tmp / rel)
        shutil.copy(run_dir / "lab.toml", tmp / "lab.toml")
        doc["saved"] = {"from": str(run_dir), "saved_unix_s": time.time(),
                        "command": f"labkit run {doc['lab']['name']} --seed {doc['seed']}"
                                   + "".join(f" --set {o}" for o in doc.get("overrides", []))
                                   + f" --save {dest.parent}"}
        (tmp / "run.json").write_text(json.dumps(doc, indent=1) + "\n")
        saved = RunFolder(tmp)
        write_blessed(saved, bless(saved))
        (tmp / "README.md").write_text(readme(saved))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _gzip(src: Path, dst: Path) -> str:
    # mtime 0: the same capture saves to the same bytes
    with open(src, "rb") as f, open(dst, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as g:
        shutil.copyfileobj(f, g)
    return dst.name


# ---- blessing ----

def bless(run) -> list[dict]:
    """Exact expectations for what a fresh analysis of this run's captures gives."""
    out: list[dict] = []
    for point in run.points:
        a = run.analysis(point)
        out.append(_exp(f"{point}: frames", "packets", point, {}, "count", len(a)))
        tcp = a.tcp
        for port in sorted(set(int(p) for p in tcp["b_port"])):
            rows = tcp[tcp["b_port"] == port]
            where = {"b_port": port}
            out.append(_exp(f"{point}: tcp port {port}: conversations", "tcp", point, where,
                            "count", len(rows)))
            if len(rows) != 1:
                for col in TCP_EXACT[:11]:
                    out.append(_exp(f"{point}: tcp port {port}: {col}", "tcp", point, where,
                                    f"sum({col})", rows[col].sum()))
                continue
            row = rows.iloc[0]
            for col in TCP_EXACT:
                out.append(_exp(f"{point}: tcp port {port}: {col}", "tcp", point, where, col,
                                row[col]))
            rtt = row["handshake_rtt_s"]
            if _finite(rtt):
                out.append(_exp(f"{point}: tcp port {port}: handshake_rtt_s", "tcp", point,
                                where, "handshake_rtt_s", rtt, tolerance="1%"))
        flows = a.udp_flows
        if len(flows):
            for (direction, port), rows in flows.groupby(["direction", "dst_port"]):
                where = {"direction": direction, "dst_port": int(port)}
                for col in UDP_FLOW_EXACT:
                    out.append(_exp(f"{point}: udp {direction} port {port}: {col}",
                                    "udp_flows", point, where, f"sum({col})", rows[col].sum()))
    recon = run.reconciliation().summary
    for _, row in recon.iterrows():
        where = {"direction": row["direction"], "proto": row["proto"], "flow": row["flow"]}
        for col in RECON_EXACT:
            if col in row and _finite(row[col]):
                out.append(_exp(f"reconciliation {row['direction']} {row['flow']}: {col}",
                                "reconciliation", None, where, col, row[col]))
    return out


def _finite(v) -> bool:
    """A value worth blessing: not missing (None, NaN, pandas' NA)."""
    import pandas as pd
    try:
        return not bool(pd.isna(v))
    except (TypeError, ValueError):
        return True


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53:
        return int(v)
    return v


def _exp(name, table, at, where, value, expected, tolerance=None) -> dict:
    e = {"name": name, "table": table}
    if at is not None:
        e["at"] = at
    if where:
        e["where"] = {k: _plain(v) for k, v in where.items()}
    e.update(value=value, op="==", expected=_plain(expected))
    if tolerance:
        e["tolerance"] = tolerance
    e["why"] = "blessed from this saved run: the analysis of its captures must not change"
    return e


def write_blessed(run, exps: list[dict]) -> Path:
    from . import expect
    expect.parse(exps, "blessed")                 # never write what check cannot read
    lines = ["# Exact expectations blessed from this saved run's own captures.",
             "# Made by `labkit check --update` (or `labkit run ... --save`); do not edit:",
             "# re-bless instead, after checking that a changed value is right.", ""]
    for e in exps:
        lines.append("[[expect]]")
        for k, v in e.items():
            lines.append(f"{k} = {_toml(v)}")
        lines.append("")
    path = Path(run.path) / BLESSED
    tmp = path.with_name(f".{BLESSED}.part")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))          # a TOML basic string is a JSON string


def read_blessed(folder: Path) -> list[dict]:
    import tomllib
    path = Path(folder) / BLESSED
    if not path.exists():
        return []
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        from .expect import ExpectError
        raise ExpectError(f"{path}: not valid TOML: {e}") from None
    return doc.get("expect", [])


def readme(run) -> str:
    doc = run.doc
    env = doc.get("environment") or {}
    side = (doc.get("summary") or {}).get("side_by_side") or []
    caps = doc.get("captures", {})
    lines = [f"# Saved reference run: {doc['lab']['name']}", "",
             f"{doc['lab']['title']}", "",
             f"- made by: `{doc['saved']['command']}`",
             f"- seed {doc['seed']}, engine {(doc.get('engine') or {}).get('name')}, "
             f"{(env.get('privilege') or {}).get('mode')} on Linux {env.get('kernel')}, "
             f"labkit {env.get('labkit')}",
             "- captures: " + ", ".join(
                 f"{p} ({(c.get('counters') or {}).get('captured')} frames)"
                 for p, c in caps.items()),
             "- checked by: `labkit check captures/" + doc["lab"]["name"] + "` (the lab's own "
             "expectations from run.json, and the exact ones in expect.toml)", ""]
    if side:
        from .report import side_by_side
        lines += ["What it shows:", "", side_by_side(side), ""]
    lines += ["Re-bless after a deliberate change to the analyzer: `labkit check --update "
              f"captures/{doc['lab']['name']}`. Re-record: the command above.", ""]
    return "\n".join(lines)
