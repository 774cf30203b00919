"""A lab's flows as processes: `labkit serve` on the server host, `labkit send` on the client,
each in its host's namespace, each writing its JSON report into the run folder.

Order, as a measurement must have it: every receiver is listening (its "Server listening"
line, which `labkit serve` prints only once the socket is bound and its signal handlers are
in place) before any sender starts; a sender starts at its flow's `start` time, or that
long after the flow named by `after` ended. `labkit serve -1` ends by itself after its one
client (TCP) or flow (UDP, on the sender's end marker); at the lab's duration whatever
still runs gets SIGINT, which both endpoints turn into a clean stop with their report
written, then SIGTERM and SIGKILL if it does not end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime import child_env
from .spec import FlowSpec

READY_LINE = "Server listening"
READY_TIMEOUT_S = 10.0
SERVER_GRACE_S = 5.0          # after its sender ended, for the receiver's own end
STOP_GRACE_S = 3.0


class FlowError(RuntimeError):
    """An endpoint could not start; the message quotes what it printed."""


@dataclass
class Endpoint:
    """One `labkit send` or `labkit serve` process and what the run records of it."""
    flow: str
    side: str                     # "send" | "serve"
    host: str
    argv: list[str]
    report: Path
    log: Path
    proc: subprocess.Popen | None = None
    started: float | None = None  # unix s
    ended: float | None = None
    timed_out: bool = False
    ready: threading.Event = field(default_factory=threading.Event)
    _pump: threading.Thread | None = None

    def start(self, lab) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.proc = lab.popen(self.host, self.argv, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                              env=child_env(), bufsize=1)
        self._pump = threading.Thread(target=self._copy_output, daemon=True,
                                      name=f"{self.flow}.{self.side} output")
        self._pump.start()

    def _copy_output(self) -> None:
        with open(self.log, "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                if line.startswith(READY_LINE):
                    self.ready.set()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll(self) -> int | None:
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None and self.ended is None:
            self.ended = time.time()
        return rc

    def stop(self, why_timed_out: bool = True) -> None:
        """SIGINT (a clean stop with the report), then SIGTERM, then SIGKILL."""
        if not self.running():
            self.poll()
            return
        self.timed_out = why_timed_out
        for sig, wait in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 2.0),
                          (signal.SIGKILL, 2.0)):
            try:
                self.proc.send_signal(sig)
            except OSError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.poll()

    def finish(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=2.0)

    def tail(self, lines: int = 6) -> str:
        try:
            return "\n".join(self.log.read_text().strip().splitlines()[-lines:])
        except OSError:
            return ""

    def as_dict(self, run_dir: Path) -> dict:
        return {"host": self.host, "argv": self.argv,
                "exit_status": None if self.proc is None else self.proc.returncode,
                "report": _rel(self.report, run_dir) if self.report.exists() else None,
                "log": _rel(self.log, run_dir), "started_unix_s": self.started,
                "ended_unix_s": self.ended, "timed_out": self.timed_out}


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def _cli(*words: str) -> list[str]:
    # by module, from the checkout or the install alike (runtime.child_env sets the path)
    return [sys.executable, "-m", "toolkit.cli", *words]


def endpoints_for(flow: FlowSpec, lab, run_dir: Path) -> tuple[Endpoint | None, Endpoint]:
    """The receiver and the sender of one flow, not started. A scenario flow runs the
    scenario's server and client roles instead (no receiver when it has no server role)."""
    from .files import expand
    folder = run_dir / "endpoints"
    cport: tuple[str, ...] = (() if flow.client_port is None       # a SYN flood's client
                              else ("--cport", str(flow.client_port)))
    if flow.scenario:
        serve_cmd = ("scenario", flow.scenario, "server")
        send_cmd = ("scenario", flow.scenario, "client")
        one_off: tuple[str, ...] = ()
    else:
        serve_cmd, send_cmd, one_off = ("serve",), ("send",), ("-1",)
        parallel = flow.send.get("parallel")
        if isinstance(parallel, int) and not isinstance(parallel, bool) and parallel > 1:
            # `labkit send --parallel N`: the server's one-off is N clients
            one_off = ("--clients", str(parallel))
    serve = Endpoint(flow.name, "serve", flow.server, _cli(
        *serve_cmd, "--proto", flow.proto, "-p", str(flow.port), *one_off,
        "--json-file", str(folder / f"{flow.name}.serve.json"),
        *expand(flow.serve_args(), run_dir)),
        folder / f"{flow.name}.serve.json", folder / f"{flow.name}.serve.log") \
        if flow.has_server else None
    send = Endpoint(flow.name, "send", flow.client, _cli(
        *send_cmd, lab.addr(flow.server), "--proto", flow.proto, "-p", str(flow.port),
        *cport,
        "--json-file", str(folder / f"{flow.name}.send.json"),
        *expand(flow.send_args(), run_dir)),
        folder / f"{flow.name}.send.json", folder / f"{flow.name}.send.log")
    return serve, send


