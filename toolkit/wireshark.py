"""Wireshark's view of a capture, in a notebook or a script: `dissect` and `cross_check`.

    >>> import toolkit.wireshark as W
    >>> fr = W.dissect("captures/04-loss/a.pcapng.gz", [6, 127])   # Wireshark's tree
    >>> fr[1]["tcp"].field("tcp.seq_raw").show, fr[1].expert
    >>> W.cross_check("captures/04-loss/a.pcapng.gz")              # tcp.analysis.* vs labkit

Theory of operation. Both functions run tshark as a plain child process and read its
standard output in the calling thread: no asyncio, no event loop, no thread. That is why
they behave the same in a script and inside a Jupyter kernel, where an asyncio loop is
already running in the main thread. pyshark is not used, on purpose:

- pyshark's synchronous API drives its own tshark reader with
  `loop.run_until_complete()`, which cannot run under the kernel's running loop:
  "Cannot run the event loop while another loop is running" / "This event loop is already
  running" (KimiNewt/pyshark#360, #542; the maintainer: not possible inside Jupyter at the
  moment). The known workarounds are nest_asyncio, which patches the kernel's own loop, and
  a private loop in a worker thread (pyshark PR #291, never merged). The second does work
  (tried here with pyshark 0.6), but then pyshark still
- flattens Wireshark's tree: a layer becomes a dict of fields by name, so the nesting (which
  expert message belongs to which `_ws.expert` item, the fields under tcp.flags or under
  SEQ/ACK analysis) is lost and repeated names collapse into one field with alternates;
- leaves its asyncio subprocess transports to the garbage collector when iteration stops
  with an exception ("Event loop is closed" warnings once the private loop is gone), and
  starts an extra `tshark -v` per capture; it took about twice as long as this module for
  the same two frames.

So `dissect` reads tshark's PDML itself (`tshark -2 -r FILE -Y 'frame.number in {..}' -T pdml
-l`), which carries the whole tree: for every field its filter name, the line Wireshark
shows (showname), the shown value, the raw bytes (hex) and whether it is hidden, nested as
Wireshark nests them, with the expert items in place. Frames are chosen by the display
filter, so the output (and the parsing) is only the frames asked for; tshark is stopped as
soon as the last of them has been read. `-2` is Wireshark's view: every frame is shown with
what the whole file told the first pass (a GUI re-dissects a clicked frame the same way).
tshark reads pcap, pcapng and their gzip-compressed forms itself.

Every tshark process is killed if still running, and reaped, in a `finally`: after the
frames are read, on an exception while parsing, on Ctrl-C (a kernel interrupt). None is
left behind, not even a zombie.

`cross_check` asks tshark for the tcp.analysis.* flags of every frame in one pass of
`-T fields` (as tests/test_corpus_wireshark.py does: `-2 -n`, the same field names) and
compares them, frame by frame, with labkit's per-frame table `toolkit.analyze(..).packets`.
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

__all__ = ["dissect", "Frame", "Layer", "Field", "Expert", "Dissection",
           "cross_check", "CrossCheck", "VERDICT_FIELDS", "VALUE_FIELDS",
           "TsharkMissing", "TsharkError", "tshark_path", "tshark_version"]

INSTALL_HINT = ("install it with the Debian/Ubuntu package tshark "
                "(`apt-get install tshark`; `make test` run as root installs it), "
                "or put a tshark executable on PATH")

# labkit's verdict columns (toolkit.analysis.verdicts.VERDICTS) and the tshark fields they
# are compared with. The same mapping as tests/test_corpus_wireshark.py (SAVED_FLAGS +
# LIVE_FLAGS, each compared with f"tcp.analysis.{flag}", present = 1): mirrored here, not
# moved, and tests/test_wireshark.py checks the two stay equal.
VERDICT_FIELDS: dict[str, str] = {name: f"tcp.analysis.{name}" for name in (
    "retransmission", "fast_retransmission", "spurious_retransmission", "duplicate_ack",
    "lost_segment", "ack_lost_segment", "out_of_order", "zero_window", "zero_window_probe",
    "zero_window_probe_ack", "window_full", "window_update", "keep_alive", "keep_alive_ack",
    "reused_ports")}
# per-frame numbers compared too (tests/test_corpus_wireshark.py's live fields; 0 = absent)
VALUE_FIELDS: dict[str, str] = {"duplicate_ack_num": "tcp.analysis.duplicate_ack_num",
                                "acks_frame": "tcp.analysis.acks_frame"}


class TsharkMissing(RuntimeError):
    """tshark is not installed (or not on PATH)."""

    def __init__(self, what: str = "tshark is not installed"):
        super().__init__(f"{what}: toolkit.wireshark runs Wireshark's tshark; {INSTALL_HINT}")


class TsharkError(RuntimeError):
    """tshark ran but failed (an unreadable file, a bad option); the message has its stderr."""


# ---------------------------------------------------------------- running tshark ----

def tshark_path() -> str:
    """The tshark executable on PATH; raises TsharkMissing, saying how to install it."""
    exe = shutil.which("tshark")
    if exe is None:
        raise TsharkMissing()
    return exe


@functools.lru_cache(maxsize=None)
def _version_of(exe: str) -> tuple[int, ...]:
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL).stdout
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def tshark_version() -> str:
    """tshark's version, e.g. '4.0.17'."""
    return ".".join(map(str, _version_of(tshark_path())))


