"""The link's ledger: the ground truth of what the userspace engine did to every frame.

JSON Lines, one object per line:

    {"ledger": "labkit-link-ledger", "version": 1, "run": ..., "impairment": ..., ...}
    {"n": 0, "dir": "a_to_b", "t_in": 1764541234000123456, "t_out": 1764541234020200000,
     "len": 74, "pkt": {"proto": "tcp", "flags": "S", "seq": 123, ...},
     "action": "forward", "why": ""}
    ...
    {"end": true, "counts": {...}, "overruns": 0, "late": {...}, "faults": [...]}

`n` numbers the frames in arrival order (the same n appears twice for a duplicated frame,
with "copy": 2 on the second). `t_in` / `t_out` are CLOCK_REALTIME nanoseconds, the clock
the capture's timestamps use, so a ledger line and a captured frame can be put side by
side; `t_out` is null for a frame the link dropped. `action` is what happened: forward,
drop, delay, hold, duplicate, corrupt; `why` says which rule did it (loss, burst, queue,
reorder, ttl, stopped, or "fault N: <the lab's description>").

Records are written when the frame leaves or is dropped, so they are in departure order,
not arrival order; sort by n for arrival order. A ledger whose emulator was killed ends
without its trailer, possibly mid-line; `read` keeps every complete record and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA, VERSION = "labkit-link-ledger", 1


class LedgerError(ValueError):
    """A file that is not a ledger; the message names the line."""


class Writer:
    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.file = open(self.path, "w", buffering=1 << 20)
        self._line({"ledger": SCHEMA, "version": VERSION, **header})

    def _line(self, obj: dict) -> None:
        self.file.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def record(self, n: int, direction: str, t_in: int, t_out: int | None, length: int,
               pkt: dict, action: str, why: str = "", copy: int = 1) -> None:
        # written by hand, not json.dumps: this runs once per frame in the engine's loop
        # and halves its cost. Safe because pkt holds only ints, None and the engine's own
        # short names; `why` (which may quote a lab's note) still goes through json.
        fields = ",".join(f'"{k}":{_value(v)}' for k, v in pkt.items())
        out = "null" if t_out is None else t_out
        reason = json.dumps(why) if why else '""'
        extra = f',"copy":{copy}' if copy != 1 else ""
        self.file.write(f'{{"n":{n},"dir":"{direction}","t_in":{t_in},"t_out":{out},'
                        f'"len":{length},"pkt":{{{fields}}},"action":"{action}",'
                        f'"why":{reason}{extra}}}\n')

    def flush(self) -> None:
        self.file.flush()

    def close(self, trailer: dict) -> None:
        self._line({"end": True, **trailer})
        self.file.close()


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


@dataclass
class Ledger:
    header: dict
    records: list[dict] = field(default_factory=list)
    trailer: dict | None = None
    note: str = ""               # set when the file ended early

    def where(self, **match) -> list[dict]:
        """Records whose fields (or pkt fields) equal the given values, in arrival order."""
        out = []
        for r in self.records:
            if all(r.get(k, r["pkt"].get(k)) == v for k, v in match.items()):
                out.append(r)
        return sorted(out, key=lambda r: (r["n"], r.get("copy", 1)))

    def dropped(self, direction: str | None = None) -> list[dict]:
        return [r for r in self.records if r["t_out"] is None
                and (direction is None or r["dir"] == direction)]


def read(path: Path) -> Ledger:
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":             # a saved run keeps its ledger gzip-compressed
        import gzip
        import zlib
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise LedgerError(f"{path}: damaged gzip data ({e})") from None
    lines = data.split(b"\n")
    if not lines or not lines[0].strip():
        raise LedgerError(f"{path}: empty; not a labkit link ledger")
    try:
        header = json.loads(lines[0])
    except ValueError as e:
        raise LedgerError(f"{path}:1: not JSON ({e}); not a labkit link ledger") from None
    if not isinstance(header, dict) or header.get("ledger") != SCHEMA:
        raise LedgerError(f"{path}:1: not a labkit link ledger (no \"ledger\": \"{SCHEMA}\")")
    if header.get("version") != VERSION:
        raise LedgerError(f"{path}:1: ledger version {header.get('version')!r}; this labkit "
                          f"reads version {VERSION}")
    led = Ledger(header)
    for i, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            led.note = f"line {i} is incomplete: the emulator stopped mid-record"
            break
        if obj.get("end"):
            led.trailer = obj
            break
        led.records.append(obj)
    if led.trailer is None and not led.note:
        led.note = "no trailer: the emulator did not stop cleanly"
    return led
