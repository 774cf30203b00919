"""Where `toolkit` is importable from, for child processes that import it by module name
(`python -m toolkit.netlab.forwarder`, the scapy capture backend) wherever an argv prefix
(`ip netns exec`, nsenter into a rootless lab) takes them, installed or not. Stdlib only."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with PACKAGE_ROOT first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env
