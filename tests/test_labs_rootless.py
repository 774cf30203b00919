"""`labkit run` as an ordinary user: the whole lab (user namespace, veths, the userspace
link engine, dumpcap in the namespace, the endpoints, the analysis) without root.

The suite's own interpreter may live where an ordinary user cannot read it (a pyenv under
/root), so the test runs this checkout's toolkit with user nobody's own venv (conftest's
nobody_python)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import as_nobody

pytestmark = pytest.mark.root


def test_the_loss_lab_runs_as_an_ordinary_user(nobody_python):
    out = nobody_python.home / "run"
    done = as_nobody(str(nobody_python.python), "-m", "toolkit.cli", "run", "04-loss",
                     "--seed", "7", "--out", str(out), env=nobody_python.env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    doc = json.loads((out / "run.json").read_text())
    assert doc["environment"]["privilege"]["mode"] == "rootless"
    assert doc["status"] == "complete"
    assert doc["captures"]["r-b"]["backend"] in ("dumpcap", "scapy")
    assert doc["reconciliation"]["unexplained"] == 0
    assert {e["status"] for e in doc["expectations"]} <= {"pass", "unreliable"}
    assert os.stat(out / "a.pcapng").st_uid != 0           # written by nobody, not root
