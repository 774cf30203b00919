"""What the emulated link does to packets: one spec, read by both engines.

An Impairment is plain data: per direction (a_to_b, b_to_a) a rate with its queue, delay
and jitter, random loss, burst loss, duplication, reordering and corruption; plus scripted
faults, which act on chosen packets deterministically; plus the seed of every random
choice. The kernel engine (kernel.py) turns what it can into qdiscs and nftables rules;
the userspace engine (forwarder.py) implements all of it. `choose_engine` decides, and the
run records the choice and why.

Semantics, shared by both engines where both can do a thing:
- loss: each packet is dropped independently with this probability (Bernoulli).
- burst: Gilbert-Elliott (two states, as netem's `loss gemodel p r 1-h 1-k`): p is the
  chance to move good->bad per packet, r bad->good; loss_bad / loss_good are the loss
  probabilities in each state.
- delay, jitter: one-way delay; jitter draws uniformly in [delay - jitter, delay + jitter]
  and, unlike netem's default, never reorders by itself (packets leave in order).
- reorder: each packet is, with this probability, held back and sent right after the next
  packet of its direction (a swap; RFC 4737 would see a reordering extent of 1).
- duplicate, corrupt: each packet is sent twice / has one payload bit flipped.
- rate with queue: a token bucket at `rate` bits/s with a drop-tail queue of `queue` bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from .. import units
from ..units import UnitError

DIRECTIONS = ("a_to_b", "b_to_a")
ACTIONS = ("drop", "delay", "hold", "duplicate", "corrupt")
TCP_FLAG_LETTERS = "FSRPAUEC"     # FIN SYN RST PSH ACK URG ECE CWR, as tcpdump prints them


class SpecError(ValueError):
    """An impairment spec is wrong; the message names the key (e.g. link.a_to_b.loss)."""


@dataclass(frozen=True)
class BurstLoss:
    p: float                 # P(good -> bad) per packet
    r: float                 # P(bad -> good) per packet
    loss_bad: float = 1.0    # loss probability in the bad state (netem: 1-h)
    loss_good: float = 0.0   # loss probability in the good state (netem: 1-k)

    def mean_loss(self) -> float:
        """Stationary loss rate: the bad state holds p/(p+r) of the time."""
        if self.p + self.r == 0:
            return self.loss_good
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1 - bad) * self.loss_good


@dataclass(frozen=True)
class Direction:
    rate_bps: int | None = None
    queue_bytes: int | None = None     # drop-tail limit of the rate's queue
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    burst: BurstLoss | None = None
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0

    def is_clean(self) -> bool:
        return self == Direction()

    def needs(self) -> set[str]:
        """The features this direction uses, named as engines name what they can do."""
        out = set()
        if self.rate_bps:
            out.add("rate")
        if self.delay_s:
            out.add("delay")
        if self.jitter_s:
            out.add("jitter")
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            if getattr(self, name):
                out.add(name)
        if self.burst:
            out.add("burst")
        return out


@dataclass(frozen=True)
class Fault:
    """A scripted fault: `action` on the packets that match, counted per fault.

    Matching: direction (None: either), protocol, TCP flags that must be set (`flags`) and
    that must be clear (`not_flags`), with or without payload, inside the time window
    [start_s, end_s) counted from when the link came up. Among the packets that match,
    the fault acts on number `nth` (1-based) and the `count - 1` after it; nth=None acts
    on every match (written nth = "every"; the default when a window is given, so
    `{action = "drop", start = "1s", end = "1300ms"}` blackholes the link for 300 ms).
    `last` picks the last data segment of its direction instead (the engine holds each
    candidate until the next segment shows whether it was the last; see faults.py).
    """
    action: str
    direction: str | None = None
    proto: str | None = None
    port: int | None = None            # either end's port: one flow's packets among several
    flags: str = ""
    not_flags: str = ""
    payload: bool | None = None
    nth: int | None = 1
    count: int = 1
    last: bool = False
    start_s: float | None = None
    end_s: float | None = None
    delay_s: float = 0.0               # for action "delay"
    note: str = ""                     # the lab's words, kept for the ledger and report

    def describe(self) -> str:
        if self.note:
            return self.note
        what = [self.proto or "packet"]
        if self.port is not None:
            what.append(f"port {self.port}")
        if self.flags:
            what.append(f"[{self.flags}]")
        if self.not_flags:
            what.append(f"not [{self.not_flags}]")
        if self.payload is not None:
            what.append("with data" if self.payload else "without data")
        if self.direction:
            what.append(self.direction.replace("_to_", ">"))
        which = ("the last" if self.last else "every" if self.nth is None
                 else f"#{self.nth}" + (f"..#{self.nth + self.count - 1}" if self.count > 1
                                        else ""))
        window = ""
        if self.start_s is not None or self.end_s is not None:
            end = "end" if self.end_s is None else f"{self.end_s:g}s"
            window = f" in [{self.start_s or 0:g}s, {end})"
        extra = f" {units.show_time(self.delay_s)}" if self.action == "delay" else ""
        return f"{self.action}{extra} {which} {' '.join(what)}{window}"


@dataclass(frozen=True)
class Impairment:
    a_to_b: Direction = field(default_factory=Direction)
    b_to_a: Direction = field(default_factory=Direction)
    faults: tuple[Fault, ...] = ()
    seed: int = 1

    def direction(self, name: str) -> Direction:
        return getattr(self, name)

    def needs(self) -> set[str]:
        out = self.a_to_b.needs() | self.b_to_a.needs()
        if self.faults:
            out.add("faults")
        return out

    def is_clean(self) -> bool:
        return not self.needs()

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for pcapng comments and reports, e.g. 'a>b: 10mbit, 20ms, loss 5%'."""
        parts = []
        for name in DIRECTIONS:
            d = self.direction(name)
            bits = []
            if d.rate_bps:
                bits.append(units.spec_rate(d.rate_bps)
                            + (f" queue {d.queue_bytes}B" if d.queue_bytes else ""))
            if d.delay_s:
                bits.append(units.show_time(d.delay_s)
                            + (f"±{units.show_time(d.jitter_s)}" if d.jitter_s else ""))
            for key in ("loss", "duplicate", "reorder", "corrupt"):
                if getattr(d, key):
                    bits.append(f"{key} {getattr(d, key) * 100:g}%")
            if d.burst:
                bits.append(f"burst loss p={d.burst.p:g} r={d.burst.r:g}")
            if bits:
                parts.append(f"{name.replace('_to_', '>')}: {', '.join(bits)}")
        parts += [f"fault: {f.describe()}" for f in self.faults]
        return "; ".join(parts) if parts else "no impairment"


