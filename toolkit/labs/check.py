"""`labkit check`: replay saved runs (or any capture) against their expectations.

A target is a saved run folder (its lab's own expectations from run.json, plus the exact
ones blessed into expect.toml), or a capture file with an expectations file. Every capture
is analyzed afresh; nothing stored is trusted. Needs no privileges and no external tool.

    targets = collect(["captures/"])
    outcome = check(targets[0])            # results, or the bad input that stopped it
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import expect


class CheckInputError(ValueError):
    """A PATH or an expectations file that cannot be checked; the message names it."""


@dataclass
class Target:
    path: Path
    kind: str                      # "run" | "capture"
    expect_file: Path | None = None
    lab: Path | None = None        # grade against this lab file's expectations

    @property
    def label(self) -> str:
        return str(self.path)


@dataclass
class Outcome:
    target: Target
    results: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)     # bad input: damaged capture, ...
    seconds: float = 0.0
    title: str = ""

    @property
    def status(self) -> int:
        if self.errors:
            return 2
        return expect.exit_status(self.results)


def collect(paths: list[str], expect_file: str | None = None,
            lab: str | None = None) -> list[Target]:
    """PATH: a saved run (a folder with run.json), a folder holding saved runs (searched
    below it), or a capture file (with expect_file). `lab`: the lab file whose own
    expectations a run is graded against (instead of those the run folder carries)."""
    out: list[Target] = []
    lab_path = None
    if lab is not None:
        from .spec import LabError, find
        try:
            lab_path = find(lab)
        except LabError as e:
            raise CheckInputError(f"--lab {lab}: {e}") from None
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CheckInputError(f"{p}: no such file or folder")
        if p.is_file():
            if expect_file is None:
                raise CheckInputError(f"{p}: a capture file needs --expect FILE (the "
                                      f"expectations to check it against)")
            out.append(Target(p, "capture", Path(expect_file)))
        elif (p / "run.json").is_file():
            out.append(Target(p, "run", Path(expect_file) if expect_file else None, lab_path))
        else:
            runs = sorted(r.parent for r in p.rglob("run.json"))
            if not runs:
                raise CheckInputError(f"{p}: no saved run in this folder (a saved run is a "
                                      f"folder with run.json, made by `labkit run --save`)")
            out += [Target(r, "run", Path(expect_file) if expect_file else None, lab_path)
                    for r in runs]
    return out


def _load_expect_file(path: Path) -> list[dict]:
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise CheckInputError(f"--expect {path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CheckInputError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - {"expect"}
    if unknown:
        raise CheckInputError(f"{path}: {', '.join(sorted(unknown))}: unknown; an expectations "
                              f"file holds [[expect]] tables")
    return doc.get("expect", [])


def check(target: Target) -> Outcome:
    t0 = time.monotonic()
    out = Outcome(target)
    try:
        if target.kind == "run":
            _check_run(target, out)
        else:
            _check_capture(target, out)
    except (CheckInputError, expect.ExpectError) as e:
        out.errors.append(str(e))
    out.seconds = time.monotonic() - t0
    return out


def _parse(raw: list[dict], where: str, path: Path) -> list:
    try:
        return expect.parse(raw, where)
    except expect.ExpectError as e:
        raise CheckInputError(f"{path}: {e}") from None


def _check_run(target: Target, out: Outcome) -> None:
    from .folder import RunFolder, RunFolderError
    from .saved import read_blessed

    try:
        run = RunFolder(target.path)
    except RunFolderError as e:
        raise CheckInputError(str(e)) from None
    out.title = f"lab {run.doc['lab']['name']}, seed {run.doc.get('seed')}"
    if target.lab is not None:
        exps = _graded_by(target.lab, run)
        blessed = []              # a student's run has no blessing: the lab's checks grade it
    else:
        exps = _parse(run.doc.get("spec", {}).get("expect", []), "expect",
                      target.path / "run.json")
        raw = read_blessed(target.path)
        if run.version_read == 1:             # blessed by a format-1 labkit: its names
            from .folder import upgrade_expectation
            raw = [upgrade_expectation(e) for e in raw]
        blessed = _parse(raw, "blessed", target.path / "expect.toml")
    extra = (_parse(_load_expect_file(target.expect_file), "expect", target.expect_file)
             if target.expect_file else [])
    _damage(run, out)
    if out.errors:
        return
    out.results = expect.evaluate([*exps, *blessed, *extra], run.table,
                                  timing_reliable=run.timing_reliable)


def _graded_by(lab_path: Path, run) -> list:
    """The lab file's own expectations, for a run that must have been made from exactly
    that file (its sha256 is in run.json) with no --set (which could loosen the lab)."""
    from .spec import LabError, load
    try:
        lab = load(lab_path)
    except LabError as e:
        raise CheckInputError(str(e)) from None
    made = run.doc.get("lab") or {}
    where = run.path / "run.json"
    if made.get("name") != lab.name:
        raise CheckInputError(f"{where}: a run of lab {made.get('name')!r}, not of "
                              f"{lab.name!r} ({lab_path})")
    if made.get("sha256") != lab.sha256:
        raise CheckInputError(f"{where}: made from a different {lab_path.name} than "
                              f"{lab_path} (sha256 {str(made.get('sha256'))[:12]}... against "
                              f"{lab.sha256[:12]}...); run the lab as given")
    if run.doc.get("overrides"):
        raise CheckInputError(f"{where}: made with --set {' --set '.join(run.doc['overrides'])}"
                              f"; a graded run runs the lab as given")
    return list(lab.expectations)


def _damage(run, out: Outcome) -> None:
    """A damaged capture is bad input (exit 2), named with its file and offset."""
    from ..pcap import CaptureError
    for point in run.points:
        try:
            a = run.analysis(point)
        except (CaptureError, OSError, LookupError) as e:
            out.errors.append(f"{run.capture_file(point)}: {e}")
            continue
        if a.error is not None:
            out.errors.append(f"{a.error} (vantage point {point})")


def _check_capture(target: Target, out: Outcome) -> None:
    from ..api import analyze
    from ..pcap import CaptureError
    from .folder import analyzer_table

    exps = _parse(_load_expect_file(target.expect_file), "expect", target.expect_file)
    for e in exps:
        if e.table in expect.RUN_TABLES:
            raise CheckInputError(f"{target.expect_file}: expect[{e.index}].table: "
                                  f"{e.table!r} needs a run folder; a capture alone has "
                                  f"tcp, udp, udp_flows, tcp_states, packets")
    try:
        a = analyze(target.path)
    except (CaptureError, OSError) as e:
        raise CheckInputError(f"{target.path}: {e}") from None
    if a.error is not None:
        out.errors.append(str(a.error))
        return
    out.title = f"capture, {len(a)} frames"

    def get_table(name: str, at: str | None):
        if at is not None:
            raise LookupError(f"at = {at!r}: a capture file has no vantage points")
        return analyzer_table(a, name)

    out.results = expect.evaluate(exps, get_table)


def update(target: Target) -> tuple[Path, int]:
    """Re-bless a saved run's exact expectations from a fresh analysis of its captures; a
    run.json of an older version is rewritten as this version (folder.upgrade_run: names
    and units only, every recorded value kept)."""
    from .folder import RunFolder, RunFolderError
    from .saved import bless, write_blessed

    if target.kind != "run":
        raise CheckInputError(f"{target.path}: --update re-blesses saved runs, not a capture "
                              f"with --expect")
    try:
        run = RunFolder(target.path)
    except RunFolderError as e:
        raise CheckInputError(str(e)) from None
    out = Outcome(target)
    _damage(run, out)
    if out.errors:
        raise CheckInputError("; ".join(out.errors))
    exps = bless(run)
    if run.doc.get("version") != _version_on_disk(target.path):
        _write_run_json(target.path, run.doc)
    return write_blessed(run, exps), len(exps)


def _version_on_disk(folder: Path):
    import json
    try:
        return json.loads((Path(folder) / "run.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def _write_run_json(folder: Path, doc: dict) -> None:
    import json
    import os
    path = Path(folder) / "run.json"
    tmp = path.with_name(".run.json.part")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


# ---- reports ----

def text(outcome: Outcome, verbose: bool = False) -> str:
    lines = [f"== {outcome.target.label}" + (f" ({outcome.title})" if outcome.title else "")]
    for err in outcome.errors:
        lines.append(f"ERROR {err}")
    for r in outcome.results:
        if r.status == "pass" and not verbose:
            continue
        lines.append(r.line())
        if r.status in ("fail", "error") and r.sample:
            lines.append(f"      rows looked at ({r.rows} matched):")
            for row in r.sample[:5]:
                lines.append("        " + ", ".join(f"{k}={v}" for k, v in row.items()))
    counts = expect.summarize(outcome.results)
    lines.append(f"   {counts['pass']} of {len(outcome.results)} expectations hold"
                 + (f", {counts['fail']} failed" if counts["fail"] else "")
                 + (f", {counts['error']} errors" if counts["error"] else "")
                 + (f", {counts['unreliable']} unreliable (timing)"
                    if counts["unreliable"] else "")
                 + f" [{outcome.seconds:.1f} s]")
    return "\n".join(lines)


def as_dict(outcomes: list[Outcome]) -> dict:
    return {"schema": "labkit-check", "version": 1,
            "targets": [{"path": str(o.target.path), "kind": o.target.kind, "title": o.title,
                         "status": o.status, "errors": o.errors, "duration_s": o.seconds,
                         "summary": expect.summarize(o.results),
                         "results": [r.as_dict() for r in o.results]} for o in outcomes],
            "exit_status": max((o.status for o in outcomes), default=0)}


def junit(outcomes: list[Outcome]) -> str:
    """JUnit XML as Jenkins, GitLab and GitHub's test reporters read it: one testsuite per
    target, one testcase per expectation; failure / error / skipped (timing unreliable)."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="labkit check")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for o in outcomes:
        counts = expect.summarize(o.results)
        suite = ET.SubElement(root, "testsuite", name=o.target.label,
                              tests=str(len(o.results) + len(o.errors)),
                              failures=str(counts["fail"]),
                              errors=str(counts["error"] + len(o.errors)),
                              skipped=str(counts["unreliable"]), time=f"{o.seconds:.3f}",
                              timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
        for err in o.errors:
            case = ET.SubElement(suite, "testcase", classname=o.target.label, name="input",
                                 time="0")
            ET.SubElement(case, "error", message=err, type="bad input").text = err
        for r in o.results:
            e = r.expectation
            case = ET.SubElement(suite, "testcase", classname=o.target.label,
                                 name=f"{e.label} {e.describe()}", time="0")
            if r.status == "fail":
                ET.SubElement(case, "failure", message=r.detail or "failed",
                              type="expectation").text = r.line() + _sample_text(r)
            elif r.status == "error":
                ET.SubElement(case, "error", message=r.detail or "error",
                              type="expectation").text = r.line()
            elif r.status == "unreliable":
                ET.SubElement(case, "skipped", message=r.detail or "timing unreliable")
        for k, key in (("tests", "tests"), ("failures", "failures"), ("errors", "errors"),
                       ("skipped", "skipped")):
            totals[k] += int(suite.get(key))
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _sample_text(r) -> str:
    if not r.sample:
        return ""
    rows = "\n".join("  " + ", ".join(f"{k}={v}" for k, v in row.items())
                     for row in r.sample[:10])
    return f"\nrows looked at ({r.rows} matched):\n{rows}"
