"""The labkit command: outputs, and clear errors (exit 2, no traceback) on bad input."""

from __future__ import annotations

import csv
import errno
import io
import json
import os

import pytest

import pcapbuild as B
from conftest import corpus_file
from toolkit.analysis.verdicts import VERDICTS
from toolkit.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.fixture
def small(tmp_path):
    frames = [B.ether(B.ipv4(B.tcp(flags=0x02, seq=100))),
              B.ether(B.ipv4(B.tcp(sport=80, dport=1234, flags=0x12, seq=500, ack=101),
                             src="10.0.0.2", dst="10.0.0.1")),
              B.ether(B.ipv4(B.tcp(flags=0x10, seq=101, ack=501)))]
    p = tmp_path / "small.pcap"
    p.write_bytes(B.pcap(frames))
    return p


def test_table(capsys, small):
    rc, out, _ = run(capsys, "analyze", str(small))
    assert rc == 0 and "10.0.0.1:1234" in out and "10.0.0.2:80" in out and "ShA" in out


def test_json(capsys, small):
    rc, out, _ = run(capsys, "analyze", "--format", "json", str(small))
    doc = json.loads(out)
    assert rc == 0 and doc["format_version"] == 2
    assert doc["tcp_conversations"][0]["conn_state"] == "S1"
    assert doc["tcp_conversations"][0]["handshake_rtt_s"] == pytest.approx(0.002)


def test_packets_csv_columns(capsys, small):
    rc, out, _ = run(capsys, "analyze", "--packets", "--format", "csv", str(small))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and len(rows) == 3
    for col in ["frame", "tcp_stream", "udp_stream", *VERDICTS]:
        assert col in rows[0], col
    assert [r["tcp_stream"] for r in rows] == ["0", "0", "0"]


def test_parquet_needs_output_and_writes(capsys, small, tmp_path):
    rc, _, err = run(capsys, "analyze", "--format", "parquet", str(small))
    assert rc == 2 and "--output" in err
    out = tmp_path / "tables"
    rc, _, _ = run(capsys, "analyze", "--format", "parquet", "--packets", "-o", str(out),
                   str(small))
    import pandas as pd
    assert rc == 0 and len(pd.read_parquet(out / "packets.parquet")) == 3


@pytest.mark.parametrize("make,words", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_text("hello"), "not a pcap or pcapng file"),
    (lambda p: p.write_bytes(b""), "empty file"),
])
def test_bad_input(capsys, tmp_path, make, words):
    p = tmp_path / "bad.pcap"
    make(p)
    rc, _, err = run(capsys, "analyze", str(p))
    assert rc == 2 and words in err and str(p) in err


def test_damaged_file_reports_offset_after_results(capsys):
    path = corpus_file("sv_tls_der_corrupt_damaged")
    rc, out, err = run(capsys, "analyze", str(path))
    assert rc == 2
    assert "TCP conversations" in out                      # results for what was read
    assert "at byte 5035" in err and "6 frames before it" in err


def test_unknown_stream(capsys, small):
    rc, _, err = run(capsys, "analyze", "--stream", "7", str(small))
    assert rc == 2 and "--stream 7" in err


def test_output_file_is_written_whole(capsys, small, tmp_path):
    out = tmp_path / "r.json"
    rc, _, _ = run(capsys, "analyze", "--format", "json", "-o", str(out), str(small))
    assert rc == 0 and json.loads(out.read_text())["summary"]["frames"] == 3
    assert not list(tmp_path.glob("*.part"))


