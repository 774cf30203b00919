"""Ground truth, reconciled (toolkit.labs.reconcile): the pairing rules on tables, a whole
run built from byte literals (captures at a, r-a, r-b, b and a ledger, no privileges), and
a real lab run through a lossy userspace link, checked against tshark where it is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import toolkit
from conftest import REPO, network_or_skip, tshark_or_skip
from pcapbuild import ether, ipv4, pcap, tcp, udp
from toolkit import wire
from toolkit.labs.reconcile import (Reconciliation, find_repairs, frame_table, ledger_table,
                                    pair_across_link, pair_by_occurrence, reconcile)
from toolkit.netlab import frames as F
from toolkit.netlab import ledger

A_IP, B_IP = "10.201.1.2", "10.201.2.2"
T0 = 1_800_000_000_000_000_000
MS = 1_000_000
HOP_NS, LINK_NS = 10_000, 100_000     # host -> router capture, and across the link
S, A, P, F_ = 0x02, 0x10, 0x08, 0x01


# ---- the pairing rules, on tables ----

def _frames(rows):
    keys = ["ts_ns", "sport", "dport", "flags", "seq", "ack", "plen"]
    cols = {k: [r[i] for r in rows] for i, k in enumerate(keys)}
    return frame_table(l4=[6] * len(rows), **cols)


def test_occurrence_pairs_identical_frames_in_order():
    left = _frames([(0, 1, 2, A, 10, 5, 0), (1, 1, 2, A, 10, 5, 0), (2, 1, 2, A, 20, 5, 0)])
    right = _frames([(5, 1, 2, A, 20, 5, 0), (6, 1, 2, A, 10, 5, 0)])
    keys = ["sport", "dport", "flags", "seq", "ack", "plen"]
    # the first of two identical frames pairs with the first such frame on the other side
    assert pair_by_occurrence(left, right, keys).tolist() == [1, -1, 0]


def test_across_the_link_the_latest_unpaired_frame_before_is_the_one():
    keys = ["sport", "dport", "flags", "seq", "ack", "plen"]
    # an identical retransmission 300 ms after the first: the first was lost, the one after
    # the link is the retransmission (the link forwards within microseconds)
    before = _frames([(0, 1, 2, A, 10, 5, 100), (300 * MS, 1, 2, A, 10, 5, 100)])
    after = _frames([(300 * MS + 50_000, 1, 2, A, 10, 5, 100)])
    assert pair_across_link(before, after, keys).tolist() == [1]
    # both got through: each pairs with its own; a duplicate pairs with the same one again
    after = _frames([(50_000, 1, 2, A, 10, 5, 100), (300 * MS + 50_000, 1, 2, A, 10, 5, 100),
                     (300 * MS + 60_000, 1, 2, A, 10, 5, 100)])
    assert pair_across_link(before, after, keys).tolist() == [0, 1, 1]
    # nothing before it: unpaired
    assert pair_across_link(before.iloc[1:], after.iloc[:1], keys).tolist() == [-1]


def test_a_repair_is_found_by_sequence_numbers_not_by_label():
    drops = pd.DataFrame({"sport": [1, 1], "dport": [2, 2], "seq": [1100, (2**32) - 10],
                          "t_in": [10, 10]})
    after = _frames([(5, 1, 2, A, 1100, 0, 100),          # before the drop: not a repair
                     (20, 1, 2, A, 1000, 0, 200),         # covers 1100 (a bigger resend)
                     (30, 1, 2, A, 1100, 0, 100),
                     (40, 1, 2, A, (2**32) - 20, 0, 50)])  # covers it across the wrap
    after["t_link"] = after["ts_ns"]
    assert find_repairs(drops, after).tolist() == [1, 3]


def test_ledger_table_reads_identity_and_reason():
    recs = [{"n": 0, "dir": "a_to_b", "t_in": 5, "t_out": None, "len": 74,
             "pkt": {"proto": "tcp", "sport": 1, "dport": 2, "flags": "S", "seq": 7, "ack": 0,
                     "len": 0}, "action": "drop", "why": "fault 0: first SYN"},
            {"n": 1, "dir": "a_to_b", "t_in": 6, "t_out": 9, "len": 60,
             "pkt": {"proto": "udp", "sport": 3, "dport": 4, "len": 40, "flow": 77, "seq": 2},
             "action": "duplicate", "why": "duplicate", "copy": 2}]
    t = ledger_table(recs)
    assert t["flags"].tolist() == [S, 0] and t["t_out"].tolist() == [-1, 9]
    assert t["reason"].tolist() == ["fault", ""] and t["copy"].tolist() == [1, 2]
    assert t["udp_flow"].tolist() == [-1, 77] and t["udp_seq"].tolist() == [-1, 2]


# ---- a whole run from byte literals ----

class Run:
    """Frames sent between a and b, each with its fate on the way: the captures at a, r-a,
    r-b and b and the link's ledger are written from them as the lab would."""

    def __init__(self):
        self.events = []

    def tcp(self, t_ms, direction, seq, ack, flags, size=0, fate="forward"):
        sport, dport = (41000, 5201) if direction == "a_to_b" else (5201, 41000)
        src, dst = (A_IP, B_IP) if direction == "a_to_b" else (B_IP, A_IP)
        frame = ether(ipv4(tcp(sport, dport, seq, ack, flags, payload=bytes(size)), 6, src,
                           dst))
        self.events.append((int(t_ms * MS), direction, frame, fate))

    def udp(self, t_ms, seq, fate="forward", kind=wire.KIND_DATA, size=100):
        head = wire.frame(wire.Header(77, seq, T0 + int(t_ms * MS), 0, kind), bytes(size))
        frame = ether(ipv4(udp(41001, 5202, head), 17, A_IP, B_IP))
        self.events.append((int(t_ms * MS), "a_to_b", frame, fate))

    def write(self, run_dir: Path, *, engine="userspace", total_retrans=2, udp_lost=3,
              lie: int | None = None) -> dict:
        """The run folder; `lie`: the ledger says this event's frame was forwarded although
        it was dropped (a disagreement nothing explains)."""
        caps = {p: [] for p in ("a", "r-a", "r-b", "b")}
        w = ledger.Writer(run_dir / "link.jsonl", {"pair": ["a", "b"]}) \
            if engine == "userspace" else None
        n = 0
        for i, (t, d, frame, fate) in enumerate(sorted(self.events, key=lambda e: e[0])):
            src, dst = ("a", "b") if d == "a_to_b" else ("b", "a")
            ts = T0 + t
            caps[src].append((frame, ts, len(frame)))
            if fate == "host":                   # never reached the router
                continue
            t_in = ts + HOP_NS
            caps[f"r-{src}"].append((frame, t_in, len(frame)))
            pkt = F.identify(frame).describe()
            if fate == "drop":
                if w:
                    if i == lie:
                        w.record(n, d, t_in, t_in + LINK_NS, len(frame), pkt, "forward")
                    else:
                        w.record(n, d, t_in, None, len(frame), pkt, "drop", "loss")
                n += 1
                continue
            if w:
                w.record(n, d, t_in, t_in + LINK_NS, len(frame), pkt, "forward")
            n += 1
            caps[f"r-{dst}"].append((frame, t_in + LINK_NS, len(frame)))
            caps[dst].append((frame, t_in + LINK_NS + HOP_NS, len(frame)))
        if w:
            w.close({"frames": n})
        for p, frames in caps.items():
            (run_dir / f"{p}.pcap").write_bytes(pcap(sorted(frames, key=lambda f: f[1]),
                                                     nanos=True))
        (run_dir / "endpoints").mkdir(exist_ok=True)
        reports = {
            "tcp.send.json": {"schema": "labkit-endpoint-report", "version": 1,
                              "start": {"role": "sender", "proto": "tcp"},
                              "end": {"tcp_info": {"total_retrans": total_retrans}}},
            "udp.send.json": {"schema": "labkit-endpoint-report", "version": 1,
                              "start": {"role": "sender", "proto": "udp", "flow": 77},
                              "end": {"datagrams": 10}},
            "udp.serve.json": {"schema": "labkit-endpoint-report", "version": 1,
                               "start": {"role": "receiver"}, "end": {"flows": 1},
                               "connections": [{"flow": 77, "expected": 10,
                                                "lost": udp_lost}]}}
        for name, doc in reports.items():
            (run_dir / "endpoints" / name).write_text(json.dumps(doc))
        flows = [{"name": name, "proto": proto, "client": "a", "server": "b",
                  "client_addr": A_IP, "server_addr": B_IP, "port": port,
                  "client_port": cport,
                  "send": {"report": f"endpoints/{name}.send.json"},
                  "serve": {"report": f"endpoints/{name}.serve.json"}}
                 for name, proto, port, cport in (("tcp", "tcp", 5201, 41000),
                                                  ("udp", "udp", 5202, 41001))]
        stats = ({"engine": "kernel", "loss_drops": {"a_to_b": 4, "b_to_a": 1}}
                 if engine == "kernel" else {"engine": "userspace"})
        return {"schema": "labkit-run", "version": 1, "flows": flows,
                "engine": {"name": engine, "stats": stats},
                "captures": {p: {"host": p[-1], "files": [f"{p}.pcap"],
                                 "counters": {"dropped": 0}} for p in caps}}