def _stderr_text(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").splitlines()
    # tshark's notice when run as root is not an error
    return "\n".join(x for x in lines if x.strip() and not x.startswith("Running as user"))


class _Tshark:
    """One tshark process; stdout is read in the caller's thread; close() kills (if it
    still runs) and reaps it. Always used as `with _Tshark(...) as ts:`."""

    def __init__(self, args: list[str]):
        exe = tshark_path()
        self.err = tempfile.TemporaryFile()     # a file, not a pipe: it never fills up
        try:
            self.proc = subprocess.Popen([exe, *args], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=self.err)
        except BaseException:
            self.err.close()
            raise

    def __enter__(self) -> _Tshark:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chunks(self) -> Iterator[bytes]:
        read = self.proc.stdout.read1           # what is there, not a full buffer
        while chunk := read(1 << 16):
            yield chunk

    def finish(self) -> tuple[int, str]:
        """Wait for tshark to end (its output was read to the end): (status, stderr)."""
        rc = self.proc.wait()
        self.err.seek(0)
        return rc, _stderr_text(self.err.read())

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
        finally:
            self.proc.stdout.close()
            self.proc.wait()
            self.err.close()


def _capture_path(capture) -> str:
    path = os.fspath(capture)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no capture file {path}")
    return path


# ------------------------------------------------------------------ the data ----

_BITS = re.compile(r"^[01.\s]+= ")


@dataclass(slots=True)
class Field:
    """One line of Wireshark's packet tree.

    name      the display-filter name ("tcp.seq_raw"); "" for a text line ("Timestamps")
    showname  the line as Wireshark shows it ("Sequence Number (raw): 5405497")
    show      the shown value ("5405497")
    value     the raw value: the field's bytes in hex as tshark gives it ("00527b39"), for a
              bit field the masked value; None for fields with no bytes of their own
              (generated ones such as tcp.analysis.*)
    unmasked  a bit field's bytes in hex, else None
    pos, size where its bytes are in the frame
    hidden    Wireshark keeps the field (filters see it) but does not show it in the tree
    children  the fields under it
    """

    name: str
    showname: str
    show: str
    value: str | None
    pos: int
    size: int
    hidden: bool = False
    unmasked: str | None = None
    children: list[Field] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The field's display name, from the tree line ("Sequence Number (raw)")."""
        s = self.showname
        m = _BITS.match(s)
        if m:
            s = s[m.end():]
        head, sep, _ = s.partition(": ")
        return head if sep else s

    @property
    def raw(self) -> bytes | None:
        """The raw value as bytes (None when there is none)."""
        try:
            return bytes.fromhex(self.value) if self.value else None
        except ValueError:
            return None

    def walk(self) -> Iterator[Field]:
        """This field and every field under it, depth first (Wireshark's order)."""
        yield self
        for c in self.children:
            yield from c.walk()

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return "\n".join(_text_lines(self, 0, hidden=True))


@dataclass(slots=True)
class Layer:
    """One protocol of the frame ("eth", "ip", "tcp", ...) and its fields."""

    name: str
    showname: str
    pos: int
    size: int
    fields: list[Field] = field(default_factory=list)

    def walk(self) -> Iterator[Field]:
        for f in self.fields:
            yield from f.walk()

    def find(self, name: str) -> list[Field]:
        """Every field of that name in this layer, at any depth."""
        return [f for f in self.walk() if f.name == name]

    def field(self, name: str) -> Field:
        """The first field of that name (at any depth); KeyError if none."""
        for f in self.walk():
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r} in layer {self.name}")

    __getitem__ = field

    def __contains__(self, name: str) -> bool:
        return any(f.name == name for f in self.walk())

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return "\n".join(_layer_lines(self))


