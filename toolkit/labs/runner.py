"""`labkit run`: a lab spec in, a run folder out (docs/runs.md).

    build the lab (root or rootless) -> start the link engine -> start the captures and
    prove them ready -> receivers listening -> senders on schedule -> stop in reverse
    (senders, receivers, captures after the kernel ring has drained, engine) -> tear down
    -> analyze every capture -> reconcile with the ledger -> expectations -> report

run.json is written at the start (status "running") and again at the end of every phase,
always through a temporary file and a rename, so a run cut short by Ctrl-C, SIGTERM or an
error leaves a folder that says how far it got; the lab's own teardown (netlab.up) removes
everything of the lab on every path. Exit status: 0 every expectation holds, 1 one failed,
2 a bad spec or option, 3 this machine cannot run the lab (the message says what to do),
130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from . import expect
from .folder import RUN_VERSION
from .spec import LabError, LabSpec

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_CANNOT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CannotRun(RuntimeError):
    """This machine cannot run the lab; the message says what is missing and what to do."""


def default_out(spec: LabSpec, root: Path = Path("runs")) -> Path:
    return root / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class Console:
    """Progress on the terminal: one rewritten line on a tty, plain lines otherwise."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._open = False
        self._last_plain = 0.0

    def line(self, text: str) -> None:
        if self._open:
            self.stream.write("\r\033[K")
            self._open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self._open = True
            self.stream.flush()
        elif time.monotonic() - self._last_plain >= 2.0:
            self._last_plain = time.monotonic()
            self.line(text)

    def done(self) -> None:
        if self._open:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._open = False


def jsonable_value(x):
    from ..api import jsonable        # numpy scalars from the analysis tables
    return jsonable(x)


class RunRecord:
    """run.json as it grows, written after every phase."""

    def __init__(self, spec: LabSpec, out: Path):
        self.out = out
        self.doc: dict = {
            "schema": "labkit-run", "version": RUN_VERSION,
            "lab": {"name": spec.name, "title": spec.title, "path": str(spec.path),
                    "sha256": spec.sha256},
            "spec": spec.resolved, "params": spec.params, "overrides": list(spec.overrides),
            "seed": spec.seed, "status": "running", "interrupted": None, "exit_status": None,
            "started_unix_s": time.time(), "ended_unix_s": None, "phases": [],
            "environment": None, "network": None, "engine": None,
            "timing": {"reliable": True, "notes": []}, "captures": {}, "flows": [],
            "events": [], "files": {}, "expectations": [], "summary": {}}
        self.phase_name: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str, console: Console):
        self.phase_name = name
        t0, wall = time.monotonic(), time.time()
        console.status(f"[{name}]")
        try:
            yield
        finally:
            self.doc["phases"].append({"name": name, "started_unix_s": wall,
                                       "duration_s": round(time.monotonic() - t0, 6)})
            self.write()

    def write(self) -> None:
        path = self.out / "run.json"
        tmp = path.with_name(f".run.json.{os.getpid()}.part")
        tmp.write_text(json.dumps(self.doc, indent=1, default=jsonable_value) + "\n")
        os.replace(tmp, path)


def prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise LabError(f"--out {out}: exists and is not empty; a run never overwrites another")
    out.mkdir(parents=True, exist_ok=True)


