"""Shared fixtures: the conformance corpus beside the repository, tool probes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_or_skip() -> Path:
    if not (CORPUS / "files").is_dir():
        pytest.skip(f"conformance corpus not found at {CORPUS} (it sits beside the repo in CI)")
    return CORPUS


def corpus_names() -> list[str]:
    if not (CORPUS / "files").is_dir():
        return []
    return sorted(p.name.split(".")[0] for p in (CORPUS / "files").iterdir())


def corpus_file(name: str) -> Path:
    corpus_or_skip()
    matches = sorted((CORPUS / "files").glob(name + ".*"))
    assert matches, f"no corpus file for {name}"
    return matches[0]


def tshark_or_skip() -> str:
    exe = shutil.which("tshark")
    if not exe:
        pytest.skip("tshark is not installed (make test installs it when run as root)")
    return exe


def is_root() -> bool:
    return os.geteuid() == 0