@dataclass(slots=True)
class Expert:
    """One expert-info item ("Expert Info (Note/Sequence): ...")."""

    layer: str        # the protocol that added it ("tcp")
    field: str        # the field it is about ("tcp.analysis.retransmission"), "" if none
    severity: str     # Chat, Note, Warning, Error, Comment
    group: str        # Sequence, Malformed, Protocol, ...
    message: str

    def __str__(self) -> str:
        where = f"  [{self.field}]" if self.field else ""
        return f"{self.severity}/{self.group}: {self.message}{where}"


@dataclass(slots=True)
class Frame:
    """Wireshark's full dissection of one frame: its layers and its expert info."""

    number: int
    length: int
    captured_length: int
    time: str                    # epoch seconds, as tshark gives them
    layers: list[Layer] = field(default_factory=list)
    expert: list[Expert] = field(default_factory=list)

    @property
    def layer_names(self) -> list[str]:
        return [x.name for x in self.layers]

    @property
    def protocols(self) -> str:
        """Wireshark's frame.protocols ("eth:ethertype:ip:tcp")."""
        return self.get("frame.protocols", "")

    def layer(self, name: str) -> Layer:
        """The first layer of that name; KeyError if none."""
        for x in self.layers:
            if x.name == name:
                return x
        raise KeyError(f"frame {self.number} has no layer {name!r} "
                       f"(it has {', '.join(self.layer_names)})")

    __getitem__ = layer

    def __contains__(self, name: str) -> bool:
        return any(x.name == name for x in self.layers)

    def walk(self) -> Iterator[Field]:
        for x in self.layers:
            yield from x.walk()

    def find(self, name: str) -> list[Field]:
        """Every field of that name, in any layer."""
        return [f for f in self.walk() if f.name == name]

    def field(self, name: str) -> Field:
        """The first field of that name in any layer; KeyError if none."""
        for f in self.walk():
            if f.name == name:
                return f
        raise KeyError(f"frame {self.number} has no field {name!r}")

    def get(self, name: str, default=None):
        """The shown value of the first field of that name, or default."""
        for f in self.walk():
            if f.name == name:
                return f.show
        return default

    def to_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        ex = f", {len(self.expert)} expert" if self.expert else ""
        return f"<Frame {self.number} {':'.join(self.layer_names)}{ex}>"

    def __str__(self) -> str:
        lines = []
        for x in self.layers:
            lines += _layer_lines(x)
        if self.expert:
            lines.append("Expert Info")
            lines += ["    " + str(e) for e in self.expert]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _frame_html(self)


class Dissection(list):
    """The frames `dissect` returned (a list of Frame) that shows itself as trees."""

    def __str__(self) -> str:
        return "\n\n".join(str(f) for f in self)

    def _repr_html_(self) -> str:
        if not self:
            return "<i>no frames</i>"
        return "".join(_frame_html(f) for f in self)


# -------------------------------------------------------------- PDML to data ----

def _num(a: dict, key: str) -> int:
    try:
        return int(a.get(key) or 0)
    except ValueError:
        return 0