def run(spec: LabSpec, out: Path, *, engine: str | None = None, privilege: str = "auto",
        stream=sys.stdout) -> int:
    """Run the lab into `out` (which must not hold anything yet); returns the exit status."""
    from .. import netlab
    from ..netlab import Interrupted
    from ..netlab.lab import signals_raise

    console = Console(stream)
    prepare_out(out)
    (out / "lab.toml").write_text(spec.source)
    rec = RunRecord(spec, out)
    rec.write()
    console.line(f"labkit run {spec.name}: {spec.title}")
    console.line(f"  seed {spec.seed}, link: {spec.impairment.describe()}, into {out}")
    status = EXIT_OK
    try:
        # SIGTERM and SIGHUP end the run as Ctrl-C does in every phase, not only while the
        # lab is up: run.json then says where it stopped
        with signals_raise():
            try:
                _live_part(spec, out, rec, console, engine or spec.engine, privilege)
            except netlab.ApplyError as e:
                raise _explain_apply_error(e) from None
            status = _offline_part(out, rec, console)
        rec.doc["status"] = "complete"
    except (KeyboardInterrupt, Interrupted) as e:
        sig = "SIGINT" if isinstance(e, KeyboardInterrupt) else str(e)
        rec.doc["status"] = "interrupted"
        rec.doc["interrupted"] = {"phase": rec.phase_name, "signal": sig}
        console.line(f"labkit run: interrupted during {rec.phase_name} ({sig}); the lab is "
                     f"torn down, the folder {out} keeps what was written")
        status = EXIT_INTERRUPTED
    except CannotRun as e:
        rec.doc["status"] = "failed"
        rec.doc["interrupted"] = {"phase": rec.phase_name, "error": str(e)}
        console.line(f"labkit run: this machine cannot run {spec.name}: {e}")
        status = EXIT_CANNOT
    except LabError as e:
        rec.doc["status"] = "failed"
        rec.doc["interrupted"] = {"phase": rec.phase_name, "error": str(e)}
        console.line(f"labkit run: {e}")
        status = EXIT_INPUT
    except Exception as e:
        rec.doc["status"] = "failed"
        rec.doc["interrupted"] = {"phase": rec.phase_name, "error": f"{type(e).__name__}: {e}"}
        console.line(f"labkit run: failed during {rec.phase_name}: {type(e).__name__}: {e}")
        status = EXIT_FAIL
    finally:
        console.done()
        rec.doc["exit_status"] = status
        rec.doc["ended_unix_s"] = time.time()
        rec.write()
    return status


def _explain_apply_error(e) -> Exception:
    """A step of building the lab failed: a spec the kernel refused is the lab's error (2),
    anything else this machine's (3); either way with what the kernel said."""
    text = str(e)
    if "tcp_congestion_control" in text and "not permitted" in text.lower():
        return LabError(f"{text}\n  a network namespace may only make an algorithm listed in "
                        f"net.ipv4.tcp_allowed_congestion_control its default; choose it per "
                        f"flow instead: send = {{congestion = \"cubic\", ...}}")
    if "sysctl" in text and ("cannot stat" in text or "No such file" in text):
        return LabError(f"{text}\n  this kernel has no such sysctl; check [topology.sysctl]")
    return CannotRun(text)


