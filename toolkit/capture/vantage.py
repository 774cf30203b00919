"""Vantage points: where in the lab a capture looks, and captures at several at once.

One capture point alone can miss all of a link's loss (ARCHITECTURE decision 6). In the
lab a - r - b the emulated link sits in the router r, so a run captures on both sides of
it. The names, along the path from a to b:

    a     a's interface toward r          what a sent and what reached a
    r-a   r's interface toward a          the same wire seen from r: before the link (a>b)
    r-b   r's interface toward b          after the link (a>b), forwarded: TTL one less,
                                          r's MAC as source
    b     b's interface toward r          what reached b and what b sent

(r-<host> for every host of a larger topology.) a and r-a see the same frames, as do r-b
and b, except what the host itself drops; comparing r-a with r-b is comparing before and
after the impairment.

    points = vantage_points(lab)                         # a, r-a, r-b, b
    with start_many(lab, points, run_dir, impairment=imp) as caps:
        ...traffic...                                    # every capture proven running
    caps.results["r-b"].counters.dropped

Each file is named after its point (run_dir/r-a.pcapng) and its pcapng section comment
names the run, the point and the impairment, so Wireshark shows them under Statistics >
Capture File Properties; tcpdump's pcap has no comments, so there they stay in the
result (as_dict, for run.json).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .backends import BACKENDS
from .live import Capture, CaptureFailed, CaptureResult, installed_backends, launch

ROUTER = "r"          # the lab's router node (netlab.topology.ROUTER)


@dataclass(frozen=True)
class VantagePoint:
    name: str          # "a", "r-a", "r-b", "b"
    host: str          # the lab node whose namespace holds the interface
    interface: str


def vantage_points(lab, names: list[str] | None = None) -> list[VantagePoint]:
    """The lab's vantage points in path order (first host, the router's side toward each
    host, the other hosts), or those named, in the order named."""
    hosts = list(lab.topology.host_names)
    router = [VantagePoint(f"{ROUTER}-{h}", ROUTER, lab.iface(ROUTER, h)) for h in hosts]
    ends = [VantagePoint(h, h, lab.iface(h, ROUTER)) for h in hosts]
    every = ends[:1] + router + ends[1:]
    if names is None:
        return every
    by_name = {p.name: p for p in every}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"no vantage point {', '.join(map(repr, unknown))} in this lab "
                       f"(points: {', '.join(by_name)})")
    return [by_name[n] for n in names]


def describe_impairment(impairment) -> str:
    if impairment is None:
        return "not recorded"
    if hasattr(impairment, "describe"):
        return impairment.describe()
    return str(impairment)


def comment_for(run_id: str, point: VantagePoint, impairment) -> str:
    """The section comment, one line: run, vantage point, impairment."""
    return (f"labkit run {run_id}, vantage point {point.name} ({point.host}: "
            f"{point.interface}), impairment: {describe_impairment(impairment)}")


def limit_rate(pps: float, max_pps: int | None, who: str = "the capture"
               ) -> tuple[float, str | None]:
    """Cap a traffic rate at a capture's ceiling; the note says so, for the run's output
    and run.json. A capture that cannot keep up would report loss the link never made."""
    if max_pps is None or pps <= max_pps:
        return pps, None
    return float(max_pps), (f"traffic capped at {max_pps:,} packets/s (asked: {pps:,.0f}): "
                            f"{who} cannot keep up with more")


class CaptureSet:
    """Captures at several vantage points, started and stopped together."""

    def __init__(self, points: list[VantagePoint], captures: dict[str, Capture]):
        self.points = points
        self.captures = captures
        self.results: dict[str, CaptureResult] = {}

    @property
    def max_pps(self) -> int | None:
        """The packet rate every capture here keeps up with (None: no backend limit).

        Captures share the machine's cores: n scapy processes on fewer than n cores
        each get a share of one, so their ceiling shrinks with them."""
        limits = [c.max_pps for c in self.captures.values() if c.max_pps]
        if not limits:
            return None
        share = min(1.0, (os.cpu_count() or 1) / len(limits))
        return int(min(limits) * share)

    def limit_rate(self, pps: float) -> tuple[float, str | None]:
        """The packet rate a runner may send at, and what to tell the user if it is
        lower than asked (None when the captures keep up with `pps`)."""
        backends = sorted({c.backend for c in self.captures.values() if c.max_pps})
        n = sum(1 for c in self.captures.values() if c.max_pps)
        who = f"{n} {'/'.join(backends)} capture{'s at once' if n > 1 else ''}"
        return limit_rate(pps, self.max_pps, who)

    def __getitem__(self, name: str) -> Capture:
        return self.captures[name]

    def stop(self, timeout: float = 5.0) -> dict[str, CaptureResult]:
        """Stop every capture (each one even if another fails); per point, its result."""
        if self.results:
            return self.results
        live = [c for c in self.captures.values() if c.running]
        # one wait for the slowest kernel ring, not one per capture
        settle = max((c.spec.settle_s for c in live), default=0.0)
        try:
            if live:
                time.sleep(settle)
        finally:
            errors = []
            for name, cap in self.captures.items():
                try:
                    self.results[name] = cap.stop(timeout, settle=0)
                except BaseException as e:       # stop the others first, then report
                    errors.append(e)
            if errors:
                raise errors[0]
        return self.results

    def as_dict(self) -> dict:
        """For run.json: per vantage point, where it was and what it counted."""
        return {p.name: {"host": p.host, "interface": p.interface,
                         **(self.results[p.name].as_dict() if p.name in self.results else {})}
                for p in self.points}

    def __enter__(self) -> CaptureSet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_many(lab, points: list[VantagePoint], run_dir: str | os.PathLike, *,
               backend: str | None = None, impairment=None, snaplen: int = 262144,
               bpf_filter: str = "", ring=None, buffer_mib: int | None = None,
               ready_timeout: float = 10.0) -> CaptureSet:
    """One capture per vantage point, into run_dir/<point>.<pcapng|pcap>; returns once
    every one is proven running. If one cannot start, those started are stopped and
    CaptureFailed names the point."""
    if not points:
        raise ValueError("start_many needs at least one vantage point")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"vantage points named twice: {names}")
    backend = backend or next(iter(installed_backends()), None)
    if backend is None:
        raise CaptureFailed("no capture tool found: install dumpcap (Debian package "
                            "wireshark-common) or tcpdump, or scapy (pip install scapy)")
    if backend not in BACKENDS:
        raise ValueError(f"unknown capture backend {backend!r}; known: {', '.join(BACKENDS)}")
    run_dir = Path(run_dir)
    captures: dict[str, Capture] = {}
    started = CaptureSet(list(points), captures)
    try:
        # all processes first, then the waits: their start-up times overlap
        for p in points:
            captures[p.name] = launch(
                p.interface, run_dir / f"{p.name}.{BACKENDS[backend].file_format}",
                prefix=lab.prefix(p.host), backend=backend, snaplen=snaplen,
                bpf_filter=bpf_filter, ring=ring, buffer_mib=buffer_mib,
                comment=comment_for(lab.run_id, p, impairment))
        for p in points:
            try:
                captures[p.name].await_ready(ready_timeout)
            except CaptureFailed as e:
                raise CaptureFailed(f"vantage point {p.name}: {e}") from None
    except BaseException:
        for cap in captures.values():
            try:
                cap.stop(timeout=2.0, settle=0)
            except Exception:
                pass
        raise
    # the lab's teardown stops them too (cleanly: SIGINT, counters, whole files) if the
    # caller never does; a stopped set's stop() is a no-op
    push_undo = getattr(lab, "push_undo", None)
    if push_undo is not None:
        push_undo(started.stop, why=f"stop the captures at {', '.join(names)}")
    return started
