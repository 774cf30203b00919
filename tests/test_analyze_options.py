"""`labkit analyze`: every option against every output mode (format x --packets x one or
several files). Each combination either does what it says (checked here, on the output it
writes) or is refused with exit 2 and a message naming the option. The options come from
the parser, so one added later fails here until it is placed."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

from toolkit import cli

from conftest import REPO

CAP = str(REPO / "captures" / "04-loss" / "a.pcapng.gz")
OTHER = str(REPO / "captures" / "01-handshake" / "a.pcapng.gz")
FORMATS = ["table", "json", "csv", "parquet"]
# every analyze option, and what this file does with it
PLACED = {"--format", "--packets", "--stream", "--output", "--jobs", "--help"}


def test_every_analyze_option_is_placed():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    an = sub.choices["analyze"]
    names = {max(a.option_strings, key=len) for a in an._actions if a.option_strings}
    assert names == PLACED, f"place these options in this walk: {names ^ PLACED}"


def _run(capsys, *argv):
    code = cli.main(["analyze", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _read(path, fmt):
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "json":
        text = path.read_text()
        try:
            return json.loads(text)
        except json.JSONDecodeError:                 # JSON Lines (--packets)
            return [json.loads(x) for x in text.splitlines()]
    return path.read_text()


@pytest.mark.parametrize("packets", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_output_writes_the_file_in_every_format(tmp_path, capsys, fmt, packets):
    out = tmp_path / ("out" if fmt == "parquet" else f"out.{fmt}")
    code, stdout, err = _run(capsys, CAP, "--format", fmt, "-o", str(out),
                             *(["--packets"] if packets else []))
    assert code == 0, err
    assert out.exists() and not stdout.strip(), "the output went to stdout, not -o"
    if fmt == "parquet":
        names = {p.stem for p in out.glob("*.parquet")}
        assert ("packets" in names) == packets and "tcp_conversations" in names
    elif fmt == "table":
        assert "TCP conversations" in out.read_text()
    else:
        assert len(_read(out, fmt))


@pytest.mark.parametrize("packets", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_limits_what_every_format_writes(tmp_path, capsys, fmt, packets):
    out = tmp_path / ("s" if fmt == "parquet" else f"s.{fmt}")
    code, _, err = _run(capsys, CAP, "--format", fmt, "-o", str(out), "--stream", "0",
                        *(["--packets"] if packets else []))
    assert code == 0, err
    if fmt == "parquet":
        tcp = pd.read_parquet(out / "tcp_conversations.parquet")
        assert tcp["stream"].tolist() == [0]
        if packets:
            assert set(pd.read_parquet(out / "packets.parquet")["tcp_stream"]) == {0}
    elif fmt == "csv":
        df = pd.read_csv(out)
        col = "tcp_stream" if packets else "stream"
        assert set(df[col]) == {0} and (packets or set(df["proto"]) == {"tcp"})
    elif fmt == "json":
        got = _read(out, fmt)
        if packets:
            assert {r["tcp_stream"] for r in got} == {0}
        else:
            assert [c["stream"] for c in got["tcp_conversations"]] == [0]
    else:
        text = out.read_text()
        assert "\nUDP conversations\n" not in text and "\n1  " not in text
        assert "\nTCP conversations" in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_files_in_every_format(tmp_path, capsys, fmt):
    out = tmp_path / ("m" if fmt == "parquet" else f"m.{fmt}")
    code, _, err = _run(capsys, CAP, OTHER, "--format", fmt, "-o", str(out))
    assert code == 0, err
    if fmt == "parquet":                           # datasets partitioned by capture
        files = set(pd.read_parquet(out / "tcp_conversations")["file"])
        assert files == {CAP, OTHER}
    elif fmt == "csv":
        assert set(pd.read_csv(out)["file"]) == {CAP, OTHER}
    elif fmt == "json":
        assert [c["summary"]["file"] for c in _read(out, fmt)["captures"]] == [CAP, OTHER]
    else:
        text = out.read_text()
        assert CAP in text and OTHER in text


@pytest.mark.parametrize("argv,words", [
    (["--format", "table", "--jobs", "2"], "--jobs"),
    (["--format", "csv", "--jobs", "2"], "--jobs"),
    (["--format", "json", "--jobs", "2"], "--jobs"),
    (["--format", "parquet"], "--output"),
    (["--format", "parquet", "-o", "{tmp}/p", "--jobs", "0"], "--jobs"),
    (["--stream", "999"], "--stream 999"),
])
def test_refused_with_exit_2_naming_the_option(tmp_path, capsys, argv, words):
    code, _, err = _run(capsys, CAP, *[x.format(tmp=tmp_path) for x in argv])
    assert code == 2 and words in err, (code, err)


def test_stream_is_refused_for_several_captures_into_datasets(tmp_path, capsys):
    code, _, err = _run(capsys, CAP, OTHER, "--format", "parquet", "-o", str(tmp_path / "d"),
                        "--stream", "0")
    assert code == 2 and "--stream" in err


def test_jobs_runs_the_captures_on_that_many_workers(tmp_path, capsys):
    code, _, err = _run(capsys, CAP, OTHER, "--format", "parquet", "-o", str(tmp_path / "j"),
                        "--jobs", "2")
    assert code == 0, err
    records = list((tmp_path / "j" / "_captures").glob("*.json"))
    assert len(records) == 2


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_an_output_that_cannot_be_written_is_exit_2_naming_it(tmp_path, capsys, fmt):
    code, _, err = _run(capsys, CAP, "--format", fmt, "-o", str(tmp_path / "no" / "x"))
    assert code == 2 and "--output" in err and "Traceback" not in err
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "x").mkdir()                      # the output's name is taken by a folder
    code, _, err = _run(capsys, CAP, "--format", fmt, "-o", str(ro / "x"))
    assert code == 2 and "--output" in err