def _scenario() -> Run:
    """A handshake (RTT 2 ms at a), a data segment dropped and resent 0.2 ms after the
    highest one (Wireshark: out_of_order), another dropped and resent by the RTO 290 ms
    later (retransmission), an ACK dropped on the way back, the close; a UDP stream of 10
    numbered datagrams: #3 dropped by the link, #7 lost before the router, the first of the
    three end markers dropped by the link."""
    r = Run()
    r.tcp(0.0, "a_to_b", 1000, 0, S)
    r.tcp(1.0, "b_to_a", 5000, 1001, S | A)
    r.tcp(2.0, "a_to_b", 1001, 5001, A)
    for i, t in enumerate((3.0, 3.1, 3.2, 3.3)):
        r.tcp(t, "a_to_b", 1001 + 100 * i, 5001, P | A, 100, "drop" if i == 1 else "forward")
    r.tcp(3.5, "a_to_b", 1101, 5001, P | A, 100)                   # the repair
    r.tcp(4.0, "b_to_a", 5001, 1101, A)
    r.tcp(4.5, "b_to_a", 5001, 1401, A, fate="drop")               # a pure ACK dropped
    r.tcp(5.0, "b_to_a", 5001, 1401, A)                            # ... and its twin
    r.tcp(10.0, "a_to_b", 1401, 5001, P | A, 100, "drop")
    r.tcp(300.0, "a_to_b", 1401, 5001, P | A, 100)                 # the RTO's repair
    r.tcp(301.0, "b_to_a", 5001, 1501, A)
    r.tcp(302.0, "a_to_b", 1501, 5001, F_ | A)
    r.tcp(303.0, "b_to_a", 5001, 1502, F_ | A)
    r.tcp(304.0, "a_to_b", 1502, 5002, A)
    for seq in range(10):
        r.udp(20 + 0.1 * seq, seq, {3: "drop", 7: "host"}.get(seq, "forward"))
    for i in range(3):
        r.udp(25 + i, 10, "drop" if i == 0 else "forward", wire.KIND_CONTROL, 20)
    return r


