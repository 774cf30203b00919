"""What the option walks share (test_cli_options_walk.py, test_cli_options_walk_others.py):
a parser's options, each by its longest name, and the check that every test a WORKS table
names exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

TESTS = Path(__file__).parent


class Trap(Exception):
    """An option was accepted: the command went on to its heavy part (the network, the lab
    runner, ...), which the walk replaced by a trap."""


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]


def name(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


def missing_tests(works: dict[str, dict[str, list[tuple[set, str]]]]) -> list[str]:
    """Every "FILE::TEST" a WORKS table ({command: {option: [(modes, ref)]}}) names that
    does not exist."""
    missing = []
    for command, table in works.items():
        for option, entries in table.items():
            for _, ref in entries:
                file, test = ref.split("::")
                if not re.search(rf"^def {test}\(", (TESTS / file).read_text(), re.M):
                    missing.append(f"{command} {option}: {ref}")
    return missing


def server_side(port: int, peer: tuple, wait_s: float = 0.0):
    """This process's own end of the connection to `port` from `peer` (a server running in
    this process: a thread's, an in-process model's), as a socket of its own (a dup: close
    it). Waits up to `wait_s` for it to be accepted."""
    import os
    import socket
    import time

    deadline = time.monotonic() + wait_s
    while True:
        for fd in map(int, os.listdir("/proc/self/fd")):
            try:
                dup = os.dup(fd)
            except OSError:
                continue                        # gone since the listing
            try:
                s = socket.socket(fileno=dup)
            except OSError:
                os.close(dup)                   # not a socket
                continue
            try:
                if s.family == socket.AF_INET and s.type == socket.SOCK_STREAM and \
                        s.getsockname()[1] == port and s.getpeername() == peer:
                    return s
            except OSError:
                pass
            s.close()
        if time.monotonic() >= deadline:
            raise AssertionError("the server's end of the connection is not in this process")
        time.sleep(0.02)


def run_trapped(main, argv: list[str]) -> tuple[int | str, str]:
    """main(argv) in this process: ("accepted" when it sprang a Trap, else its exit
    status; what it wrote to stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except Trap:
            code = "accepted"
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()
