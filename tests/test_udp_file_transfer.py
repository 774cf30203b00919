"""The udp-file scenario (toolkit/scenarios/udp_file.py): a file as plain UDP datagrams.
The receiver keeps each piece at its place, stores the file only when every piece came and
the SHA-256 matches (never a file with holes), and reports the missing piece numbers.
Pure parts directly; both roles over loopback (no privileges), with datagrams the test
leaves out standing in for a lossy link."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit import wire
from toolkit.endpoints import control
from toolkit.endpoints.sessions import ProtocolError
from toolkit.scenarios.udp_file import Transfer

DATA = hashlib.shake_256(b"udp-file test").digest(10_500)     # 11 pieces of 1000, last 500


def _hello(data=DATA, piece=1000, name="f.bin", **over) -> dict:
    meta = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta.update(over)
    return control.hello("udp", "file", 7, file=meta, piece_bytes=piece,
                         pieces=-(-len(data) // piece) if piece else 0)


def _piece(i: int, data=DATA, piece=1000) -> bytes:
    return data[i * piece:(i + 1) * piece]


# ---- the receiver's bookkeeping ----

def test_pieces_land_at_their_place_whatever_the_order():
    t = Transfer(_hello(), 1 << 20)
    for i in reversed(range(11)):
        t.add(i, _piece(i))
    v = t.verdict()
    assert bytes(t.buf) == DATA
    assert (v["pieces"], v["pieces_missing"], v["missing_pieces"], v["hash_ok"]) == \
        (11, 0, "", True)


def test_missing_pieces_are_listed_and_the_hash_does_not_match():
    t = Transfer(_hello(), 1 << 20)
    for i in range(11):
        if i not in (2, 10):
            t.add(i, _piece(i))
    t.add(3, _piece(3))                                      # a duplicate
    v = t.verdict()
    assert (v["pieces_received"], v["pieces_missing"], v["missing_pieces"]) == (9, 2, "2,10")
    assert not v["hash_ok"] and v["sha256_received"] != v["sha256_announced"]
    # the holes are zeros in what the receiver holds
    assert bytes(t.buf[2000:3000]) == bytes(1000) and bytes(t.buf[10_000:]) == bytes(500)
    assert t.duplicates == 1
    # 10 datagrams: 9 pieces of 1000 and the duplicate; the 500-byte last piece is missing
    assert t.bytes == 10 * (wire.HEADER_LEN + 1000)


def test_a_datagram_that_is_no_piece_of_the_file_is_stray():
    t = Transfer(_hello(), 1 << 20)
    t.add(11, b"x" * 1000)          # past the last piece
    t.add(10, b"x" * 1000)          # the last piece is 500 bytes
    t.add(-1, b"x" * 1000)
    assert t.stray == 3 and t.verdict()["pieces_received"] == 0


@pytest.mark.parametrize("hello,match", [
    (_hello(name="etc/passwd"), "path separator"),
    (_hello(name=".hidden"), "starts with a dot"),
    (_hello(size=10 << 20), r"size 10485760 is not a count up to 1048576"),
    (_hello(piece=0), "piece_bytes 0"),
    (_hello(sha256="abc"), "sha256"),
    ({"type": "hello"}, "needs name, size and sha256"),
])
def test_a_bad_hello_is_refused(hello, match):
    with pytest.raises(ProtocolError, match=match):
        Transfer(hello, 1 << 20)


# ---- both roles over loopback ----

def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _labkit(*args) -> list[str]:
    return [sys.executable, "-m", "toolkit.cli", "scenario", "udp-file", *args]


def _server(tmp_path, port, *extra):
    recv = tmp_path / "recv"
    recv.mkdir(exist_ok=True)
    proc = subprocess.Popen(_labkit("server", "--proto", "udp", "-p", str(port),
                                    "--receive-dir", str(recv), "--json-file",
                                    str(tmp_path / "serve.json"), *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.startswith("Server listening"), line
    return proc, recv


def test_a_whole_file_is_stored_as_sent(tmp_path):
    src = tmp_path / "transfer.bin"
    src.write_bytes(DATA)
    port = _free_udp_port()
    proc, recv = _server(tmp_path, port, "-q")
    sent = subprocess.run(_labkit("client", "127.0.0.1", "--proto", "udp", "-p", str(port),
                                  "--file", str(src), "--piece", "1000", "--rate", "0",
                                  "--json-file", str(tmp_path / "send.json"), "-q"),
                          capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    assert proc.wait(timeout=30) == 0
    stored = recv / "transfer.bin"
    assert stored.read_bytes() == DATA
    assert stat_mode(stored) == 0o600
    end = json.loads((tmp_path / "serve.json").read_text())["end"]
    assert (end["stored"], end["hash_ok"], end["pieces"], end["pieces_missing"]) == \
        (True, True, 11, 0)
    send_end = json.loads((tmp_path / "send.json").read_text())["end"]
    assert send_end["datagrams"] == 11
    assert send_end["payload_bytes"] == len(DATA) + 11 * wire.HEADER_LEN


def stat_mode(p: Path) -> int:
    return os.stat(p).st_mode & 0o777


def test_missing_pieces_store_nothing_and_are_reported(tmp_path):
    """The datagrams of pieces 3 and 7 never come (as a lossy link would have it): the
    receiver says which, and the file with holes is not stored."""
    port = _free_udp_port()
    proc, recv = _server(tmp_path, port, "-q")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.send(control.encode(9, _hello()))
        for i in range(11):
            if i not in (3, 7):
                s.send(wire.frame(wire.Header(9, i, time.time_ns()), _piece(i)))
        s.send(control.encode(9, {"type": "end", "sent": 11}, seq=11))
    assert proc.wait(timeout=30) == 0
    assert list(recv.iterdir()) == []
    doc = json.loads((tmp_path / "serve.json").read_text())
    end = doc["end"]
    assert (end["stored"], end["hash_ok"], end["missing_pieces"], end["lost"]) == \
        (False, False, "3,7", 2)
    assert "2 of 11 pieces missing" in end["why_not_stored"]
    conn, = doc["connections"]
    assert (conn["packets"], conn["expected"], conn["lost"], conn["flow"]) == (9, 11, 2, 9)


def test_without_an_end_marker_the_receiver_judges_after_idle(tmp_path):
    port = _free_udp_port()
    proc, recv = _server(tmp_path, port, "-q", "--idle", "0.5")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.send(control.encode(9, _hello()))
        for i in range(10):                  # the last piece and the end marker lost
            s.send(wire.frame(wire.Header(9, i, time.time_ns()), _piece(i)))
    assert proc.wait(timeout=30) == 0
    end = json.loads((tmp_path / "serve.json").read_text())["end"]
    assert (end["ended"], end["missing_pieces"], end["stored"]) == ("idle", "10", False)


@pytest.mark.parametrize("role,args,message", [
    ("server", ["--proto", "tcp", "--receive-dir", "."], "this is a UDP file transfer"),
    ("server", ["--proto", "udp", "--receive-dir", "/nonexistent/x"],
     "--receive-dir /nonexistent/x: not a directory"),
    ("server", ["--proto", "udp", "--receive-dir", ".", "--limit", "lots"], "--limit lots"),
    ("client", ["127.0.0.1", "--proto", "udp", "--file", "/nonexistent/f"],
     "--file /nonexistent/f"),
    ("client", ["127.0.0.1", "--proto", "udp", "--file", __file__, "--piece", "0"],
     "--piece 0: expected 1 to"),
    ("client", ["127.0.0.1", "--proto", "udp", "--file", __file__, "--rate", "fast"],
     "--rate fast"),
])
def test_bad_options_exit_2_naming_the_option(tmp_path, role, args, message):
    r = subprocess.run(_labkit(role, "-p", str(_free_udp_port()), *args),
                       capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
