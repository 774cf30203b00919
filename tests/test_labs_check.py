"""`labkit check`: the saved runs in captures/ replay; a broken copy fails precisely; bad
input is exit 2 with file and key; JUnit parses; no privileges and no tools needed."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO, as_nobody, corpus_file

CAPTURES = REPO / "captures"
SAVED = sorted(p.parent.name for p in CAPTURES.glob("*/run.json"))


def labkit(*args, cwd=REPO, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env=env)


def test_every_lab_has_a_small_saved_run():
    labs = sorted(p.parent.name for p in (REPO / "labs").glob("*/lab.toml"))
    assert SAVED == labs
    for name in SAVED:
        size = sum(f.stat().st_size for f in (CAPTURES / name).rglob("*") if f.is_file())
        assert size < 1 << 20, f"captures/{name} is {size} bytes; a saved run stays under 1 MB"
        assert (CAPTURES / name / "README.md").is_file()
        assert (CAPTURES / name / "expect.toml").is_file()


def test_check_replays_every_saved_run(tmp_path):
    done = labkit("check", "captures/", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "labkit-check" and doc["exit_status"] == 0
    labs = [t for t in doc["targets"] if "sweep-" not in t["path"]]
    assert sorted(t["path"].split("/")[-1] for t in labs) == SAVED
    assert len(doc["targets"]) > len(labs)          # the loss sweep of the compare notebook
    for t in doc["targets"]:
        assert t["summary"]["fail"] == t["summary"]["error"] == 0
        assert t["summary"]["pass"] > 50            # the lab's own and the blessed ones
        names = [r["name"] for r in t["results"]]
        assert any(n.startswith("a: tcp port") for n in names)


def _pcapng_without(data: bytes, frame: int) -> bytes:
    """The pcapng bytes with packet number `frame` (1-based) cut out."""
    out, pos, n = bytearray(), 0, 0
    endian = "<"
    while pos + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, pos)[0]
        if btype == 0x0A0D0D0A:
            endian = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        length = struct.unpack_from(endian + "I", data, pos + 4)[0]
        block = data[pos:pos + length]
        if btype in (6, 3, 2):
            n += 1
            if n == frame:
                pos += length
                continue
        out += block
        pos += length
    assert n >= frame
    return bytes(out)


def _copy_saved(tmp_path, name="04-loss"):
    dst = tmp_path / name
    shutil.copytree(CAPTURES / name, dst)
    return dst


def test_a_run_missing_one_retransmission_fails_with_the_numbers(tmp_path):
    import toolkit
    run = _copy_saved(tmp_path)
    pk = toolkit.analyze(run / "a.pcapng.gz").packets
    frame = int(pk[(pk["retransmission"] == 1) & (pk["dport"] == 5201)]["frame"].iloc[0])
    data = gzip.decompress((run / "a.pcapng.gz").read_bytes())
    (run / "a.pcapng.gz").write_bytes(gzip.compress(_pcapng_without(data, frame)))
    done = labkit("check", str(run))
    assert done.returncode == 1, done.stdout
    out = done.stdout
    assert "FAIL" in out and "a: tcp port 5201: retransmissions" in out
    before = int(pk[(pk["retransmission"] == 1) & (pk["dport"] == 5201)].shape[0])
    assert f"expected == {before}" in out or f"== {before} (found {before - 1})" in out
    assert "why: blessed from this saved run" in out
    assert "rows looked at" in out


def test_a_changed_expectation_fails_and_says_why(tmp_path):
    run = _copy_saved(tmp_path)
    doc = json.loads((run / "run.json").read_text())
    exp = next(e for e in doc["spec"]["expect"] if e["name"] == "tcp-delivers-everything")
    exp["expected"] = 2000001
    (run / "run.json").write_text(json.dumps(doc))
    done = labkit("check", str(run))
    assert done.returncode == 1
    assert "FAIL  expect[0] tcp-delivers-everything" in done.stdout
    assert "found 2000000" in done.stdout
    assert "why: TCP is reliable" in done.stdout


def test_a_damaged_capture_is_bad_input_named_with_its_offset(tmp_path):
    run = _copy_saved(tmp_path)
    data = gzip.decompress((run / "b.pcapng.gz").read_bytes())
    (run / "b.pcapng.gz").write_bytes(gzip.compress(data[:len(data) // 2] + b"\xff" * 40))
    done = labkit("check", str(run))
    assert done.returncode == 2, done.stdout
    assert "ERROR" in done.stdout and "b.pcapng.gz" in done.stdout and "offset" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('op = "=="', 'op = "~="', 1), "expect.toml: blessed[0].op"),
    (lambda t: t.replace("[[expect]]", "[[expect]\n", 1), "expect.toml: not valid TOML"),
    (lambda t: t.replace('table = "packets"', 'table = "packet"', 1),
     "expect.toml: blessed[0].table"),
])
def test_a_malformed_expectation_is_bad_input_named_with_file_and_key(tmp_path, edit,
                                                                      message):
    run = _copy_saved(tmp_path, "01-handshake")
    f = run / "expect.toml"
    f.write_text(edit(f.read_text()))
    done = labkit("check", str(run))
    assert done.returncode == 2
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_junit_report_has_the_shape_ci_systems_read(tmp_path):
    run = _copy_saved(tmp_path)
    doc = json.loads((run / "run.json").read_text())
    doc["spec"]["expect"][0]["expected"] = 1
    (run / "run.json").write_text(json.dumps(doc))
    report = tmp_path / "report.xml"
    done = labkit("check", str(run), str(CAPTURES / "01-handshake"), "--junit", str(report))
    assert done.returncode == 1
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 2
    total = 0
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases) > 0
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors")) == len(suite.findall("testcase/error"))
        float(suite.get("time"))
        for case in cases:
            assert case.get("name") and case.get("classname")
        total += len(cases)
    assert int(root.get("tests")) == total and int(root.get("failures")) == 1
    failure = root.find("testsuite/testcase/failure")
    assert failure.get("message") and "why: TCP is reliable" in failure.text


def test_update_re_blesses_and_refuses_options_that_would_do_nothing(tmp_path):
    run = _copy_saved(tmp_path, "01-handshake")
    (run / "expect.toml").write_text("")
    done = labkit("check", "--update", str(run))
    assert done.returncode == 0 and "blessed" in done.stdout
    assert (run / "expect.toml").read_text() == (CAPTURES / "01-handshake" /
                                                  "expect.toml").read_text()
    assert labkit("check", str(run)).returncode == 0
    done = labkit("check", "--update", "--junit", str(tmp_path / "x.xml"), str(run))
    assert done.returncode == 2 and "--update" in done.stderr
    for mode in ("--update", "--json"):           # -v would do nothing there: refused
        done = labkit("check", mode, "-v", str(run))
        assert done.returncode == 2 and "-v prints passing" in done.stderr


def test_any_capture_with_an_expectations_file(tmp_path):
    """A researcher's capture, not a lab run: the README's example."""
    capture = corpus_file("cs_tcp_retransmissions")
    rules = tmp_path / "retrans.toml"
    rules.write_text('''
[[expect]]
name = "five-retransmissions"
table = "tcp"
where = {stream = 0}
value = "retransmissions"
op = "=="
expected = 5
why = "the sender resends its unacknowledged segment five times"

[[expect]]
name = "no-handshake-seen"
table = "tcp"
value = "sum(packets_b_to_a)"
op = "=="
expected = 0
why = "the capture has only one direction"
''')
    done = labkit("check", str(capture), "--expect", str(rules), "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  expect[0] five-retransmissions" in done.stdout
    rules.write_text(rules.read_text().replace("expected = 5", "expected = 4"))
    assert labkit("check", str(capture), "--expect", str(rules)).returncode == 1
    done = labkit("check", str(capture))
    assert done.returncode == 2 and "needs --expect FILE" in done.stderr
    rules.write_text('[[expect]]\ntable = "drops"\nvalue = "count"\nop = "=="\nexpected = 0\n')
    done = labkit("check", str(capture), "--expect", str(rules))
    assert done.returncode == 2 and "needs a run folder" in done.stdout + done.stderr


def test_check_imports_nothing_linux_only():
    """It must run where the wheels install (macOS, Windows): with the Linux-only modules
    made unimportable, it still checks a saved run."""
    code = ("import sys\n"
            "for m in ('fcntl', 'termios', 'resource', 'pwd', 'grp', 'pty', 'posix_ipc'):\n"
            "    sys.modules[m] = None\n"
            "from toolkit.cli import main\n"
            "sys.exit(main(['check', 'captures/01-handshake']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.root
def test_check_as_an_ordinary_user_with_no_capture_tools(nobody_python, tmp_path):
    empty = nobody_python.home / "no-tools"
    empty.mkdir(exist_ok=True)
    junit = nobody_python.home / "junit.xml"
    done = as_nobody(str(nobody_python.python), "-m", "toolkit.cli", "check", str(CAPTURES),
                     "--junit", str(junit), env=[*nobody_python.env(), f"PATH={empty}"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 failed, 0 errors" in done.stdout
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_demo_without_any_way_to_build_a_lab_shows_the_saved_run(monkeypatch, tmp_path):
    """`make demo` on a machine with neither root nor user namespaces: it says why, then
    replays captures/04-loss."""
    import io

    from toolkit.labs import demo
    from toolkit.netlab import rootless

    def refuse(prefer="auto"):
        raise rootless.PrivilegeError("not root, and user namespaces are off (test)")

    monkeypatch.setattr(rootless, "detect", refuse)
    out = io.StringIO()
    status = demo.run(tmp_path / "run", stream=out)
    text = out.getvalue()
    assert status == 0, text
    assert "cannot run 04-loss: not root, and user namespaces are off (test)" in text
    assert "saved reference run" in text and "Ground truth, reconciled" in text
    assert "PASS  expect[0] tcp-delivers-everything" in text
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    assert doc["status"] == "failed" and doc["exit_status"] == 3