# ---- reading a spec from plain data (a lab's TOML table, or command-line options) ----

_DIRECTION_KEYS = {
    "rate": ("rate_bps", units.rate), "queue": ("queue_bytes", units.size),
    "delay": ("delay_s", units.seconds), "jitter": ("jitter_s", units.seconds),
    "loss": ("loss", units.fraction), "duplicate": ("duplicate", units.fraction),
    "reorder": ("reorder", units.fraction), "corrupt": ("corrupt", units.fraction),
}


def _direction(table: dict, where: str, base: Direction | None = None) -> Direction:
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table of link settings, got {table!r}")
    values = {}
    for key, raw in table.items():
        if key == "burst":
            values["burst"] = _burst(raw, f"{where}.burst")
            continue
        if key not in _DIRECTION_KEYS:
            raise SpecError(f"{where}.{key}: unknown setting; known: "
                            f"{', '.join([*_DIRECTION_KEYS, 'burst'])}")
        name, parse = _DIRECTION_KEYS[key]
        try:
            values[name] = parse(raw)
        except UnitError as e:
            raise SpecError(f"{where}.{key}: {e}") from None
    d = replace(base or Direction(), **values)
    if d.jitter_s and d.jitter_s > d.delay_s:
        raise SpecError(f"{where}.jitter: {units.show_time(d.jitter_s)} exceeds the delay "
                        f"{units.show_time(d.delay_s)}; a packet cannot leave before it came")
    if d.queue_bytes is not None and not d.rate_bps:
        raise SpecError(f"{where}.queue: a queue limit needs a rate (the queue fills only "
                        f"behind a bottleneck)")
    return d


