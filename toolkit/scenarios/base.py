"""What every scenario role shares: a report of timed events, written on every exit path.

The report has the endpoints' shape (`start`, `end`), so run tables read both alike:
    {"schema": "labkit-scenario-report", "version": 2,
     "start": {"role", "scenario", "time_unix_s", ...}, "events": [{"t_s", "event", ...}],
     "end": {scalars the lab's expectations read, e.g. "error": "ConnectionResetError",
             "duration_s"}}
Names carry their unit as the endpoints' do (docs/columns.md); version 1 had no schema
and called duration_s "seconds" and payload_bytes "bytes".
`t_s` counts from the role's start. An event is what the program saw, in the words a
student would see it: the exception's class and errno name, what recv returned.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import signal
import sys
import threading
import time

SCHEMA, VERSION = "labkit-scenario-report", 2


class Report:
    def __init__(self, scenario: str, role: str, args):
        self.t0 = time.monotonic()
        self.stdout = bool(getattr(args, "json", False))       # --json: the document alone
        self.quiet = getattr(args, "quiet", False) or self.stdout
        self.path = getattr(args, "json_file", None)
        self.lock = threading.Lock()
        self.doc = {"schema": SCHEMA, "version": VERSION,
                    "start": {"scenario": scenario, "role": role, "mode": scenario,
                              "time_unix_s": time.time(), "pid": os.getpid(),
                              "options": {k: v for k, v in vars(args).items()
                                          if k not in ("func", "json", "json_file", "quiet")
                                          and isinstance(v, (str, int, float, bool, type(None)))}},
                    "events": [], "end": {}}

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 6)

    def event(self, what: str, **fields) -> dict:
        ev = {"t_s": self.now(), "event": what, **fields}
        with self.lock:
            self.doc["events"].append(ev)
        if not self.quiet:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"[{ev['t_s']:8.3f} s] {what}{' ' + extra if extra else ''}", flush=True)
        return ev

    def error(self, what: str, exc: BaseException, **fields) -> dict:
        """An exception as the program saw it: `ConnectionResetError [Errno 104] ...`."""
        return self.event(what, **describe_error(exc), **fields)

    def end(self, **fields) -> None:
        self.doc["end"].update(fields)

    def write(self) -> None:
        self.doc["end"].setdefault("duration_s", self.now())
        if self.stdout:
            print(json.dumps(self.doc, indent=1), flush=True)
        if not self.path:
            return
        tmp = f"{self.path}.{os.getpid()}.part"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)


def describe_error(exc: BaseException) -> dict:
    out = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, OSError) and exc.errno is not None:
        out["errno"] = errno_mod.errorcode.get(exc.errno, str(exc.errno))
    return out


class Stop:
    """SIGINT/SIGTERM set a flag (the runner's clean stop); `wait(s)` sleeps until then."""

    def __init__(self):
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.event.set())

    def __bool__(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float | None = None) -> bool:
        return self.event.wait(seconds)


def wait_readable(sock, stop: Stop, every_s: float = 0.1) -> bool:
    """Block as accept or recv would, but let the runner's SIGINT end the wait (False):
    Stop's handler does not raise, and Python retries an interrupted call (PEP 475)."""
    from ..readiness import readable
    while not stop:
        if readable([sock], every_s):
            return True
    return False


def ready(what: str, port: int, args=None) -> None:
    """The line the lab runner waits for before it starts any client (on stderr under
    --json, whose stdout is the report alone, as `labkit serve` does)."""
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    print(f"Server listening on {what} port {port}", flush=True, file=stream)


def run_role(scenario: str, role: str, args, body) -> int:
    """Run body(report, stop) -> exit status, writing the report on every path."""
    report = Report(scenario, role, args)
    stop = Stop()
    status = 1
    try:
        status = body(report, stop)
    except KeyboardInterrupt:
        status = 0 if stop else 130
    except OSError as e:
        report.error("failed", e)
        print(f"labkit scenario {scenario} {role}: {type(e).__name__}: {e}", file=sys.stderr)
        status = 1
    finally:
        report.end(exit_status=status)
        report.write()
    return status


def connect(args):
    """A TCP connection to the server from the role's options: from `--cport` when given
    (the lab's fixed source port, so the link's faults can count this flow; SO_REUSEADDR
    lets a rerun by hand bind it beside its own last TIME-WAIT)."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if args.cport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", args.cport))
    s.connect((args.host, args.port))
    return s

