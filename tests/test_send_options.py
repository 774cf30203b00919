"""`labkit send`: an option read in another mode only is refused (exit 2, naming the option
and the mode), never accepted and ignored; where it applies it does what it says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


def send(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit.cli", "send", "127.0.0.1", "-p",
                           "5979", "-q", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60)


@pytest.mark.parametrize("args, message", [
    (["-k", "5"], "-k/--count: TCP counts transactions in rr and echo modes only; mode bulk"),
    (["--mode", "stream", "-k", "5"], "mode stream sends for -t seconds or -n bytes"),
    (["--mode", "rr", "-n", "1000"], "-n/--bytes: mode rr counts transactions"),
    (["--mode", "echo", "-n", "1000"], "-n/--bytes: mode echo counts transactions"),
    (["--tps", "10"], "--tps: applies to --mode rr only (this is mode bulk)"),
    (["--response-size", "64"], "--response-size: applies to --mode rr only (this is mode "
                                "bulk)"),
    (["--proto", "udp", "--response-size", "64"], "--response-size: applies to --mode rr"),
    (["--mode", "echo", "--response-size", "64"], "(this is mode echo)"),
])
def test_an_option_of_another_mode_is_refused(args, message):
    done = send(*args)
    assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    assert "Traceback" not in done.stderr


def test_count_and_tps_do_what_they_say_in_rr(tmp_path):
    report = tmp_path / "send.json"
    server = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "serve", "-p", "5979",
                               "-B", "127.0.0.1", "-1", "-q"], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert "listening" in server.stdout.readline()
        done = send("--mode", "rr", "-k", "6", "--tps", "20", "--response-size", "300",
                    "--json-file", str(report))
        assert done.returncode == 0, done.stderr
    finally:
        server.wait(20)
    end = json.loads(report.read_text())["end"]
    assert end["transactions"] == 6
    assert end["duration_s"] >= 5 / 20 * 0.9          # paced at 20 a second: 5 gaps