def _reconcile(run_dir: Path, run: dict) -> Reconciliation:
    analyses = {p: toolkit.analyze(run_dir / c["files"][0]) for p, c in run["captures"].items()}
    return reconcile(run_dir, run, analyses)


def _row(rec, direction, flow):
    s = rec.summary
    return s[(s.direction == direction) & (s.flow == flow)].iloc[0]


def test_a_run_reconciled_with_the_ledger(tmp_path):
    run = _scenario().write(tmp_path)
    rec = _reconcile(tmp_path, run)
    assert rec.truth == "ledger of the userspace engine"
    assert rec.unexplained == 0, rec.unexplained_items
    t = _row(rec, "a_to_b", "tcp")
    assert (t.link_frames, t.link_dropped, t.link_dropped_loss) == (11, 2, 2)
    assert (t.before_frames, t.after_frames, t.missing_after, t.matched_to_ledger) == (11, 9, 2, 2)
    assert (t.tcp_data_dropped, t.tcp_drops_repaired) == (2, 2)
    # ground truth and Wireshark's label side by side: one repair out_of_order, one RTO
    assert (t.repair_labelled_out_of_order, t.repair_labelled_retransmission,
            t.repair_unlabelled) == (1, 1, 0)
    assert (t.resends, t.resends_repair, t.resends_spurious, t.tcpinfo_total_retrans) == (
        2, 2, 0, 2)
    back = _row(rec, "b_to_a", "tcp")
    assert (back.link_dropped, back.tcp_acks_dropped, back.missing_after) == (1, 1, 1)
    u = _row(rec, "a_to_b", "udp")
    assert (u.udp_link_dropped, u.udp_control_dropped, u.udp_lost_at_receiver) == (1, 1, 2)
    assert (u.udp_lost_link, u.udp_lost_before_link, u.udp_lost_reported_by_receiver,
            u.dropped_in_host) == (1, 1, 3, 1)
    assert len(rec.summary) == 3            # nothing came back on the UDP flow

    d = rec.drops
    assert len(d) == 5 and d.explained.all() and not d.after_seen.any()
    tcp_data = d[(d.proto == "tcp") & (d.payload_bytes > 0)].sort_values("seq")
    assert tcp_data.seq.tolist() == [1101, 1401]
    assert tcp_data.repair_label.tolist() == ["out_of_order", "retransmission"]
    # frame numbers at a: 8 follows the 7 of the handshake and data; 25 comes after the
    # ACKs, the dropped segment and the 13 UDP datagrams
    assert tcp_data.repair_frame.tolist() == [8, 25]
    assert tcp_data.repair_delay_s.iloc[0] == pytest.approx(0.0004, abs=1e-6)
    assert tcp_data.before_frame.notna().all()
    assert "out_of_order" in tcp_data.note.iloc[0]
    assert set(rec.udp_lost["where"]) == {"dropped by the link", "missing before the link"}
    text = " ".join(rec.notes)
    assert "under the handshake RTT (2.00 ms)" in text
    assert "socket receive buffer" in text and "missing already at r-a" in text

    doc = json.loads(json.dumps(rec.as_dict()))
    assert doc["unexplained"] == 0 and len(doc["drops"]) == 5
    md = rec.to_markdown()
    assert "| a_to_b | tcp (tcp) |" in md and "Unexplained: 0" in md
    rec.summary.to_parquet(tmp_path / "s.parquet")
    rec.drops.to_parquet(tmp_path / "d.parquet")


