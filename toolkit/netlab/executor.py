"""The one place that runs a Plan against the kernel, keeping an undo stack.

Each step that succeeds pushes its undo before the next step runs, so whatever point a
failure, Ctrl-C or SIGTERM interrupts, `unwind` removes exactly what exists. Undo runs in
reverse order, never stops at an error (it collects them), and is idempotent.

`prefix` is prepended to every command: empty as root, or the nsenter argv that enters
the kit's own user and mount namespaces when rootless (see rootless.py).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Callable

from .plan import Plan, Step


class ApplyError(RuntimeError):
    """A step of a plan failed; says which step, why it was there, and what the tool said."""

    def __init__(self, step: Step, returncode: int, stderr: str):
        self.step, self.returncode, self.stderr = step, returncode, stderr.strip()
        why = f" ({step.why})" if step.why else ""
        super().__init__(f"`{step.render()}`{why} failed with status {returncode}: "
                         f"{self.stderr or 'no message'}")


@dataclass
class Undo:
    action: Step | Callable[[], object]
    why: str = ""


@dataclass
class Executor:
    prefix: tuple[str, ...] = ()
    timeout: float = 20.0
    undos: list[Undo] = field(default_factory=list)
    log: list[str] = field(default_factory=list)     # every command run, for run.json

    def argv(self, step: Step) -> list[str]:
        inner = list(step.argv)
        if step.netns:
            inner = ["ip", "netns", "exec", step.netns, *inner]
        return [*self.prefix, *inner]

    def run(self, step: Step, check: bool = True) -> subprocess.CompletedProcess:
        argv = self.argv(step)
        self.log.append(step.render())
        try:
            done = subprocess.run(argv, input=step.stdin, capture_output=True, text=True,
                                  timeout=self.timeout)
        except FileNotFoundError:
            raise ApplyError(step, 127, f"{argv[0]}: command not found (install "
                             f"{_PACKAGE.get(argv[0], 'it')})") from None
        except subprocess.TimeoutExpired:
            raise ApplyError(step, -1, f"no answer within {self.timeout:g} s") from None
        if check and done.returncode != 0:
            raise ApplyError(step, done.returncode, done.stderr or done.stdout)
        return done

    def apply(self, plan: Plan | list[Step]) -> None:
        for step in plan:
            self.run(step)
            if step.undo:
                self.undos.append(Undo(Step(step.undo, netns=step.netns,
                                            why=f"undo: {step.why}"), step.why))

    def push_undo(self, action: Step | Callable[[], object] | list[str] | tuple[str, ...],
                  why: str = "") -> None:
        if isinstance(action, (list, tuple)):
            action = Step(tuple(action), why=why)
        self.undos.append(Undo(action, why))

    def unwind(self) -> list[str]:
        """Run every undo, newest first; returns the errors (an empty list when clean)."""
        errors = []
        while self.undos:
            undo = self.undos.pop()
            try:
                if isinstance(undo.action, Step):
                    self.run(undo.action)
                else:
                    undo.action()
            except Exception as e:      # keep going: every later undo must still run
                errors.append(f"{undo.why or 'undo'}: {e}")
        return errors


_PACKAGE = {"ip": "iproute2", "tc": "iproute2", "ethtool": "ethtool", "nft": "nftables",
            "sysctl": "procps", "nsenter": "util-linux", "unshare": "util-linux"}
