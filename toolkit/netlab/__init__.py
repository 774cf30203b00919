"""The lab network: hosts in network namespaces, a router between them, an emulated link.

    from toolkit import netlab
    with netlab.up(netlab.default_topology()) as lab:       # root, or rootless
        lab.exec("a", ["ping", "-c1", lab.addr("b")])

Describe, plan, apply (ARCHITECTURE decision 4): topology.py and impairment.py are plain
data; build.py and kernel.py turn them into Plans of commands (plan.py) without touching
the kernel; executor.py applies a plan and keeps the undo stack; lab.py guarantees the
teardown; rootless.py gets the privileges; registry.py lets `labkit clean` tell a dead
run's leftovers from a live run's namespaces. Stdlib only, so it also runs under a bare
python3 (the rootless tests use that).
"""

import importlib

# Loaded on first use (PEP 562), so that reading a lab spec or a ledger (impairment,
# topology, units, ledger) never imports the parts that drive Linux namespaces: `labkit
# check` and the notebooks run where the wheels install, macOS and Windows included.
_WHERE = {"ApplyError": "executor", "Executor": "executor", "Impairment": "impairment",
          "SpecError": "impairment", "Interrupted": "lab", "Lab": "lab", "up": "lab",
          "Plan": "plan", "Step": "plan", "PrivilegeError": "rootless", "detect": "rootless",
          "Topology": "topology", "TopologyError": "topology",
          "default_topology": "topology"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
