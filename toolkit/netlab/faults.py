"""Scripted faults: which packet a fault acts on. Pure and deterministic.

Every fault sees every packet that arrives at the link, and counts the ones it matches
(direction, protocol, either end's port, TCP flags set and clear, with or without
payload, time window), so
"the 3rd data segment" means the 3rd data segment to reach the link, retransmissions
included, whatever other faults did to earlier packets. A fault acts on matches number
nth .. nth+count-1 (every match when nth is None). When several faults act on one packet,
the first in the lab's list wins and the others only count it.

`last` faults (the last data segment of a direction) cannot be decided when the segment
arrives: only what follows shows it was the last. The emulator holds each candidate until
the next packet of its own flow (its direction, addresses and ports: flows running at
once do not decide for each other): another data segment means it was not the last (it
goes on, untouched, just before that segment); a FIN without data means it was (the fault
acts on it); nothing within LAST_HOLD_S means the sender is waiting for an acknowledgment
of it, so it goes on and the wait is recorded in the ledger. A `hold` fault that names a
port likewise holds its frame until the next one of that flow.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Packet
from .impairment import Fault

LAST_HOLD_S = 0.2


def matches(f: Fault, direction: str, pkt: Packet, t_s: float) -> bool:
    """Does the packet fit the fault's pattern (before counting)?"""
    if f.direction is not None and f.direction != direction:
        return False
    if f.proto is not None and f.proto != pkt.proto:
        return False
    if f.port is not None and f.port not in (pkt.sport, pkt.dport):
        return False
    if f.flags and not all(c in pkt.flags for c in f.flags):
        return False
    if f.not_flags and any(c in pkt.flags for c in f.not_flags):
        return False
    if f.payload is not None and (pkt.payload_len > 0) != f.payload:
        return False
    if f.start_s is not None and t_s < f.start_s:
        return False
    return not (f.end_s is not None and t_s >= f.end_s)


@dataclass
class Decision:
    index: int                 # which fault (position in the lab's list)
    fault: Fault
    match_number: int          # this packet was the fault's n-th match


class FaultBook:
    def __init__(self, faults: tuple[Fault, ...]):
        self.faults = faults
        self.seen = [0] * len(faults)        # matches counted per fault
        self.acted = [0] * len(faults)

    def _counts(self, i: int) -> bool:
        f, n = self.faults[i], self.seen[i]
        return f.nth is None or f.nth <= n < f.nth + f.count

    def decide(self, direction: str, pkt: Packet, t_s: float) -> Decision | None:
        """Count the packet against every ordinary fault; the first that acts on it."""
        chosen = None
        for i, f in enumerate(self.faults):
            if f.last or not matches(f, direction, pkt, t_s):
                continue
            self.seen[i] += 1
            if chosen is None and self._counts(i):
                self.acted[i] += 1
                chosen = Decision(i, f, self.seen[i])
        return chosen

    def last_candidate(self, direction: str, pkt: Packet, t_s: float) -> int | None:
        """The `last` fault this data segment could be the target of, if any is still live."""
        for i, f in enumerate(self.faults):
            if f.last and matches(f, direction, pkt, t_s):
                nth = f.nth or 1
                if f.nth is None or self.seen[i] < nth + f.count - 1:
                    return i
        return None

    def confirm_last(self, i: int) -> Decision | None:
        """The held candidate of fault i was the last data segment: count it, and act if
        the fault's nth/count say so (nth counts 'last' events: a retransmitted last
        segment followed by another FIN is a second one)."""
        self.seen[i] += 1
        if self._counts(i):
            self.acted[i] += 1
            return Decision(i, self.faults[i], self.seen[i])
        return None

    def summary(self) -> list[dict]:
        return [{"fault": f.describe(), "matched": self.seen[i], "acted": self.acted[i]}
                for i, f in enumerate(self.faults)]
