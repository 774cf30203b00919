"""A lab is data: `labs/NN-name/lab.toml`, read into a LabSpec and checked before anything
is built (docs/runs.md has the format).

Reading goes in four steps, each on plain data, so every error can name the file and the
key path it is about (`flow[1].send.rate`):

1. TOML is parsed (tomllib's message carries the line and column);
2. `--set` overrides are applied: a parameter by its name, any other value by its key path;
3. parameters are substituted: a string that is exactly "{name}" becomes the parameter's
   value with its type, "{name}" inside a longer string is replaced by its text;
4. every table is validated: [topology] and [link] by netlab's own readers, flows against
   the options `labkit send` and `labkit serve` really have, expectations by expect.parse.

Stdlib only at import (the CLI lists labs without numpy or pandas).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..netlab import impairment as imp_mod
from ..netlab import topology as topo_mod
from .. import units
from . import expect
from . import questions as questions_mod

SECTIONS = ("lab", "params", "topology", "link", "capture", "observe", "files", "flow",
            "expect", "question")
LAB_KEYS = ("title", "summary", "duration", "seed", "engine", "name", "figures")
# toolkit.plot.KINDS, named here so that reading a lab imports no plotting library
FIGURE_KINDS = ("side-by-side", "goodput", "ladder", "time-sequence", "rtt-cwnd", "udp")
CAPTURE_KEYS = ("points", "snaplen", "backend", "filter")
LINK_KEYS = ("both", "a_to_b", "b_to_a", "fault")
FLOW_KEYS = ("name", "proto", "client", "server", "port", "client_port", "start", "after",
             "scenario", "send", "serve")
ENGINES = ("auto", "kernel", "userspace")
BACKENDS = ("auto", "dumpcap", "tcpdump", "scapy")
# set by the runner for every flow; a lab says them through the flow's own keys
RUNNER_OPTIONS = {"host", "port", "proto", "json", "quiet", "cport", "bind", "one_off",
                  "clients", "help"}
MAX_DURATION_S = 120.0
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")


class LabError(ValueError):
    """A lab spec is wrong; the message names the file and the key path."""


@dataclass(frozen=True)
class FlowSpec:
    index: int
    name: str
    proto: str                  # "tcp" | "udp"
    client: str                 # host running `labkit send`
    server: str                 # host running `labkit serve`
    port: int
    client_port: int | None     # None: the client picks a port per packet
    start_s: float
    after: str | None
    send: dict                  # `labkit send` options, as the lab wrote them
    serve: dict
    scenario: str | None = None # a program of toolkit.scenarios instead of send/serve
    has_server: bool = True     # False: the client aims at another flow's server

    def send_args(self) -> list[str]:
        return option_argv(self.send)

    def serve_args(self) -> list[str]:
        return option_argv(self.serve)


@dataclass(frozen=True)
class CaptureSpec:
    points: tuple[str, ...] | None     # None: every vantage point
    snaplen: int = 262144
    backend: str | None = None         # None: the first installed
    filter: str = ""


@dataclass(frozen=True)
class LabSpec:
    name: str
    path: Path
    source: str                        # the file's text, as read
    title: str
    summary: str
    duration_s: float
    seed: int
    engine: str
    params: dict
    overrides: tuple[str, ...]
    topology: topo_mod.Topology
    impairment: imp_mod.Impairment
    capture: CaptureSpec
    flows: tuple[FlowSpec, ...]
    expectations: tuple[expect.Expectation, ...]
    questions: tuple[questions_mod.Question, ...]
    resolved: dict = field(repr=False)  # the spec as plain data, parameters substituted
    observe: dict | None = None        # [observe]: {"every_s", "hosts"} (observe.py)
    files: tuple = ()                  # [files]: files.FileSpec, made in the run folder

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()

    def needs(self) -> dict:
        """What running it takes, for `labkit labs`."""
        wants = self.impairment.needs()
        beyond_tbf_and_nft = bool(wants - imp_mod.KERNEL_ALWAYS)
        if self.engine == "auto":
            # without netem (this project's kernel, WSL2) auto picks the userspace engine
            engine = ("userspace" if "faults" in wants else
                      "userspace without netem" if beyond_tbf_and_nft else "kernel")
        else:
            engine = self.engine
        return {"privilege": "root or rootless (unprivileged user namespace)",
                "engine": engine, "impairment": self.impairment.describe(),
                "hosts": list(self.topology.host_names),
                "extra_hosts": [h for h in self.topology.host_names if h not in ("a", "b")]}

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary,
                "path": str(self.path), "duration_s": self.duration_s, "seed": self.seed,
                "flows": [f.name for f in self.flows], "needs": self.needs()}


# ---- finding labs ----

def labs_dir() -> Path:
    """Where the labs are: ./labs when the current directory has one (a course's own
    repository, or this one), else labs/ of the checkout the package was imported from."""
    here = Path("labs")
    if any(here.glob("*/lab.toml")):
        return here
    return Path(__file__).resolve().parents[2] / "labs"


def find(name_or_path: str, root: Path | None = None) -> Path:
    """A lab's lab.toml from a path (file or folder) or a name (`04-loss`, or `04`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.is_dir() and (p / "lab.toml").is_file():
        return p / "lab.toml"
    root = root or labs_dir()
    candidates = sorted(root.glob("*/lab.toml")) if root.is_dir() else []
    for c in candidates:
        folder = c.parent.name
        if name_or_path in (folder, folder.split("-", 1)[0], folder.split("-", 1)[-1]):
            return c
    known = ", ".join(c.parent.name for c in candidates) or "none found"
    raise LabError(f"{name_or_path}: no such lab file or lab name (labs in {root}: {known})")


