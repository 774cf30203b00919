"""[observe] in lab.toml, and the tables made of what the observers recorded.

    [observe]
    every = "100ms"          # how often each host's sockets and counters are sampled
    hosts = ["a", "b"]       # default: every end host

The runner starts one observer (observer.py) per host before the receivers and stops it
after the traffic; its samples are kernel/<host>.jsonl in the run folder. Two tables for
expectations and notebooks, both with no vantage point:

- `sockets`: one row per socket per sample: t_s (from the traffic phase's start), host,
  proto, state (as ss prints it: ESTAB, TIME-WAIT, SYN-RECV, ...), recv_q, send_q, local and
  peer address and port, timer, timer_s (the time left on it), retrans.
- `counters`: one row per host and SNMP counter that changed during the run: first, last,
  delta (e.g. UdpRcvbufErrors, TcpExtListenOverflows, TcpExtSyncookiesSent).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import units

KEYS = ("every", "hosts")
MIN_EVERY_S, MAX_EVERY_S = 0.02, 10.0


def parse(table, hosts: tuple[str, ...], error) -> dict | None:
    """The [observe] table as plain data ({"every_s", "hosts"}) or None when absent."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise error("observe: expected a table such as {every = '100ms'}")
    for key in table:
        if key not in KEYS:
            raise error(f"observe.{key}: unknown key; known: {', '.join(KEYS)}")
    try:
        every = units.seconds(table.get("every", "100ms"))
    except units.UnitError as e:
        raise error(f"observe.every: {e}") from None
    if not MIN_EVERY_S <= every <= MAX_EVERY_S:
        raise error(f"observe.every: {every:g} s; expected from {MIN_EVERY_S:g} s to "
                    f"{MAX_EVERY_S:g} s")
    chosen = table.get("hosts", list(hosts))
    if not isinstance(chosen, list) or not chosen:
        raise error("observe.hosts: expected a list of host names")
    for h in chosen:
        if h not in hosts:
            raise error(f"observe.hosts: {h!r} is not a host of this lab (hosts: "
                        f"{', '.join(hosts)})")
    return {"every_s": every, "hosts": list(dict.fromkeys(chosen))}


def samples(path: Path):
    """The records of one observer file, plain or gzip (a saved run's); a line cut short by
    a kill is skipped."""
    import gzip
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "t_unix_s" in rec and "sockets" in rec:
                yield rec


def _files(run) -> dict[str, Path]:
    obs = run.doc.get("observe") or {}
    return {h: run.path / rel for h, rel in (obs.get("files") or {}).items()
            if (run.path / rel).exists()}


def origin_unix_s(run) -> float:
    """Time zero of the tables: the traffic phase's start (the run's start without one)."""
    for ph in run.doc.get("phases", []):
        if ph.get("name") == "traffic":
            return ph["started_unix_s"]
    return run.doc.get("started_unix_s") or 0.0


SOCKET_COLUMNS = ("t_s", "host", "proto", "state", "recv_q", "send_q", "local_addr",
                  "local_port", "peer_addr", "peer_port", "timer", "timer_s", "retrans")
COUNTER_COLUMNS = ("host", "counter", "first", "last", "delta")


def socket_rows(run) -> list[dict]:
    t0 = origin_unix_s(run)
    rows = []
    for host, path in _files(run).items():
        for rec in samples(path):
            for s in rec["sockets"] or ():
                rows.append({"t_s": round(rec["t_unix_s"] - t0, 6), "host": host, **s})
    return rows


def counter_series(run, host: str, counter: str) -> list[tuple[float, int]]:
    """(t_s, value) each time the counter changed on the host."""
    t0 = origin_unix_s(run)
    path = _files(run).get(host)
    if path is None:
        return []
    return [(round(r["t_unix_s"] - t0, 6), r["counters"][counter]) for r in samples(path)
            if counter in (r.get("counters") or {})]


def counter_rows(run) -> list[dict]:
    rows = []
    for host, path in _files(run).items():
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for rec in samples(path):
            for k, v in (rec.get("counters") or {}).items():
                first.setdefault(k, v)
                last[k] = v
        for k in sorted(last):
            if last[k] != first[k]:
                rows.append({"host": host, "counter": k, "first": first[k], "last": last[k],
                             "delta": last[k] - first[k]})
    return rows


def sockets_table(run):
    import pandas as pd
    df = pd.DataFrame(socket_rows(run), columns=list(SOCKET_COLUMNS))
    for c in ("local_port", "peer_port", "retrans"):      # a listener has no peer port
        df[c] = df[c].astype("Int64")
    return df


def counters_table(run):
    import pandas as pd
    return pd.DataFrame(counter_rows(run), columns=list(COUNTER_COLUMNS))
