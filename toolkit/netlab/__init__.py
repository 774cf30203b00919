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

from .executor import ApplyError, Executor
from .impairment import Impairment, SpecError
from .lab import Interrupted, Lab, up
from .plan import Plan, Step
from .rootless import PrivilegeError, detect
from .topology import Topology, TopologyError, default_topology

__all__ = ["ApplyError", "Executor", "Impairment", "Interrupted", "Lab", "Plan",
           "PrivilegeError", "SpecError", "Step", "Topology", "TopologyError", "default_topology",
           "detect", "up"]