def _field(el: ET.Element) -> Field:
    a = el.attrib
    show = a.get("show", "")
    return Field(name=a.get("name", ""), showname=a.get("showname") or show, show=show,
                 value=a.get("value"), pos=_num(a, "pos"), size=_num(a, "size"),
                 hidden=a.get("hide") == "yes", unmasked=a.get("unmaskedvalue"),
                 children=[_field(c) for c in el])


def _after_colon(s: str) -> str:
    return s.rpartition(": ")[2]


def _experts(layer: Layer) -> list[Expert]:
    out = []
    for f in layer.walk():
        if f.name != "_ws.expert":
            continue
        parts = {c.name: c for c in f.children}
        about = next((c.name for c in f.children if not c.name.startswith("_ws.expert")), "")
        m = re.match(r"Expert Info \(([^/)]*)/([^)]*)\): (.*)", f.showname, re.S)
        sev = parts.get("_ws.expert.severity")
        grp = parts.get("_ws.expert.group")
        msg = parts.get("_ws.expert.message")
        out.append(Expert(
            layer=layer.name, field=about,
            severity=_after_colon(sev.showname) if sev else (m.group(1) if m else ""),
            group=_after_colon(grp.showname) if grp else (m.group(2) if m else ""),
            message=msg.show if msg else (m.group(3) if m else f.showname)))
    return out


def _frame(packet: ET.Element) -> Frame:
    info: dict[str, str] = {}
    layers = []
    for proto in packet:
        a = proto.attrib
        if a.get("name") == "geninfo":
            info = {c.get("name"): c.get("show", "") for c in proto}
            continue
        if a.get("name") == "fake-field-wrapper":
            # PDML's wrapper for protocols tshark put in the tree as fields (such as
            # "data"): in Wireshark's tree each is a layer of its own
            for c in proto:
                f = _field(c)
                kids = f.children
                pos = f.pos or min((k.pos for k in kids), default=0)
                size = f.size or max((k.size for k in kids), default=0)
                layers.append(Layer(name=f.name, pos=pos, size=size, fields=kids,
                                    showname=(c.get("showname")
                                              or f"{f.name.capitalize()} ({size} bytes)")))
            continue
        layers.append(Layer(name=a.get("name", ""), showname=a.get("showname", ""),
                            pos=_num(a, "pos"), size=_num(a, "size"),
                            fields=[_field(c) for c in proto]))
    fr = Frame(number=int(info.get("num") or 0), length=int(info.get("len") or 0),
               captured_length=int(info.get("caplen") or 0),
               time=next((c.get("value", "") for c in packet.iter("field")
                          if c.get("name") == "timestamp"), ""),
               layers=layers)
    if not fr.number:
        fr.number = int(fr.get("frame.number", 0))
    fr.expert = [e for x in layers for e in _experts(x)]
    return fr


def _pdml_packets(chunks: Iterable[bytes]) -> Iterator[ET.Element]:
    """Each <packet> element of a PDML stream as soon as it is complete."""
    parser = ET.XMLPullParser(events=("start", "end"))
    root = None
    for chunk in chunks:
        parser.feed(chunk)
        for ev, el in parser.read_events():
            if ev == "start":
                if root is None:
                    root = el
            elif el.tag == "packet":
                yield el
                root.remove(el)             # keep memory flat on long selections


# ----------------------------------------------------------------- dissect ----

def _frame_numbers(frames) -> list[int]:
    if isinstance(frames, int) or hasattr(frames, "__index__"):
        frames = [frames]
    out = sorted({int(f) for f in frames})
    if out and out[0] < 1:
        raise ValueError(f"frame numbers start at 1 (Wireshark's numbering), got {out[0]}")
    return out


def _frame_filter(numbers: list[int], version: tuple[int, ...]) -> str:
    if version >= (4,):
        # 4.x: comma-separated set members, ranges a..b
        parts, i = [], 0
        while i < len(numbers):
            j = i
            while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
                j += 1
            parts.append(str(numbers[i]) if j - i < 2 else f"{numbers[i]}..{numbers[j]}")
            if j - i == 1:
                parts.append(str(numbers[j]))
            i = j + 1
        return "frame.number in {" + ", ".join(parts) + "}"
    return "frame.number in {" + " ".join(map(str, numbers)) + "}"    # 3.x: spaces