# ---- the progress bar: on stderr when it is a terminal, and only then ----


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_and_clears_its_line(monkeypatch):
    from toolkit.cli import Progress

    clock = iter([1000.0, 1000.05, 1000.06, 1000.5, 1000.55]).__next__
    monkeypatch.setattr("toolkit.cli.time.monotonic", clock)
    term = _FakeTerminal()
    bar = Progress("reading x", stream=term, min_bytes=100)   # starts at t=1000.0
    bar(10, 100)            # t+0.05: drawn (the first)
    bar(20, 100)            # t+0.06: within 0.1 s of the last, not drawn
    bar(60, 100)            # t+0.5: drawn
    bar(100, 100)           # t+0.55: the end is always drawn
    bar.close()
    frames = term.getvalue().split("\r")
    assert frames[0] == ""
    drawn = [f for f in frames[1:] if f.strip()]
    assert [f.split("]")[1].split("%")[0].strip() for f in drawn] == ["10.0", "60.0", "100.0"]
    assert drawn[-1].startswith("reading x: [" + "#" * 30 + "]")
    assert frames[-1] == "" and frames[-2].strip() == ""     # the line is blanked at the end


def test_progress_bar_silent_when_not_a_terminal_or_a_small_file():
    from toolkit.cli import Progress

    pipe = io.StringIO()                    # isatty() is False
    bar = Progress("reading x", stream=pipe, min_bytes=0)
    bar(50, 100)
    bar(100, 100)
    bar.close()
    term = _FakeTerminal()
    small = Progress("reading x", stream=term, min_bytes=1000)
    small(100, 100)
    small.close()
    assert pipe.getvalue() == "" and term.getvalue() == ""


def _big_capture(path, min_bytes: int) -> int:
    """A pcap of identical TCP segments, at least min_bytes long; returns the frames."""
    import struct

    frame = B.ether(B.ipv4(B.tcp(flags=0x10, payload=b"x" * 200)))
    record = struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame)) + frame
    n = min_bytes // len(record) + 1
    path.write_bytes(B.pcap([]) + record * n)
    return n


def _labkit(argv, stderr_fd):
    import subprocess
    import sys

    code = "import sys; from toolkit.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE,
                            stderr=stderr_fd, stdin=subprocess.DEVNULL)


def test_progress_bar_on_a_pty_through_the_command(tmp_path):
    """`labkit analyze` with stderr on a terminal (a pty) draws the bar there; stdout
    carries the result alone."""
    import os
    import select

    from toolkit.cli import Progress

    path = tmp_path / "big.pcap"
    frames = _big_capture(path, Progress("x", io.StringIO()).min_bytes + (1 << 20))
    master, slave = os.openpty()
    try:
        p = _labkit(["analyze", "--format", "json", str(path)], slave)
        os.close(slave)
        slave = -1
        out = p.stdout.read()
        p.wait(120)
        err = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:                 # EIO: the child's side is closed
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert p.returncode == 0
    assert json.loads(out)["summary"]["frames"] == frames
    text = err.decode()
    assert f"\rreading {path.name}: [" in text and "100.0%" in text and "MB/s" in text
    assert text.endswith("\r" + " " * 70 + "\r")       # the bar's line is cleared


