"""Zero-window time per TCP conversation (the tcp table's zero_window_time_s, which lab
08-flow-control reads): from the segment with Wireshark's zero_window verdict to the
window update that reopens the window, summed over the closed episodes. Checked on a
conversation built from byte literals, and on the saved flow-control run against the
verdict frames themselves."""

from __future__ import annotations

import pytest

import toolkit
from conftest import REPO
from pcapbuild import ether, ipv4, pcap, tcp

A, B = "10.0.0.1", "10.0.0.2"
S, AK, P, F = 0x02, 0x10, 0x08, 0x01
T0 = 1_800_000_000_000_000_000
MS = 1_000_000


def seg(t_ms, a_to_b, seq, ack, flags, win=65535, size=0):
    sport, dport = (40000, 5201) if a_to_b else (5201, 40000)
    src, dst = (A, B) if a_to_b else (B, A)
    frame = ether(ipv4(tcp(sport, dport, seq, ack, flags, win, payload=bytes(size)), 6,
                       src, dst))
    return frame, T0 + int(t_ms * MS), len(frame)


def conversation(tmp_path, closes):
    """A handshake, 1000 bytes that fill b's window, then for each (closed_ms, open_ms) a
    zero window from b, a probe from a (Linux's: one below SND.UNA, no data) answered with
    the zero window again, and b's window update; then the close."""
    frames = [seg(0, True, 100, 0, S), seg(1, False, 900, 101, S | AK),
              seg(2, True, 101, 901, AK)]
    seq = 101
    for closed, opened in closes:
        frames.append(seg(closed - 1, True, seq, 901, P | AK, size=1000))
        seq += 1000
        frames.append(seg(closed, False, 901, seq, AK, win=0))                    # zero window
        frames.append(seg(closed + 200, True, seq - 1, 901, AK))                  # probe
        frames.append(seg(closed + 201, False, 901, seq, AK, win=0))              # still zero
        frames.append(seg(opened, False, 901, seq, AK, win=8192))                 # update
    t = closes[-1][1] + 10
    frames += [seg(t, True, seq, 901, F | AK), seg(t + 1, False, 901, seq + 1, F | AK),
               seg(t + 2, True, seq + 1, 902, AK)]
    path = tmp_path / "zw.pcap"
    path.write_bytes(pcap(frames, nanos=True))
    return toolkit.analyze(path)


def test_one_closed_window_lasts_from_the_zero_window_to_the_window_update(tmp_path):
    a = conversation(tmp_path, [(1000, 2500)])
    (row,) = a.tcp.to_dict("records")
    assert row["zero_windows"] == 2            # the first and the answer to the probe
    assert row["zero_window_time_s"] == pytest.approx(1.5, abs=1e-9)
    pk = a.packets
    assert int(pk["keep_alive"].sum()) == 1    # Linux's probe, as Wireshark labels it
    assert int(pk["window_update"].sum()) == 1


def test_several_closed_windows_add_up(tmp_path):
    a = conversation(tmp_path, [(1000, 1400), (2000, 2900)])
    assert a.tcp["zero_window_time_s"].iloc[0] == pytest.approx(0.4 + 0.9, abs=1e-9)
    assert int(a.packets["window_update"].sum()) == 2


def test_a_window_never_reopened_counts_until_the_last_frame(tmp_path):
    frames = [seg(0, True, 100, 0, S), seg(1, False, 900, 101, S | AK),
              seg(2, True, 101, 901, AK), seg(3, True, 101, 901, P | AK, size=1000),
              seg(10, False, 901, 1101, AK, win=0), seg(210, True, 1100, 901, AK),
              seg(211, False, 901, 1101, AK, win=0), seg(610, True, 1100, 901, AK)]
    path = tmp_path / "open.pcap"
    path.write_bytes(pcap(frames, nanos=True))
    a = toolkit.analyze(path)
    assert a.tcp["zero_window_time_s"].iloc[0] == pytest.approx(0.6, abs=1e-9)


SAVED = REPO / "captures" / "08-flow-control"


@pytest.mark.skipif(not (SAVED / "run.json").exists(), reason="no saved 08-flow-control run")
def test_the_saved_run_agrees_with_the_verdict_frames():
    """zero_window verdict (the first of an episode) to the next window_update from the
    same side: the same time as the tcp table says."""
    from toolkit.labs.folder import RunFolder
    run = RunFolder(SAVED)
    a = run.analysis("b")
    pk = a.packets
    srv = pk[pk["sport"] == 5201].sort_values("frame")
    total, since = 0.0, None
    for zw, wu, t in zip(srv["zero_window"], srv["window_update"], srv["time_s"]):
        if zw and since is None:
            since = t
        elif wu and since is not None:
            total, since = total + (t - since), None
    assert since is None and total > 0.5
    row = a.tcp[a.tcp["b_port"] == 5201].iloc[0]
    assert row["zero_window_time_s"] == pytest.approx(total, abs=1e-6)
