"""One way to write units (issue 14): every number labkit writes is in SI base units with
the unit as the last part of its name (`_s`, `_bytes`, `_bps`), and docs/columns.md lists
every column of every analyzer table, exactly, with its unit.

Walked: every column of the analyzer's tables (a saved run's capture and corpus files),
every numeric field of endpoint reports made by a short loopback run, and of saved runs'
run.json. Version-1 documents (the saved endpoint reports, an old run.json) still read.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import toolkit
from conftest import CORPUS, REPO

DOC = REPO / "docs" / "columns.md"
DIRECTIONS = ("a_to_b", "b_to_a")
# names that are not ours to choose: Wireshark's tcp.* fields, the SYN's option, struct
# tcp_info's fields passed on as the kernel gives them, the socket options' names. Each
# is marked in docs/columns.md with where its name comes from; nothing else may be.
EXCEPTIONS = {"seq", "ack", "seq_raw", "ack_raw", "tcp_len", "window", "bytes_in_flight",
              "duplicate_ack_num", "duplicate_ack_frame", "acks_frame", "mss_a", "mss_b",
              "snd_mss", "rcv_mss", "pmtu", "snd_ssthresh", "snd_cwnd", "rcv_space",
              "bytes_acked", "bytes_received", "notsent_bytes", "bytes_sent", "bytes_retrans",
              "snd_wnd", "rcvbuf", "sndbuf"}
# a unit hidden in a name, or a unit other than the SI base one
FORBIDDEN = re.compile(r"(^|_)(ms|us|ns|msec|usec|kbps|mbps)(_|$)|bits_per_|per_second|"
                       r"(^|_)seconds(_|$)|(^|_)millis")
SUFFIX = {"s": "_s", "unix s": "_unix_s", "bps": "_bps", "1/s": "_per_s"}
TABLES = {"tcp": "tcp", "tcp_states": "tcp_states", "udp": "udp", "udp_flows": "udp_flows",
          "packets": "packets"}


def _doc_tables() -> dict[str, dict[str, str]]:
    """{section: {name: unit cell}} from the tables marked <!-- columns: X --> or
    <!-- fields: X --> in docs/columns.md, in the doc's order; a run of `_D` rows is
    expanded as the table has it: every a_to_b column, then every b_to_a one."""
    rows: dict[str, list[tuple[str, str]]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        m = re.match(r"<!-- (?:columns|fields): (\w+) -->", line.strip())
        if m:
            section = m.group(1)
            rows[section] = []
            continue
        if section is None:
            continue
        if not line.startswith("|"):
            if rows[section]:
                section = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        if name in ("column", "field") or set(name) <= {"-"}:
            continue
        rows[section].append((name, cells[1]))
    out: dict[str, dict[str, str]] = {}
    for section, entries in rows.items():
        names: list[tuple[str, str]] = []
        block: list[tuple[str, str]] = []
        for entry in [*entries, ("", "")]:
            if "_D" in entry[0]:
                block.append(entry)
                continue
            names += [(n.replace("_D", f"_{d}"), u) for d in DIRECTIONS for n, u in block]
            block = []
            if entry[0]:
                names.append(entry)
        out[section] = dict(names)
        assert len(out[section]) == len(names), f"docs/columns.md: a name twice in {section}"
    return out


DOCUMENTED = _doc_tables()


def _follows_rule(name: str, unit: str) -> bool:
    if unit == "bytes":
        # the unit last, or (Wireshark's Conversations' order) before the direction
        stem = re.sub(r"_(a_to_b|b_to_a)$", "", name)
        return stem == "bytes" or stem.endswith("_bytes")
    if unit in SUFFIX:
        return name.endswith(SUFFIX[unit])
    return True


def test_the_doc_follows_its_own_rule():
    assert set(TABLES) | {"endpoint", "tcp_info"} <= set(DOCUMENTED)
    marked = set()
    for section, rows in DOCUMENTED.items():
        for name, unit in rows.items():
            assert not FORBIDDEN.search(name), f"{section}.{name}: a unit not SI in the name"
            if "(" in unit:
                marked.add(name)
                continue
            assert unit in ("—", *SUFFIX, "bytes"), f"{section}.{name}: unit {unit!r}?"
            assert _follows_rule(name, unit), \
                f"{section}.{name} is in {unit} and its name does not end in the unit"
    assert marked == EXCEPTIONS, "every exception is marked in the doc, and only those"


def _captures() -> list[Path]:
    out = [REPO / "captures" / "04-loss" / "a.pcapng.gz",
           REPO / "captures" / "08-flow-control" / "b.pcapng.gz"]
    files = CORPUS / "files"
    if files.is_dir():
        out += [files / n for n in ("sipp_g711a_rtp.pcap", "tcp-ecn-sample.pcap",
                                    "dns-remoteshell.pcap") if (files / n).exists()]
    return out


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_every_analyzer_column_is_documented_with_its_unit(path):
    a = toolkit.analyze(path)
    for name, frame in (("tcp", a.tcp), ("tcp_states", a.tcp_states), ("udp", a.udp),
                        ("udp_flows", a.udp_flows), ("packets", a.packets)):
        doc = DOCUMENTED[name]
        assert list(frame.columns) == list(doc), \
            f"{name}: the table's columns and docs/columns.md's differ"
        for col in frame.columns:
            assert not FORBIDDEN.search(col), f"{name}.{col}"
    js = a.to_json()
    assert js["format_version"] == 2
    for key in js["summary"]:
        assert not FORBIDDEN.search(key), key


def _numeric_leaves(x, path=()):
    """(key, path) of every number under x (JSON): its own key, and the keys above."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numeric_leaves(v, (*path, str(k)))
    elif isinstance(x, list):
        for v in x:
            yield from _numeric_leaves(v, (*path, "[]"))
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path


