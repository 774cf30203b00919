"""`labkit selftest`: build the lab, measure what the link really does, compare.

Each configured property is measured in its own phase, with only the settings that shape
it applied, so one cannot mask another (a 5% loss would otherwise also cut TCP goodput far
below the configured rate):

    loss   UDP datagrams a->b, each numbered; lost = sent - received. Pass: inside the
           exact binomial 99.9% interval of the configured loss (kernel.binomial_interval);
           with no loss configured, exactly zero (an engine must never drop a packet it was
           not told to drop). The engine's own drop count is reported beside it.
    rtt    ping a->b; the median RTT. Pass: within 1 ms of the two configured one-way
           delays added up.
    rate   one TCP bulk transfer a->b for a few seconds (with the delay applied too);
           the receiver's goodput. Pass: within 10% of the configured rate. With no rate
           configured it is the link's capacity, reported (the userspace engine's own
           ceiling, or the kernel's).
"""

from __future__ import annotations

import json
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
from .impairment import Direction, Impairment, choose_engine
from .lab import Lab, up
from .topology import default_topology

UDP_PORT, TCP_PORT = 5301, 5302
RTT_TOLERANCE_S = 1e-3
RATE_TOLERANCE = 0.10
USERSPACE_PPS = 10_000


@dataclass
class Check:
    name: str
    configured: str
    measured: str
    ok: bool
    detail: str = ""


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
    out, err = proc.communicate(timeout=timeout)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measurement program failed: {err.strip()[-500:]}")
    return json.loads(lines[-1])


def measure_loss(lab: Lab, count: int, pps: float) -> dict:
    recv = _receiver(lab, "b", ["udp-recv", str(UDP_PORT), "--count", str(count),
                                "--idle", "1.0", "--deadline", str(count / pps + 20)])
    send = lab.exec("a", _py("udp-send", lab.addr("b"), str(UDP_PORT), "--count", str(count),
                             "--pps", str(pps)), timeout=count / pps + 30)
    if send.returncode != 0:
        raise RuntimeError(f"UDP sender failed: {send.stderr.strip()[-500:]}")
    return _result(recv, timeout=30)


def measure_rtt(lab: Lab, count: int = 20) -> dict:
    done = lab.exec("a", ["ping", "-c", str(count), "-i", "0.05", "-W", "2", lab.addr("b")],
                    timeout=count * 2 + 10)
    rtts = [float(x.split("time=")[1].split()[0]) / 1e3
            for x in done.stdout.splitlines() if "time=" in x]
    return {"sent": count, "received": len(rtts),
            "median_s": statistics.median(rtts) if rtts else None,
            "min_s": min(rtts, default=None), "max_s": max(rtts, default=None)}


def measure_goodput(lab: Lab, seconds: float) -> dict:
    recv = _receiver(lab, "b", ["tcp-recv", str(TCP_PORT), "--deadline", str(seconds + 30)])
    send = lab.exec("a", _py("tcp-send", lab.addr("b"), str(TCP_PORT), "--seconds",
                             str(seconds)), timeout=seconds + 30)
    if send.returncode != 0:
        raise RuntimeError(f"TCP sender failed: {send.stderr.strip()[-500:]}")
    return _result(recv, timeout=30)


def _fmt_rate(bps: float) -> str:
    return f"{bps / 1e6:.2f} Mbit/s"


# ---- judging: pure, tested by tables ----

def judge_loss(count: int, lost: int, duplicates: int, p: float, *, bursty: bool = False,
               engine_drops: int | None = None) -> Check:
    measured = f"{lost / count * 100:.2f}% ({lost}/{count})"
    if bursty:
        # Gilbert-Elliott losses are correlated: a binomial interval would be too narrow
        return Check("loss a>b", f"{p * 100:g}% (mean)", measured, duplicates == 0,
                     "burst loss: mean reported, not judged (losses are correlated)")
    if p:
        lo, hi = kernel.binomial_interval(count, p)
        ok, why = lo <= lost <= hi, f"99.9% interval {lo}..{hi} of {count}"
    else:
        ok, why = lost == 0, "no loss configured: none allowed"
    if duplicates:
        ok, why = False, f"{duplicates} datagrams arrived twice; " + why
    if engine_drops is not None:
        # ground truth: every datagram lost must be one the engine says it dropped
        why += f"; engine dropped {engine_drops}"
        if engine_drops != lost:
            ok, why = False, why + f" but {lost} were lost: loss the engine did not decide"
    return Check("loss a>b", f"{p * 100:g}%", measured, ok, why)


def judge_rtt(expected_s: float, median_s: float | None) -> Check:
    if median_s is None:
        return Check("rtt", f"{expected_s * 1e3:g} ms", "no reply", False,
                     "median of 20 pings, within 1 ms")
    ok = abs(median_s - expected_s) <= RTT_TOLERANCE_S
    return Check("rtt", f"{expected_s * 1e3:g} ms", f"{median_s * 1e3:.3f} ms", ok,
                 "median of 20 pings, within 1 ms")


