"""`--json` means one thing in every command: a switch, one JSON document on stdout instead
of the text (doctor, selftest, labs, check, serve, send, scenario roles); a report that
should also go to a file is `--json-file FILE`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit import cli

from conftest import REPO

PY = [sys.executable, "-m", "toolkit.cli"]


def _json_actions(parser):
    """(command path, the --json action) for every subcommand that has one."""
    import argparse
    out = []

    def walk(p, path):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, (*path, name))
            elif "--json" in a.option_strings:
                out.append((" ".join(path), a))
    walk(parser, ())
    return out


def test_json_is_a_switch_in_every_command():
    found = _json_actions(cli.build_parser())
    names = {path for path, _ in found}
    assert {"doctor", "selftest", "labs", "check", "serve", "send"} <= names, names
    for path, action in found:
        assert action.nargs == 0, f"labkit {path} --json takes a value"


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_json_is_the_document_on_stdout(tmp_path, proto):
    """serve and send with --json: stdout is the report alone (parsed whole), the server's
    'listening' line goes to stderr; --json-file writes the same document to a file."""
    srv = subprocess.Popen([*PY, "serve", "--proto", proto, "-p", "0", "-1", "--json",
                            "--json-file", str(tmp_path / "s.json")], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = srv.stderr.readline()
        assert line.startswith("Server listening"), line
        port = int(line.split("port")[1].split()[0])
        args = ["-n", "200K"] if proto == "tcp" else ["-k", "50", "-b", "2M"]
        sent = subprocess.run([*PY, "send", "127.0.0.1", "--proto", proto, "-p", str(port),
                               "--json", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        out, _ = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
    assert sent.returncode == 0, sent.stderr
    client = json.loads(sent.stdout)                 # the whole stdout is one document
    server = json.loads(out)
    assert client["schema"] == server["schema"] == "labkit-endpoint-report"
    assert server == json.loads((tmp_path / "s.json").read_text())
    if proto == "tcp":
        assert client["end"]["payload_bytes"] == 200 * 1024
        # the server counts the stream's bytes: the messages and their framing
        assert server["end"]["payload_bytes"] >= client["end"]["payload_bytes"]
    else:
        assert server["end"]["flows"] == 1 and server["end"]["payload_bytes"] > 0


def test_a_scenario_role_takes_the_same_switch():
    import argparse

    from toolkit.scenarios import add_conventional
    for role in ("server", "client"):
        p = argparse.ArgumentParser()
        add_conventional(p, role)
        acts = {o: a for a in p._actions for o in a.option_strings}
        assert acts["--json"].nargs == 0 and acts["--json-file"].metavar == "FILE"


def test_a_scenario_server_under_json_prints_only_its_report(tmp_path):
    """The scenario server's 'listening' line goes to stderr under --json too."""
    import socket
    with socket.socket() as s:               # a free port: the scenario's own -p is fixed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen([*PY, "scenario", "states", "server", "-p", str(port), "--json"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = srv.stderr.readline()
        assert line.startswith("Server listening"), line
        got = subprocess.run([*PY, "scenario", "states", "client", "127.0.0.1", "-p",
                              str(port), "--json"], cwd=REPO, capture_output=True, text=True,
                             timeout=60)
        out, _ = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
    assert json.loads(out)["schema"] == "labkit-scenario-report"
    assert json.loads(got.stdout)["schema"] == "labkit-scenario-report", got.stderr