def _check_report(doc: dict, where: str) -> None:
    fields = {**DOCUMENTED["endpoint"], **DOCUMENTED["tcp_info"]}
    for path in _numeric_leaves(doc):
        key = path[-1]
        assert not FORBIDDEN.search(key), f"{where}: {'.'.join(path)}"
        parent = path[-2] if len(path) > 1 else ""
        if key == "[]" or parent == "by_ending":
            continue                    # list items; a count per way of ending
        if parent.endswith("_s") and key in ("min", "max", "mean", "p50", "p90", "p99"):
            continue                    # a percentile of a field in s (owd_s, latency_s)
        assert key in fields, f"{where}: {'.'.join(path)} is not in docs/columns.md"


@pytest.fixture(scope="module")
def loopback_reports(tmp_path_factory):
    """`labkit serve` and `labkit send` on 127.0.0.1, TCP and UDP, a second or two each."""
    out = tmp_path_factory.mktemp("reports")
    cli = [sys.executable, "-m", "toolkit.cli"]
    docs = {}
    for proto, send_args in (("tcp", ["-n", "300000"]), ("udp", ["-k", "300", "-b", "10M"])):
        # a port the kernel chooses (a fixed one collides with another run on the machine)
        srv = subprocess.Popen([*cli, "serve", "--proto", proto, "-p", "0", "-1", "-q",
                                "-t", "20", "--json-file", str(out / f"{proto}.serve.json")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        try:
            line = srv.stdout.readline()          # "Server listening on ...": ready
            assert "listening" in line, line
            port = int(re.search(r"port (\d+)", line).group(1))
            done = subprocess.run([*cli, "send", "127.0.0.1", "--proto", proto, "-p",
                                   str(port), "-q", *send_args, "--json-file",
                                   str(out / f"{proto}.send.json")], cwd=REPO,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            srv.wait(timeout=30)
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
        for side in ("send", "serve"):
            docs[f"{proto}.{side}"] = json.loads((out / f"{proto}.{side}.json").read_text())
    return docs


def test_endpoint_reports_name_every_number_with_its_unit(loopback_reports):
    assert {k: d["version"] for k, d in loopback_reports.items()} == dict.fromkeys(
        loopback_reports, 2)
    for where, doc in loopback_reports.items():
        _check_report(doc, where)
    send = loopback_reports["tcp.send"]
    assert send["end"]["payload_bytes"] == 300000
    assert send["end"]["goodput_bps"] == pytest.approx(
        300000 * 8 / send["end"]["duration_s"])
    if sys.platform.startswith("linux"):
        info = send["end"]["tcp_info"]
        assert 0 < info["rtt_s"] < 1 and info["delivery_rate_bps"] > 0


def test_saved_runs_name_every_number_with_its_unit():
    runs = sorted((REPO / "captures").rglob("run.json"))
    assert runs
    for f in runs:
        doc = json.loads(f.read_text())
        assert doc["version"] == 2, f
        for path in _numeric_leaves(doc):
            assert not FORBIDDEN.search(path[-1]), f"{f}: {'.'.join(path)}"


# ---- version 1 still reads ----

def test_a_saved_version_1_endpoint_report_reads_as_version_2():
    from toolkit.endpoints.report import upgrade
    from toolkit.labs.folder import RunFolder

    raw = json.loads((REPO / "captures/04-loss/endpoints/tcp.send.json").read_text())
    assert raw["version"] == 1 and "seconds" in raw["end"]         # kept as saved
    new = upgrade(raw)
    assert new["version"] == 2 and upgrade(new) is new
    end, old = new["end"], raw["end"]
    assert (end["duration_s"], end["payload_bytes"], end["goodput_bps"]) == (
        old["seconds"], old["bytes"], old["bits_per_second"])
    assert end["tcp_info"]["rtt_s"] == old["tcp_info"]["rtt"]                # s already
    assert end["tcp_info"]["pacing_rate_bps"] == old["tcp_info"]["pacing_rate"]
    assert end["peer"]["messages"]["payload_bytes"] == old["peer"]["messages"]["bytes"]
    iv, old_iv = new["intervals"][0], raw["intervals"][0]
    assert (iv["start_s"], iv["end_s"], iv["payload_bytes"]) == (
        old_iv["start"], old_iv["end"], old_iv["bytes"])
    assert new["start"]["time_unix_s"] == raw["start"]["time_unix"]
    _check_report(new, "upgraded tcp.send.json")
    # through the run folder, as every table reads it
    rep = RunFolder(REPO / "captures/04-loss").endpoint_report("tcp", "send")
    assert rep == new


def test_a_version_1_run_folder_checks_with_its_old_expectations(tmp_path):
    from toolkit.labs import check as C
    from toolkit.labs.folder import RunFolder

    run = tmp_path / "01-handshake"
    shutil.copytree(REPO / "captures" / "01-handshake", run)
    # its blessing as format 1 wrote it: the old names, milliseconds
    blessed = (run / "expect.toml").read_text()
    assert "handshake_rtt_s" in blessed and "payload_bytes_a_to_b" in blessed
    (run / "expect.toml").write_text(blessed.replace("payload_bytes_a_to_b", "payload_a_to_b"))
    n_blessed = blessed.count("[[expect]]")
    doc = json.loads((run / "run.json").read_text())
    doc["version"] = 1
    for e in doc["spec"]["expect"]:
        if e["value"] == "handshake_rtt_s":                 # as format 1 wrote it
            e["value"], e["expected"] = "handshake_rtt_ms", [19.0, 26.0]
    doc["spec"]["expect"].append({"name": "payload", "table": "tcp", "at": "a",
                                  "value": "sum(payload_a_to_b)", "op": ">", "expected": 0})
    doc["spec"]["question"].append({"id": "rtt-ms", "text": "How many ms?", "tolerance": 1.0,
                                    "answer": {"table": "tcp", "at": "a",
                                               "value": "handshake_rtt_ms"}})
    for cap in doc["captures"].values():
        cap["started_at"] = cap.pop("started_unix_s")
    (run / "run.json").write_text(json.dumps(doc))
    up = RunFolder(run).doc
    assert up["version"] == 2
    rtt = next(e for e in up["spec"]["expect"] if e["name"] == "handshake-rtt")
    assert rtt["value"] == "handshake_rtt_s" and rtt["expected"] == [0.019, 0.026]
    assert up["spec"]["expect"][-1]["value"] == "sum(payload_bytes_a_to_b)"
    assert all("started_unix_s" in c for c in up["captures"].values())
    q = up["spec"]["question"][-1]
    assert (q["id"], q["answer"]["value"], q["tolerance"]) == ("rtt-ms", "handshake_rtt_s",
                                                                 0.001)
    out = C.check(C.Target(run, "run"))
    assert not out.errors and out.status == 0, [r.line() for r in out.results
                                                 if r.status != "pass"]
    assert len(out.results) == len(doc["spec"]["expect"]) + n_blessed