class Traffic:
    """Receivers up first, then senders on their schedule, all bounded by the duration."""

    def __init__(self, lab, flows: tuple[FlowSpec, ...], run_dir: Path, duration_s: float):
        self.lab, self.flows, self.run_dir, self.duration_s = lab, flows, run_dir, duration_s
        self.pairs = {f.name: endpoints_for(f, lab, run_dir) for f in flows}
        self.t0: float | None = None
        self.events: list[str] = []

    def endpoints(self) -> list[Endpoint]:
        return [e for pair in self.pairs.values() for e in pair if e is not None]

    def start_receivers(self) -> None:
        for serve, _ in self.pairs.values():
            if serve is not None:
                serve.start(self.lab)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name, (serve, _) in self.pairs.items():
            while serve is not None and not serve.ready.wait(0.05):
                if serve.poll() is not None or time.monotonic() > deadline:
                    serve.stop(why_timed_out=False)
                    serve.finish()
                    raise FlowError(f"flow {name}: `labkit serve` on {serve.host} did not "
                                    f"start listening:\n{serve.tail()}")

    def run(self, tick=None) -> None:
        """Start senders when due; return when every endpoint ended or time is up.
        `tick(elapsed_s, running_flow_names)` is called about 4 times a second."""
        self.t0 = time.monotonic()
        deadline = self.t0 + self.duration_s
        pending = list(self.flows)
        ended_at: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for f in list(pending):
                if f.after is not None:
                    if f.after not in ended_at:
                        continue
                    due = ended_at[f.after] + f.start_s
                else:
                    due = self.t0 + f.start_s
                if now >= due:
                    pending.remove(f)
                    self.pairs[f.name][1].start(self.lab)
                    self.events.append(f"{now - self.t0:.2f} s: flow {f.name} started")
            for name, (serve, send) in self.pairs.items():
                if send.proc is not None and name not in ended_at and send.poll() is not None:
                    ended_at[name] = now
                    self.events.append(f"{now - self.t0:.2f} s: flow {name} sender ended "
                                       f"(exit {send.proc.returncode})")
                if name in ended_at and serve is not None and serve.running() and \
                        now > ended_at[name] + \
                        SERVER_GRACE_S:
                    serve.stop(why_timed_out=False)
                    self.events.append(f"{now - self.t0:.2f} s: flow {name} receiver "
                                       f"stopped {SERVER_GRACE_S:g} s after its sender")
            running = [e for e in self.endpoints() if e.running()]
            if not pending and not running:
                break
            if now >= deadline:
                names = sorted({e.flow for e in running} | {f.name for f in pending})
                self.events.append(f"{now - self.t0:.2f} s: the lab's duration "
                                   f"({self.duration_s:g} s) is over; stopping "
                                   f"{', '.join(names)}")
                break
            if tick is not None:
                tick(now - self.t0, sorted({e.flow for e in running if e.side == "send"}))
            time.sleep(0.05 if running else 0.01)
        self.stop_all()

    def stop_all(self) -> None:
        for e in self.endpoints():
            if e.side == "send":
                e.stop()
        for e in self.endpoints():
            e.stop()
        for e in self.endpoints():
            e.finish()

    def never_started(self) -> list[str]:
        return [name for name, (_, send) in self.pairs.items() if send.proc is None]

    def as_dicts(self) -> list[dict]:
        out = []
        for f in self.flows:
            serve, send = self.pairs[f.name]
            out.append({"name": f.name, "proto": f.proto, "client": f.client,
                        "server": f.server, "client_addr": self.lab.addr(f.client),
                        "server_addr": self.lab.addr(f.server), "port": f.port,
                        "client_port": f.client_port, "start_s": f.start_s, "after": f.after,
                        "scenario": f.scenario,
                        "send": send.as_dict(self.run_dir),
                        "serve": serve.as_dict(self.run_dir) if serve else {}})
        return out