def all_labs(root: Path | None = None) -> list[Path]:
    root = root or labs_dir()
    return sorted(root.glob("*/lab.toml")) if root.is_dir() else []


# ---- loading ----

def load(path: str | Path, *, overrides: list[str] | tuple[str, ...] = ()) -> LabSpec:
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as e:
        raise LabError(f"{path}: cannot read: {e.strerror or e}") from None
    return loads(source, path, overrides=overrides)


def loads(source: str, path: Path, *, overrides=()) -> LabSpec:
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"{path}: not valid TOML: {e}") from None
    overrides = tuple(overrides)
    try:
        return _build(raw, source, path, overrides)
    except LabError as e:
        raise LabError(f"{path}: {_blame(raw, source, path, overrides, str(e))}{e}") from None


def _blame(raw: dict, source: str, path: Path, overrides: tuple[str, ...], error: str) -> str:
    """The --set that brought this error in ("--set KEY=VALUE: "), or "" where the file
    itself has it (or the error names its --set already): a bad value given on the command
    line is not the file's fault. The lab is built again with the overrides one more at a
    time, so a later --set that undoes an earlier one is not blamed; only on an error."""
    if not overrides or error.startswith("--set "):
        return ""
    for k in range(len(overrides) + 1):
        try:
            _build(raw, source, path, overrides[:k])
        except LabError as e:
            if str(e) == error:
                return f"--set {overrides[k - 1]}: " if k else ""
    return ""


