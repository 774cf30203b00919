"""What the lab notebooks call: where the data comes from, the tables, the questions.

    from toolkit.labs import notebook as nb
    run = nb.open_run("04-loss")        # live where this machine can, else the saved run
    nb.side_by_side(run)                # TCP and UDP, like with like
    nb.question(run, "udp-lost")        # the question, its hint
    nb.check(run, "udp-lost", 54)       # right or wrong, with the frames that hold it

The first cell of every notebook decides: a live run (`labkit run`) when this machine can
build a lab (root, or an unprivileged user namespace, and a capture tool), otherwise the
saved reference run in captures/, saying which and why. So the same notebook runs on a
laptop without privileges, on macOS and in CI. LABKIT_SOURCE=saved|live|auto overrides it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .folder import RunFolder

SOURCES = ("auto", "live", "saved")


def saved_dir(lab: str) -> Path:
    here = Path("captures") / lab
    if (here / "run.json").is_file():
        return here
    return Path(__file__).resolve().parents[2] / "captures" / lab


def why_not_live() -> str | None:
    """None when this machine can run a lab; else what is missing."""
    import platform
    if platform.system() != "Linux":
        return f"labs need Linux network namespaces; this is {platform.system()}"
    try:
        from ..netlab import rootless
        rootless.detect()
    except Exception as e:                 # PrivilegeError, or a kernel without namespaces
        return str(e).splitlines()[0]
    from ..capture import installed_backends
    if not installed_backends():
        return "no capture tool (dumpcap, tcpdump or scapy) is installed"
    return None


def open_run(lab: str, source: str | None = None, *, out: str | Path | None = None,
             say=print) -> RunFolder:
    """The run a notebook works on (see the module doc)."""
    source = source or os.environ.get("LABKIT_SOURCE", "auto")
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    if source in ("auto", "live"):
        reason = why_not_live()
        if reason is None:
            return _live(lab, out, say)
        if source == "live":
            raise RuntimeError(f"cannot run {lab} live here: {reason}")
        say(f"Using the saved run of {lab} ({saved_dir(lab)}): this machine cannot run the "
            f"lab live: {reason}.")
    else:
        say(f"Using the saved run of {lab} ({saved_dir(lab)}), as asked.")
    return RunFolder(saved_dir(lab))


def _live(lab: str, out, say) -> RunFolder:
    from . import runner
    from . import spec as S

    spec = S.load(S.find(lab))
    out = Path(out) if out else Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    say(f"Running {lab} live on this machine into {out} (about {spec.duration_s:g} s at most)")
    status = runner.run(spec, out, stream=_Quiet())
    if status not in (runner.EXIT_OK, runner.EXIT_FAIL):
        raise RuntimeError(f"the live run of {lab} failed (exit {status}); see {out}/run.json")
    say(f"Live run done: {out} (expectations: "
        f"{'all hold' if status == runner.EXIT_OK else 'one failed, see report.md'})")
    return RunFolder(out)


class _Quiet:
    """The runner's terminal lines, kept out of the notebook (report.md has them)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# ---- tables ----

SIDE_BY_SIDE = ("flow", "proto", "sent_payload_bytes", "delivered_payload_bytes",
                "goodput_bps", "completion_s", "app_lost_units", "app_lost_fraction",
                "tcpinfo_total_retrans")
RECON = ("direction", "proto", "flow", "link_dropped", "missing_after", "matched_to_ledger",
         "tcp_drops_repaired", "repair_labelled_retransmission",
         "repair_labelled_fast_retransmission", "repair_labelled_out_of_order",
         "udp_lost_at_receiver", "udp_lost_link", "tcpinfo_total_retrans", "unexplained")


def side_by_side(run: RunFolder):
    flows = run.table("flows")
    return flows[[c for c in SIDE_BY_SIDE if c in flows.columns]]


def reconciliation(run: RunFolder):
    s = run.reconciliation().summary
    return s[[c for c in RECON if c in s.columns]]


def notes(run: RunFolder) -> str:
    r = run.reconciliation()
    lines = [f"Truth: {r.truth}."] + [f"- {n}" for n in r.notes]
    lines.append(f"Unexplained: {r.unexplained}")
    return "\n".join(lines)


# ---- questions ----

def questions(run: RunFolder):
    from .questions import run_questions
    return run_questions(run)


def question(run: RunFolder, qid: str) -> str:
    from .questions import find
    q = find(questions(run), qid)
    return f"{q.text}\n(hint: {q.hint})" if q.hint else q.text


def check(run: RunFolder, qid: str, answer):
    from .questions import check as check_one
    return check_one(run, qid, answer)


# ---- a parameter sweep ----

def sweep_dir(lab: str, param: str, value) -> Path:
    """Where the saved sweep run of `lab` with `param` = value is: captures/sweep-<lab>/
    <param>-<value without its unit>/<lab> (made by `labkit run LAB --set PARAM=VALUE
    --save captures/sweep-LAB/PARAM-N`)."""
    tag = str(value).rstrip("%").replace(".", "_")
    return saved_dir(f"sweep-{lab}") / f"{param}-{tag}" / lab


def sweep(lab: str, param: str, values, *, extra: dict | None = None,
          source: str | None = None, say=print) -> dict:
    """One run per value of `param` (with `extra` parameters fixed): live where this
    machine can, else the saved sweep; value -> RunFolder."""
    from . import runner
    from . import spec as S

    source = source or os.environ.get("LABKIT_SOURCE", "auto")
    reason = why_not_live() if source in ("auto", "live") else "saved runs asked for"
    if source == "live" and reason:
        raise RuntimeError(f"cannot run {lab} live here: {reason}")
    sets = [f"{k}={v}" for k, v in (extra or {}).items()]
    out = {}
    if reason is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for v in values:
            spec = S.load(S.find(lab), overrides=[*sets, f"{param}={v}"])
            folder = Path("runs") / f"sweep-{lab}-{stamp}" / f"{param}-{v}".replace("%", "")
            say(f"running {lab} with {param}={v} into {folder}")
            runner.run(spec, folder, stream=_Quiet())
            out[v] = RunFolder(folder)
        return out
    say(f"Using the saved sweep of {lab} (this machine cannot run it live: {reason}).")
    for v in values:
        out[v] = RunFolder(sweep_dir(lab, param, v))
    return out


def sweep_table(runs: dict, param: str):
    """One row per run: the parameter, TCP's goodput and completion, UDP's delivery."""
    import pandas as pd
    rows = []
    for value, run in runs.items():
        flows = {r["flow"]: r for r in run.table("flows").to_dict("records")}
        tcp, udp = flows.get("tcp", {}), flows.get("udp", {})
        recon = run.reconciliation().summary
        dropped = int(recon["link_dropped"].fillna(0).sum())
        sent, got = udp.get("sent_units"), udp.get("delivered_units")
        rows.append({param: value, "link_dropped": dropped,
                     "tcp_goodput_bps": tcp.get("goodput_bps"),
                     "tcp_completion_s": tcp.get("completion_s"),
                     "tcp_delivered_bytes": tcp.get("delivered_payload_bytes"),
                     "tcp_retransmissions": tcp.get("tcpinfo_total_retrans"),
                     "udp_delivered_fraction": got / sent if sent else None,
                     "udp_lost": udp.get("app_lost_units")})
    return pd.DataFrame(rows)
