"""The userspace engine, from the caller's side: start it in a lab's router, stop it.

    handle = emulator.start(lab, impairment, Path("link.jsonl"))
    ...                                   # traffic between a and b
    stats = handle.stop()                 # also run by the lab's teardown

The engine itself (forwarder.py) runs as its own process in the router's namespace; its
module doc has the theory of operation and its ceiling (MAX_RATE_BPS, MAX_FPS), which
check_capacity enforces here before anything starts. Around it, this side stops the
router's kernel from forwarding and turns off the hosts' transmit checksum offload: with it
on, a veth hands over frames whose TCP/UDP checksum is only the pseudo-header part
(CHECKSUM_PARTIAL), and those bytes, sent on from userspace, would fail the receiver's check.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..runtime import child_env
from .executor import Executor
from .forwarder import MAX_RATE_BPS
from .impairment import DIRECTIONS, Impairment, SpecError
from .kernel import plan_forwarding
from .plan import Plan
from .rootless import die_with_parent
from .topology import ROUTER, iface


class EmulatorError(RuntimeError):
    """The engine cannot run as configured; the message says why."""


class CapacityError(EmulatorError, SpecError):
    """A configuration beyond what the engine can carry (a spec error: the key is named)."""


def check_capacity(imp: Impairment) -> None:
    """Refuse, before anything starts, what the engine could not carry faithfully."""
    for name in DIRECTIONS:
        rate = imp.direction(name).rate_bps
        if rate and rate > MAX_RATE_BPS:
            raise CapacityError(
                f"link.{name}.rate: {rate / 1e6:g} Mbit/s is beyond the userspace engine's "
                f"capacity of {MAX_RATE_BPS / 1e6:g} Mbit/s; use a lower rate, or the kernel "
                f"engine (rate and loss only) for higher ones")


def _config(lab, imp: Impairment, ledger_path: Path, pair: tuple[str, str]) -> dict:
    ports = []
    for host in lab.topology.host_names:
        link = lab.topology.link(host)
        net4 = bytes(int(x) for x in link.addr(False).split(".")[:3])
        ports.append({
            "host": host, "ifname": iface(ROUTER, host),
            "router_mac": link.mac(True).replace(":", ""),
            "host_mac": link.mac(False).replace(":", ""),
            "net4": net4.hex(), "net6": socket.inet_pton(socket.AF_INET6,
                                                         link.addr(False, 6))[:8].hex(),
            "own4": socket.inet_aton(link.addr(True)).hex(),
            "own6": socket.inet_pton(socket.AF_INET6, link.addr(True, 6)).hex()})
    return {"run_id": lab.run_id, "impairment": imp.as_dict(), "ports": ports,
            "pair": list(pair), "ledger": str(ledger_path)}


def plan_engine(lab) -> Plan:
    """Around the engine: the router's kernel stops forwarding; the hosts compute their
    own checksums (see the module doc)."""
    plan = plan_forwarding(lab.netns(ROUTER), on=False)
    for host in lab.topology.host_names:
        dev = iface(host, ROUTER)
        plan.add("ethtool", "-K", dev, "tx", "off", netns=lab.netns(host),
                 undo=("ethtool", "-K", dev, "tx", "on"),
                 why=f"checksums computed by {host}'s stack, not left to offload")
    return plan


class Handle:
    def __init__(self, proc: subprocess.Popen, executor: Executor, ledger_path: Path):
        self.proc, self.executor, self.ledger = proc, executor, ledger_path
        self.stats: dict | None = None

    def stop(self, timeout: float = 10.0) -> dict:
        """Stop the engine (idempotent); the router's kernel forwards again."""
        if self.stats is not None:
            return self.stats
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                out, err = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
            lines = [x for x in out.splitlines() if x.startswith("{")]
            stats = json.loads(lines[-1]) if lines else {
                "engine": "userspace", "error": f"the engine died: {err.strip()[-400:]}"}
        finally:
            errors = self.executor.unwind()
        self.stats = {**stats, "ledger": str(self.ledger), "errors": errors}
        return self.stats


def start(lab, imp: Impairment, ledger_path: Path, *,
          pair: tuple[str, str] | None = None) -> Handle:
    """Start the engine in the lab's router; returns once it is forwarding. Its stop is
    also pushed onto the lab's undo stack, so a lab torn down with it running stops it."""
    check_capacity(imp)
    hosts = lab.topology.host_names
    if pair is None:
        if len(hosts) < 2:
            raise SpecError("the userspace engine needs two hosts to join")
        pair = (hosts[0], hosts[1])
    ledger_path = Path(ledger_path)
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    ex = Executor(prefix=lab.executor.prefix)
    ex.apply(plan_engine(lab))
    try:
        # SIGTERM if the caller dies, even by SIGKILL: a link left forwarding into
        # namespaces `labkit clean` is about to delete would be a process nobody owns;
        # on SIGTERM the engine still writes its ledger's trailer
        proc = lab.popen(ROUTER, [sys.executable, "-m", "toolkit.netlab.forwarder"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_env(),
                         preexec_fn=lambda: die_with_parent(signal.SIGTERM))
        proc.stdin.write(json.dumps(_config(lab, imp, ledger_path, pair)))
        proc.stdin.close()
        proc.stdin = None               # communicate() must not flush it again
        line = proc.stdout.readline()
        if not line.startswith('{"ready"'):
            proc.kill()
            _, err = proc.communicate()
            raise EmulatorError(f"the userspace engine did not start: "
                                f"{(line + err).strip()[-600:]}")
    except BaseException:
        ex.unwind()
        raise
    handle = Handle(proc, ex, ledger_path)
    lab.push_undo(handle.stop, "stop the userspace link engine")
    return handle