def dissect(capture, frames, *, two_pass: bool = True) -> Dissection:
    """Wireshark's full dissection of the chosen frames of a capture file.

    capture: a .pcap or .pcapng file, gzip-compressed or not. frames: a frame number
    (Wireshark's, from 1) or several (a list, a range). Returns the frames in file order as
    a Dissection (a list of Frame): every layer and field with its display name (label),
    tree line (showname), shown and raw value, nested as Wireshark nests them, and the
    expert info. It shows as a collapsible tree in a notebook and as text with print().
    two_pass: tshark -2, Wireshark's view (fields that need the whole file, such as
    "reassembled in frame N", are filled in); False reads the file once and stops after
    the last frame asked for (faster on a long file when the frames are early in it).
    Raises TsharkMissing, FileNotFoundError, LookupError (a frame not in the file) or
    TsharkError.
    """
    path = _capture_path(capture)
    numbers = _frame_numbers(frames)
    if not numbers:
        return Dissection()
    version = _version_of(tshark_path())
    err = ""
    args = ["-r", path, "-Y", _frame_filter(numbers, version), "-T", "pdml", "-l"]
    if two_pass:
        args.insert(0, "-2")
    wanted = set(numbers)
    out = Dissection()
    with _Tshark(args) as ts:
        for packet in _pdml_packets(ts.chunks()):
            fr = _frame(packet)
            out.append(fr)
            wanted.discard(fr.number)
            if not wanted:
                break                       # the rest of the file is not needed
        else:
            rc, err = ts.finish()
            if rc != 0 and not out:
                raise TsharkError(f"tshark failed on {path} (exit status {rc}): {err}")
    if wanted:
        missing = sorted(wanted)
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise LookupError(f"{path} has no frame {shown}"
                          + (f" (tshark: {err})" if err else ""))
    return out


# ---------------------------------------------------------------- rendering ----

_SEVERITY_COLOUR = {"Chat": "#80b0ff", "Note": "#a0e0ff", "Comment": "#b7f774",
                    "Warning": "#f7e463", "Error": "#ff8080"}
_SEVERITY_RANK = {"Comment": 0, "Chat": 1, "Note": 2, "Warning": 3, "Error": 4}
_LONG = 160


def _short(s: str, n: int = _LONG) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _text_lines(f: Field, depth: int, hidden: bool = False) -> list[str]:
    if f.hidden and not hidden:
        return []
    lines = ["    " * depth + _short(f.showname)]
    for c in f.children:
        lines += _text_lines(c, depth + 1)
    return lines


def _layer_lines(x: Layer) -> list[str]:
    lines = [x.showname or x.name]
    for f in x.fields:
        lines += _text_lines(f, 1)
    return lines


def _title(f: Field) -> str:
    t = f.name + (f" == {f.show}" if f.show else "")
    if f.value is not None:
        t += f"  (raw {f.value})"
    return html.escape(_short(t, 200), quote=True)


def _expert_style(text: str) -> str:
    m = re.match(r"Expert Info \(([^/)]*)/", text)
    colour = _SEVERITY_COLOUR.get(m.group(1), "#ddd") if m else None
    return f' style="background:{colour}"' if colour else ""


def _field_html(f: Field) -> str:
    if f.hidden:
        return ""
    text = html.escape(_short(f.showname))
    style = _expert_style(f.showname) if f.name == "_ws.expert" else ""
    if not f.children:
        return f'<div title="{_title(f)}"><span{style}>{text}</span></div>'
    inner = "".join(_field_html(c) for c in f.children)
    return (f'<details><summary title="{_title(f)}"><span{style}>{text}</span></summary>'
            f'<div style="margin-left:1.5em">{inner}</div></details>')