def test_the_ledger_claiming_a_drop_was_forwarded_is_unexplained(tmp_path):
    events = _scenario()
    lie = next(i for i, e in enumerate(sorted(events.events, key=lambda e: e[0]))
               if e[3] == "drop")
    rec = _reconcile(tmp_path, events.write(tmp_path, lie=lie))
    assert rec.unexplained >= 1
    assert any("did not record" in u for u in rec.unexplained_items)


def test_tcp_info_beyond_the_resends_is_unexplained(tmp_path):
    rec = _reconcile(tmp_path, _scenario().write(tmp_path, total_retrans=5))
    assert rec.unexplained == 3
    assert rec.unexplained_items == [
        "a_to_b tcp (tcp): 3 retransmissions TCP_INFO counts beyond the resends seen at a"]


def test_a_dropped_syn_is_repaired_by_its_retransmission_which_tcp_info_counts(tmp_path):
    r = _scenario()
    r.events = [e for e in r.events if e[0] >= 1 * MS]       # the run starts again ...
    r.tcp(-1000.0, "a_to_b", 1000, 0, S, fate="drop")        # ... after a lost first SYN
    r.tcp(0.0, "a_to_b", 1000, 0, S)
    rec = _reconcile(tmp_path, r.write(tmp_path, total_retrans=3))
    assert rec.unexplained == 0, rec.unexplained_items
    t = _row(rec, "a_to_b", "tcp")
    assert (t.tcp_data_dropped, t.tcp_drops_repaired, t.resends, t.resends_syn) == (3, 3, 3, 1)
    syn = rec.drops[rec.drops.segment == "syn"].iloc[0]
    assert syn.repair_label == "retransmission"
    assert syn.repair_delay_s == pytest.approx(1.0, abs=1e-3)
    assert any("retransmitted SYN, which carries no payload" in n for n in rec.notes)


