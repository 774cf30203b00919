"""A process that has to compile the analyzer's kernels says so at a terminal, once; one
that loads them from numba's cache says nothing, and nothing goes into a pipe."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# two kernels of a module of their own, so that this test compiles something whatever the
# state of the analyzer's cache
MODULE = textwrap.dedent("""
    from toolkit.pcap.jit import kernel

    @kernel
    def twice(x):
        return 2 * x

    @kernel
    def thrice(x):
        return 3 * x

    print(twice(21), thrice(14), flush=True)
""")


def _run(folder: Path, tty: bool) -> tuple[str, str]:
    """Run the module in a child; its stderr a pseudo-terminal or a pipe."""
    env = dict(os.environ, PYTHONPATH=f"{folder}{os.pathsep}{REPO}")
    cmd = [sys.executable, "-c", "import tiny_kernels"]
    if not tty:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stdout, p.stderr
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        err = b""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:            # the child closed the terminal (Linux: EIO)
                    break
                if not chunk:
                    break
                err += chunk
            elif p.poll() is not None:
                break
        out = p.communicate(timeout=60)[0]
        assert p.returncode == 0, err
        return out, err.decode()
    finally:
        os.close(master)


def test_compiling_is_announced_once_at_a_terminal_and_loading_is_silent(tmp_path):
    (tmp_path / "tiny_kernels.py").write_text(MODULE)
    out, err = _run(tmp_path, tty=True)                  # nothing cached: two compiles
    assert out.strip() == "42 42"
    assert err.count("labkit: compiling the analyzer's kernels") == 1, err
    out, err = _run(tmp_path, tty=True)                  # both from the cache
    assert out.strip() == "42 42" and "compiling" not in err, err

    (tmp_path / "tiny_kernels.py").write_text(MODULE.replace("2 * x", "x + x"))
    os.utime(tmp_path / "tiny_kernels.py", (time.time() + 5, time.time() + 5))
    out, err = _run(tmp_path, tty=False)                 # compiles again, into a pipe
    assert out.strip() == "42 42" and err == "", err
