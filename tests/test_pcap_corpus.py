"""The reader on the real corpus: frame counts and TCP header fields equal tshark 4.0's.

The reference is ../shared/corpus/tshark/NAME.tsv (tshark 4.0.17, one row per frame). For
every TCP frame tshark shows, flags, raw sequence and acknowledgment numbers, tcp.len and
the source address must be ours; frames tshark shows without TCP must have no TCP here.
"""

from __future__ import annotations

import csv
import ipaddress
from pathlib import Path

import pytest

from toolkit.pcap import read_capture

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpus"
NAMES = sorted(p.name for p in (CORPUS / "files").iterdir()) if (CORPUS / "files").is_dir() \
    else []
DAMAGED = "sv_tls_der_corrupt_damaged.pcap"


def _corpus() -> Path:
    if not (CORPUS / "files").is_dir():
        pytest.skip(f"conformance corpus not found at {CORPUS} (it sits beside the repo)")
    return CORPUS


def _tsv(name: str) -> list[dict]:
    with open(_corpus() / "tshark" / (name.split(".")[0] + ".tsv"), newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _address(hi: int, lo: int) -> str:
    a = ipaddress.IPv6Address((int(hi) << 64) | int(lo))
    return str(a.ipv4_mapped or a)


def _mismatches(cap, rows) -> list:
    c = cap.cols
    bad = []
    for r in rows:
        i = int(r["frame.number"]) - 1
        if not r["tcp.flags"]:
            if c["l4"][i] == 6:
                bad.append((i + 1, "TCP here, not in tshark"))
            continue
        want = (int(r["tcp.flags"], 16), int(r["tcp.seq_raw"]), int(r["tcp.ack_raw"]),
                int(r["tcp.len"]), (r["ip.src"] or r["ipv6.src"]).split(",")[0])
        got = (int(c["tcp_flags"][i]), int(c["seq"][i]), int(c["ack"][i]),
               int(c["paylen"][i]), _address(c["src_hi"][i], c["src_lo"][i]))
        if c["l4"][i] != 6 or want != got:
            bad.append((i + 1, want, got))
    return bad


@pytest.mark.parametrize("name", NAMES)
def test_tcp_fields_equal_tshark(name):
    rows = _tsv(name)
    cap = read_capture(_corpus() / "files" / name)
    assert len(cap) == len(rows), "frame count differs from tshark's"
    assert (cap.error is not None) == (name == DAMAGED), cap.error
    bad = _mismatches(cap, rows)
    assert not bad, f"{len(bad)} frames differ (frame, tshark, ours): {bad[:5]}"


def test_damaged_file_keeps_the_frames_before_the_damage():
    cap = read_capture(_corpus() / "files" / DAMAGED)
    rows = _tsv(DAMAGED)
    assert len(cap) == len(rows) == 6
    # the 7th record header starts at byte 5035 and claims 4325376 bytes (tshark: "pcap:
    # File has 4325376-byte packet, bigger than maximum of 262144")
    assert cap.error.offset == 5035
    assert str(cap.error).endswith(": at byte 5035: packet record claims 4325376 bytes, "
                                   "more than the 262144 allowed")
    assert not _mismatches(cap, rows)


def test_gzip_corpus_file_reads_the_same(tmp_path):
    import gzip
    src = _corpus() / "files" / "cs_ppa_email_troubles.pcap"
    gz = tmp_path / "x.pcap.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    a, b = read_capture(src), read_capture(gz)
    assert b.compressed and not a.compressed and len(a) == len(b)
    for k in a.cols:
        assert (a.cols[k] == b.cols[k]).all(), k