def _build(raw: dict, source: str, path: Path, overrides: tuple[str, ...]) -> LabSpec:
    for key in raw:
        if key not in SECTIONS:
            raise LabError(f"{key}: unknown section; known: {', '.join(SECTIONS)}")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise LabError("params: expected a table of name = default value")
    for name in params:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise LabError(f"params.{name}: a parameter name is letters, digits and _")
        if name == "files":
            raise LabError("params.files: {files} names the run's files folder ([files]); "
                           "choose another parameter name")
    raw = _apply_overrides(raw, overrides)
    params = dict(raw.get("params", {}))
    resolved = _substitute({k: v for k, v in raw.items() if k != "params"}, params, "")
    resolved["params"] = params

    lab = _table(resolved.get("lab", {}), "lab", LAB_KEYS)
    name = lab.get("name", path.parent.name if path.name == "lab.toml" else path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LabError(f"lab.name: {name!r}; expected lower-case letters, digits, - and _")
    title = _text(lab, "title", "lab", required=True)
    summary = _text(lab, "summary", "lab")
    duration = _seconds(lab.get("duration", "10s"), "lab.duration")
    if not 0 < duration <= MAX_DURATION_S:
        raise LabError(f"lab.duration: {duration:g} s; expected more than 0 and at most "
                       f"{MAX_DURATION_S:g} s")
    seed = lab.get("seed", 1)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise LabError(f"lab.seed: {seed!r}; expected a non-negative integer")
    figures = lab.get("figures")
    if figures is not None and (not isinstance(figures, list) or
                                any(f not in FIGURE_KINDS for f in figures)):
        raise LabError(f"lab.figures: {figures!r}; expected a list of figure kinds the run "
                       f"draws (from {', '.join(FIGURE_KINDS)}; [] for none); without it, "
                       f"every kind that fits")
    engine = lab.get("engine", "auto")
    if engine not in ENGINES:
        raise LabError(f"lab.engine: {engine!r}; expected one of {', '.join(ENGINES)}")

    try:
        topology = topo_mod.from_dict(resolved.get("topology", {}), "topology")
    except topo_mod.TopologyError as e:
        raise LabError(str(e)) from None
    link = resolved.get("link", {})
    if not isinstance(link, dict):
        raise LabError("link: expected a table")
    if "seed" in link:
        raise LabError("link.seed: the seed is [lab].seed (and --seed); remove it here")
    for key in link:
        # netlab's reader ignores keys it does not know (they may be its caller's): here a
        # typo such as `faults` must not leave the link silently without its faults
        if key not in LINK_KEYS:
            raise LabError(f"link.{key}: unknown key; known: {', '.join(LINK_KEYS)}")
    try:
        impairment = imp_mod.from_dict({**link, "seed": seed}, "link")
    except imp_mod.SpecError as e:
        raise LabError(str(e)) from None
    if not impairment.is_clean() and len(topology.host_names) < 2:
        raise LabError("link: an impaired link needs two hosts")

    capture = _capture(resolved.get("capture", {}), topology)
    from . import observe as observe_mod
    observe = observe_mod.parse(resolved.get("observe"), topology.host_names, LabError)
    from . import files as files_mod
    try:
        made = files_mod.parse(resolved.get("files"), "files")
    except files_mod.FilesError as e:
        raise LabError(str(e)) from None
    flows = _flows(resolved.get("flow", []), topology, duration)
    for f in flows:
        for side in ("send", "serve"):
            if files_mod.mentions(getattr(f, side)) and not made:
                raise LabError(f"flow[{f.index}].{side}: {files_mod.PLACEHOLDER} names the "
                               f"run's files folder, and this lab has no [files] section "
                               f"to make it")
    raw_expect = resolved.get("expect", [])
    if not isinstance(raw_expect, list):
        raise LabError("expect: expected [[expect]] tables")
    try:
        expectations = tuple(expect.parse(raw_expect, "expect"))
    except expect.ExpectError as e:
        raise LabError(str(e)) from None
    try:
        questions = questions_mod.parse(resolved.get("question", []), "question")
    except questions_mod.QuestionError as e:
        raise LabError(str(e)) from None
    points = capture.points or default_points(topology)
    for q in questions:
        at = q.answer.get("at")
        if at is not None and at not in points:
            raise LabError(f"question[{q.index}].answer.at: {at!r} is not captured in this "
                           f"lab (points: {', '.join(points)})")
    for e in expectations:
        if e.at is not None and e.at not in points:
            raise LabError(f"expect[{e.index}].at: {e.at!r} is not captured in this lab "
                           f"(points: {', '.join(points)})")
    return LabSpec(name=name, path=path, source=source, title=title, summary=summary,
                   duration_s=duration, seed=seed, engine=engine, params=params,
                   overrides=overrides, topology=topology, impairment=impairment,
                   capture=capture, flows=flows, expectations=expectations, questions=questions,
                   resolved=resolved, observe=observe, files=made)


def default_points(topology: topo_mod.Topology) -> tuple[str, ...]:
    """Vantage points in path order: first host, the router's side of each host, the rest
    (capture.vantage_points names them the same way)."""
    hosts = topology.host_names
    return (hosts[0], *(f"r-{h}" for h in hosts), *hosts[1:])


def _capture(table, topology) -> CaptureSpec:
    t = _table(table, "capture", CAPTURE_KEYS)
    known = default_points(topology)
    points = t.get("points")
    if points is not None:
        if not isinstance(points, list) or not points or not all(isinstance(p, str)
                                                                 for p in points):
            raise LabError("capture.points: expected a list such as ['a', 'r-a', 'r-b', 'b']")
        for p in points:
            if p not in known:
                raise LabError(f"capture.points: {p!r} is not a vantage point of this lab "
                               f"(points: {', '.join(known)})")
        if len(set(points)) != len(points):
            raise LabError(f"capture.points: named twice in {points}")
        points = tuple(p for p in known if p in points)      # path order
    snaplen = t.get("snaplen", 262144)
    if not isinstance(snaplen, int) or isinstance(snaplen, bool) or not 64 <= snaplen <= 262144:
        raise LabError(f"capture.snaplen: {snaplen!r}; expected bytes from 64 to 262144 "
                       f"(the lab header needs the first 14+40+20+32 of a frame)")
    backend = t.get("backend", "auto")
    if backend not in BACKENDS:
        raise LabError(f"capture.backend: {backend!r}; expected one of {', '.join(BACKENDS)}")
    bpf = t.get("filter", "")
    if not isinstance(bpf, str):
        raise LabError("capture.filter: expected a libpcap filter text")
    return CaptureSpec(points, snaplen, None if backend == "auto" else backend, bpf)


def _flows(raw, topology, duration: float) -> tuple[FlowSpec, ...]:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise LabError("flow: a lab needs at least one [[flow]]")
    hosts = topology.host_names
    out: list[FlowSpec] = []
    for i, f in enumerate(raw):
        where = f"flow[{i}]"
        t = _table(f, where, FLOW_KEYS)
        name = t.get("name", f"flow{i}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise LabError(f"{where}.name: {name!r}; expected lower-case letters, digits, "
                           f"- and _ (it names the endpoint reports)")
        if name in (o.name for o in out):
            raise LabError(f"{where}.name: {name!r} names two flows")
        proto = t.get("proto", "tcp")
        if proto not in ("tcp", "udp"):
            raise LabError(f"{where}.proto: {proto!r}; expected tcp or udp")
        ends = {}
        for key, default in (("client", hosts[0]), ("server", hosts[-1])):
            h = t.get(key, default)
            if h not in hosts:
                raise LabError(f"{where}.{key}: {h!r} is not a host of this lab "
                               f"(hosts: {', '.join(hosts)})")
            ends[key] = h
        if ends["client"] == ends["server"]:
            raise LabError(f"{where}: client and server are both {ends['client']!r}; a flow "
                           f"joins two hosts")
        port = _port(t.get("port", 5201 + i), f"{where}.port")
        cport: int | None = _port(t.get("client_port", 41000 + i), f"{where}.client_port")
        start = _seconds(t.get("start", 0), f"{where}.start")
        if not 0 <= start < duration:
            raise LabError(f"{where}.start: {start:g} s; expected from 0 to below the lab's "
                           f"duration ({duration:g} s)")
        after = t.get("after")
        if after is not None and after not in (o.name for o in out):
            raise LabError(f"{where}.after: {after!r}; expected the name of an earlier flow "
                           f"({', '.join(o.name for o in out) or 'none before this one'})")
        scenario = t.get("scenario")
        has_server = True
        if scenario is None:
            send = _options(t.get("send", {}), f"{where}.send", "send", proto)
            serve = _options(t.get("serve", {}), f"{where}.serve", "serve", proto)
        else:
            from .. import scenarios
            if scenario not in scenarios.REGISTRY:
                raise LabError(f"{where}.scenario: {scenario!r}; known: "
                               f"{', '.join(scenarios.names()) or 'none'}")
            roles = scenarios.roles(scenario)
            has_server = "server" in roles
            if not roles["client"].takes_cport:
                # a SYN flood: every SYN has its own random source port, so a client_port
                # would be a port no frame of the flow carries
                if "client_port" in t:
                    raise LabError(f"{where}.client_port: scenario {scenario!r} sends each "
                                   f"packet from its own random source port; remove "
                                   f"client_port")
                cport = None
            if not has_server and t.get("serve"):
                raise LabError(f"{where}.serve: scenario {scenario!r} has no server role (its "
                               f"client aims at another flow's server on port {port})")
            send = _options(t.get("send", {}), f"{where}.send", f"scenario {scenario} client",
                            proto)
            serve = (_options(t.get("serve", {}), f"{where}.serve",
                              f"scenario {scenario} server", proto) if has_server else {})
        for o in out:
            if has_server and o.has_server and o.server == ends["server"] and o.port == port \
                    and o.proto == proto:
                raise LabError(f"{where}.port: {port} on {ends['server']} is flow "
                               f"{o.name!r}'s already")
            if cport is not None and o.client == ends["client"] and o.client_port == cport:
                raise LabError(f"{where}.client_port: {cport} on {ends['client']} is flow "
                               f"{o.name!r}'s already")
        out.append(FlowSpec(i, name, proto, ends["client"], ends["server"], port, cport,
                            start, after, send, serve, scenario, has_server))
    return tuple(out)


def _options(table, where: str, command: str, proto: str) -> dict:
    """Check `labkit send`/`serve` options (or a scenario role's: command is then
    "scenario NAME ROLE") against that command's own parser."""
    if not isinstance(table, dict):
        raise LabError(f"{where}: expected a table of `labkit {command}` options, e.g. "
                       f"{{mode = 'bulk', bytes = 1000000}}")
    known = command_options(command)
    for key, value in table.items():
        if key in RUNNER_OPTIONS:
            raise LabError(f"{where}.{key}: set by the runner (use the flow's proto, port, "
                           f"client_port and server keys)")
        if key not in known:
            raise LabError(f"{where}.{key}: `labkit {command}` has no such option; known: "
                           f"{', '.join(sorted(k for k in known if k not in RUNNER_OPTIONS))}")
        flag = known[key]
        if flag is None and value is not True and value is not False:
            raise LabError(f"{where}.{key}: {value!r}; this option is a switch: true or false")
        if flag is not None and (isinstance(value, (dict, bool)) or value is None):
            raise LabError(f"{where}.{key}: {value!r}; expected a value such as a number or "
                           f"text")
    client = command == "send" or command.endswith(" client")
    argv = [command, *(["host"] if client else []), "--proto", proto, *option_argv(table)]
    error = _parse_error(argv)
    if error:
        raise LabError(f"{where}: {error}")
    return dict(table)


def option_argv(table: dict) -> list[str]:
    """{'mode': 'bulk', 'nodelay': True, 'length': [100, 1400]} -> command-line words."""
    out = []
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            continue
        elif isinstance(value, list):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


_COMMAND_OPTIONS: dict[str, dict[str, str | None]] = {}


def command_options(command: str) -> dict[str, str | None]:
    """The long options of `labkit COMMAND`: dest name -> flag (None for a switch)."""
    if command not in _COMMAND_OPTIONS:
        parser = _command_parser(command)
        opts: dict[str, str | None] = {}
        for action in parser._actions:
            longs = [s for s in action.option_strings if s.startswith("--")]
            if not longs:
                continue
            key = longs[0][2:].replace("-", "_")
            opts[key] = None if action.nargs == 0 else longs[0]
        _COMMAND_OPTIONS[command] = opts
    return _COMMAND_OPTIONS[command]


class _Refused(Exception):
    pass


def _command_parser(command: str):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise _Refused(message)

    if command.startswith("scenario "):
        from .. import scenarios
        _, name, role = command.split()
        p = Parser(prog=f"labkit {command}")
        scenarios.add_conventional(p, role)
        scenarios.roles(name)[role].add_arguments(p)
        return p
    top = Parser(prog="labkit")
    sub = top.add_subparsers(dest="command", parser_class=Parser)
    import importlib
    importlib.import_module(f"toolkit.commands.{command}").register(sub)
    return sub.choices[command]


def _parse_error(argv: list[str]) -> str | None:
    parser = _command_parser(argv[0])
    try:
        args = parser.parse_args(argv[1:])
    except _Refused as e:
        return str(e)
    except SystemExit:
        return "refused by the command's parser"
    # what a parser takes but the command refuses (a rate of '2Q', --hold with --close
    # first): refused here, when the lab is loaded, not when its flow starts
    if argv[0].startswith("scenario "):
        from .. import scenarios
        _, name, role = argv[0].split()
        check = scenarios.roles(name)[role].check
    else:
        import importlib
        check = getattr(importlib.import_module(f"toolkit.commands.{argv[0]}"), "check", None)
    return check(args) if check else None


# ---- overrides and parameters ----

def _apply_overrides(raw: dict, overrides: tuple[str, ...]) -> dict:
    import copy
    raw = copy.deepcopy(raw)
    params = raw.setdefault("params", {})
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LabError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss=5% or "
                           f"--set link.a_to_b.delay=20ms")
        value = parse_value(text)
        if key in params:
            params[key] = value
            continue
        if "." not in key and "[" not in key:
            known = ", ".join(params) or "none"
            raise LabError(f"--set {key}: not a parameter of this lab (parameters: {known}); "
                           f"a spec value is set by its key path, e.g. link.a_to_b.loss")
        _set_path(raw, key, value, item)
    return raw


