"""Either engine behind one face: start it on a lab, stop it for its statistics.

    eng = engine.start(lab, impairment, choice, netem, ledger_path)
    ...                                   # traffic
    stats = eng.stop()                    # idempotent; the lab's teardown stops it too

The userspace engine's Handle (emulator.py) already stops this way; KernelEngine gives the
kernel engine (kernel.py: tbf, nftables numgen, netem where there is one) the same shape,
reading what the kernel counted before it removes its rules.
"""

from __future__ import annotations

from pathlib import Path

from . import kernel
from .executor import Executor
from .impairment import DIRECTIONS, EngineChoice, Impairment


class KernelEngine:
    def __init__(self, lab, imp: Impairment, netem: bool):
        self.lab, self.run_id = lab, lab.run_id
        self.ex = Executor(prefix=lab.executor.prefix)
        self.ex.apply(kernel.plan_kernel(imp, lab.run_id, lab.netns("r"), have_netem=netem))
        self.stats: dict | None = None
        lab.push_undo(self.stop, "remove the kernel engine's qdiscs and nftables rules")

    def stop(self) -> dict:
        if self.stats is not None:
            return self.stats
        table = self.lab.exec("r", ["nft", "-j", "list", "table", "inet",
                                    kernel.table_name(self.run_id)])
        drops = kernel.parse_nft_drops(table.stdout) if table.returncode == 0 else {}
        qdiscs = {d: kernel.parse_tc_stats(self.lab.exec(
            "r", ["tc", "-s", "-j", "qdisc", "show", "dev", kernel.egress(d)]).stdout)
            for d in DIRECTIONS}
        errors = self.ex.unwind()
        self.stats = {"engine": "kernel", "loss_drops": drops, "qdiscs": qdiscs,
                      "errors": errors}
        return self.stats


def have_netem(lab) -> bool:
    """Try it: add a netem qdisc on the router's loopback, and remove it."""
    done = lab.exec("r", ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    if done.returncode != 0:
        return False
    lab.exec("r", ["tc", "qdisc", "del", "dev", "lo", "root"])
    return True


def start(lab, imp: Impairment, choice: EngineChoice, netem: bool, ledger: Path):
    if choice.engine == "kernel":
        return KernelEngine(lab, imp, netem)
    from . import emulator
    return emulator.start(lab, imp, ledger)