def _live_part(spec: LabSpec, out: Path, rec: RunRecord, console: Console, engine_asked: str,
               privilege: str) -> None:
    from .. import capture, netlab
    from ..netlab import engine as engines
    from ..netlab.emulator import CapacityError, EmulatorError
    from ..netlab.impairment import SpecError, choose_engine
    from . import record
    from .flows import FlowError, Traffic

    with rec.phase("environment", console):
        rec.doc["environment"] = record.environment()
        if spec.files:
            # the lab's own files (files.py), before any program that reads them starts
            from .files import make
            try:
                rec.doc["made_files"] = make(spec.files, out, spec.seed)
            except OSError as e:
                raise CannotRun(f"cannot make the lab's files in {out}: {e}") from None
        try:
            priv = netlab.detect(privilege)
        except netlab.PrivilegeError as e:
            raise CannotRun(str(e)) from None
        rec.doc["environment"]["privilege"] = priv.as_dict()
        backend = spec.capture.backend
        installed = capture.installed_backends()
        if backend is None:
            backend = next((b for b in ("dumpcap", "tcpdump", "scapy") if b in installed), None)
            if priv.mode == "rootless" and backend == "tcpdump":
                backend = "dumpcap" if "dumpcap" in installed else "scapy"
        if backend is None or backend not in installed:
            raise CannotRun(f"no capture backend{f' {backend!r}' if backend else ''} here: "
                            f"install dumpcap (Debian package wireshark-common), tcpdump, or "
                            f"scapy (pip install scapy); `make test` as root installs them")

    with rec.phase("lab", console), netlab.up(spec.topology, privilege=privilege) as lab:
        console.line(f"  lab {lab.run_id} up ({lab.privilege.mode}) in "
                     f"{lab.timings.get('setup_s', 0):.2f} s")
        rec.doc["network"] = {"run_id": lab.run_id}

        with rec.phase("engine", console):
            link = spec.impairment
            eng = None
            choice = None
            if not link.is_clean() or engine_asked == "userspace":
                netem = engines.have_netem(lab)
                try:
                    choice = choose_engine(link, netem, engine_asked)
                except SpecError as e:
                    raise CannotRun(str(e)) from None
                try:
                    eng = engines.start(lab, link, choice, netem, out / "link.jsonl")
                except CapacityError as e:
                    raise LabError(str(e)) from None
                except EmulatorError as e:
                    raise CannotRun(str(e)) from None
                rec.doc["engine"] = {"name": choice.engine, "reason": choice.reason,
                                     "netem": netem, "stats": None}
                if choice.engine == "userspace":
                    rec.doc["files"]["ledger"] = "link.jsonl"
                console.line(f"  link engine: {choice.engine} ({choice.reason})")
            else:
                rec.doc["engine"] = {"name": None, "reason": "no impairment: the router's "
                                     "kernel forwards", "netem": None, "stats": None}
            sysctl_names = tuple(n for h in spec.topology.hosts for n, _ in h.sysctls)
            rec.doc["network"] = record.network(lab, sysctl_names)

        with rec.phase("capture", console):
            points = capture.vantage_points(lab, list(spec.capture.points)
                                            if spec.capture.points else None)
            try:
                caps = capture.start_many(lab, points, out, backend=backend,
                                          impairment=link, snaplen=spec.capture.snaplen,
                                          bpf_filter=spec.capture.filter)
            except capture.CaptureFailed as e:
                raise CannotRun(f"the capture did not start: {e}") from None
            console.line(f"  capturing with {backend} at {', '.join(p.name for p in points)}")

        traffic = Traffic(lab, spec.flows, out, spec.duration_s)
        observers = Observers(lab, spec.observe, out, rec.doc)
        try:
            with rec.phase("receivers", console):
                observers.start()
                try:
                    traffic.start_receivers()
                except FlowError as e:
                    raise LabError(str(e)) from None

            with rec.phase("traffic", console):
                shown = [0.0]

                def tick(elapsed: float, running: list[str]) -> None:
                    # once a second: counting walks the capture files, and the link engine
                    # needs the CPU more than the terminal does
                    if elapsed - shown[0] < 1.0:
                        return
                    shown[0] = elapsed
                    counts = " ".join(f"{p.name} {_packets(caps, p.name)}" for p in points)
                    console.status(f"  traffic {elapsed:4.1f}/{spec.duration_s:g} s  "
                                   f"running: {', '.join(running) or '-'}  packets: {counts}")
                traffic.run(tick)
                for line in traffic.events:
                    console.line(f"  {line}")
        finally:
            traffic.stop_all()
            observers.stop()
            rec.doc["flows"] = traffic.as_dicts()
            rec.doc["events"] = [*rec.doc["events"], *traffic.events]
            _judge_pacing(rec, out)
            with rec.phase("stop", console):
                results = caps.stop()
                rec.doc["captures"] = _captures_doc(caps, results, out)
                if eng is not None:
                    stats = eng.stop()
                    rec.doc["engine"]["stats"] = stats
                    _judge_timing(rec, stats)


class Observers:
    """One observer (observer.py) per host of [observe]: the kernel's sockets and counters
    sampled from before the receivers start until the traffic has ended."""

    def __init__(self, lab, observe: dict | None, out: Path, doc: dict):
        self.lab, self.observe, self.out, self.doc = lab, observe, out, doc
        self.procs: list = []

    def start(self) -> None:
        if not self.observe:
            return
        import subprocess

        from ..runtime import child_env
        (self.out / "kernel").mkdir(exist_ok=True)
        files = {}
        for host in self.observe["hosts"]:
            rel = f"kernel/{host}.jsonl"
            files[host] = rel
            with open(self.out / f"kernel/{host}.log", "w") as log:
                self.procs.append(self.lab.popen(
                    host, [sys.executable, "-m", "toolkit.labs.observer", "--every",
                           str(self.observe["every_s"]), "--out", str(self.out / rel)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=child_env()))
        self.doc["observe"] = {"every_s": self.observe["every_s"], "files": files}
        # the first sample (every listener's state before a client comes) before traffic
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not all(
                _lines(self.out / rel) >= 2 for rel in files.values()):
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.02)
        for host, p in zip(files, self.procs):
            if p.poll() is not None or _lines(self.out / files[host]) < 2:
                # the run goes on; its sockets and counters tables will say nothing of it
                self.doc.setdefault("events", []).append(
                    f"the observer on {host} did not start (kernel/{host}.log): its "
                    f"sockets and counters are missing from this run")

    def stop(self) -> None:
        import signal
        import subprocess
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(3.0)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def _lines(path: Path) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _packets(caps, point: str) -> str:
    from ..capture import summarize
    try:
        return str(summarize(caps[point].path).packets)
    except Exception:
        return "?"


