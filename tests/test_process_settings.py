"""Importing toolkit changes nothing process-wide; the `labkit` command makes its own
settings (OpenBLAS threads, a frozen heap) at its entry point."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

PROBE = """
import gc, os, sys
sys.path.insert(0, {repo!r})
{body}
print(os.environ.get("OPENBLAS_NUM_THREADS"), gc.get_freeze_count() > 0)
"""


def _probe(body: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", PROBE.format(repo=str(REPO), body=body)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[-2]


def test_a_library_user_keeps_their_process_as_it_was(tmp_path):
    cap = REPO / "captures" / "01-handshake" / "a.pcapng.gz"
    got = _probe(f"import toolkit\na = toolkit.analyze({str(cap)!r})\nassert len(a.tcp)")
    assert got == "None False"


def test_the_command_sets_openblas_threads_and_freezes_the_heap(tmp_path):
    cap = REPO / "captures" / "01-handshake" / "a.pcapng.gz"
    got = _probe(f"from toolkit import cli\nassert cli.main(['analyze', {str(cap)!r}, "
                 f"'--format', 'json', '-o', {str(tmp_path / 'o.json')!r}]) == 0")
    assert got == "1 True"
