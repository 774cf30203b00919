"""The userspace engine in a real lab: fidelity of loss, delay and rate, and scripted faults
checked three ways: the ledger (what the engine says it did), the captures on both sides
of the link (what the wire saw) and the analyzer's verdicts on them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

import toolkit
from conftest import REPO, as_nobody_or_skip, dead_runs_lock, network_or_skip
from toolkit import netlab
from toolkit.capture import start_many, vantage_points
from toolkit.netlab import emulator, forwarder, kernel, ledger, selftest
from toolkit.netlab import impairment as I

pytestmark = pytest.mark.root
PORT = 5401
MSS = 1448                  # 1500 - 20 (IPv4) - 20 (TCP) - 12 (timestamps option)


SERVER = textwrap.dedent("""
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", {port}))
    s.listen()
    s.settimeout(30)
    print("ready", flush=True)
    c, _ = s.accept()
    c.settimeout(30)
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.close()
    print(n, flush=True)
""")

CLIENT = textwrap.dedent("""
    import socket
    c = socket.create_connection(({host!r}, {port}), timeout=30)
    c.sendall(b"x" * {size})
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()
""")


def _tcp_transfer(lab, size: int) -> int:
    server = lab.popen("b", [sys.executable, "-c", SERVER.format(port=PORT)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready", server.stderr.read()
    client = lab.exec("a", [sys.executable, "-c", CLIENT.format(host=lab.addr("b"), port=PORT,
                                                                size=size)], timeout=60)
    assert client.returncode == 0, client.stderr
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    return int(out.split()[-1])


def _faulted_transfer(lab, tmp_path, spec: dict, size: int = 20 * MSS):
    """A TCP transfer a->b through the engine with the given [link] spec, captured at a and
    at b. Returns (ledger, packets at a, packets at b), packets of the data direction."""
    imp = I.from_dict(spec)
    path = tmp_path / "link.jsonl"
    caps = start_many(lab, vantage_points(lab, ["a", "b"]), tmp_path, impairment=imp)
    with caps:
        handle = emulator.start(lab, imp, path)
        try:
            assert _tcp_transfer(lab, size) == size
        finally:
            stats = handle.stop()
    assert stats["overruns"] == 0 and not stats["errors"], stats
    led = ledger.read(path)
    assert led.trailer is not None, led.note
    views = {}
    for name in ("a", "b"):
        a = toolkit.analyze(caps.results[name].files[0])
        pk = a.packets
        pk = pk.assign(t_ns=a.capture.cols["ts_ns"][pk.frame.to_numpy() - 1])
        views[name] = pk[(pk.proto == "TCP") & (pk.dport == PORT)]
    return led, views["a"], views["b"]


def _sent_again(pk):
    """Data segments whose sequence number the capture already showed: retransmissions,
    by the bytes on the wire rather than by any tool's heuristics."""
    data = pk[pk.tcp_len > 0]
    return data[data.seq_raw.duplicated()]


def _flagged(row) -> bool:
    """Wireshark's verdict on a segment sent again: a retransmission of some kind, or, when
    it follows the highest segment within an RTT, out of order (packet-tcp.c)."""
    return bool(row.retransmission or row.fast_retransmission
                or row.spurious_retransmission or row.out_of_order)


# ---- fidelity: the bounds issue 3 sets ----

def test_random_loss_lands_in_the_binomial_interval_and_equals_the_ledger(lab, tmp_path):
    imp = I.from_dict({"a_to_b": {"loss": "5%"}, "seed": 11})
    path = tmp_path / "loss.jsonl"
    handle = emulator.start(lab, imp, path)
    try:
        got = selftest.measure_loss(lab, 10_000, selftest.USERSPACE_PPS)
    finally:
        stats = handle.stop()
    lo, hi = kernel.binomial_interval(10_000, 0.05)
    # what the receiver's own socket dropped (a busy machine ran it late) is the host's
    on_link = got["lost"] - got["socket_drops"]
    assert lo <= on_link <= hi and got["duplicates"] == 0
    assert stats["overruns"] == 0
    led = ledger.read(path)
    udp = [r for r in led.records if r["dir"] == "a_to_b" and r["pkt"]["proto"] == "udp"]
    assert len(udp) == 10_000                       # one record per frame
    drops = [r for r in udp if r["action"] == "drop"]
    assert all(r["why"] == "loss" and r["t_out"] is None for r in drops)
    assert len(drops) == on_link == stats["loss_drops"]["a_to_b"]


