"""`labkit scenario NAME ROLE` imports only NAME's module: a lab starts many scenario
processes at once, and importing every scenario (numpy, scapy) cost each a few tenths of
a second of CPU. --list and help still show every scenario, described from its docstring
without importing it."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO
from toolkit import scenarios

PROBE = """
import sys
sys.argv = ["/x/bin/labkit", "scenario", "backlog", "client", "--help"]
from toolkit import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
mods = [m for m in sys.modules if m.startswith("toolkit.scenarios.") or m == "numpy"]
print(sorted(mods))
"""


def test_running_one_scenario_imports_only_its_module():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last == "['toolkit.scenarios.backlog', 'toolkit.scenarios.base']", last


def test_the_list_still_names_every_scenario_and_its_roles():
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "scenario", "--list"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in scenarios.names():
        assert name in done.stdout
        assert scenarios.describe(name) in done.stdout
        for role in scenarios.roles(name):
            assert role in done.stdout


def test_describe_reads_the_docstring_without_importing():
    import importlib
    for name in scenarios.names():
        mod = importlib.import_module(f"toolkit.scenarios.{scenarios.REGISTRY[name]}")
        assert scenarios.describe(name) == mod.__doc__.strip().splitlines()[0]


def test_other_commands_import_no_scenario():
    probe = PROBE.replace('"scenario", "backlog", "client", "--help"', '"send", "--help"')
    probe = probe.replace('sys.argv = ["labkit"', 'sys.argv = ["/x/bin/labkit"')
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
