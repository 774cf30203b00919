"""One direction of the emulated link, as a pure model: packets in, verdicts out.

The order a packet meets things in, as on a real path (queue, wire, propagation):

    loss (Bernoulli) or burst loss (Gilbert-Elliott)  ->  drop-tail queue + serializer at
    `rate`  ->  delay + jitter (never reordering)  ->  duplicate / reorder / corrupt

- Rate: the serializer is busy until `link_free`; a packet starts when it is free and takes
  len*8/rate. The queue holds what arrived and is not yet serialized; a packet that would
  make it exceed `queue` bytes is dropped (drop-tail). The default queue is the kernel
  engine's: 50 ms of the rate, at least 3 full frames (kernel.tbf_args).
- Delay and jitter: leave at serialization end + delay + U(-jitter, +jitter), but never
  before the previous packet of the direction (a link is a FIFO; netem's jitter reorders,
  this does not; see impairment.py).
- Lengths are Ethernet frame lengths (as tbf counts them), so TCP goodput at rate R is
  about R * 1448/1514 with timestamps on.

Every random choice comes from one random.Random per direction seeded from the lab's seed
and the direction's name, drawn in a fixed order per packet, so the same packets in the same
order meet the same fate on every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .impairment import Direction

FRAME = 1514


def default_queue_bytes(rate_bps: int, frame: int = FRAME) -> int:
    return max(3 * frame, int(rate_bps / 8 * 0.05))


@dataclass
class Verdict:
    action: str                  # "forward" or "drop"
    why: str = ""                # "loss", "burst", "queue"
    depart_ns: int = 0
    duplicate: bool = False
    reorder: bool = False
    corrupt: float | None = None  # where to flip a bit, as a draw in [0, 1)


class DirectionModel:
    """`ceiling` = (bits/s, frames/s): what the engine running the model can carry. With no
    rate configured the link runs at the ceiling's bit rate; and no frame is serialized
    faster than the ceiling's frame rate. A frame the queue refuses because of the ceiling
    (and not the configured rate) is dropped with why = "capacity", so the ledger tells
    the engine's limits from the lab's."""

    def __init__(self, spec: Direction, seed: int, name: str,
                 ceiling: tuple[int, int] | None = None):
        self.spec = spec
        self.rng = random.Random(f"{seed}/{name}")
        self.bad = False                     # Gilbert-Elliott state
        self.link_free = 0                   # ns: when the serializer is next idle
        self.last_depart = 0
        rate = spec.rate_bps or (ceiling[0] if ceiling else None)
        self.rate_bps = rate
        self.queue = (spec.queue_bytes if spec.queue_bytes is not None
                      else default_queue_bytes(rate) if rate else 0)
        self.ns_per_byte = 8e9 / rate if rate else 0.0
        self.ns_per_frame = int(1e9 / ceiling[1]) if ceiling else 0
        self.counts = {"packets": 0, "loss": 0, "burst": 0, "queue": 0, "capacity": 0,
                       "duplicate": 0, "reorder": 0, "corrupt": 0}
        self.peak_backlog = 0
        self.capacity_bound = False          # did the ceiling set the last frame's pace?

    def backlog(self, now: int) -> int:
        """Bytes waiting in the queue or still on the serializer."""
        if not self.ns_per_byte or self.link_free <= now:
            return 0
        return int((self.link_free - now) / self.ns_per_byte)

    def admit(self, now: int, size: int) -> Verdict:
        s, rng = self.spec, self.rng
        self.counts["packets"] += 1
        if s.burst is not None:
            b = s.burst
            # move first, then lose with the new state's probability (netem gemodel order)
            self.bad = (rng.random() >= b.r) if self.bad else (rng.random() < b.p)
            if rng.random() < (b.loss_bad if self.bad else b.loss_good):
                self.counts["burst"] += 1
                return Verdict("drop", "burst")
        if s.loss and rng.random() < s.loss:
            self.counts["loss"] += 1
            return Verdict("drop", "loss")
        t = now
        if self.ns_per_byte:
            backlog = self.backlog(now)
            if backlog + size > self.queue:
                why = "capacity" if self.capacity_bound else "queue"
                self.counts[why] += 1
                return Verdict("drop", why)
            self.peak_backlog = max(self.peak_backlog, backlog + size)
            start = max(now, self.link_free)
            wire = int(size * self.ns_per_byte)
            self.capacity_bound = self.ns_per_frame > wire or not self.spec.rate_bps
            self.link_free = start + max(wire, self.ns_per_frame)
            t = self.link_free
        if s.delay_s:
            d = s.delay_s
            if s.jitter_s:
                d += rng.uniform(-s.jitter_s, s.jitter_s)
            t += int(d * 1e9)
        t = max(t, self.last_depart)
        self.last_depart = t
        v = Verdict("forward", depart_ns=t)
        if s.duplicate and rng.random() < s.duplicate:
            v.duplicate = True
            self.counts["duplicate"] += 1
        if s.reorder and rng.random() < s.reorder:
            v.reorder = True
            self.counts["reorder"] += 1
        if s.corrupt and rng.random() < s.corrupt:
            v.corrupt = rng.random()
            self.counts["corrupt"] += 1
        return v