def test_one_way_delay_gives_ping_rtt_within_a_millisecond(lab, tmp_path):
    imp = I.from_dict({"both": {"delay": "15ms"}})
    handle = emulator.start(lab, imp, tmp_path / "delay.jsonl")
    try:
        rtt = selftest.measure_rtt(lab)
    finally:
        stats = handle.stop()
    assert rtt["received"] == 20
    assert_rtt_as_the_timing_report_allows(0.030, rtt, stats)
    if stats["timing"]["reliable"]:
        assert stats["late"]["max_s"] < 0.005, stats["late"]


def assert_rtt_as_the_timing_report_allows(expected_s: float, rtt: dict, stats: dict) -> None:
    """The engine's own timing report decides (docs/timing.md): on time, the median RTT is
    the configured one within 1 ms; late, the check may fail only the way lateness
    explains (a longer RTT, never a shorter one), and the report must say the engine was
    late."""
    timing = stats["timing"]
    check = selftest.judge_rtt(expected_s, rtt["median_s"]).settle(timing["reliable"])
    assert rtt["median_s"] >= expected_s - 1e-3, rtt
    if timing["reliable"]:
        assert check.status == "pass", (check, rtt, stats["late"])
    else:
        assert check.status in ("pass", "unreliable"), (check, timing)
        assert timing["notes"] and stats["late"]["count"] > 0, stats


def test_rate_gives_tcp_goodput_within_ten_percent(lab, tmp_path):
    imp = I.from_dict({"a_to_b": {"rate": "20mbit"}})
    handle = emulator.start(lab, imp, tmp_path / "rate.jsonl")
    try:
        good = selftest.measure_goodput(lab, 3.0)
    finally:
        stats = handle.stop()
    assert stats["overruns"] == 0
    # never above the rate (a shaper that lets more through is broken whatever the load);
    # below it only when the engine's timing report says it was late (docs/timing.md)
    check = selftest.judge_rate(20_000_000, good["goodput_bps"], "userspace")
    check.settle(stats["timing"]["reliable"])
    assert good["goodput_bps"] <= 20e6 * 1.10, good
    if stats["timing"]["reliable"]:
        assert check.status == "pass", (check, good)
    else:
        assert check.status in ("pass", "unreliable"), (check, stats["timing"])
        assert stats["timing"]["notes"], stats