def judge_rate(rate_bps: int | None, goodput_bps: float, engine: str) -> Check:
    if not rate_bps:
        return Check("capacity a>b", "unlimited", _fmt_rate(goodput_bps), goodput_bps > 0,
                     f"TCP goodput through the {engine} engine")
    err = abs(goodput_bps - rate_bps) / rate_bps
    return Check("rate a>b", _fmt_rate(rate_bps), _fmt_rate(goodput_bps),
                 err <= RATE_TOLERANCE, f"TCP goodput within 10% (off {err:.1%})")


LATE_FRACTION = 0.01


def judge_engine(engine_stats: dict) -> Check:
    """The userspace engine's own account: it must not have been overrun (frames the
    kernel dropped before it could read them: loss nobody configured), and fewer than 1%
    of its frames may leave late (over 1 ms after plan: the scheduler of a busy 2-core
    machine, which the loss, RTT and rate checks bound in their own terms)."""
    overruns = sum(s.get("overruns", 0) for s in engine_stats.values())
    late = sum(s.get("late", {}).get("count", 0) for s in engine_stats.values())
    sent = sum(s.get("late", {}).get("sent", 0) for s in engine_stats.values())
    worst = max((s.get("late", {}).get("max_s", 0) for s in engine_stats.values()), default=0)
    died = [p for p, s in engine_stats.items() if "error" in s]
    ok = overruns == 0 and late <= LATE_FRACTION * sent and not died
    detail = (f"{sent} frames; late = over 1 ms after plan, at most 1%; worst "
              f"{worst * 1e6:.0f} us")
    if died:
        detail = f"the engine died in phase {', '.join(died)}; " + detail
    return Check("engine", "0 overruns, <1% late", f"{overruns} overruns, {late} late", ok,
                 detail)


def run(imp: Impairment, *, engine: str = "auto", privilege: str = "auto",
        count: int = 10_000, pps: float = 20_000, seconds: float = 3.0,
        ledger_dir: Path | None = None) -> dict:
    checks: list[Check] = []
    measured: dict = {}
    engine_stats: dict = {}
    t0 = time.monotonic()
    # the userspace engine's ledgers: kept where asked, else in a directory removed on
    # every way out (the figures that matter are in the result)
    with tempfile.TemporaryDirectory(prefix="labkit-selftest-") as scratch, \
            up(default_topology(), privilege=privilege) as lab:
        ledger_dir = Path(ledger_dir or scratch)
        ledger_dir.mkdir(parents=True, exist_ok=True)
        netem = have_netem(lab)
        choice = choose_engine(imp, netem, engine)
        if choice.engine == "userspace":
            from .emulator import check_capacity
            check_capacity(imp)
        d = imp.a_to_b

        # loss
        phase = _only(imp, ("loss", "burst"))
        eng = start_engine(lab, phase, choice, netem,
                           ledger_dir / f"selftest-{lab.run_id}-loss.jsonl")
        try:
            # the userspace engine carries about 30k frames/s on 2 cores: keep the loss
            # measurement well inside that, so it measures the loss and not the engine
            loss = measure_loss(lab, count, pps if choice.engine == "kernel"
                                else min(pps, USERSPACE_PPS))
        finally:
            engine_stats["loss"] = eng.stop()
        p = d.burst.mean_loss() if d.burst else d.loss
        measured["loss"] = {**loss, "sent": count, "fraction": loss["lost"] / count}
        engine_drops = engine_stats["loss"].get("loss_drops", {}).get("a_to_b")
        checks.append(judge_loss(count, loss["lost"], loss["duplicates"], p,
                                 bursty=d.burst is not None, engine_drops=engine_drops))

        # rtt
        phase = _only(imp, ("delay_s", "jitter_s"))
        eng = start_engine(lab, phase, choice, netem,
                           ledger_dir / f"selftest-{lab.run_id}-rtt.jsonl")
        try:
            rtt = measure_rtt(lab)
        finally:
            engine_stats["rtt"] = eng.stop()
        measured["rtt"] = rtt
        checks.append(judge_rtt(imp.a_to_b.delay_s + imp.b_to_a.delay_s, rtt["median_s"]))

        # rate
        phase = _only(imp, ("rate_bps", "queue_bytes", "delay_s", "jitter_s"))
        eng = start_engine(lab, phase, choice, netem,
                           ledger_dir / f"selftest-{lab.run_id}-rate.jsonl")
        try:
            good = measure_goodput(lab, seconds)
        finally:
            engine_stats["rate"] = eng.stop()
        measured["goodput"] = good
        checks.append(judge_rate(d.rate_bps, good["goodput_bps"], choice.engine))
        if choice.engine == "userspace":
            checks.append(judge_engine(engine_stats))
        privilege_info = lab.privilege.as_dict()
    return {
        "engine": choice.engine, "engine_reason": choice.reason, "netem": netem,
        "privilege": privilege_info,
        "configured": {k: v for k, v in asdict(imp.a_to_b).items() if v},
        "measured": measured, "engine_stats": engine_stats,
        "checks": [asdict(c) for c in checks], "ok": all(c.ok for c in checks),
        "seconds": time.monotonic() - t0,
    }