def _burst(raw, where: str) -> BurstLoss:
    if not isinstance(raw, dict) or not {"p", "r"} <= set(raw):
        raise SpecError(f"{where}: expected a table with p and r (and optionally loss_bad, "
                        f"loss_good), e.g. {{p = '1%', r = '30%'}}")
    known = {f.name for f in fields(BurstLoss)}
    values = {}
    for key, v in raw.items():
        if key not in known:
            raise SpecError(f"{where}.{key}: unknown setting; known: {', '.join(sorted(known))}")
        try:
            values[key] = units.fraction(v)
        except UnitError as e:
            raise SpecError(f"{where}.{key}: {e}") from None
    return BurstLoss(**values)


def _fault(raw, where: str) -> Fault:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a table, got {raw!r}")
    known = {f.name for f in fields(Fault)} | {"delay", "start", "end"}
    for key in raw:
        if key not in known or key in ("delay_s", "start_s", "end_s"):
            raise SpecError(f"{where}.{key}: unknown setting; known: "
                            f"{', '.join(sorted(known - {'delay_s', 'start_s', 'end_s'}))}")
    action = raw.get("action")
    if action not in ACTIONS:
        raise SpecError(f"{where}.action: {action!r}; expected one of {', '.join(ACTIONS)}")
    direction = raw.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise SpecError(f"{where}.direction: {direction!r}; expected a_to_b or b_to_a")
    proto = raw.get("proto")
    if proto is not None and proto not in ("tcp", "udp", "icmp"):
        raise SpecError(f"{where}.proto: {proto!r}; expected tcp, udp or icmp")
    port = raw.get("port")
    if port is not None:
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise SpecError(f"{where}.port: {port!r}; expected a port number from 1 to 65535")
        if proto not in ("tcp", "udp"):
            raise SpecError(f"{where}.port: a port needs proto = 'tcp' or 'udp'")
    for key in ("flags", "not_flags"):
        v = raw.get(key, "")
        if not isinstance(v, str) or set(v.upper()) - set(TCP_FLAG_LETTERS):
            raise SpecError(f"{where}.{key}: {v!r}; expected TCP flag letters from "
                            f"{TCP_FLAG_LETTERS} (e.g. 'S' for SYN, 'SA' for SYN-ACK)")
        if v and proto not in (None, "tcp"):
            raise SpecError(f"{where}.{key}: TCP flags need proto = 'tcp'")
    # a time window with no nth means every match in it (a blackhole); else the first match
    windowed = "start" in raw or "end" in raw
    nth = raw.get("nth", None if windowed else 1)
    if nth == "every":
        nth = None
    if nth is not None and (not isinstance(nth, int) or isinstance(nth, bool) or nth < 1):
        raise SpecError(f"{where}.nth: {nth!r}; expected a count from 1, or 'every'")
    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise SpecError(f"{where}.count: {count!r}; expected a count from 1")
    payload = raw.get("payload")
    if payload is not None and not isinstance(payload, bool):
        raise SpecError(f"{where}.payload: {payload!r}; expected true or false")
    last = bool(raw.get("last", False))
    if last and payload is False:
        raise SpecError(f"{where}.last: the last data segment needs payload = true")
    try:
        delay = units.seconds(raw["delay"]) if "delay" in raw else 0.0
        start = units.seconds(raw["start"]) if "start" in raw else None
        end = units.seconds(raw["end"]) if "end" in raw else None
    except UnitError as e:
        raise SpecError(f"{where}: {e}") from None
    if action == "delay" and delay <= 0:
        raise SpecError(f"{where}.delay: action 'delay' needs a delay such as '300ms'")
    if start is not None and end is not None and end <= start:
        raise SpecError(f"{where}.end: the window ends before it starts")
    return Fault(action=action, direction=direction, proto=proto, port=port,
                 flags=raw.get("flags", "").upper(), not_flags=raw.get("not_flags", "").upper(),
                 payload=True if last else payload, nth=nth, count=count, last=last,
                 start_s=start, end_s=end, delay_s=delay, note=str(raw.get("note", "")))