def parse_value(text: str):
    """A --set value: a TOML value where it reads as one (5, 2.5, true, "x", [1, 2]),
    otherwise the text itself (2%, 20ms)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(raw: dict, key: str, value, item: str) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts):
        m = _PATH_PART.fullmatch(part)
        if not m:
            raise LabError(f"--set {item!r}: {part!r} is not a key (write e.g. flow[1].send.rate)")
        name, index = m.group(1), m.group(2)
        last = depth == len(parts) - 1
        if depth == 0 and name not in SECTIONS:
            raise LabError(f"--set {item!r}: {name!r} is not a section of a lab "
                           f"({', '.join(SECTIONS)})")
        if index is not None:
            seq = node.get(name)
            if not isinstance(seq, list) or int(index) >= len(seq):
                n = len(seq) if isinstance(seq, list) else 0
                raise LabError(f"--set {item!r}: {name}[{index}]: this lab has {n} {name} "
                               f"entries")
            if last:
                seq[int(index)] = value
                return
            node = seq[int(index)]
        elif last:
            node[name] = value
            return
        else:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise LabError(f"--set {item!r}: {name} is a value, not a table")
            node = child


def _substitute(obj, params: dict, where: str):
    if isinstance(obj, dict):
        return {k: _substitute(v, params, f"{where}.{k}" if where else k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, params, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        whole = _PARAM.fullmatch(obj)
        if whole:
            return _param(whole.group(1), params, where)
        return _PARAM.sub(lambda m: str(_param(m.group(1), params, where)), obj)
    return obj


def _param(name: str, params: dict, where: str):
    if name == "files" and name not in params:
        return "{files}"          # the run's files folder: the runner knows it (files.py)
    if name not in params:
        known = ", ".join(params) or "none"
        raise LabError(f"{where}: {{{name}}} is not a parameter of this lab (parameters: "
                       f"{known})")
    return params[name]


# ---- small readers ----

def _table(t, where: str, keys: tuple[str, ...]) -> dict:
    if not isinstance(t, dict):
        raise LabError(f"{where}: expected a table")
    for key in t:
        if key not in keys:
            raise LabError(f"{where}.{key}: unknown key; known: {', '.join(keys)}")
    return t


def _text(t: dict, key: str, where: str, required: bool = False) -> str:
    v = t.get(key)
    if v is None:
        if required:
            raise LabError(f"{where}.{key}: missing; a lab needs a {key}")
        return ""
    if not isinstance(v, str):
        raise LabError(f"{where}.{key}: expected text")
    return v.strip()


def _seconds(v, where: str) -> float:
    try:
        s = units.seconds(v)
    except units.UnitError as e:
        raise LabError(f"{where}: {e}") from None
    if s < 0:
        raise LabError(f"{where}: a time cannot be negative")
    return s


def _port(v, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
        raise LabError(f"{where}: {v!r}; expected a port number from 1 to 65535")
    return v
