"""A running lab network, and `up()`, which builds one and always tears it down.

    with netlab.up(netlab.default_topology()) as lab:
        lab.exec("a", ["ping", "-c1", lab.addr("b")])

Teardown runs on every exit path: normal end, exception, Ctrl-C, and SIGTERM/SIGHUP
(turned into an exception in the main thread while the lab is up, so the `finally` runs).
While tearing down, SIGINT and SIGTERM are held back: a second Ctrl-C cannot cut cleanup
short. Only SIGKILL can; then `labkit clean` removes what is left (registry.py), and a
rootless run leaves nothing at all (rootless.py).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from . import registry
from .build import plan_topology
from .executor import Executor
from .plan import Step
from .rootless import Holder, Privilege, detect
from .topology import ROUTER, Names, Topology, iface


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived while a lab was up (BaseException, like KeyboardInterrupt,
    so `except Exception` in user code does not swallow it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@dataclass
class Lab:
    topology: Topology
    names: Names
    privilege: Privilege
    executor: Executor
    holder: Holder | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    teardown_errors: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.names.run_id

    def netns(self, node: str) -> str:
        if node not in self.topology.names:
            known = ", ".join(self.topology.names)
            raise KeyError(f"no host {node!r} in this lab (hosts: {known})")
        return self.names.netns(node)

    def iface(self, node: str, peer: str) -> str:
        self._link_of(node, peer)
        return iface(node, peer)

    def addr(self, node: str, family: int = 4, toward: str | None = None) -> str:
        """An end host's address; for the router, its address on the link toward `toward`
        (default: the first host's link)."""
        if node == ROUTER:
            link = self.topology.link(toward or self.topology.host_names[0])
            return link.addr(True, family)
        return self.topology.link(node).addr(False, family)

    def mac(self, node: str, peer: str) -> str:
        link = self._link_of(node, peer)
        return link.mac(node == ROUTER)

    def _link_of(self, node: str, peer: str):
        if ROUTER not in (node, peer) or node == peer:
            raise KeyError(f"no link {node}-{peer}: every link joins the router "
                           f"{ROUTER!r} and one host")
        return self.topology.link(peer if node == ROUTER else node)

    def prefix(self, node: str) -> list[str]:
        """The argv prefix that runs a command inside node's namespace."""
        return [*self.executor.prefix, "ip", "netns", "exec", self.netns(node)]

    def exec(self, node: str, argv: list[str], *, timeout: float = 30.0, check: bool = False,
             input: str | None = None, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(node), *argv], capture_output=True, text=True,
                              timeout=timeout, check=check, input=input, **kwargs)

    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """A process inside node's namespace, stopped (TERM, wait, KILL) at teardown."""
        proc = subprocess.Popen([*self.prefix(node), *argv], **kwargs)
        self.processes.append(proc)
        return proc

    def apply(self, steps) -> None:
        """Apply more plan steps (e.g. an impairment), their undos joining the stack."""
        self.executor.apply(steps)

    def push_undo(self, action, why: str = "") -> None:
        self.executor.push_undo(action, why)

    def run_step(self, step: Step, check: bool = True) -> subprocess.CompletedProcess:
        return self.executor.run(step, check)

    def describe(self) -> dict:
        """For run.json: names, addresses, privilege mode, timings."""
        return {
            "run_id": self.run_id, "privilege": self.privilege.as_dict(),
            "netns": {n: self.netns(n) for n in self.topology.names},
            "links": [{"host": link.host, "router_iface": iface(ROUTER, link.host),
                       "host_iface": iface(link.host, ROUTER), "mtu": link.mtu,
                       "subnet4": link.subnet4, "subnet6": link.subnet6}
                      for link in self.topology.links],
            "offloads": self.topology.offloads, "forwarding": self.topology.forwarding,
            "timings_s": dict(self.timings),
        }

    def _stop_processes(self, grace: float = 2.0) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.terminate()
        deadline = time.monotonic() + grace
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()


@contextlib.contextmanager
def signals_raise():
    """While the lab is up, SIGTERM and SIGHUP raise Interrupted in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM/SIGHUP back during teardown; they are delivered afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def up(topology: Topology, *, run_id: str | None = None, privilege: str = "auto"):
    """Build the topology, yield a Lab, tear everything down on the way out."""
    priv = detect(privilege)
    names = Names(run_id or registry.new_run_id(), topology.names)
    holder = None
    with signals_raise():
        registered = False
        lab = None
        try:
            t0 = time.monotonic()
            if priv.mode == "rootless":
                holder = Holder()
                executor = Executor(prefix=holder.prefix)
            else:
                registry.register(names.run_id)    # before anything exists: see registry.py
                registered = True
                executor = Executor()
            lab = Lab(topology, names, priv, executor, holder)
            executor.apply(plan_topology(topology, names))
            lab.timings["setup_s"] = time.monotonic() - t0
            yield lab
        finally:
            with _signals_held():
                t1 = time.monotonic()
                if lab is not None:
                    lab._stop_processes()
                    lab.teardown_errors = lab.executor.unwind()
                if holder is not None:
                    holder.stop()
                if registered:
                    registry.unregister(names.run_id)
                if lab is not None:
                    lab.timings["teardown_s"] = time.monotonic() - t1
