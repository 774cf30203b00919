"""The course workflows in docs/ci/ do what docs/ci.md says: their `labkit` commands, run
on a course repository laid out as the files describe, pass a good submission, fail a
tampered one, and write the JUnit report the CI service publishes."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO

WORKFLOWS = sorted((REPO / "docs" / "ci").glob("*.yml"))


def labkit_commands(workflow) -> list[list[str]]:
    """The `labkit ...` command lines of a workflow file (`- run: labkit ...` in GitHub
    Actions, `- labkit ...` in a GitLab script)."""
    out = []
    for line in workflow.read_text().splitlines():
        m = re.match(r"\s*-\s*(?:run:\s*)?(labkit\s.*)$", line)
        if m:
            out.append(shlex.split(m.group(1)))
    return out


def course(tmp_path, submissions: dict):
    root = tmp_path / "course"
    shutil.copytree(REPO / "labs" / "04-loss", root / "labs" / "04-loss")
    for student, make in submissions.items():
        run = root / "submissions" / student / "04-loss"
        shutil.copytree(REPO / "captures" / "04-loss", run)
        make(run)
    return root


def run_commands(workflow, root):
    results = []
    for argv in labkit_commands(workflow):
        assert argv[0] == "labkit"
        results.append(subprocess.run([sys.executable, "-m", "toolkit.cli", *argv[1:]],
                                      capture_output=True, text=True, cwd=root, timeout=300))
    return results


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_the_workflow_grades_a_good_submission(workflow, tmp_path):
    assert labkit_commands(workflow), f"{workflow.name} runs no labkit command"
    root = course(tmp_path, {"alice": lambda run: None})
    results = run_commands(workflow, root)
    assert all(r.returncode == 0 for r in results), [r.stdout[-2000:] for r in results]
    report = ET.parse(root / "labkit-report.xml").getroot()
    assert report.get("failures") == "0" and int(report.get("tests")) >= 5


def _tamper(run):
    """A run made with --set (here: no loss at all), which would make the lab trivial."""
    doc = json.loads((run / "run.json").read_text())
    doc["overrides"] = ["loss=0%"]
    (run / "run.json").write_text(json.dumps(doc))


def _checks_edited_away(run):
    """The run folder's own copy of the lab's checks, edited to hold whatever happened."""
    doc = json.loads((run / "run.json").read_text())
    for e in doc["spec"]["expect"]:
        e["op"], e["expected"] = ">=", 0
    (run / "run.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_the_workflow_fails_a_tampered_submission(workflow, tmp_path):
    root = course(tmp_path, {"alice": lambda run: None, "bob": _tamper})
    results = run_commands(workflow, root)
    assert results[-1].returncode == 2
    assert "made with --set loss=0%" in results[-1].stdout
    report = ET.parse(root / "labkit-report.xml").getroot()
    assert report.get("errors") == "1" and report.get("failures") == "0"


def test_grading_uses_the_course_lab_not_the_run_folder(tmp_path):
    """A run folder's own expectations edited away change nothing: --lab grades it with
    the course's lab file; and a lab file the course changed refuses runs of the old one."""
    root = course(tmp_path, {"carol": _checks_edited_away})
    argv = ["check", "submissions/", "--lab", "labs/04-loss", "--json"]
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", *argv], capture_output=True,
                          text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    doc = json.loads(done.stdout)
    results = doc["targets"][0]["results"]
    assert [r["name"] for r in results][0] == "tcp-delivers-everything"
    assert results[0]["op"] == "==" and results[0]["expected"] == 2000000
    assert doc["targets"][0]["summary"]["pass"] == len(results) == 5
    lab = root / "labs" / "04-loss" / "lab.toml"
    lab.write_text(lab.read_text().replace('loss = "3%"', 'loss = "4%"'))
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", *argv[:-1]],
                          capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 2 and "made from a different lab.toml" in done.stdout
