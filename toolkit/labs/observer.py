"""The kernel's view during a run: `python -m toolkit.labs.observer --every S --out FILE`,
started by the runner inside one host's namespace ([observe] in lab.toml).

Every S seconds it records what `ss -tuano` prints there (each socket's state, queues and
timer: the states of RFC 9293 as the kernel holds them, SYN-RECV entries of a listener's
half-open queue, a listener's accept queue as Recv-Q against its backlog as Send-Q) and the
namespace's SNMP counters under the names `nstat` gives them (TcpExtListenOverflows,
UdpRcvbufErrors, ...; only those that changed since the last sample). One JSON object a
line, so a run cut short keeps every sample written. SIGINT or SIGTERM ends it.

Stdlib only: it runs in the namespace with nothing but the interpreter and iproute2.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import threading
import time

_TIMER = re.compile(r"timer:\((\w+),([^,)]*)(?:,(\d+))?\)")
_PART = re.compile(r"(\d+(?:\.\d+)?)(min|sec|ms)")


def timer_seconds(text: str) -> float | None:
    """ss's timer time ('59sec', '1min2sec', '204ms', '1.5sec') in seconds."""
    parts = _PART.findall(text)
    if not parts:
        return None
    scale = {"min": 60.0, "sec": 1.0, "ms": 1e-3}
    return round(sum(float(n) * scale[u] for n, u in parts), 6)


def _endpoint(text: str) -> tuple[str, int | None]:
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]")
    if "%" in addr:                       # 10.0.0.1%lk-a-r: bound to a device
        addr = addr.split("%", 1)[0]
    return addr, (int(port) if port.isdigit() else None)


def parse_ss(text: str) -> list[dict]:
    """Lines of `ss -H -t -u -a -n -o` as records."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 6 or words[0] not in ("tcp", "udp"):
            continue
        local_addr, local_port = _endpoint(words[4])
        peer_addr, peer_port = _endpoint(words[5])
        rec = {"proto": words[0], "state": words[1], "recv_q": int(words[2]),
               "send_q": int(words[3]), "local_addr": local_addr, "local_port": local_port,
               "peer_addr": peer_addr, "peer_port": peer_port, "timer": None,
               "timer_s": None, "retrans": None}
        m = _TIMER.search(line)
        if m:
            rec["timer"] = m.group(1)
            rec["timer_s"] = timer_seconds(m.group(2))
            rec["retrans"] = int(m.group(3)) if m.group(3) else None
        out.append(rec)
    return out


def parse_snmp(text: str) -> dict[str, int]:
    """/proc/net/snmp or /proc/net/netstat: header line then values line per group."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        group, _, names = head.partition(":")
        _, _, values = vals.partition(":")
        for n, v in zip(names.split(), values.split()):
            try:
                out[group + n] = int(v)
            except ValueError:
                continue
    return out


def counters() -> dict[str, int]:
    out: dict[str, int] = {}
    for f in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            with open(f) as fh:
                out.update(parse_snmp(fh.read()))
        except OSError:
            continue
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolkit.labs.observer")
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    last: dict[str, int] = {}
    with open(args.out, "w") as out:
        out.write(json.dumps({"every_s": args.every, "t_unix_s": time.time()}) + "\n")
        final = False
        while True:
            t = time.time()
            try:
                ss = subprocess.run(["ss", "-H", "-t", "-u", "-a", "-n", "-o"],
                                    capture_output=True, text=True, timeout=5)
                socks = parse_ss(ss.stdout) if ss.returncode == 0 else None
                err = None if ss.returncode == 0 else ss.stderr.strip()
            except (OSError, subprocess.TimeoutExpired) as e:
                socks, err = None, str(e)
            now = counters()
            changed = {k: v for k, v in now.items() if last.get(k) != v}
            last = now
            rec = {"t_unix_s": round(t, 6), "sockets": socks, "counters": changed}
            if err:
                rec["error"] = err
            out.write(json.dumps(rec) + "\n")
            out.flush()
            if final:
                break
            # stopped: one more sample, so the counters' last values are those at the stop
            # (what the kernel counted since the previous sample is not left out)
            final = stop.wait(max(0.0, args.every - (time.time() - t)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