def from_dict(table: dict, where: str = "link") -> Impairment:
    """An Impairment from plain data, as a lab's [link] table holds it:

        seed = 7
        both = {delay = "20ms"}              # applies to both directions first
        a_to_b = {rate = "10mbit", queue = "64kb", loss = "5%"}
        fault = [{action = "drop", proto = "tcp", flags = "S", not_flags = "A"}]

    Keys other than these (e.g. `engine`) are the caller's and are ignored here.
    """
    if not isinstance(table, dict):
        raise SpecError(f"{where}: expected a table")
    both = _direction(table.get("both", {}), f"{where}.both")
    dirs = {d: _direction(table.get(d, {}), f"{where}.{d}", both) for d in DIRECTIONS}
    raw_faults = table.get("fault", [])
    if isinstance(raw_faults, dict):
        raw_faults = [raw_faults]
    if not isinstance(raw_faults, list):
        raise SpecError(f"{where}.fault: expected a list of tables")
    faults = tuple(_fault(f, f"{where}.fault[{i}]") for i, f in enumerate(raw_faults))
    seed = table.get("seed", 1)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SpecError(f"{where}.seed: {seed!r}; expected a non-negative integer")
    return Impairment(dirs["a_to_b"], dirs["b_to_a"], faults, seed)


def from_plain(d: dict) -> Impairment:
    """The inverse of Impairment.as_dict: an Impairment from its own plain form (already
    checked; e.g. the config handed to the userspace engine's process)."""
    def direction(x: dict) -> Direction:
        x = dict(x)
        if x.get("burst"):
            x["burst"] = BurstLoss(**x["burst"])
        return Direction(**x)
    return Impairment(direction(d["a_to_b"]), direction(d["b_to_a"]),
                      tuple(Fault(**f) for f in d.get("faults", ())), d.get("seed", 1))


# ---- which engine ----

KERNEL_ALWAYS = {"rate", "loss"}                     # tbf/htb and nftables numgen
KERNEL_WITH_NETEM = {"rate", "loss", "delay", "jitter", "burst", "duplicate", "reorder",
                     "corrupt"}


@dataclass(frozen=True)
class EngineChoice:
    engine: str          # "kernel" or "userspace"
    reason: str


def choose_engine(imp: Impairment, have_netem: bool, asked: str = "auto") -> EngineChoice:
    """Scripted faults need the userspace engine; otherwise the kernel engine when it has
    everything the spec needs (it carries higher rates), else userspace."""
    needs = imp.needs()
    kernel_can = KERNEL_WITH_NETEM if have_netem else KERNEL_ALWAYS
    missing = sorted(needs - kernel_can)
    if asked == "userspace":
        return EngineChoice("userspace", "asked for")
    if asked == "kernel":
        if missing:
            why = "scripted faults are userspace-only" if "faults" in missing else (
                "this kernel has no netem qdisc" if not have_netem else "")
            raise SpecError(f"the kernel engine cannot do {', '.join(missing)}"
                            + (f" ({why})" if why else "")
                            + "; use --engine userspace or auto")
        return EngineChoice("kernel", "asked for")
    if asked != "auto":
        raise SpecError(f"engine {asked!r}: expected auto, kernel or userspace")
    if "faults" in needs:
        return EngineChoice("userspace", "scripted faults need the userspace engine")
    if missing:
        return EngineChoice("userspace", f"the kernel lacks {', '.join(missing)}"
                            + ("" if have_netem else " (no netem qdisc)"))
    return EngineChoice("kernel", "the kernel has everything this spec needs")