def test_a_rate_beyond_the_engines_capacity_is_refused_before_anything_starts(lab, tmp_path):
    imp = I.from_dict({"a_to_b": {"rate": "10gbit"}})
    with pytest.raises(emulator.EmulatorError, match=r"link.a_to_b.rate: 10000 Mbit/s is "
                                                     r"beyond the userspace engine's capacity"):
        emulator.start(lab, imp, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
    # and the router still forwards by itself: nothing of the engine was left behind
    assert lab.exec("a", ["ping", "-c1", "-W2", lab.addr("b")]).returncode == 0


# ---- scripted faults ----

def test_dropping_the_third_data_segment_gives_exactly_one_retransmission_of_it(lab, tmp_path):
    led, at_a, at_b = _faulted_transfer(lab, tmp_path, {"fault": [
        {"action": "drop", "direction": "a_to_b", "proto": "tcp", "payload": True, "nth": 3}]})
    drops = led.dropped()
    assert len(drops) == 1 and drops[0]["why"].startswith("fault 0: drop #3 tcp with data a>b")
    data = led.where(dir="a_to_b", proto="tcp")
    data = [r for r in data if r["pkt"]["len"] > 0]
    assert drops[0]["n"] == data[2]["n"]            # the third data segment, by the ledger
    seq = drops[0]["pkt"]["seq"]
    again = _sent_again(at_a)
    assert list(again.seq_raw) == [seq]             # one retransmission, of exactly it
    assert _flagged(again.iloc[0])
    assert len(_sent_again(at_b)) == 0              # b saw it once: the original never came
    assert (at_a.seq_raw == seq).sum() == 2 and (at_b.seq_raw == seq).sum() == 1
    # the ledger's departure of the retransmission is the frame b captured
    sent = [r for r in led.where(dir="a_to_b", seq=seq) if r["t_out"]]
    assert len(sent) == 1
    t_b = int(at_b[at_b.seq_raw == seq].t_ns.iloc[0])
    assert abs(t_b - sent[0]["t_out"]) < 2_000_000      # on b's wire as it left the link


def test_dropping_the_first_syn_costs_one_syn_retransmission(lab, tmp_path):
    led, at_a, at_b = _faulted_transfer(lab, tmp_path, {"fault": [
        {"action": "drop", "proto": "tcp", "flags": "S", "not_flags": "A", "note": "first SYN"}]},
        size=3 * MSS)
    drops = led.dropped()
    assert [(r["pkt"]["flags"], r["why"]) for r in drops] == [("S", "fault 0: first SYN")]
    syn_a = at_a[at_a.tcp_flags == 0x02]
    syn_b = at_b[at_b.tcp_flags == 0x02]
    assert len(syn_a) == 2 and len(syn_b) == 1
    assert syn_a.retransmission.iloc[1] == 1
    # Linux's initial RTO is 1 s (RFC 6298 2.1)
    assert 0.9 < float(syn_a.time_s.iloc[1] - syn_a.time_s.iloc[0]) < 1.5


def test_holding_a_segment_reorders_it_after_the_next(lab, tmp_path):
    led, at_a, at_b = _faulted_transfer(lab, tmp_path, {"fault": [
        {"action": "hold", "direction": "a_to_b", "proto": "tcp", "payload": True, "nth": 7}]})
    held = led.where(action="hold")
    assert len(held) == 1
    seq7 = held[0]["pkt"]["seq"]
    data_b = at_b[at_b.tcp_len > 0]
    order = list(data_b.seq_raw)
    i = order.index(seq7)
    assert order[i - 1] == seq7 + MSS               # segment 8 arrived first
    assert data_b.out_of_order.iloc[i] == 1         # Wireshark's verdict at the receiver
    assert len(_sent_again(at_a)) == 0


def test_dropping_the_last_data_segment(lab, tmp_path):
    led, at_a, at_b = _faulted_transfer(lab, tmp_path, {"fault": [
        {"action": "drop", "direction": "a_to_b", "proto": "tcp", "last": True}]},
        size=10 * MSS + 100)
    drops = led.dropped()
    assert len(drops) == 1 and drops[0]["pkt"]["len"] == 100    # the short tail
    again = _sent_again(at_a)
    assert list(again.seq_raw) == [drops[0]["pkt"]["seq"]]
    assert _flagged(again.iloc[0])


def test_corrupting_a_segment_makes_the_receiver_discard_it(lab, tmp_path):
    led, at_a, at_b = _faulted_transfer(lab, tmp_path, {"fault": [
        {"action": "corrupt", "direction": "a_to_b", "proto": "tcp", "payload": True,
         "nth": 4}]})
    bad = led.where(action="corrupt")
    assert len(bad) == 1 and bad[0]["t_out"] is not None
    seq = bad[0]["pkt"]["seq"]
    # b's stack found the bad checksum and dropped it: a had to send it again
    assert list(_sent_again(at_a).seq_raw) == [seq]
    assert (at_b.seq_raw == seq).sum() == 2


def test_a_blackhole_window_drops_everything_in_it_and_nothing_after(lab, tmp_path):
    imp = I.from_dict({"fault": [{"action": "drop", "start": "0ms", "end": "300ms",
                                  "note": "blackhole"}]})
    path = tmp_path / "hole.jsonl"
    handle = emulator.start(lab, imp, path)
    try:
        t0 = time.monotonic()
        done = lab.exec("a", ["ping", "-c", "12", "-i", "0.05", "-W", "1", lab.addr("b")],
                        timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        handle.stop()
    led = ledger.read(path)
    start = led.header["started_ns"]
    pings = led.where(dir="a_to_b", proto="icmp")
    assert len(pings) == 12 and elapsed > 0.5
    for r in pings:
        in_window = r["t_in"] - start < 0.3e9
        assert (r["action"] == "drop") == in_window, r
    lost = sum(r["action"] == "drop" for r in pings)
    assert 1 <= lost < 12
    assert f"{12 - lost} received" in done.stdout


def test_the_engine_stops_with_the_lab_and_writes_its_trailer(tmp_path):
    network_or_skip()
    with netlab.up(netlab.default_topology()) as lab:
        emulator.start(lab, I.from_dict({"both": {"delay": "5ms"}}), tmp_path / "l.jsonl")
        proc = lab.processes[-1]
        # never stopped by the caller: the teardown does it
    assert proc.poll() is not None
    led = ledger.read(tmp_path / "l.jsonl")
    assert led.trailer is not None and led.note == ""


ROOTLESS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from toolkit import netlab
    from toolkit.netlab import emulator, impairment, selftest
    with netlab.up(netlab.default_topology()) as lab:
        h = emulator.start(lab, impairment.from_dict({{"both": {{"delay": "10ms"}}}}),
                           Path({ledger!r}))
        rtt = selftest.measure_rtt(lab, 10)
        stats = h.stop()
        print(json.dumps({{"mode": lab.privilege.mode, "rtt": rtt, "stats": stats}}))
""")


def test_the_engine_runs_rootless_as_an_unprivileged_user(tmp_path):
    python = as_nobody_or_skip()
    out = f"/tmp/labkit-test-ledger-{time.time_ns()}.jsonl"
    try:
        done = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c",
                               ROOTLESS.format(repo=str(REPO), ledger=out)],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout.splitlines()[-1])
        assert got["mode"] == "rootless"
        # unprivileged, the engine gets no real-time priority: on a busy machine it may be
        # late, and then its report must say so (seen: a 23.9 ms median with both cores busy)
        assert_rtt_as_the_timing_report_allows(0.020, got["rtt"], got["stats"])
        assert got["stats"]["overruns"] == 0
        assert ledger.read(out).trailer is not None
    finally:
        subprocess.run(["rm", "-f", out])


def _flood(lab, path):
    """6000 datagrams a->b through a fresh engine: (receiver's result, engine's stats,
    ledger, the arrival stamps of a->b, the rate they arrived at)."""
    handle = emulator.start(lab, I.from_dict({}), path)
    try:
        # as fast as the sender can: paced at 3x the ceiling, a sender the busy machine held
        # back offered no overload at all (seen with both cores busy: not one drop)
        got = selftest.measure_loss(lab, 6000, 100 * forwarder.MAX_FPS)
    finally:
        stats = handle.stop()
    led = ledger.read(path)
    # the flood's datagrams only: an ARP or IPv6 neighbour frame a second before would
    # stretch the span the rate is read over
    came = sorted(r["t_in"] for r in led.records if r["dir"] == "a_to_b" and not r.get("copy")
                  and r["pkt"].get("dport") == selftest.UDP_PORT)
    return got, stats, led, came, (len(came) - 1) / ((came[-1] - came[0]) / 1e9)


def test_an_overload_beyond_the_ceiling_is_queued_and_dropped_as_capacity_not_overrun(
        lab, tmp_path):
    # The link model judges by the kernel's arrival stamps, not by the engine's CPU: what
    # it can carry is MAX_FPS over the span the frames arrived in, plus its 50 ms queue.
    # So the premise is an overload at the engine, read from its ledger, and the capacity
    # drops it must make follow from the arrivals, whatever their pace. The sender's pace
    # is the machine's: with both cores busy it offered 1.09x and 1.5x the ceiling in two
    # runs, idle 3x and more. It runs at nice -10 where it may (traffic.py), and a flood
    # that was no overload is tried again, at most three times in all.
    rates = []
    for attempt in range(3):
        got, stats, led, came, offered = _flood(lab, tmp_path / f"flood{attempt}.jsonl")
        rates.append(round(offered))
        if offered >= 1.25 * forwarder.MAX_FPS:
            break
    assert offered >= 1.25 * forwarder.MAX_FPS, \
        f"no overload reached the engine in three tries: {rates} frames/s ({got})"
    assert stats["overruns"] == 0
    assert len(came) == 6000, len(came)        # every datagram reached the engine
    span = (came[-1] - came[0]) / 1e9
    most_carried = forwarder.MAX_FPS * (span + 0.050) + 2
    drops = led.dropped("a_to_b")
    assert got["lost"] - got["socket_drops"] == len(drops) >= len(came) - most_carried
    assert {r["why"] for r in drops} == {"capacity"}
    assert stats["directions"]["a_to_b"]["capacity"] == len(drops)
    # what it carried, it carried at its ceiling: no faster than MAX_FPS
    out = sorted(r["t_out"] for r in led.records if r["t_out"] and r["dir"] == "a_to_b")
    span = (out[-1] - out[0]) / 1e9
    assert (len(out) - 1) / span <= forwarder.MAX_FPS * 1.02


KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from toolkit import netlab
    from toolkit.netlab import emulator, impairment
    with netlab.up(netlab.default_topology()) as lab:
        h = emulator.start(lab, impairment.from_dict({{}}), Path({ledger!r}))
        print(lab.run_id, h.proc.pid, flush=True)
        time.sleep(60)
""")


def test_a_runner_killed_with_sigkill_takes_its_engine_with_it(tmp_path):
    mode = network_or_skip()
    path = tmp_path / "killed.jsonl"
    with dead_runs_lock():
        runner = subprocess.Popen([sys.executable, "-c", KILLED.format(repo=str(REPO),
                                                                       ledger=str(path))],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id, pid = runner.stdout.readline().split()
        runner.kill()
        runner.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(int(pid)):
            time.sleep(0.05)
        assert not _alive(int(pid)), "the engine outlived its runner"
        assert ledger.read(path).trailer is not None      # it stopped cleanly, on SIGTERM
        if mode == "root":  # a rootless run's namespaces died with its holder: none to clean
            done = subprocess.run([sys.executable, "-m", "toolkit.cli", "clean"], cwd=REPO,
                                  capture_output=True, text=True, timeout=30)
            assert f"removed run {run_id}" in done.stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_fin_drop_and_ipv6_through_the_engine(lab, tmp_path):
    led, at_a, at_b = _faulted_transfer(lab, tmp_path, {"fault": [
        {"action": "drop", "direction": "a_to_b", "proto": "tcp", "flags": "F"}]},
        size=4 * MSS)
    drops = led.dropped()
    assert len(drops) == 1 and "F" in drops[0]["pkt"]["flags"]
    fins_a = at_a[(at_a.tcp_flags & 0x01) == 1]
    assert len(fins_a) == 2 and ((at_b.tcp_flags & 0x01) == 1).sum() == 1
    handle = emulator.start(lab, I.from_dict({"both": {"delay": "2ms"}}), tmp_path / "6.jsonl")
    try:
        six = lab.exec("a", ["ping", "-6", "-c", "3", "-i", "0.1", lab.addr("b", 6)])
    finally:
        handle.stop()
    assert six.returncode == 0, six.stdout + six.stderr
    led6 = ledger.read(tmp_path / "6.jsonl")
    assert len(led6.where(dir="a_to_b", proto="icmp", type=128)) == 3      # echo requests
    assert len(led6.where(dir="b_to_a", proto="icmp", type=129)) == 3      # echo replies


def test_doctor_reports_the_userspace_engine_and_its_ceiling():
    network_or_skip()
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "doctor", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    doc = json.loads(done.stdout)
    assert doc["userspace_engine"] == {"available": True, "max_rate_bps": forwarder.MAX_RATE_BPS,
                                       "max_frames_per_s": forwarder.MAX_FPS}
    # every lab in labs/ gets a verdict, read as `labkit run` reads it (its parameters
    # substituted): the ones that ask for the userspace engine get it
    labs = sorted(p.parent.name for p in (REPO / "labs").glob("*/lab.toml"))
    assert sorted(doc["labs"]) == labs and len(labs) >= 8
    if doc["tools"].get("dumpcap") or doc["tools"].get("tcpdump"):
        assert doc["labs"]["04-loss"] == "ok (userspace engine: asked for)", doc["labs"]
        assert all(v.startswith("ok (") for v in doc["labs"].values()), doc["labs"]
    else:                       # no capture tool: every lab says so, none is "ok"
        assert all(v.startswith("cannot run: no capture tool") for v in doc["labs"].values())


# ---- the selftest's checks fail when the link is not what they were told ----

def test_selftest_checks_fail_on_a_link_other_than_the_one_configured(lab, tmp_path):
    # the engine runs one link; the checks judge it against another (as a broken engine
    # would be judged against its configuration): each must fail where the two differ and
    # pass where they agree, for both directions
    lossy = I.from_dict({"a_to_b": {"loss": "5%"}, "b_to_a": {"loss": "10%"}, "seed": 5})
    handle = emulator.start(lab, lossy, tmp_path / "wrong-loss.jsonl")
    try:
        loss = selftest.measure_loss(lab, 4000, selftest.USERSPACE_PPS,
                                     pairs=(("a", "b"), ("b", "a")))
    finally:
        stats = handle.stop()
    checks = {}
    for d, label in (("a_to_b", "a>b"), ("b_to_a", "b>a")):
        total, decided = selftest._drops(stats, d)
        checks[label] = selftest.judge_loss(4000, loss[d]["lost"], loss[d]["duplicates"], 0.05,
                                            engine_drops=total, decided=decided,
                                            direction=label,
                                            host_drops=loss[d]["socket_drops"])
    assert checks["a>b"].ok and not checks["b>a"].ok, checks
    shaped = I.from_dict({"a_to_b": {"rate": "10mbit"}, "b_to_a": {"rate": "20mbit"}})
    handle = emulator.start(lab, shaped, tmp_path / "wrong-rate.jsonl")
    try:
        fwd = selftest.measure_goodput(lab, 2.0, "a", "b")
        back = selftest.measure_goodput(lab, 2.0, "b", "a")
    finally:
        handle.stop()
    assert not selftest.judge_rate(20_000_000, fwd["goodput_bps"], "userspace").ok, fwd
    assert selftest.judge_rate(10_000_000, fwd["goodput_bps"], "userspace").ok, fwd
    assert selftest.judge_rate(20_000_000, back["goodput_bps"], "userspace", "b>a").ok, back
    assert not selftest.judge_rate(10_000_000, back["goodput_bps"], "userspace", "b>a").ok


def test_selftest_jitter_check_fails_without_the_jitter_and_with_too_much(lab, tmp_path):
    for link, told, ok in ((("10ms", "0ms"), 0.003, False),     # jitter missing
                           (("10ms", "3ms"), 0.0, False),       # jitter nobody configured
                           (("10ms", "3ms"), 0.003, True)):
        imp = I.from_dict({"both": {"delay": link[0], "jitter": link[1]}})
        handle = emulator.start(lab, imp, tmp_path / f"jitter-{link[1]}.jsonl")
        try:
            rtt = selftest.measure_rtt(lab, selftest.PINGS)
        finally:
            stats = handle.stop()
        check = selftest.judge_jitter(told, told, 0.020, rtt["samples_s"])
        late = not stats["timing"]["reliable"]
        assert check.ok is ok or (late and check.late_explains), (link, told, check, stats)