def test_a_dropped_fin_is_repaired_by_a_retransmitted_fin(tmp_path):
    r = _scenario()
    r.events = [e for e in r.events if e[0] < 302 * MS]
    r.tcp(302.0, "a_to_b", 1501, 5001, F_ | A, fate="drop")
    r.tcp(502.0, "a_to_b", 1501, 5001, F_ | A)                    # the RTO resends it
    r.tcp(503.0, "b_to_a", 5001, 1502, F_ | A)
    r.tcp(504.0, "a_to_b", 1502, 5002, A)
    rec = _reconcile(tmp_path, r.write(tmp_path, total_retrans=3))
    assert rec.unexplained == 0, rec.unexplained_items
    fin = rec.drops[rec.drops.segment == "fin"].iloc[0]
    assert (fin.repair_label, fin.repair_delay_s) == ("retransmission", pytest.approx(0.2))
    t = _row(rec, "a_to_b", "tcp")
    assert (t.tcp_drops_repaired, t.resends_fin, t.tcpinfo_total_retrans) == (3, 1, 3)
    assert any("retransmitted FIN" in n for n in rec.notes)


def test_a_segment_repaired_twice_is_one_spurious_retransmission(tmp_path):
    r = _scenario()
    r.tcp(3.6, "a_to_b", 1101, 5001, P | A, 100)                  # the repair, again
    rec = _reconcile(tmp_path, r.write(tmp_path, total_retrans=3))
    assert rec.unexplained == 0, rec.unexplained_items
    t = _row(rec, "a_to_b", "tcp")
    assert (t.resends, t.resends_repair, t.resends_spurious) == (3, 2, 1)
    assert any("repaired twice: one spurious retransmission" in n for n in rec.notes)
    # the repair is the first resend to get through, not the second
    assert rec.drops.sort_values("seq").repair_frame.dropna().tolist()[0] == 8


def test_with_the_kernel_engine_the_captures_are_the_truth_checked_by_nftables(tmp_path):
    run = _scenario().write(tmp_path, engine="kernel")
    assert not (tmp_path / "link.jsonl").exists()
    rec = _reconcile(tmp_path, run)
    assert rec.truth == "captures r-a and r-b, total checked by nftables counter"
    assert rec.unexplained == 0, rec.unexplained_items
    assert [c["ok"] for c in rec.checks] == [True, True]
    t = _row(rec, "a_to_b", "tcp")
    assert (t.link_dropped, t.missing_after, t.tcp_drops_repaired) == (2, 2, 2)
    assert pd.isna(t.matched_to_ledger)
    assert sorted(rec.drops.reason) == ["loss"] * 5
    # a counter that disagrees with the captures is a disagreement
    run["engine"]["stats"]["loss_drops"]["a_to_b"] = 7
    rec = _reconcile(tmp_path, run)
    assert rec.unexplained == 3 and not rec.checks[0]["ok"]