def _frame_html(fr: Frame) -> str:
    protocols = html.escape(fr.protocols or ":".join(fr.layer_names))
    head = f"<b>Frame {fr.number}</b> &middot; {protocols}"
    if fr.expert:
        worst = max(fr.expert, key=lambda e: _SEVERITY_RANK.get(e.severity, 0))
        colour = _SEVERITY_COLOUR.get(worst.severity, "#ddd")
        head += (f' &middot; <span style="background:{colour}">'
                 f"{len(fr.expert)} expert: {html.escape(worst.message)}</span>")
    layers = "".join(
        f'<details><summary title="{html.escape(x.name)}">{html.escape(x.showname or x.name)}'
        f'</summary><div style="margin-left:1.5em">{"".join(_field_html(f) for f in x.fields)}'
        f"</div></details>" for x in fr.layers)
    expert = ""
    if fr.expert:
        rows = "".join(
            f'<tr><td style="background:{_SEVERITY_COLOUR.get(e.severity, "#ddd")}">'
            f"{html.escape(e.severity)}</td><td>{html.escape(e.group)}</td>"
            f"<td>{html.escape(e.layer)}</td><td>{html.escape(e.message)}</td>"
            f"<td><code>{html.escape(e.field)}</code></td></tr>" for e in fr.expert)
        expert = (f"<details open><summary>Expert Info</summary><table>"
                  f"<tr><th>severity</th><th>group</th><th>protocol</th><th>summary</th>"
                  f"<th>field</th></tr>{rows}</table></details>")
    return (f'<details open class="labkit-wireshark" style="font-family:monospace">'
            f'<summary>{head}</summary><div style="margin-left:1em">{layers}{expert}</div>'
            f"</details>")


# ------------------------------------------------------------- cross_check ----