def test_no_progress_bar_when_stderr_is_a_pipe(tmp_path):
    import subprocess

    from toolkit.cli import Progress

    path = tmp_path / "big.pcap"
    _big_capture(path, Progress("x", io.StringIO()).min_bytes + (1 << 20))
    p = _labkit(["analyze", "--format", "json", str(path)], subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and json.loads(out)["summary"]["frames"] > 0
    assert err == b""


@pytest.mark.parametrize("fmt,packets,make,words", [
    ("parquet", False, "file", "exists and is not a folder"),
    ("parquet", True, "file", "exists and is not a folder"),
    ("csv", True, "dir", "is a folder"),
    ("json", True, "dir", "is a folder"),
    ("json", False, "dir", "is a folder"),
])
def test_an_output_of_the_wrong_kind_is_refused_before_anything_is_written(
        capsys, small, tmp_path, fmt, packets, make, words):
    out = tmp_path / "out"
    if make == "file":
        out.write_text("mine")
    else:
        out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = run(capsys, "analyze", str(small), "--format", fmt, "-o", str(out),
                     *(["--packets"] if packets else []))
    assert rc == 2 and f"--output {out}: {words}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before      # no .part left
    assert out.is_dir() or out.read_text() == "mine"


def test_a_path_the_command_cannot_make_is_said_with_its_path(capsys, small, tmp_path):
    """Any file system refusal (here a folder inside a file) is one line naming the path,
    exit 2, never a traceback."""
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "tables"
    rc, _, err = run(capsys, "analyze", str(small), "--format", "parquet", "-o", str(target))
    assert rc == 2 and f"{target}: Not a directory" in err


@pytest.mark.parametrize("argv,words", [
    (["serve", "-p", "99999", "-t", "1"], "-p/--port 99999: a port is 0..65535"),
    (["send", "127.0.0.1", "-p", "99999", "-t", "1"], "-p/--port 99999: a port is 1..65535"),
    (["send", "127.0.0.1", "-p", "0", "-t", "1"], "-p/--port 0: a port is 1..65535"),
])
def test_a_port_out_of_range_is_refused(capsys, argv, words):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and words in err


def test_a_run_folder_that_cannot_be_written_is_refused_before_the_lab_runs(capsys,
                                                                          tmp_path):
    (tmp_path / "afile").write_text("")
    for argv in (["run", "01-handshake", "--out"], ["run", "01-handshake", "--save"],
                 ["demo", "--out"]):
        rc, _, err = run(capsys, *argv, str(tmp_path / "afile" / "x"))
        assert rc == 2 and f"{argv[-1]} {tmp_path / 'afile' / 'x'}: cannot write there" in err
    assert not (tmp_path / "afile" / "x").exists()


@pytest.mark.parametrize("code,status", [(errno.EACCES, 2), (errno.ENOSPC, 1)])
def test_a_path_refused_is_bad_input_and_a_machine_failure_is_not(capsys, monkeypatch, small,
                                                                 code, status):
    import toolkit.cli as cli

    def failing(args):
        raise OSError(code, os.strerror(code), "/somewhere/out")

    monkeypatch.setattr(cli, "cmd_analyze", failing)
    rc, _, err = run(capsys, "analyze", str(small))
    assert rc == status and f"/somewhere/out: {os.strerror(code)}" in err


def test_conversation_csv_keeps_counts_whole_where_tcp_and_udp_rows_share_it(capsys, tmp_path):
    """TCP and UDP conversations in one CSV: a column only one protocol has is empty in the
    other's rows, and its counts stay whole numbers (not 3.0)."""
    frames = [B.ether(B.ipv4(B.tcp(flags=0x02, seq=100))),
              B.ether(B.ipv4(B.tcp(sport=80, dport=1234, flags=0x12, seq=500, ack=101),
                             src="10.0.0.2", dst="10.0.0.1")),
              B.ether(B.ipv4(B.tcp(flags=0x10, seq=101, ack=501))),
              B.ether(B.ipv4(B.udp(payload=b"hello"), proto=17))]
    p = tmp_path / "mixed.pcap"
    p.write_bytes(B.pcap(frames))
    rc, out, _ = run(capsys, "analyze", str(p), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and sorted(r["proto"] for r in rows) == ["tcp", "udp"]
    tcp, udp = sorted(rows, key=lambda r: r["proto"])
    assert (tcp["packets_a_to_b"], tcp["isn_a"], tcp["retransmissions"]) == ("2", "100", "0")
    assert (udp["datagrams"], udp["bytes"]) == ("1", "47")
    assert tcp["datagrams"] == udp["packets_a_to_b"] == ""


@pytest.mark.parametrize("argv,usage", [
    (["analyze", "x.pcap", "--bogus"], "usage: labkit analyze"),
    (["send", "127.0.0.1", "--frobnicate"], "usage: labkit send"),
    (["--bogus"], "usage: labkit [-h]"),
])
def test_an_unknown_option_is_refused_with_its_commands_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(usage)
    assert f"unrecognized arguments: {argv[-1]}" in err