# ---- a real lab: TCP and UDP through a link that loses 3% each way ----

PY = [sys.executable, "-m", "toolkit.cli"]


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    """A run folder as `labkit run` leaves it (captures at a, r-a, r-b, b, the ledger, the
    endpoint reports) and its run.json, built by hand."""
    network_or_skip()
    from toolkit import netlab, runtime
    from toolkit.capture import start_many, vantage_points
    from toolkit.netlab import emulator
    from toolkit.netlab import impairment as I

    run_dir = tmp_path_factory.mktemp("reconcile-run")
    (run_dir / "endpoints").mkdir()
    env = runtime.child_env()
    flows = []
    with netlab.up(netlab.default_topology()) as lab:
        imp = I.from_dict({"both": {"loss": "3%"}, "seed": 7})
        caps = start_many(lab, vantage_points(lab), run_dir, snaplen=256, impairment=imp)
        handle = emulator.start(lab, imp, run_dir / "link.jsonl")
        for name, proto, port, cport, args in (
                ("tcp", "tcp", 5201, 41000, ["-n", "1M"]),
                ("udp", "udp", 5202, 41001, ["--proto", "udp", "-k", "2000", "-b", "20M",
                                             "-l", "200"])):
            rel = {side: f"endpoints/{name}.{side}.json" for side in ("send", "serve")}
            server = lab.popen("b", [*PY, "serve", "--proto", proto, "-p", str(port), "-1",
                                     "-t", "30", "-q", "--json-file", str(run_dir / rel["serve"])],
                               cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
            line = server.stdout.readline()
            assert "listening" in line, server.stderr.read()
            done = lab.exec("a", [*PY, "send", lab.addr("b"), "-p", str(port), "--cport",
                                  str(cport), "-q", "--json-file", str(run_dir / rel["send"]),
                                  *args], cwd=REPO, env=env, timeout=60)
            assert done.returncode == 0, done.stderr
            assert server.wait(timeout=30) == 0
            flows.append({"name": name, "proto": proto, "client": "a", "server": "b",
                          "client_addr": lab.addr("a"), "server_addr": lab.addr("b"),
                          "port": port, "client_port": cport,
                          "send": {"report": rel["send"]}, "serve": {"report": rel["serve"]}})
        stats = handle.stop()
        caps.stop()
        captures = {p: {**c, "files": [os.path.relpath(f, run_dir) for f in c["files"]]}
                    for p, c in caps.as_dict().items()}
    run = {"schema": "labkit-run", "version": 1, "flows": flows,
           "engine": {"name": "userspace", "reason": "test", "stats": stats},
           "captures": captures}
    (run_dir / "run.json").write_text(json.dumps(run, default=str))
    return run_dir, run


@pytest.mark.root
def test_a_lossy_lab_run_reconciles_with_nothing_unexplained(lab_run):
    run_dir, run = lab_run
    t0 = time.monotonic()
    rec = _reconcile(run_dir, run)
    assert time.monotonic() - t0 < 15
    led = ledger.read(run_dir / "link.jsonl")
    assert led.trailer is not None and led.trailer["overruns"] == 0
    drops = rec.drops
    # every segment with data the link dropped has a repair, found by sequence numbers
    data = drops[(drops.proto == "tcp") & (drops.payload_bytes > 0)]
    assert len(data) > 0 and data.repair_frame.notna().all()
    assert len(data) == sum(1 for r in led.dropped() if r["pkt"]["proto"] == "tcp"
                            and r["pkt"]["len"] > 0)
    for r in rec.summary.itertuples():
        # every frame missing after the link is one the ledger dropped, and the other way
        assert r.missing_after == r.matched_to_ledger == r.link_dropped, r
    # UDP: lost at the receiver == dropped by the link == what the receiver counted
    u = _row(rec, "a_to_b", "udp")
    udp_drops = [x for x in led.dropped("a_to_b") if x["pkt"]["proto"] == "udp"
                 and x["pkt"].get("seq") is not None]
    server = json.loads((run_dir / "endpoints/udp.serve.json").read_text())
    lost = server["connections"][0]["lost"]
    assert u.udp_lost_at_receiver == u.udp_link_dropped == lost
    assert u.udp_link_dropped + u.udp_control_dropped == len(udp_drops)
    t = _row(rec, "a_to_b", "tcp")
    assert t.tcp_drops_repaired == t.tcp_data_dropped > 0
    assert t.tcpinfo_total_retrans == json.loads((run_dir / "endpoints/tcp.send.json")
                                                 .read_text())["end"]["tcp_info"][
                                                     "total_retrans"]
    assert rec.unexplained == 0, rec.unexplained_items


def _tshark_count(exe: str, path: Path, display_filter: str) -> int:
    done = subprocess.run([exe, "-r", str(path), "-Y", display_filter, "-T", "fields",
                           "-e", "frame.number"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.split())


@pytest.mark.root
def test_reported_counts_agree_with_tshark_on_the_same_captures(lab_run):
    exe = tshark_or_skip()
    run_dir, run = lab_run
    rec = _reconcile(run_dir, run)
    cap = {p: run_dir / c["files"][0] for p, c in run["captures"].items()}
    t = _row(rec, "a_to_b", "tcp")
    data = "tcp.srcport == 41000 && tcp.dstport == 5201"
    for column, field in (("retransmissions", "retransmission"),
                          ("fast_retransmissions", "fast_retransmission"),
                          ("spurious_retransmissions", "spurious_retransmission"),
                          ("out_of_order", "out_of_order")):
        assert t[column] == _tshark_count(exe, cap["a"], f"{data} && tcp.analysis.{field}"), \
            column
    assert t.lost_segment_verdicts == _tshark_count(exe, cap["b"],
                                                    f"{data} && tcp.analysis.lost_segment")
    assert t.duplicate_acks == _tshark_count(
        exe, cap["a"], "tcp.srcport == 5201 && tcp.dstport == 41000 && tcp.analysis.duplicate_ack")
    # each repair's label is tshark's label on that frame, in the capture of the side that
    # sent the repair: a for a>b, b for b>a (a drop of the server's report, seen once
    # under load)
    flagged = {(side, f): set() for side in ("a", "b")
               for f in ("retransmission", "fast_retransmission", "out_of_order")}
    for side, f in flagged:
        done = subprocess.run([exe, "-r", str(cap[side]), "-Y", f"tcp.analysis.{f}", "-T",
                               "fields", "-e", "frame.number"], capture_output=True, text=True,
                              timeout=120)
        flagged[side, f] = set(map(int, done.stdout.split()))
    d = rec.drops[(rec.drops.proto == "tcp") & rec.drops.repair_frame.notna()]
    for direction, frame, label in zip(d.direction, d.repair_frame, d.repair_label):
        side = "a" if direction == "a_to_b" else "b"
        want = ("fast_retransmission" if frame in flagged[side, "fast_retransmission"] else
                "retransmission" if frame in flagged[side, "retransmission"] else
                "out_of_order" if frame in flagged[side, "out_of_order"] else "none")
        assert label == want, (direction, frame, label, want)
    # UDP datagrams of the flow seen before and after the link (ICMP errors quoting one
    # are not datagrams of it)
    u = _row(rec, "a_to_b", "udp")
    flow = "udp.srcport == 41001 && udp.dstport == 5202 && !icmp"
    assert u.before_frames == _tshark_count(exe, cap["r-a"], flow)
    assert u.after_frames == _tshark_count(exe, cap["r-b"], flow)
    lost_frames = _tshark_count(exe, cap["r-a"], flow) - _tshark_count(exe, cap["r-b"], flow)
    assert lost_frames == u.missing_after
    assert np.isfinite(u.udp_lost_at_receiver)