@dataclass
class CrossCheck:
    """Wireshark's tcp.analysis verdicts against labkit's, frame by frame.

    summary        per verdict: frames Wireshark flags, frames labkit flags, disagreements
    disagreements  one row per (frame, verdict) where they differ: frame, verdict,
                   wireshark, labkit (0/1 for a flag, the number for a value field)
    """

    path: str
    tshark: str                      # tshark's version
    frames_wireshark: int
    frames_labkit: int
    summary: object                  # pandas DataFrame, index: verdict
    disagreements: object            # pandas DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when both read the same frames and agree on every verdict of every one."""
        return self.frames_wireshark == self.frames_labkit and len(self.disagreements) == 0

    def _headline(self) -> str:
        name = os.path.basename(self.path)
        if self.frames_wireshark != self.frames_labkit:
            return (f"{name}: Wireshark read {self.frames_wireshark} frames, labkit "
                    f"{self.frames_labkit}; {len(self.disagreements)} disagreements in the "
                    f"frames both read")
        if self.ok:
            return (f"{name}: {self.frames_labkit} frames, Wireshark (tshark {self.tshark}) "
                    f"and labkit agree on every TCP verdict of every frame")
        return (f"{name}: {self.frames_labkit} frames, {len(self.disagreements)} "
                f"disagreements between Wireshark (tshark {self.tshark}) and labkit")

    def __str__(self) -> str:
        lines = [self._headline(), "", self.summary.to_string()]
        if len(self.disagreements):
            lines += ["", "disagreements:", self.disagreements.head(50).to_string(index=False)]
            if len(self.disagreements) > 50:
                lines.append(f"... {len(self.disagreements) - 50} more (.disagreements)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<CrossCheck {self._headline()}>"

    def _repr_html_(self) -> str:
        mark = "&#10004;" if self.ok else "&#10008;"
        colour = "#2a7" if self.ok else "#c33"
        out = [f'<div class="labkit-crosscheck"><p><b style="color:{colour}">{mark}</b> '
               f"{html.escape(self._headline())}</p>"]
        if len(self.disagreements):
            out.append("<p><b>disagreements</b></p>" + self.disagreements.head(200)
                       .to_html(index=False))
        summary = self.summary.to_html()
        out.append(f"<details{'' if self.ok else ' open'}><summary>per verdict</summary>"
                   f"{summary}</details>")
        out += [f"<p><i>note: {html.escape(n)}</i></p>" for n in self.notes]
        return "".join(out) + "</div>"


def _wireshark_verdicts(path: str):
    """tshark's verdict columns for every frame, in one pass: (frame numbers, {name: array},
    notes)."""
    import numpy as np

    names = list(VERDICT_FIELDS) + list(VALUE_FIELDS)
    fields = ["frame.number"] + [VERDICT_FIELDS.get(n) or VALUE_FIELDS[n] for n in names]
    args = ["-2", "-n", "-r", path, "-T", "fields", "-E", "header=n", "-E", "separator=/t",
            "-E", "occurrence=f"]
    for f in fields:
        args += ["-e", f]
    with _Tshark(args) as ts:
        data = b"".join(ts.chunks())
        rc, err = ts.finish()
    rows = [line.split("\t") for line in data.decode("utf-8", "replace").splitlines()]
    if rc != 0 and not rows:
        raise TsharkError(f"tshark failed on {path} (exit status {rc}): {err}")
    notes = [f"tshark (exit status {rc}): {err}"] if rc != 0 or err else []
    frames = np.array([int(r[0]) for r in rows], np.int64)
    cols = {}
    for k, name in enumerate(names, start=1):
        cells = [r[k] if k < len(r) else "" for r in rows]
        if name in VERDICT_FIELDS:
            cols[name] = np.array([1 if c else 0 for c in cells], np.int64)
        else:
            cols[name] = np.array([int(c.split(",")[0]) if c else 0 for c in cells], np.int64)
    return frames, cols, notes


def _labkit_packets(path: str):
    """labkit's per-frame table of the capture (the tests replace this to doctor it)."""
    import toolkit

    return toolkit.analyze(path).packets


def cross_check(capture, analysis=None) -> CrossCheck:
    """Wireshark's TCP verdicts (tcp.analysis.*) on a capture against labkit's, per frame.

    analysis: the capture's toolkit.Analysis when you have it already (else it is
    analyzed here). Compared: every verdict of VERDICT_FIELDS and the numbers of
    VALUE_FIELDS, on every frame. `.ok` says whether they agree everywhere;
    `.disagreements` lists where not; `.summary` counts per verdict.
    """
    import numpy as np
    import pandas as pd

    path = _capture_path(capture)
    version = tshark_version()
    ws_frames, ws, notes = _wireshark_verdicts(path)
    pk = analysis.packets if analysis is not None else _labkit_packets(path)
    n_lk = len(pk)
    if len(ws_frames) and not np.array_equal(ws_frames, np.arange(1, len(ws_frames) + 1)):
        notes.append("tshark's frame numbers are not 1..n")
    n = min(len(ws_frames), n_lk)
    lk_frame = pk["frame"].to_numpy()[:n]
    rows, summary = [], []
    for name in list(VERDICT_FIELDS) + list(VALUE_FIELDS):
        theirs = ws[name][:n]
        ours = pk[name].to_numpy()[:n].astype(np.int64)
        differ = np.flatnonzero(theirs != ours)
        summary.append((name, int(np.count_nonzero(ws[name])), int(np.count_nonzero(ours)),
                        len(differ)))
        rows += [(int(lk_frame[i]), name, int(theirs[i]), int(ours[i])) for i in differ]
    order = {name: k for k, name in enumerate(list(VERDICT_FIELDS) + list(VALUE_FIELDS))}
    rows.sort(key=lambda r: (r[0], order[r[1]]))
    dis = pd.DataFrame(rows, columns=["frame", "verdict", "wireshark", "labkit"])
    summ = pd.DataFrame(summary, columns=["verdict", "wireshark", "labkit", "disagreements"]
                        ).set_index("verdict")
    if len(ws_frames) != n_lk:
        notes.append(f"frame counts differ: tshark {len(ws_frames)}, labkit {n_lk}")
    return CrossCheck(path=path, tshark=version, frames_wireshark=len(ws_frames),
                      frames_labkit=n_lk, summary=summ, disagreements=dis, notes=notes)
