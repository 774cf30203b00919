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

Random choices: one stream per flow. Every random choice (Bernoulli loss, the
Gilbert-Elliott state and its draws, jitter, duplicate, reorder, corrupt) comes from a
random.Random of the packet's flow in this direction, seeded with the text
f"{seed}/{direction}/{flow}" (a string seed is hashed with SHA-512: the same on every run
and platform). Why per flow: with one stream per direction, a UDP stream sharing a lossy
link with a TCP transfer took its draws in whatever order the two protocols' packets
happened to interleave, so which datagrams a seed dropped depended on timing and two runs
with one seed dropped different ones. Per flow, the n-th packet of a flow meets the n-th
draws of its own stream, whatever else crosses the link. To keep that true, each packet
takes the same number of draws, all of them before anything is decided (the draws of the
features the spec turns on, and only those): a packet dropped by loss or by the shared
queue does not leave the later draws to shift onto the next packet.

The flow is the caller's text key (frames.Packet.flow_key), for TCP and UDP

    udp 10.201.1.2:41001>10.201.2.2:5202        tcp [fd00:201:1::2]:41000>[fd00:201:2::2]:5201

and the protocol alone for the rest ("icmp", "icmp6", "47"); admit() without one uses
DEFAULT_FLOW. The Gilbert-Elliott state is per flow too (a burst is a run of one flow's
losses). What the flows share is what a link shares: the queue, the serializer and the
FIFO's last departure; so with a rate, whether the queue has room for a packet, and when
it leaves, still depend on the other flows, as on a real bottleneck.

A link normally sees a handful of flows, but a flood of distinct 5-tuples (a SYN flood, a
port scan) must not grow the table without bound: each stream holds a Mersenne Twister's
state, about 3 KB, so the table keeps at most MAX_FLOWS flows (about 48 MB a direction at
worst, far more flows than a lab runs at once), evicting the least recently seen. A flow
that comes back after eviction starts its stream again from the beginning; evictions are
counted (`flows_evicted`, in the engine's stats) so a run can tell.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .impairment import Direction

FRAME = 1514
MAX_FLOWS = 16384
DEFAULT_FLOW = "-"


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


class FlowState:
    """One flow's random stream and Gilbert-Elliott state, in one direction."""
    __slots__ = ("rng", "bad")

    def __init__(self, seed: int, direction: str, key: str):
        self.rng = random.Random(f"{seed}/{direction}/{key}")
        self.bad = False




class DirectionModel:
    """`ceiling` = (bits/s, frames/s): what the engine running the model can carry. With no
    rate configured the link runs at the ceiling's bit rate; and no frame is serialized
    faster than the ceiling's frame rate. A frame the queue refuses because of the ceiling
    (and not the configured rate) is dropped with why = "capacity", so the ledger tells
    the engine's limits from the lab's."""

    def __init__(self, spec: Direction, seed: int, name: str,
                 ceiling: tuple[int, int] | None = None):
        self.spec = spec
        self.seed, self.name = seed, name
        self.flows: dict[str, FlowState] = {}   # least recently seen first
        self.flows_seen = 0                  # streams started (a returning evicted flow: again)
        self.flows_evicted = 0
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

    def flow(self, key: str | None) -> FlowState:
        """The flow's state, made on its first packet; the table is kept in order of last
        use, so the one evicted at MAX_FLOWS is the least recently seen."""
        key = DEFAULT_FLOW if key is None else key
        flows = self.flows
        state = flows.pop(key, None)
        if state is None:
            if len(flows) >= MAX_FLOWS:
                del flows[next(iter(flows))]
                self.flows_evicted += 1
            state = FlowState(self.seed, self.name, key)
            self.flows_seen += 1
        flows[key] = state
        return state

    def draw(self, flow: FlowState) -> tuple[str, float, bool, bool, float | None]:
        """Every draw the spec calls for, each packet the same ones in the same order,
        whatever becomes of it (module doc: a flow's n-th packet gets its n-th draws).
        Returns (lost: "", "burst" or "loss"; jitter in s; duplicate; reorder; where to
        corrupt or None): a plain tuple, as this runs for every frame the engine carries."""
        s, rng = self.spec, flow.rng
        lost, jitter, duplicate, reorder, corrupt = "", 0.0, False, False, None
        if s.burst is not None:
            b = s.burst
            # move first, then lose with the new state's probability (netem gemodel order)
            flow.bad = (rng.random() >= b.r) if flow.bad else (rng.random() < b.p)
            if rng.random() < (b.loss_bad if flow.bad else b.loss_good):
                lost = "burst"
        if s.loss and rng.random() < s.loss and not lost:
            lost = "loss"
        if s.delay_s and s.jitter_s:
            jitter = rng.uniform(-s.jitter_s, s.jitter_s)
        if s.duplicate:
            duplicate = rng.random() < s.duplicate
        if s.reorder:
            reorder = rng.random() < s.reorder
        if s.corrupt:
            hit, where = rng.random() < s.corrupt, rng.random()
            corrupt = where if hit else None
        return lost, jitter, duplicate, reorder, corrupt

    def admit(self, now: int, size: int, flow: str | None = None) -> Verdict:
        """One packet of `flow` (frames.Packet.flow_key; None: DEFAULT_FLOW) arriving at
        `now` (ns), `size` bytes on the wire."""
        s = self.spec
        self.counts["packets"] += 1
        lost, jitter, duplicate, reorder, corrupt = self.draw(self.flow(flow))
        if lost:
            self.counts[lost] += 1
            return Verdict("drop", lost)
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
            t += int((s.delay_s + jitter) * 1e9)
        t = max(t, self.last_depart)
        self.last_depart = t
        if duplicate:
            self.counts["duplicate"] += 1
        if reorder:
            self.counts["reorder"] += 1
        if corrupt is not None:
            self.counts["corrupt"] += 1
        return Verdict("forward", depart_ns=t, duplicate=duplicate, reorder=reorder,
                       corrupt=corrupt)