def _captures_doc(caps, results, out: Path) -> dict:
    doc = caps.as_dict()
    for entry in doc.values():
        entry["files"] = [os.path.relpath(f, out) for f in entry.get("files", [])]
    return doc


def _judge_timing(rec: RunRecord, stats: dict) -> None:
    """The userspace engine says how late it was; a lab's timing expectations are only as
    good as that (a busy CI machine can make it late). forwarder.timing_report is the one
    judgement, shared with the selftest."""
    from ..netlab.forwarder import timing_report
    notes = rec.doc["timing"]["notes"]
    report = timing_report(stats)
    notes.extend(report["notes"])
    rec.doc["timing"]["late_share"] = report["late_share"]
    rec.doc["timing"]["reliable"] = not notes


PACING_LATE_SHARE = 0.01      # the UDP sender's own bar for "pacing behind schedule"


def _judge_pacing(rec: RunRecord, out: Path) -> None:
    """A paced UDP sender counts the sends that left over its tolerance behind schedule
    (udp.py): when more than 1% did, the gaps the captures show are the machine's, not
    the plan's, and the run's timing is not reliable either."""
    for f in rec.doc.get("flows", []):
        rel = (f.get("send") or {}).get("report")
        if not rel:
            continue
        try:
            pacing = (json.loads((out / rel).read_text()).get("end") or {}).get("pacing")
        except (OSError, ValueError):
            continue
        if pacing and pacing.get("sends") and \
                pacing.get("late", 0) > PACING_LATE_SHARE * pacing["sends"]:
            rec.doc["timing"]["notes"].append(
                f"flow {f['name']}: the UDP sender left {pacing['late']} of {pacing['sends']} "
                f"sends over {pacing.get('tolerance_s', 0) * 1e3:g} ms behind schedule (worst "
                f"{pacing.get('max_late_s', 0) * 1e3:.1f} ms): the machine was busy")
            rec.doc["timing"]["reliable"] = False


def _offline_part(out: Path, rec: RunRecord, console: Console) -> int:
    """Everything after the lab is gone: reads only the run folder (as `labkit check` will)."""
    from .folder import RunFolder
    from .report import write_report

    run = RunFolder(out)
    with rec.phase("analysis", console):
        run.doc = rec.doc
        tables = out / "analysis"
        for point in run.points:
            a = run.analysis(point)
            a.write(tables / point, "parquet", packets=True)
        recon = run.reconciliation()
        recon.summary.to_parquet(tables / "reconciliation.parquet", index=False)
        recon.drops.to_parquet(tables / "drops.parquet", index=False)
        from .results import flow_rows
        side = flow_rows(run)
        rec.doc["summary"]["side_by_side"] = side
        rec.doc["reconciliation"] = {"truth": recon.truth, "unexplained": recon.unexplained,
                                     "notes": recon.notes}
        (tables / "analysis.json").write_text(json.dumps({
            "points": {p: run.analysis(p).summary() for p in run.points},
            "side_by_side": side, "reconciliation": recon.as_dict()},
            indent=1, default=jsonable_value) + "\n")

    with rec.phase("expectations", console):
        exps = list(expect.parse(rec.doc["spec"].get("expect", []), "expect"))
        results = expect.evaluate(exps, run.table, timing_reliable=run.timing_reliable)
        rec.doc["expectations"] = [r.as_dict() for r in results]
        rec.doc["summary"]["expectations"] = expect.summarize(results)
        status = expect.exit_status(results)

    with rec.phase("figures", console):
        # the pictures that fit this run, for report.md and the notebooks; a figure that
        # cannot be drawn is noted, never the end of a run whose data is all written
        try:
            from ..plot import save_figures
            # [lab].figures: the kinds the lab asked for (default: every kind that fits)
            kinds = ((rec.doc.get("spec") or {}).get("lab") or {}).get("figures")
            paths = save_figures(run, out / "figures", kinds=kinds)
            rec.doc["figures"] = [os.path.relpath(p, out) for p in paths]
        except Exception as e:
            rec.doc["figures"] = []
            rec.doc["events"].append(f"figures not drawn: {type(e).__name__}: {e}")

    with rec.phase("report", console):
        rec.doc["status"] = "complete"        # the report says so; an error here undoes it
        text = write_report(run, results)
        console.done()
        console.line("")
        console.line(text)
    return status

