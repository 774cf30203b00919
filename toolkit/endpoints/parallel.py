"""N concurrent TCP connections from one sender (`labkit send --parallel N`, as iperf3's -P):
the same workload on each, started together, with per-connection latency.

All N connections are opened first, each from its own thread (connection i from source
port --cport + i when one is given); once every connect() has returned (or failed), a
barrier releases them together and each runs the sender's mode on its own socket. So the
server sees N clients at once: a server that handles one at a time (iterative) has N - 1 of
them waiting in its accept queue, their handshakes complete (the kernel finishes those),
their first requests unread in their receive buffers.

Times are from that release: a connection's `first_response_s` (rr/echo: when the answer
to its first request came, which for a waiting client is when the server reached it) and
`completion_s` (its last answer read, its FIN sent and the server's report back). The run's
`seconds` is the last completion: the time N clients took together. Latency percentiles
are over every transaction of every connection; `first_response_s` and `completion_s` are
also given as percentiles over the connections.
"""

from __future__ import annotations

import copy
import random
import threading
import time

from . import tcp
from .report import Report

MAX_PARALLEL = 1000


def _pct(values: list[float]) -> dict | None:
    return tcp._percentiles(values)


def send_parallel(cfg: tcp.TcpSendConfig, n: int, report: Report) -> dict:
    """Run cfg's mode on n connections at once; returns the report document."""
    if not 1 <= n <= MAX_PARALLEL:
        raise ValueError(f"--parallel {n}: expected 1 to {MAX_PARALLEL}")
    if cfg.cport is not None and cfg.cport + n - 1 > 65535:
        raise ValueError(f"--cport {cfg.cport} with --parallel {n}: ports cport to "
                         f"cport+{n - 1} must all be ports")
    tcp.prepare(cfg)
    base_flow = cfg.flow if cfg.flow is not None else random.getrandbits(32)
    results: list[dict] = [{"i": i} for i in range(n)]
    ready = threading.Barrier(n + 1)
    release = {"t": 0.0}

    def one(i: int) -> None:
        c = copy.deepcopy(cfg)
        c.flow = (base_flow + i) & 0xFFFFFFFF
        c.cport = None if cfg.cport is None else cfg.cport + i
        c.keep_latencies = True
        rec = results[i]
        rec["flow"] = c.flow
        sock = None
        t0 = time.monotonic()
        try:
            sock, granted = tcp._connect(c)
            rec["connect_s"] = round(time.monotonic() - t0, 6)
            local = sock.getsockname()
            rec["local"] = f"{local[0]}:{local[1]}"
        except (OSError, ConnectionError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
        try:
            ready.wait(timeout=c.connect_timeout + 30)
        except threading.BrokenBarrierError:
            pass
        if sock is None:
            return
        sub = Report("sender", "tcp", c.mode, quiet=True)
        try:
            doc = tcp.send_connected(c, sock, granted, sub)
        except (OSError, ConnectionError, ValueError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["completion_s"] = round(time.monotonic() - release["t"], 6)
            return
        rec["completion_s"] = round(time.monotonic() - release["t"], 6)
        end = doc["end"]
        lat = end.pop("latencies_s", None)
        if lat:
            rec["latencies_s"] = lat
            # the first request went out at the release: its answer is the first response
            rec["first_response_s"] = lat[0]
        for k in ("duration_s", "payload_bytes", "messages", "transactions", "latency_s",
                  "corrupted", "peer_error"):
            if k in end:
                rec[k] = end[k]
        if end.get("tcp_info"):
            rec["tcp_info_total_retrans"] = end["tcp_info"].get("total_retrans")

    threads = [threading.Thread(target=one, args=(i,), daemon=True,
                                name=f"parallel-{i}") for i in range(n)]
    for th in threads:
        th.start()
    interrupted = False
    try:
        ready.wait()             # every connect() returned: go, all together
        release["t"] = time.monotonic()
        report.event(f"{sum(1 for r in results if 'connect_s' in r)} of {n} connected; "
                     f"all released together")
        for th in threads:
            th.join()
    except KeyboardInterrupt:
        # stopped (Ctrl-C, or the lab's time is up): report what finished, and say so
        interrupted = True
        ready.abort()
    return _summary(cfg, n, results, report, interrupted)


def _summary(cfg, n: int, results: list[dict], report: Report,
             interrupted: bool = False) -> dict:
    ok = [r for r in results if "connect_s" in r and "error" not in r and
          "completion_s" in r]
    every_latency = [x for r in ok for x in r.pop("latencies_s", [])]
    for r in results:
        r.pop("latencies_s", None)
    comp = [r["completion_s"] for r in ok]
    first = [r["first_response_s"] for r in ok if "first_response_s" in r]
    end = {"parallel": n, "connected": sum(1 for r in results if "connect_s" in r),
           "failed": n - len(ok),
           "duration_s": max(comp) if comp else 0.0,
           "payload_bytes": sum(r.get("payload_bytes", 0) for r in ok),
           "messages": sum(r.get("messages", 0) for r in ok) if cfg.mode not in (
               "rr", "echo") else None,
           "connect_s": _pct([r["connect_s"] for r in results if "connect_s" in r]),
           "completion_s": _pct(comp)}
    if cfg.mode in ("rr", "echo"):
        trans = sum(r.get("transactions", 0) for r in ok)
        end.update(transactions=trans,
                   transactions_per_s=trans / end["duration_s"] if end["duration_s"] else 0.0,
                   latency_s=_pct(every_latency), first_response_s=_pct(first))
    if interrupted:
        end["interrupted"] = True
    end = {k: v for k, v in end.items() if v is not None}
    # flat copies of the numbers a lab's expectations and tables read
    for name in ("latency_s", "first_response_s", "completion_s", "connect_s"):
        p = end.get(name)
        if p:
            stem = name[:-2]
            for q in ("p50", "p90", "max"):
                end[f"{stem}_{q}_s"] = p[q]
    report.doc["connections"] = results
    report.finish(end)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        report.event(f"{len(errors)} of {n} connections failed", first=errors[0])
    return report.doc
