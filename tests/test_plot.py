"""toolkit.plot and `labkit plot`, on the saved runs in captures/: each figure's data (what
it draws, point by point) against the tables it comes from, not its pixels. No privileges.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

from toolkit import plot
from toolkit.labs.folder import RunFolder
from toolkit.plot import PlotInputError
from toolkit.plot.delivery import integral_bytes

LOSS = REPO / "captures" / "04-loss"
HANDSHAKE = REPO / "captures" / "01-handshake"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run():
    """04-loss, opened once: its captures are analyzed and reconciled once for all."""
    return RunFolder(LOSS)


@pytest.fixture(scope="module")
def t0(run):
    return int(run.analysis(run.points[0]).capture.cols["ts_ns"][0])


def _flow(run, name):
    return next(f for f in run.doc["flows"] if f["name"] == name)


# ---------------------------------------------------------------- ladder

def test_ladder_default_window_is_the_first_40_frames(run):
    fig = plot.ladder(run)
    d = fig.labkit_data
    a = d["arrows"]
    assert d["flow"] == "tcp" and d["window"] == (1, 40)
    assert list(a["n"]) == list(range(1, 41))
    assert a["flags"].iloc[0] == "SYN" and a["flags"].iloc[1] == "SYN, ACK"
    assert (d["left"]["point"], d["right"]["point"]) == ("a", "b")
    assert (np.diff(a["t_sent"].to_numpy()) >= 0).all()          # in the order they left


def test_ladder_has_one_arrow_per_frame_and_drops_end_at_the_link(run, t0):
    f = _flow(run, "tcp")
    pk_a, pk_b = run.analysis("a").packets, run.analysis("b").packets
    sent_a = ((pk_a["sport"] == f["client_port"]) & (pk_a["dport"] == f["port"])).sum()
    sent_b = ((pk_b["sport"] == f["port"]) & (pk_b["dport"] == f["client_port"])).sum()
    d = plot.ladder_data(run, flow="tcp", frames=(1, 10**6))
    a = d["arrows"]
    # every frame each host's side sent is one arrow, and nothing else is
    assert len(a) == d["total"] == sent_a + sent_b
    assert set(a["fate"]) <= {"delivered", "dropped"}
    # delivered: from the sender's capture to the receiver's, a few ms later (5 ms link)
    ok = a[a["fate"] == "delivered"]
    delay = ok["t_received"] - ok["t_sent"]
    assert ok["t_received"].notna().all() and (delay > 0.004).all() and (delay < 0.5).all()
    # dropped: they end at the link, where and why the ledger says, one per drops-table row
    drops = run.reconciliation().drops
    drops = drops[(drops["flow"] == "tcp") & (drops["reason"] != "corrupt")]
    gone = a[a["fate"] == "dropped"]
    assert len(gone) == len(drops) > 0
    assert gone["t_received"].isna().all() and gone["frame_received"].isna().all()
    assert sorted(np.round(gone["t_link"], 9)) == sorted(
        np.round((drops["t_in_unix_s"] - t0 / 1e9).to_numpy(), 9))
    assert sorted(zip(gone["direction"], gone["reason"])) == sorted(
        zip(drops["direction"].map({"a_to_b": "a\u2192b", "b_to_a": "b\u2192a"}),
            drops["reason"]))
    assert all(r in label for r, label in zip(gone["reason"], gone["label"]))
    # the data segments dropped are the ones the ledger dropped, by sequence number
    isn = int(pk_a.loc[(pk_a["sport"] == f["client_port"]) & (pk_a["tcp_flags"] == 2),
                       "seq_raw"].iloc[0])
    data = drops[drops["payload_bytes"] > 0]
    assert sorted(gone.loc[gone["length"] > 0, "seq"]) == sorted(
        ((data["seq"].astype("int64") - isn) & 0xFFFFFFFF).tolist())


def test_ladder_window_by_frames_and_by_time(run):
    whole = plot.ladder_data(run, frames=(1, 10**6))["arrows"]
    fig = plot.ladder(run, frames=(30, 60))
    a = fig.labkit_data["arrows"]
    assert list(a["n"]) == list(range(30, 61))                    # one arrow per frame
    assert a.reset_index(drop=True).equals(whole.iloc[29:60].reset_index(drop=True))
    first = a[a["fate"] == "dropped"].iloc[0]                      # the run's first drop
    assert first["reason"] == "loss" and "\u2717 loss" in first["label"]
    t = whole[whole["n"] == 100]["t_sent"].iloc[0]
    b = plot.ladder_data(run, time_window=(t, t + 0.002))["arrows"]
    assert b["n"].iloc[0] == 100 and (b["t_sent"] <= t + 0.002).all()


def test_ladder_of_a_udp_flow_marks_its_lost_datagrams(run):
    a = plot.ladder_data(run, flow="udp", frames=(1, 10**6))["arrows"]
    lost = set(run.reconciliation().udp_lost["udp_seq"].astype(int))
    assert set(a.loc[a["fate"] == "dropped", "udp_seq"]) == lost


def test_ladder_needs_a_run_folder(run):
    with pytest.raises(PlotInputError, match="run folder"):
        plot.ladder(run.analysis("a"))
    with pytest.raises(PlotInputError, match="no flow 'nope'"):
        plot.ladder_data(run, flow="nope")
    with pytest.raises(PlotInputError, match="frames"):
        plot.ladder_data(run, frames=(5000, 6000))


# ---------------------------------------------------------------- time-sequence

@pytest.mark.parametrize("style", ["stevens", "tcptrace"])
def test_time_sequence_points_and_marks_equal_the_packets_table(run, style):
    fig = plot.time_sequence(run, stream=0, style=style)
    d = fig.labkit_data
    assert d["point"] == "a" and d["style"] == style
    pk = run.analysis("a").packets
    f = _flow(run, "tcp")
    mine = (pk["tcp_stream"] == 0) & (pk["sport"] == f["client_port"])
    back = (pk["tcp_stream"] == 0) & (pk["sport"] == f["port"])
    assert len(d["segments"]) == int((mine & (pk["tcp_len"] > 0)).sum()) > 0
    kinds = d["marks"]["kind"]
    retrans = kinds.isin(["retransmission", "fast_retransmission", "spurious_retransmission"])
    assert retrans.sum() == int(pk.loc[mine, "retransmission"].sum())
    assert (kinds == "fast_retransmission").sum() == int(pk.loc[mine,
                                                                "fast_retransmission"].sum())
    assert (kinds == "out_of_order").sum() == int(pk.loc[mine, "out_of_order"].sum())
    acks = d["acks"]
    assert len(acks) == int((back & ((pk["tcp_flags"] & 0x10) > 0)).sum())
    assert acks["duplicate_ack"].sum() == int(pk.loc[back, "duplicate_ack"].sum()) > 0
    assert (acks["edge"] == acks["ack"] + acks["window"]).all()
    # SACK blocks: as many as the capture's ACKs carried, inside the data sent (and FIN)
    cols = run.analysis("a").capture.cols
    rows = np.flatnonzero(back.to_numpy())
    assert len(d["sack"]) == int(cols["sack_n"][rows].sum()) > 0
    s = d["sack"]
    assert (s["left"] < s["right"]).all() and s["right"].max() <= d["segments"]["end"].max() + 1


def test_time_sequence_of_one_capture_equals_the_run_at_that_point(run):
    a = plot.time_sequence_data(LOSS / "a.pcapng.gz", stream=0)
    b = plot.time_sequence_data(run, stream=0, at="a")
    assert a["point"] is None and b["point"] == "a"
    assert a["segments"].equals(b["segments"]) and a["marks"].equals(b["marks"])
    back = plot.time_sequence_data(run, stream=0, direction="b_to_a")
    assert back["point"] == "b" and len(back["segments"]) == 1     # the server's report
    with pytest.raises(PlotInputError, match="no TCP stream 7"):
        plot.time_sequence_data(run, stream=7)
    with pytest.raises(PlotInputError, match="style"):
        plot.time_sequence(run, style="wireshark")


# ---------------------------------------------------------------- goodput

def test_goodput_per_flow_integrates_to_the_payload_seen_at_b(run):
    fig = plot.goodput(run)
    d = fig.labkit_data
    assert d["window_s"] == 0.1 and "0.1 s" in fig.axes[0].get_title()
    flows = d["flows"].set_index("flow")
    assert set(flows.index) == {"tcp", "udp"} and set(flows["point"]) == {"b"}
    tcp_b, udp_b = run.table("tcp", "b"), run.table("udp", "b")
    payload = {"tcp": int(tcp_b.loc[tcp_b["b_port"] == 5201, "payload_bytes_a_to_b"].sum()),
               "udp": int(udp_b.loc[udp_b["b_port"] == 5202, "payload_bytes_a_to_b"].sum())}
    for name, want in payload.items():
        label = flows.loc[name, "label"]
        assert flows.loc[name, "bytes"] == want
        assert integral_bytes(d["series"][label]) == pytest.approx(want, rel=1e-9)
        assert d["series"][label]["rate_bps"].iloc[-1] == 0        # everything has left
    wide = plot.goodput_data(run, window_s=0.5)
    assert wide["window_s"] == 0.5
    label = flows.loc["tcp", "label"]
    assert integral_bytes(wide["series"][label]) == pytest.approx(payload["tcp"], rel=1e-9)
    assert wide["series"][label]["rate_bps"].max() < d["series"][label]["rate_bps"].max()


def test_moving_rate_is_the_bytes_in_the_window():
    s = plot.moving_rate(np.array([0.0, 0.05, 0.3]), np.array([100, 50, 10]), 0.1)
    at = dict(zip(s["t"], s["rate_bps"]))
    assert at[0.0] == 100 * 8 / 0.1 and at[0.05] == 150 * 8 / 0.1
    assert at[0.1] == 50 * 8 / 0.1 and at[0.3] == 10 * 8 / 0.1 and s["rate_bps"].iloc[-1] == 0
    assert integral_bytes(s) == pytest.approx(160)


# ---------------------------------------------------------------- rtt and cwnd

def test_rtt_cwnd_has_a_tcp_info_point_per_report_interval(run):
    fig = plot.rtt_cwnd(run, flow="tcp")
    d = fig.labkit_data
    rep = run.endpoint_report("tcp", "send")
    intervals = [r for r in rep["intervals"] if r.get("tcp_info")]
    assert len(d["tcp_info"]) == len(intervals) > 0 and len(d["tcp_info_end"]) == 1
    assert list(d["tcp_info"]["snd_cwnd"]) == [r["tcp_info"]["snd_cwnd"] for r in intervals]
    assert list(d["tcp_info"]["rtt_ms"]) == pytest.approx(
        [r["tcp_info"]["rtt_s"] * 1e3 for r in intervals])
    # the samples lie on the capture's time axis, inside the connection
    pk = run.analysis("a").packets
    conv = pk[(pk["sport"] == 41000) | (pk["dport"] == 41000)]
    assert d["tcp_info"]["t"].between(conv["time_s"].min(), conv["time_s"].max()).all()
    back = pk[(pk["sport"] == 5201) & (pk["dport"] == 41000)]
    assert len(d["ack_rtt"]) == int(back["ack_rtt_s"].notna().sum())
    assert d["ack_rtt"]["rtt_ms"].median() == pytest.approx(10.5, abs=1.5)   # 2 x 5 ms


# ---------------------------------------------------------------- udp

def test_udp_lost_marks_equal_the_udp_flows_lost_count_at_b(run):
    fig = plot.udp(run, flow="udp")
    d = fig.labkit_data
    fl = run.table("udp_flows", "b")
    fl = fl[fl["dst_port"] == 5202]
    assert len(d["lost"]) == int(fl["lost"].sum()) > 0
    assert set(d["lost"]["where"]) == {"dropped by the link"}
    assert set(d["lost"]["t_from"]) == {"capture at a"}
    assert set(d["lost"]["seq"]) == set(run.reconciliation().udp_lost["udp_seq"].astype(int))
    rx = d["received"]
    assert len(rx) == int(fl["received"].sum())
    assert int(rx["duplicate"].sum()) == int(fl["duplicates"].sum())
    assert int(rx["reordered"].sum()) == int(fl["reordered"].sum())
    assert rx["jitter_ms"].iloc[-1] == pytest.approx(float(fl["jitter_s"].iloc[0]) * 1e3)
    assert rx["owd_ms"].mean() == pytest.approx(float(fl["owd_mean_s"].iloc[0]) * 1e3)
    assert not set(rx["seq"]) & set(d["lost"]["seq"])


def _udp_lost_at_b(run) -> int:
    """The UDP flow's datagrams missing at b, as the analyzer's lab-header table says."""
    fl = run.analysis("b").udp_flows
    return int(fl[fl["dst_port"] == 5202]["lost"].sum())


def test_udp_of_one_capture_finds_the_gaps(run):
    d = plot.udp_data(LOSS / "b.pcapng.gz")
    assert d["receiver"] is None and len(d["lost"]) == _udp_lost_at_b(run) > 0
    assert set(d["lost"]["seq"]) == set(plot.udp_data(run)["lost"]["seq"])


# ---------------------------------------------------------------- side by side

def test_side_by_side_marks_every_drop_and_its_repair(run):
    fig = plot.side_by_side(run)
    d = fig.labkit_data
    drops = run.reconciliation().drops
    assert len(d["drops"]) == len(drops) > 0
    assert d["drops"]["repair_delay_s"].notna().sum() == drops["repair_delay_s"].notna().sum()
    data = int((drops["segment"] == "data").sum())
    assert (d["drops"]["repair_t"] > d["drops"]["t"]).sum() == data > 0    # every data drop
    assert d["lanes"] == ["tcp a\u2192b data", "tcp b\u2192a ack", "udp a\u2192b datagram"]
    # the figure draws them all: one X per drop, one dot per repair
    marks = {ln.get_marker(): len(ln.get_xdata()) for ln in fig.axes[1].get_lines()}
    assert marks["x"] == len(drops) and marks["o"] == data
    assert {k: v["bytes"].iloc[-1] for k, v in d["delivered"].items()} == \
        dict(zip(d["flows"]["label"], d["flows"]["bytes"]))


# ---------------------------------------------------------------- all of a run

def test_figures_for_and_save_figures(tmp_path):
    small = RunFolder(HANDSHAKE)
    figs = plot.figures_for(small)
    assert set(figs) == {"side-by-side", "goodput", "ladder", "time-sequence", "rtt-cwnd",
                         "udp"}
    assert all(hasattr(f, "labkit_data") for f in figs.values())
    assert figs["side-by-side"].labkit_data["drops"].empty      # no loss in this lab
    paths = plot.save_figures(small, tmp_path / "figures")
    assert [p.name for p in paths] == [f"{k}.png" for k in figs]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    assert not list((tmp_path / "figures").glob("*.part"))
    png = figs["goodput"]._repr_png_()                     # Jupyter shows it inline
    assert png[:8] == PNG


def test_importing_toolkit_plot_does_not_import_matplotlib():
    code = ("import sys, toolkit.plot, toolkit.commands.plot; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------- the CLI

def test_cli_writes_a_png(tmp_path, capsys):
    from toolkit.cli import main
    out = tmp_path / "X.png"
    assert main(["plot", str(LOSS), "ladder", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    assert str(out) in capsys.readouterr().out


def test_cli_writes_kind_png_here_by_default(tmp_path, monkeypatch, capsys):
    from toolkit.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(LOSS / "a.pcapng.gz"), "time-sequence", "--style",
                 "tcptrace"]) == 0
    assert (tmp_path / "time-sequence.png").read_bytes()[:8] == PNG
    assert "time-sequence.png" in capsys.readouterr().out
    assert main(["plot", str(LOSS / "a.pcapng.gz"), "goodput", "-o", "g.svg"]) == 0
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()[:2000]


@pytest.mark.parametrize("argv, message", [
    ([str(LOSS), "histogram"], "KIND is one of ladder, time-sequence"),
    ([str(REPO / "captures" / "no-such-run"), "ladder"], "no such run folder"),
    ([str(REPO / "captures"), "goodput"], "not a run folder"),
    ([str(LOSS / "a.pcapng.gz"), "ladder"], "needs a run folder"),
    ([str(LOSS / "a.pcapng.gz"), "side-by-side"], "needs a run folder"),
    ([str(LOSS), "ladder", "--style", "tcptrace"], "not --style"),
    ([str(LOSS), "ladder", "--frames", "1-40"], "--frames"),
    ([str(LOSS), "udp", "--flow", "nope"], "no flow 'nope'"),
    ([str(LOSS), "goodput", "-o", "out.txt"], ".png, .svg or .pdf"),
    ([str(REPO / "README.md"), "goodput"], "not a pcap or pcapng file"),
])
def test_cli_bad_input_exits_2_with_a_message(argv, message, capsys):
    from toolkit.cli import main
    assert main(["plot", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_bad_kind_in_a_subprocess_exits_2_without_traceback():
    out = subprocess.run([sys.executable, "-m", "toolkit.cli", "plot", str(LOSS), "nope"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "labkit plot:" in out.stderr


def test_a_run_without_host_captures_is_drawn_from_the_routers_sides(run, tmp_path):
    import json
    import shutil
    for f in LOSS.iterdir():
        if f.is_file() and f.name not in ("run.json", "a.pcapng.gz", "b.pcapng.gz"):
            shutil.copy(f, tmp_path / f.name)
    shutil.copytree(LOSS / "endpoints", tmp_path / "endpoints")
    doc = json.loads((LOSS / "run.json").read_text())
    del doc["captures"]["a"], doc["captures"]["b"]
    (tmp_path / "run.json").write_text(json.dumps(doc))
    r = RunFolder(tmp_path)
    d = plot.ladder_data(r, frames=(1, 10**6))
    assert (d["left"]["point"], d["right"]["point"]) == ("r-a", "r-b")
    drops = run.reconciliation().drops
    assert (d["arrows"]["fate"] == "dropped").sum() == int(
        ((drops["flow"] == "tcp") & (drops["reason"] != "corrupt")).sum()) > 0
    g = plot.goodput_data(r)["flows"]
    assert set(g["point"]) == {"r-b"}
    assert set(g["bytes"]) == set(plot.goodput_data(run)["flows"]["bytes"])
    assert len(plot.udp_data(r)["lost"]) == _udp_lost_at_b(run)


def test_a_syn_floods_streams_are_its_own_and_its_flow_has_no_ladder(tmp_path):
    """06-backlog: the SYN floods have no client port of their own. Each stream goes to the
    flow whose ports it has; a flood's SYNs to the flood aimed at that server; and a ladder
    of a whole flood (hundreds of one-SYN streams) is refused with what to give instead."""
    from toolkit.plot._common import open_source, stream_conv
    backlog = open_source(REPO / "captures" / "06-backlog")
    for point, flood, legit in (("b", "flood-b", "legit-b"), ("c", "flood-c", "legit-c")):
        tcp = backlog.analysis(point).tcp
        names = [stream_conv(backlog, s, point).name for s in tcp["stream"]]
        assert names.count(legit) == 1 and names.count(flood) == 200, (point, names)
        assert {n for n in names if n.startswith("flood")} == {flood}
    with pytest.raises(PlotInputError, match="flow 'flood-b' has no client port of its own"):
        plot.ladder(backlog, flow="flood-b")
    # a time-sequence graph of a flood: one of its own streams, at the flooder
    from toolkit.plot.tcpgraph import _resolve
    _, point, row, _ = _resolve(backlog, None, "a_to_b", None, "flood-c")
    c_addr = next(f["server_addr"] for f in backlog.doc["flows"] if f["name"] == "flood-c")
    assert point == "m" and row["b_port"] == 5201 and row["b_addr"] == c_addr
    from toolkit.labs.results import flows_table
    ft = flows_table(backlog).set_index("flow")
    assert str(ft["client_port"].dtype) == "Int64" and ft.loc["legit-b", "client_port"] == 41001
    assert ft["client_port"].isna().sum() == 2


def test_a_figure_that_cannot_be_written_is_said_of_its_own_name(tmp_path):
    """The figure goes to a temporary file beside it first: a refusal there names the file
    asked for, and leaves nothing behind."""
    from toolkit.plot import _mpl

    class Refusing:
        def savefig(self, path, **kw):
            raise PermissionError(13, "Permission denied", str(path))

    target = tmp_path / "goodput.png"
    with pytest.raises(PermissionError) as e:
        _mpl.save(Refusing(), target)
    assert e.value.filename == str(target) and e.value.strerror == "Permission denied"
    assert list(tmp_path.iterdir()) == []
