"""The labkit command: outputs, and clear errors (exit 2, no traceback) on bad input."""

from __future__ import annotations

import csv
import io
import json

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
    assert rc == 0 and doc["format_version"] == 1
    assert doc["tcp_conversations"][0]["conn_state"] == "S1"
    assert doc["tcp_conversations"][0]["handshake_rtt_ms"] == pytest.approx(2.0)


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
