"""`labkit run` as an ordinary user: the whole lab (user namespace, veths, the userspace
link engine, dumpcap in the namespace, the endpoints, the analysis) without root.

The suite's own interpreter may live where an ordinary user cannot read it (a pyenv under
/root), so the test gives user nobody a venv of its own, made from the system python3 and
the wheels this venv was installed from (downloaded once into a folder nobody can read; pip
takes them from its cache), and runs this checkout's toolkit with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, as_nobody_or_skip

pytestmark = pytest.mark.root


def _as_nobody(*argv, timeout=300, env=()) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "nobody", "--", "env", *env, *argv],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def nobody_python(tmp_path_factory):
    system_python = as_nobody_or_skip()
    home = tmp_path_factory.mktemp("nobody")
    os.chmod(home, 0o777)
    for parent in home.parents:                  # pytest's tmp folders are 0700
        if str(parent).startswith("/tmp/pytest-of-"):
            os.chmod(parent, 0o755)
    if _as_nobody("test", "-r", str(REPO / "toolkit" / "cli.py")).returncode != 0:
        pytest.skip(f"user nobody cannot read this checkout ({REPO})")
    wheels = home / "wheels"
    wheels.mkdir()
    req = wheels / "requirements.txt"
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    req.write_text("".join(line + "\n" for line in frozen.splitlines()
                           if line and not line.startswith(("-e", "labkit"))))
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels),
                          "-r", str(req), "--only-binary", ":all:"],
                         capture_output=True, text=True, timeout=600)
    if got.returncode != 0:
        pytest.skip(f"the wheels of this venv cannot be had for user nobody: "
                    f"{got.stderr.strip()[-300:]}")
    subprocess.run(["chmod", "-R", "a+rX", str(wheels)], check=True)
    venv = home / "venv"
    made = _as_nobody(system_python, "-m", "venv", str(venv), env=[f"HOME={home}"])
    if made.returncode != 0:
        pytest.skip(f"the system python cannot make a venv: {made.stderr.strip()[-300:]}")
    done = _as_nobody(str(venv / "bin" / "pip"), "install", "-q", "--no-index",
                      "--find-links", str(wheels), "-r", str(req), env=[f"HOME={home}"],
                      timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return home, venv / "bin" / "python"


def test_the_loss_lab_runs_as_an_ordinary_user(nobody_python):
    home, python = nobody_python
    out = home / "run"
    done = _as_nobody(str(python), "-m", "toolkit.cli", "run", "04-loss", "--seed", "7",
                      "--out", str(out), env=[f"HOME={home}", f"PYTHONPATH={REPO}"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    doc = json.loads((out / "run.json").read_text())
    assert doc["environment"]["privilege"]["mode"] == "rootless"
    assert doc["status"] == "complete"
    assert doc["captures"]["r-b"]["backend"] in ("dumpcap", "scapy")
    assert doc["reconciliation"]["unexplained"] == 0
    assert {e["status"] for e in doc["expectations"]} <= {"pass", "unreliable"}
    assert os.stat(out / "a.pcapng").st_uid != 0           # written by nobody, not root
