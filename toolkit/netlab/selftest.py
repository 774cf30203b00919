"""`labkit selftest`: build the lab, measure what the link really does, compare.

Each configured property is measured in its own phase, with only the settings that shape
it applied, so one cannot mask another (a 5% loss would otherwise also cut TCP goodput far
below the configured rate). Both directions are measured:

    loss   UDP datagrams a->b and b->a at once, each numbered; lost = sent - received.
           Judged: the link model's loss decisions (the ledger's why = "loss"/"burst")
           inside the exact binomial 99.9% interval of the configured loss
           (kernel.binomial_interval), with no loss configured exactly zero; and every
           datagram lost is one the engine says it dropped (ground truth). The senders
           offer half the userspace engine's frame ceiling, so none should meet its queue;
           drops there (why = "capacity"/"queue": a sender held back, then catching up in
           a burst) are named and make the timing unreliable, but are not the loss judged.
    rtt    ping a->b; the median RTT. Pass: within 1 ms of the two one-way delays added.
    jitter the same pings: the mean |difference| of consecutive RTTs (RFC 3550's
           measure of variation) within [0.5, 1.5] x its expected value for the configured
           jitter (uniform in +-jitter each way), + 0.3 ms; with no jitter, at most 0.3 ms;
           and 90% of RTTs within the delay +- both jitters, + 1 ms.
    rate   one TCP bulk transfer a->b, then one b->a, a few seconds each (the delay
           applied too); the receiver's goodput. Pass: within 10% of the configured rate.
           With no rate configured: within 10% of the userspace engine's ceiling
           (forwarder.MAX_RATE_BPS), or, through the kernel engine (whose unshaped veth
           has no capacity anyone configured), at least that ceiling.
    engine the userspace engine's own account: no overrun, did not die.

Timing. The rtt, jitter and rate checks depend on the machine keeping time. The userspace
engine counts how late it sent each frame (forwarder.timing_report), and the TCP pair of
the rate phase how long each waited for a CPU (traffic.run_queue_wait_s), with either
engine. When the engine or the pair could not keep time the result says so (`timing`:
reliable false, with notes) and a timing check that fails in the direction lateness
explains (RTT too long, jitter too high, goodput too low) is "unreliable", not "fail"; one
failing the other way (an RTT shorter than configured, a rate above it) still fails. The
loss and engine checks do not depend on timing.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import kernel
from .engine import have_netem
from .engine import start as start_engine
from .impairment import Direction, Impairment, SpecError, choose_engine
from .lab import Lab, up
from .topology import default_topology

UDP_PORT, TCP_PORT = 5301, 5302
RTT_TOLERANCE_S = 1e-3
RATE_TOLERANCE = 0.10
JITTER_TOLERANCE_S = 0.3e-3
JITTER_BAND = (0.5, 1.5)
INSIDE_SHARE_SLACK = 0.10
PINGS = 40
# the loss measurement's rate through the userspace engine, per direction: half its frame
# ceiling (forwarder.MAX_FPS). At the ceiling itself (as once), the link's serializer had
# no room to spare: a sender held back by a busy machine caught up in a burst that the
# queue never drained, and past its 50 ms the engine dropped the rest as "capacity"
# (5.94% lost for 5% configured)
USERSPACE_PPS = 5_000
TIMING_STATUSES = ("pass", "fail", "unreliable")


@dataclass
class Check:
    name: str
    configured: str
    measured: str
    ok: bool
    detail: str = ""
    timing: bool = False          # depends on the machine keeping time
    late_explains: bool = False   # a late engine would fail it this way
    status: str = ""              # pass | fail | unreliable (settle())

    def settle(self, timing_reliable: bool) -> Check:
        if self.ok:
            self.status = "pass"
        elif self.timing and self.late_explains and not timing_reliable:
            self.status = "unreliable"
            self.detail += "; not judged: the engine did not keep time"
        else:
            self.status = "fail"
        return self


def _only(imp: Impairment, keys: tuple[str, ...]) -> Impairment:
    def keep(d: Direction) -> Direction:
        return Direction(**{k: getattr(d, k) for k in keys})
    return replace(imp, a_to_b=keep(imp.a_to_b), b_to_a=keep(imp.b_to_a), faults=())


# run as a script by path: works whether or not the package is installed for this python
_TRAFFIC = str(Path(__file__).with_name("traffic.py"))


def _py(*args: str) -> list[str]:
    return [sys.executable, _TRAFFIC, *args]


def _receiver(lab: Lab, node: str, args: list[str]) -> subprocess.Popen:
    proc = lab.popen(node, _py(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"measurement receiver did not start: {line} {proc.stderr.read()}")
    return proc


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measurement program failed: {err.strip()[-500:]}")
    return json.loads(lines[-1])


def measure_loss(lab: Lab, count: int, pps: float, *,
                 pairs: tuple[tuple[str, str], ...] = (("a", "b"),)) -> dict:
    """UDP datagrams from src to dst for each (src, dst) of `pairs`, all at once. One pair:
    its receiver's result; several: {"a_to_b": result, ...}."""
    recvs = {(src, dst): _receiver(lab, dst, [
        "udp-recv", str(UDP_PORT), "--count", str(count), "--idle", "1.0",
        "--deadline", str(count / pps + 20)]) for src, dst in pairs}
    sends = {(src, dst): lab.popen(src, _py("udp-send", lab.addr(dst), str(UDP_PORT),
                                            "--count", str(count), "--pps", str(pps)),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for src, dst in pairs}
    out = {}
    sent_s = {}
    for pair, send in sends.items():
        try:
            sout, err = send.communicate(timeout=count / pps + 30)
        except subprocess.TimeoutExpired:
            send.kill()
            sout, err = send.communicate()
        if send.returncode != 0:
            for r in recvs.values():
                r.kill()
                r.communicate()
            raise RuntimeError(f"UDP sender failed: {err.strip()[-500:]}")
        # how long the sender took: the rate it really offered (a busy machine may not
        # have let it keep `pps`)
        sent_s[pair] = json.loads(sout.strip().splitlines()[-1])["seconds"]
    for (src, dst), recv in recvs.items():
        out[f"{src}_to_{dst}"] = {**_result(recv, timeout=30), "send_s": sent_s[src, dst]}
    return out[f"{pairs[0][0]}_to_{pairs[0][1]}"] if len(pairs) == 1 else out


def measure_rtt(lab: Lab, count: int = 20) -> dict:
    done = lab.exec("a", ["ping", "-c", str(count), "-i", "0.05", "-W", "2", lab.addr("b")],
                    timeout=count * 2 + 10)
    rtts = [float(x.split("time=")[1].split()[0]) / 1e3
            for x in done.stdout.splitlines() if "time=" in x]
    return {"sent": count, "received": len(rtts),
            "median_s": statistics.median(rtts) if rtts else None,
            "min_s": min(rtts, default=None), "max_s": max(rtts, default=None),
            "samples_s": rtts}


def measure_goodput(lab: Lab, seconds: float, src: str = "a", dst: str = "b") -> dict:
    recv = _receiver(lab, dst, ["tcp-recv", str(TCP_PORT), "--deadline", str(seconds + 30)])
    send = lab.exec(src, _py("tcp-send", lab.addr(dst), str(TCP_PORT), "--seconds",
                             str(seconds)), timeout=seconds + 30)
    if send.returncode != 0:
        recv.kill()
        recv.communicate()
        raise RuntimeError(f"TCP sender failed: {send.stderr.strip()[-500:]}")
    out = _result(recv, timeout=30)
    try:
        out["sender_waited_s"] = json.loads(send.stdout.strip().splitlines()[-1])["waited_s"]
    except (ValueError, IndexError, KeyError):
        out["sender_waited_s"] = None
    return out


def _fmt_rate(bps: float) -> str:
    return f"{bps / 1e6:.2f} Mbit/s"


# ---- judging: pure, tested by tables ----

def judge_loss(count: int, lost: int, duplicates: int, p: float, *, bursty: bool = False,
               engine_drops: int | None = None, decided: int | None = None,
               direction: str = "a>b", host_drops: int = 0) -> Check:
    """`lost`: datagrams the receiver never saw; `host_drops`: those of them the kernel
    dropped at the receiver's own socket (its buffer full: the busy machine did not run
    the receiver in time), lost in the host, not on the link; `engine_drops`: every drop
    the engine made in the direction; `decided`: those the link model made for the
    configured loss (what is judged when given: drops at the queue are not the configured
    loss)."""
    name = f"loss {direction}"
    on_link = lost - host_drops
    judged = on_link if decided is None else decided
    measured = f"{judged / count * 100:.2f}% ({judged}/{count})"
    if decided is not None and decided != on_link:
        measured += f", {on_link} lost"
    if host_drops:
        measured += f", {host_drops} more dropped at the receiver's socket"
    if bursty:
        # Gilbert-Elliott losses are correlated: a binomial interval would be too narrow
        return Check(name, f"{p * 100:g}% (mean)", measured, duplicates == 0,
                     "burst loss: mean reported, not judged (losses are correlated)")
    if p:
        lo, hi = kernel.binomial_interval(count, p)
        ok, why = lo <= judged <= hi, f"99.9% interval {lo}..{hi} of {count}"
    else:
        ok, why = judged == 0, "no loss configured: none allowed"
    if duplicates:
        ok, why = False, f"{duplicates} datagrams arrived twice; " + why
    if engine_drops is not None:
        # ground truth: every datagram lost must be one the engine says it dropped
        why += f"; engine dropped {engine_drops}"
        if decided is not None and engine_drops != decided:
            why += f" ({engine_drops - decided} at its queue, not the configured loss)"
        if engine_drops != on_link:
            ok, why = False, why + f" but {on_link} were lost: loss the engine did not decide"
    if host_drops:
        why += (f"; {host_drops} datagrams the receiver's socket dropped (its buffer full: "
                f"the machine did not run it in time) are not the link's")
    return Check(name, f"{p * 100:g}%", measured, ok, why)


def judge_rtt(expected_s: float, median_s: float | None) -> Check:
    if median_s is None:
        return Check("rtt", f"{expected_s * 1e3:g} ms", "no reply", False,
                     "median of the pings, within 1 ms", timing=True)
    ok = abs(median_s - expected_s) <= RTT_TOLERANCE_S
    return Check("rtt", f"{expected_s * 1e3:g} ms", f"{median_s * 1e3:.3f} ms", ok,
                 "median of the pings, within 1 ms", timing=True,
                 late_explains=median_s > expected_s)


def expected_rtt_variation(jitter_a_s: float, jitter_b_s: float) -> float:
    """E|RTT(i+1) - RTT(i)| when each way adds an independent U(-j, +j): the difference
    of two RTTs is a sum of four uniforms, close to normal, whose mean absolute value is
    sqrt(2/pi) times its standard deviation."""
    var = 2 * (jitter_a_s ** 2 + jitter_b_s ** 2) / 3
    return math.sqrt(2 / math.pi * var)


def judge_jitter(jitter_a_s: float, jitter_b_s: float, delay_s: float,
                 samples_s: list[float]) -> Check:
    """RTT variation against the configured jitter of both ways: a lower bound (the jitter
    is there) and an upper one (nothing else adds any), plus every sample inside
    delay +- both jitters."""
    configured = f"+-{jitter_a_s * 1e3:g}/{jitter_b_s * 1e3:g} ms"
    if len(samples_s) < 10:
        return Check("jitter", configured, f"{len(samples_s)} RTTs", False,
                     "at least 10 RTTs needed", timing=True)
    diffs = [abs(b - a) for a, b in zip(samples_s, samples_s[1:])]
    var = sum(diffs) / len(diffs)
    e = expected_rtt_variation(jitter_a_s, jitter_b_s)
    lo = JITTER_BAND[0] * e if e else 0.0
    hi = JITTER_BAND[1] * e + JITTER_TOLERANCE_S
    spread = jitter_a_s + jitter_b_s
    low_rtt, high_rtt = delay_s - spread - RTT_TOLERANCE_S, delay_s + spread + RTT_TOLERANCE_S
    outside = [x for x in samples_s if not low_rtt <= x <= high_rtt]
    # a few RTTs out of the band may be the measuring ping's own scheduling; more than one
    # in ten is jitter the link added
    ok = lo <= var <= hi and len(outside) <= INSIDE_SHARE_SLACK * len(samples_s)
    detail = (f"mean |RTT difference| within {lo * 1e3:.2f}..{hi * 1e3:.2f} ms "
              f"(expected {e * 1e3:.2f}); 90% of RTTs within {low_rtt * 1e3:.1f}.."
              f"{high_rtt * 1e3:.1f} ms")
    if outside:
        detail += f"; {len(outside)} outside, e.g. {outside[0] * 1e3:.2f} ms"
    late = var >= lo and not any(x < low_rtt for x in outside)
    return Check("jitter", configured, f"{var * 1e3:.3f} ms", ok, detail, timing=True,
                 late_explains=late)


def judge_rate(rate_bps: int | None, goodput_bps: float, engine: str,
               direction: str = "a>b") -> Check:
    from .forwarder import MAX_RATE_BPS
    if not rate_bps:
        if engine == "userspace":
            err = abs(goodput_bps - MAX_RATE_BPS) / MAX_RATE_BPS
            return Check(f"capacity {direction}", f"ceiling {_fmt_rate(MAX_RATE_BPS)}",
                         _fmt_rate(goodput_bps), err <= RATE_TOLERANCE,
                         f"TCP goodput within 10% of the userspace engine's ceiling "
                         f"(off {err:.1%})", timing=True,
                         late_explains=goodput_bps < MAX_RATE_BPS)
        return Check(f"capacity {direction}", f">= {_fmt_rate(MAX_RATE_BPS)}",
                     _fmt_rate(goodput_bps), goodput_bps >= MAX_RATE_BPS,
                     "TCP goodput through the kernel engine: at least the userspace "
                     "engine's ceiling (an unshaped veth has no configured capacity to "
                     "bound it from above)", timing=True, late_explains=True)
    err = abs(goodput_bps - rate_bps) / rate_bps
    return Check(f"rate {direction}", _fmt_rate(rate_bps), _fmt_rate(goodput_bps),
                 err <= RATE_TOLERANCE, f"TCP goodput within 10% (off {err:.1%})",
                 timing=True, late_explains=goodput_bps < rate_bps)


def judge_engine(engine_stats: dict) -> Check:
    """The userspace engine's own account: it must not have been overrun (frames the
    kernel dropped before it could read them: loss nobody configured) nor have died. How
    late it was is not judged here but reported (timing_report): the timing checks are
    only as good as that."""
    overruns = sum(s.get("overruns", 0) for s in engine_stats.values())
    late = sum(s.get("late", {}).get("count", 0) for s in engine_stats.values())
    sent = sum(s.get("late", {}).get("sent", 0) for s in engine_stats.values())
    worst = max((s.get("late", {}).get("max_s", 0) for s in engine_stats.values()), default=0)
    died = [p for p, s in engine_stats.items() if "error" in s]
    ok = overruns == 0 and not died
    detail = (f"{sent} frames; late = over 1 ms after plan (reported in timing); worst "
              f"{worst * 1e6:.0f} us")
    if died:
        detail = f"the engine died in phase {', '.join(died)}; " + detail
    return Check("engine", "0 overruns", f"{overruns} overruns, {late} late", ok, detail)


# a TCP sender or receiver that waited for a CPU longer than this share of its transfer:
# a wait w at the end of a transfer of T stamps its last byte late, a shortfall of
# w / (T + w), so a shorter wait cannot explain a goodput the rate check fails
WAIT_SHARE_RELIABLE = RATE_TOLERANCE


def judge_timing(engine_stats: dict, queue_drops: int = 0,
                 transfers: dict | None = None) -> dict:
    """The run's timing, from each phase's engine report (forwarder.timing_report) and the
    rate phase's TCP pair (`transfers`: "a>b" -> measure_goodput's result): reliable when
    every phase kept time. A receiver held back at the end of its transfer stamps its last
    byte late, and the goodput falls with it (tbf or the engine kept the rate all along):
    so a sender or receiver that waited for a CPU more than the rate check's tolerance of
    the transfer's time did not keep time. `queue_drops`: the loss phase's
    datagrams dropped at the engine's queue (its senders fell behind and caught up in
    bursts)."""
    from .forwarder import timing_report
    notes = []
    for phase, stats in engine_stats.items():
        if stats.get("engine") == "userspace":
            notes += [f"{phase}: {n}" for n in timing_report(stats)["notes"]]
    for direction, t in (transfers or {}).items():
        for who, waited in (("sender", t.get("sender_waited_s")),
                            ("receiver", t.get("waited_s"))):
            if waited is not None and waited > WAIT_SHARE_RELIABLE * t["seconds"]:
                notes.append(f"rate {direction}: the TCP {who} waited {waited:.2f} s for a "
                             f"CPU during its {t['seconds']:.2f} s transfer: the machine "
                             f"was busy")
    if queue_drops:
        notes.append(f"loss: {queue_drops} datagrams dropped at the engine's queue: the "
                     f"senders were held back and caught up in bursts")
    late = sum(s.get("late", {}).get("count", 0) for s in engine_stats.values())
    sent = sum(s.get("late", {}).get("sent", 0) for s in engine_stats.values())
    return {"reliable": not notes, "notes": notes, "late": late, "sent": sent}


def _drops(stats: dict, direction: str) -> tuple[int | None, int | None]:
    """(every drop the engine made in the direction, those of the configured loss)."""
    total = (stats.get("loss_drops") or {}).get(direction)
    counts = (stats.get("directions") or {}).get(direction)
    decided = counts.get("loss", 0) + counts.get("burst", 0) if counts else None
    return total, decided


def run(imp: Impairment, *, engine: str = "auto", privilege: str = "auto",
        count: int = 10_000, pps: float = 20_000, seconds: float = 3.0,
        ledger_dir: Path | None = None) -> dict:
    checks: list[Check] = []
    measured: dict = {}
    engine_stats: dict = {}
    queue_drops = 0
    t0 = time.monotonic()
    # the userspace engine's ledgers: kept where asked, else in a directory removed on
    # every way out (the figures that matter are in the result)
    with tempfile.TemporaryDirectory(prefix="labkit-selftest-") as scratch, \
            up(default_topology(), privilege=privilege) as lab:
        netem = have_netem(lab)
        choice = choose_engine(imp, netem, engine)
        if ledger_dir is not None and choice.engine == "kernel":
            raise SpecError(f"--ledger-dir keeps the userspace engine's ledgers; the engine "
                            f"is the kernel's here ({choice.reason}), which writes none: "
                            f"give --engine userspace, or no --ledger-dir")
        ledger_dir = Path(ledger_dir or scratch)
        ledger_dir.mkdir(parents=True, exist_ok=True)
        if choice.engine == "userspace":
            from .emulator import check_capacity
            check_capacity(imp)

        # loss, both ways at once
        phase = _only(imp, ("loss", "burst"))
        eng = start_engine(lab, phase, choice, netem,
                           ledger_dir / f"selftest-{lab.run_id}-loss.jsonl")
        try:
            loss = measure_loss(lab, count, pps if choice.engine == "kernel"
                                else min(pps, USERSPACE_PPS),
                                pairs=(("a", "b"), ("b", "a")))
        finally:
            engine_stats["loss"] = eng.stop()
        measured["loss"] = {**loss["a_to_b"], "sent": count,
                            "fraction": loss["a_to_b"]["lost"] / count}
        measured["loss_b_to_a"] = {**loss["b_to_a"], "sent": count,
                                   "fraction": loss["b_to_a"]["lost"] / count}
        for direction, label in (("a_to_b", "a>b"), ("b_to_a", "b>a")):
            d = imp.direction(direction)
            total, decided = _drops(engine_stats["loss"], direction)
            if total is not None and decided is not None:
                queue_drops += total - decided
            got = loss[direction]
            checks.append(judge_loss(count, got["lost"], got["duplicates"],
                                     d.burst.mean_loss() if d.burst else d.loss,
                                     bursty=d.burst is not None, engine_drops=total,
                                     decided=decided, direction=label,
                                     host_drops=got.get("socket_drops", 0)))

        # rtt and jitter
        phase = _only(imp, ("delay_s", "jitter_s"))
        eng = start_engine(lab, phase, choice, netem,
                           ledger_dir / f"selftest-{lab.run_id}-rtt.jsonl")
        try:
            rtt = measure_rtt(lab, PINGS)
        finally:
            engine_stats["rtt"] = eng.stop()
        measured["rtt"] = rtt
        delay = imp.a_to_b.delay_s + imp.b_to_a.delay_s
        checks.append(judge_rtt(delay, rtt["median_s"]))
        checks.append(judge_jitter(imp.a_to_b.jitter_s, imp.b_to_a.jitter_s, delay,
                                   rtt["samples_s"]))

        # rate, one way and then the other
        phase = _only(imp, ("rate_bps", "queue_bytes", "delay_s", "jitter_s"))
        eng = start_engine(lab, phase, choice, netem,
                           ledger_dir / f"selftest-{lab.run_id}-rate.jsonl")
        try:
            good = measure_goodput(lab, seconds, "a", "b")
            good_back = measure_goodput(lab, seconds, "b", "a")
        finally:
            engine_stats["rate"] = eng.stop()
        measured["goodput"] = good
        measured["goodput_b_to_a"] = good_back
        checks.append(judge_rate(imp.a_to_b.rate_bps, good["goodput_bps"], choice.engine))
        checks.append(judge_rate(imp.b_to_a.rate_bps, good_back["goodput_bps"],
                                 choice.engine, "b>a"))
        if choice.engine == "userspace":
            checks.append(judge_engine(engine_stats))
        privilege_info = lab.privilege.as_dict()
    timing = judge_timing(engine_stats, queue_drops,
                          {"a>b": measured["goodput"], "b>a": measured["goodput_b_to_a"]})
    for c in checks:
        c.settle(timing["reliable"])
    return {
        "engine": choice.engine, "engine_reason": choice.reason, "netem": netem,
        "privilege": privilege_info,
        "configured": {k: v for k, v in asdict(imp.a_to_b).items() if v},
        "configured_b_to_a": {k: v for k, v in asdict(imp.b_to_a).items() if v},
        "measured": measured, "engine_stats": engine_stats, "timing": timing,
        "checks": [asdict(c) for c in checks],
        "ok": all(c.status != "fail" for c in checks),
        "seconds": time.monotonic() - t0,
    }
