"""Datagrams dropped inside the receiving host (toolkit.labs.reconcile): seen by the capture
at b, never delivered to the program, placed on the host (udp_lost_host) only when b's
kernel counted them (UdpRcvbufErrors, UdpNoPorts in the [observe] counters); what the
counters do not cover is unexplained. Runs built from byte literals, no privileges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import toolkit
from conftest import REPO
from pcapbuild import ether, ipv4, pcap, udp
from toolkit import wire
from toolkit.labs.reconcile import reconcile
from toolkit.netlab import frames as F
from toolkit.netlab import ledger

A_IP, B_IP = "10.201.1.2", "10.201.2.2"
T0 = 1_800_000_000_000_000_000
MS = 1_000_000


def write_run(run_dir: Path, flows: list[dict], counters: dict | None,
              link_drops: set[int] = frozenset()) -> dict:
    """A run of UDP flows from a to b through a userspace link. Each flow: name, port,
    cport, id, sent (datagrams), got (what the receiving program counted). The link drops
    the datagrams in link_drops (by sequence number) of every flow. counters: the SNMP
    counter deltas on b ([observe]), or None when the lab observed nothing."""
    caps = {p: [] for p in ("a", "r-a", "r-b", "b")}
    w = ledger.Writer(run_dir / "link.jsonl", {"pair": ["a", "b"]})
    n = 0
    (run_dir / "endpoints").mkdir(exist_ok=True)
    run_flows = []
    for fi, f in enumerate(flows):
        kinds = [(s, wire.KIND_DATA, 200) for s in range(f["sent"])]
        kinds += [(f["sent"], wire.KIND_CONTROL, 20)] * 3          # the end markers
        for k, (seq, kind, size) in enumerate(kinds):
            t = T0 + (fi * 1000 + k) * MS
            head = wire.frame(wire.Header(f["id"], seq, t, 0, kind), bytes(size))
            frame = ether(ipv4(udp(f["cport"], f["port"], head), 17, A_IP, B_IP))
            pkt = F.identify(frame).describe()
            caps["a"].append((frame, t, len(frame)))
            caps["r-a"].append((frame, t + 10_000, len(frame)))
            if kind == wire.KIND_DATA and seq in link_drops:
                w.record(n, "a_to_b", t + 10_000, None, len(frame), pkt, "drop", "loss")
            else:
                w.record(n, "a_to_b", t + 10_000, t + 110_000, len(frame), pkt, "forward")
                caps["r-b"].append((frame, t + 110_000, len(frame)))
                caps["b"].append((frame, t + 120_000, len(frame)))
            n += 1
        lost_in_range = f["sent"] - len(link_drops) - f["got"]
        docs = {"send": {"schema": "labkit-endpoint-report", "version": 1,
                         "start": {"role": "sender", "proto": "udp", "flow": f["id"]},
                         "end": {"datagrams": f["sent"]}},
                "serve": {"schema": "labkit-endpoint-report", "version": 1,
                          "start": {"role": "receiver"}, "end": {"flows": 1},
                          "connections": [{"flow": f["id"], "packets": f["got"],
                                           "expected": f["sent"],
                                           "lost": len(link_drops) + lost_in_range}]}}
        for side, doc in docs.items():
            (run_dir / "endpoints" / f"{f['name']}.{side}.json").write_text(json.dumps(doc))
        run_flows.append({"name": f["name"], "proto": "udp", "client": "a", "server": "b",
                          "client_addr": A_IP, "server_addr": B_IP, "port": f["port"],
                          "client_port": f["cport"],
                          "send": {"report": f"endpoints/{f['name']}.send.json"},
                          "serve": {"report": f"endpoints/{f['name']}.serve.json"}})
    w.close({"frames": n})
    for p, frames in caps.items():
        (run_dir / f"{p}.pcap").write_bytes(pcap(frames, nanos=True))
    run = {"schema": "labkit-run", "version": 1, "flows": run_flows,
           "engine": {"name": "userspace", "stats": {}},
           "phases": [{"name": "traffic", "started_unix_s": T0 / 1e9, "duration_s": 5}],
           "captures": {p: {"host": p[-1], "files": [f"{p}.pcap"],
                            "counters": {"dropped": 0}} for p in caps}}
    if counters is not None:
        # what observer.py writes: the first sample has every counter, later ones what changed
        (run_dir / "kernel").mkdir(exist_ok=True)
        base = {"UdpInDatagrams": 100, "UdpRcvbufErrors": 7, "UdpNoPorts": 2, "IpInReceives": 5}
        lines = [{"every_s": 0.1, "t_unix_s": T0 / 1e9},
                 {"t_unix_s": T0 / 1e9, "sockets": [], "counters": base},
                 {"t_unix_s": T0 / 1e9 + 1, "sockets": [],
                  "counters": {k: base.get(k, 0) + v for k, v in counters.items()}}]
        (run_dir / "kernel" / "b.jsonl").write_text("".join(json.dumps(x) + "\n"
                                                            for x in lines))
        run["observe"] = {"every_s": 0.1, "files": {"b": "kernel/b.jsonl"}}
    return run


def reconciled(run_dir: Path, run: dict):
    analyses = {p: toolkit.analyze(run_dir / c["files"][0]) for p, c in run["captures"].items()}
    return reconcile(run_dir, run, analyses)


def row(rec, flow="udp"):
    s = rec.summary
    return s[(s.flow == flow) & (s.direction == "a_to_b")].iloc[0]


ONE = [{"name": "udp", "port": 5202, "cport": 41001, "id": 77, "sent": 50, "got": 20}]


def test_datagrams_the_program_never_got_are_the_hosts_when_its_kernel_counted_them(tmp_path):
    # 30 never reached the program; b's kernel counted 33 (3 end markers dropped too)
    rec = reconciled(tmp_path, write_run(tmp_path, ONE, {"UdpRcvbufErrors": 33}))
    r = row(rec)
    assert r.udp_lost_host == 30
    assert r.host_udp_rcvbuf_errors == 33
    assert r.udp_lost_link == 0 and r.udp_lost_at_receiver == 0     # the link lost nothing
    assert r.dropped_in_host == 30
    assert rec.unexplained == 0, rec.unexplained_items
    note = " ".join(rec.notes)
    assert "30 datagrams seen at b that the program never got" in note
    assert "UdpRcvbufErrors" in note and "receive buffer was full" in note
    assert rec.host_counters["b"]["UdpRcvbufErrors"] == 33
    assert "UdpRcvbufErrors +33" in rec.to_markdown()


def test_what_the_kernel_did_not_count_is_unexplained(tmp_path):
    rec = reconciled(tmp_path, write_run(tmp_path, ONE, {"UdpRcvbufErrors": 25}))
    assert row(rec).udp_lost_host == 30
    assert rec.unexplained == 5
    assert any("beyond what b's kernel counted" in u for u in rec.unexplained_items)


def test_a_host_that_counted_nothing_explains_nothing(tmp_path):
    # observed, and no UDP drop counter moved: all 30 are unexplained
    rec = reconciled(tmp_path, write_run(tmp_path, ONE, {"IpInReceives": 60}))
    assert row(rec).udp_lost_host == 30 and row(rec).host_udp_rcvbuf_errors == 0
    assert rec.unexplained == 30


def test_datagrams_after_the_socket_closed_are_counted_by_udp_noports(tmp_path):
    rec = reconciled(tmp_path, write_run(tmp_path, ONE, {"UdpRcvbufErrors": 20,
                                                         "UdpNoPorts": 10}))
    assert rec.unexplained == 0, rec.unexplained_items
    note = " ".join(rec.notes)
    assert "closed its socket" in note and "UdpNoPorts" in note


def test_flows_to_one_host_share_its_counters(tmp_path):
    two = [{"name": "udp", "port": 5202, "cport": 41001, "id": 77, "sent": 40, "got": 30},
           {"name": "udp2", "port": 5203, "cport": 41002, "id": 78, "sent": 40, "got": 25}]
    # 10 + 15 lost in b: a counter of 25 covers both, one of 24 leaves one unexplained
    rec = reconciled(tmp_path, write_run(tmp_path, two, {"UdpRcvbufErrors": 25}))
    assert (row(rec, "udp").udp_lost_host, row(rec, "udp2").udp_lost_host) == (10, 15)
    assert rec.unexplained == 0, rec.unexplained_items
    rec = reconciled(tmp_path, write_run(tmp_path, two, {"UdpRcvbufErrors": 24}))
    assert rec.unexplained == 1


def test_link_drops_stay_the_links_and_host_drops_the_hosts(tmp_path):
    # the link drops 3; of the 47 that reach b, 20 are delivered: 27 dropped in b
    f = [{**ONE[0], "got": 20}]
    rec = reconciled(tmp_path, write_run(tmp_path, f, {"UdpRcvbufErrors": 27},
                                         link_drops={5, 6, 40}))
    r = row(rec)
    assert (r.udp_lost_link, r.udp_lost_host) == (3, 27)
    assert rec.unexplained == 0, rec.unexplained_items


def test_without_observed_counters_the_host_share_stands_unchecked(tmp_path):
    rec = reconciled(tmp_path, write_run(tmp_path, ONE, None))
    r = row(rec)
    assert r.udp_lost_host == 30
    assert r.host_udp_rcvbuf_errors is pd_na()
    assert rec.unexplained == 0
    assert "not checked against its kernel's counters" in " ".join(rec.notes)


def test_a_program_that_got_everything_leaves_no_host_share(tmp_path):
    f = [{**ONE[0], "got": 50}]
    rec = reconciled(tmp_path, write_run(tmp_path, f, {"UdpRcvbufErrors": 0}))
    assert row(rec).udp_lost_host == 0 and rec.unexplained == 0
    assert not any("never got" in n for n in rec.notes)


def pd_na():
    import pandas as pd
    return pd.NA


SAVED = REPO / "captures" / "08-flow-control"


@pytest.mark.skipif(not (SAVED / "run.json").exists(), reason="no saved 08-flow-control run")
def test_the_saved_flow_control_run_puts_the_udp_loss_on_host_b():
    from toolkit.labs.folder import RunFolder
    run = RunFolder(SAVED)
    rec = run.reconciliation()
    r = row(rec)
    assert r.udp_lost_link == 0 and r.udp_lost_host > 0
    assert r.host_udp_rcvbuf_errors >= r.udp_lost_host
    assert rec.unexplained == 0
