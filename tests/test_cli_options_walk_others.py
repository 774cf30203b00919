"""Every option of the other labkit commands (run, check, labs, doctor, selftest, demo,
clean, plot and each scenario role), in every mode, either does what it says or is refused
(exit 2, naming the option and the mode): never accepted and then ignored. The walks of
serve, send and analyze are in test_cli_options_walk.py and test_analyze_options.py.

As there, the options are read from the parser itself, so an option added later is walked
too, and so is a command or a scenario role added later (it must get a table here). Each
(option, mode) is either in WORKS, with the test that shows it working there, or must be
refused. A refusal is checked in-process, with the heavy entry points (the lab runner, the
checker, the machine probe, the selftest, the demo, the namespace sweep, the figure's
source, every socket a scenario opens) replaced by a trap: nothing is built, sent or
drawn, and an option that is not refused springs the trap.

A mode is what changes what the options mean: run alone, --repeat or --save; check of a
saved run, of a capture with --expect, or --update; selftest's engine; plot's figure of a
run folder or of one capture; a scenario role's --close, --write-after or --accept-after.
The tests below the tables show the options working where no other test does; most run
the command in-process with its entry point replaced by a spy that records what it was
handed (the entry points' own behaviour is the named tests' business), the scenario roles
for real on loopback."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from conftest import REPO
import option_walk as walk
from toolkit import cli, scenarios

TESTS = Path(__file__).parent
HERE = "test_cli_options_walk_others.py::"
SAVED = REPO / "captures" / "01-handshake"          # a small saved run
LOSS = REPO / "captures" / "04-loss"
CAPTURE = LOSS / "a.pcapng.gz"
WALKED_ELSEWHERE = {"serve", "send", "analyze"}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    with _argv(["pytest"]):                 # scenario.py parses every scenario's roles
        parser = cli.build_parser()
    return next(a for a in parser._actions
                if isinstance(a, argparse._SubParsersAction)).choices


@contextlib.contextmanager
def _argv(argv):
    old = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = old


def _choices(parser) -> dict:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _parser(command: str) -> argparse.ArgumentParser:
    """`run`, or `scenario NAME ROLE`."""
    words = command.split()
    p = _subcommands()[words[0]]
    for w in words[1:]:
        p = _choices(p)[w]
    return p


def _options(command: str) -> list[argparse.Action]:
    return walk.options(_parser(command))


_name = walk.name


# ---- the modes: label -> (argv, words a refusal names the mode by) ----
# "{tmp}" is the test's own folder (the current directory while the command runs)

RUN = {"single": (["run", "04-loss"], ("run",)),
       "repeat": (["run", "04-loss", "--repeat", "2"], ("--repeat",)),
       "save": (["run", "04-loss", "--save", "{tmp}/refs"], ("--save",))}
CHECK = {"run": (["check", "{tmp}/saved"], ("saved run",)),
         "capture": (["check", str(SAVED / "a.pcapng.gz"), "--expect", "{tmp}/rules.toml"],
                     ("capture", "--expect")),
         "update": (["check", "--update", "{tmp}/saved"], ("--update",))}
SELFTEST = {e: (["selftest", "--engine", e], (e,)) for e in ("auto", "kernel", "userspace")}
DEMO = {"lab": (["demo"], ("demo",)), "loopback": (["demo", "--loopback"], ("--loopback",))}
PLOT_KINDS = {"ladder": ("run",), "time-sequence": ("run", "capture"),
              "goodput": ("run", "capture"), "rtt-cwnd": ("run",), "udp": ("run", "capture"),
              "side-by-side": ("run",)}
PLOT = {f"{k} {src}": (["plot", str(LOSS if src == "run" else CAPTURE), k],
                       (k, "capture") if src == "capture" else (k,))
        for k, srcs in PLOT_KINDS.items() for src in srcs}
SCENARIO_MODES = {
    "abrupt_close server": {"read": ([], ("read",)),
                            "write": (["--write-after", "0.3"], ("write",))},
    "abrupt_close client": {c: (["127.0.0.1", "--close", c], (c,))
                            for c in ("fin", "rst", "vanish")},
    "backlog server": {"never": ([], ("never",)),
                       "accept": (["--accept-after", "0"], ("accept",))},
    "backlog client": {"client": (["127.0.0.1"], ("backlog client",))},
    "states server": {c: (["--close", c], (c,)) for c in ("first", "never")},
    "states client": {c: (["127.0.0.1", "--close", c], (c,)) for c in ("first", "second")},
    "syn-flood client": {"client": (["10.201.3.2"], ("syn-flood",))},
    "udp-file server": {"server": (["--proto", "udp", "--receive-dir", "{tmp}"],
                                   ("udp-file",))},
    "udp-file client": {"client": (["127.0.0.1", "--proto", "udp", "--file", "{tmp}/f.bin"],
                                   ("udp-file",))},
}
MODES = {"run": RUN, "check": CHECK, "labs": {"list": (["labs"], ("labs",))},
         "doctor": {"probe": (["doctor"], ("doctor",))}, "selftest": SELFTEST,
         "demo": DEMO, "clean": {"root": (["clean"], ("clean",))}, "plot": PLOT,
         **{f"scenario {r}": {m: (["scenario", *r.split(), *argv], words)
                              for m, (argv, words) in modes.items()}
            for r, modes in SCENARIO_MODES.items()}}

# a value for each option, valid on its own, with what it needs beside it (--queue needs a
# rate, --keepidle --keepalive): a refusal is then the mode's
SAMPLE = {
    "run": {"--seed": ["--seed", "5"], "--engine": ["--engine", "userspace"],
            "--set": ["--set", "loss=5%"], "--out": ["--out", "{tmp}/out"],
            "--repeat": ["--repeat", "2"], "--save": ["--save", "{tmp}/refs"],
            "--privilege": ["--privilege", "rootless"]},
    "check": {"--expect": ["--expect", "{tmp}/rules.toml"], "--lab": ["--lab", "01-handshake"],
              "--junit": ["--junit", "{tmp}/j.xml"]},
    "labs": {"--dir": ["--dir", "{tmp}"]},
    "doctor": {"--privilege": ["--privilege", "rootless"]},
    "selftest": {"--engine": ["--engine", "userspace"], "--loss": ["--loss", "5%"],
                 "--delay": ["--delay", "10ms"], "--jitter": ["--jitter", "1ms", "--delay",
                                                             "10ms"],
                 "--rate": ["--rate", "10mbit"], "--queue": ["--queue", "64kb", "--rate",
                                                             "10mbit"],
                 "--count": ["--count", "1000"], "--privilege": ["--privilege", "rootless"],
                 "--ledger-dir": ["--ledger-dir", "{tmp}/ledgers"]},
    "demo": {"--out": ["--out", "{tmp}/demo"]},
    "clean": {},
    "plot": {"--stream": ["--stream", "0"], "--flow": ["--flow", "tcp"],
             "--style": ["--style", "tcptrace"], "--direction": ["--direction", "b_to_a"],
             "--at": ["--at", "a"], "--frames": ["--frames", "1:10"],
             "--time": ["--time", "0:1"], "--window": ["--window", "0.2"],
             "--output": ["--output", "{tmp}/fig.svg"]},
    "scenario abrupt_close server": {
        "--keepidle": ["--keepidle", "3", "--keepalive"],
        "--keepintvl": ["--keepintvl", "3", "--keepalive"],
        "--keepcnt": ["--keepcnt", "3", "--keepalive"],
        "--user-timeout": ["--user-timeout", "1.5"], "--write-after": ["--write-after", "0.3"],
        "--writes": ["--writes", "2"], "--write-gap": ["--write-gap", "0.1"],
        "--length": ["--length", "50"]},
    "scenario abrupt_close client": {"--close": ["--close", "rst"], "--length": ["--length", "3"],
                                     "--wait": ["--wait", "0.1"], "--hold": ["--hold", "0.1"]},
    "scenario backlog server": {"--backlog": ["--backlog", "4"],
                                "--accept-after": ["--accept-after", "0"],
                                "--accepts": ["--accepts", "2"], "--time": ["--time", "1"]},
    "scenario backlog client": {"--connections": ["--connections", "2"],
                                "--every": ["--every", "0.1"], "--timeout": ["--timeout", "2s"],
                                "--linger": ["--linger", "1s"]},
    "scenario states server": {"--close": ["--close", "never"], "--hold": ["--hold", "0.5"],
                               "--listen-again": ["--listen-again", "0.2", "--restart"],
                               "--bind": ["--bind", "127.0.0.1"]},
    "scenario states client": {"--close": ["--close", "second"], "--hold": ["--hold", "0.5"],
                               "--length": ["--length", "20"]},
    "scenario syn-flood client": {"--count": ["--count", "10"], "--rate": ["--rate", "100"],
                                  "--sources": ["--sources", "10.201.3.128/30"],
                                  "--seed": ["--seed", "3"]},
    "scenario udp-file server": {"--receive-dir": ["--receive-dir", "{tmp}"],
                                 "--limit": ["--limit", "1M"], "--idle": ["--idle", "1"]},
    "scenario udp-file client": {"--file": ["--file", "{tmp}/f.bin"],
                                 "--piece": ["--piece", "100"], "--rate": ["--rate", "1M"],
                                 "--flow": ["--flow", "7"]},
}
PROTO = {"udp-file": "udp"}                      # the others are TCP's
for _role in SCENARIO_MODES:
    _scenario = _role.split()[0]
    SAMPLE[f"scenario {_role}"].update({
        "--port": ["--port", "9"], "--proto": ["--proto", PROTO.get(_scenario, "tcp")],
        "--json-file": ["--json-file", "{tmp}/r.json"], "--cport": ["--cport", "40000"]})

# ---- what works where, and the test that shows it ----

SOCK = "test_scenarios_sockets.py::"
BACKLOG = "test_scenario_backlog.py::"
UDPF = "test_udp_file_transfer.py::"
PLOTS = "test_plot.py::"
CHECKS = "test_labs_check.py::"
RUNS = "test_labs_run.py::"
SELF = "test_netlab_selftest.py::"


def _all(command: str) -> set:
    return set(MODES[command])


RUN_PLUMBING = HERE + "test_run_hands_every_option_to_the_runner_in_every_mode"
RUN_WORKS = {
    "--seed": [(_all("run"), RUN_PLUMBING),
               ({"repeat"}, RUNS + "test_one_seed_drops_the_same_datagrams")],
    "--engine": [(_all("run"), RUN_PLUMBING)],
    "--set": [(_all("run"), RUN_PLUMBING)],
    "--out": [(_all("run"), RUN_PLUMBING),
              ({"single"}, RUNS + "test_a_lab_runs_and_its_expectations_hold")],
    "--repeat": [({"single", "repeat"}, RUN_PLUMBING)],          # not with --save: refused
    "--save": [({"single", "save"}, RUN_PLUMBING)],              # not with --repeat: refused
    "--privilege": [(_all("run"), RUN_PLUMBING),
                    ({"single"}, RUNS + "test_a_lab_runs_rootless_in_a_user_namespace")],
}

CHECK_HERE = HERE + "test_check_of_a_capture_writes_json_and_junit_and_of_a_run_takes_more"
CHECK_WORKS = {     # --update checks nothing: it takes none of the others (refused)
    "--expect": [({"run"}, CHECK_HERE),
                 ({"capture"}, CHECKS + "test_any_capture_with_an_expectations_file")],
    "--lab": [({"run"}, "test_ci_workflows.py::test_grading_uses_the_course_lab_not_the_run_"
               "folder")],                                       # a capture: refused
    "--update": [({"run", "update"}, CHECKS + "test_update_re_blesses_and_refuses_options_"
                  "that_would_do_nothing")],                     # a capture: refused
    "--junit": [({"run"}, CHECKS + "test_junit_report_has_the_shape_ci_systems_read"),
                ({"capture"}, CHECK_HERE)],
    "--json": [({"run"}, CHECKS + "test_check_replays_every_saved_run"),
               ({"capture"}, CHECK_HERE)],
    "--verbose": [({"run"}, CHECK_HERE),
                  ({"capture"}, CHECKS + "test_any_capture_with_an_expectations_file")],
}

SELFTEST_PLUMBING = HERE + "test_selftest_hands_every_option_to_the_selftest"
ENGINES = _all("selftest")
SELFTEST_WORKS = {
    "--engine": [(ENGINES, SELFTEST_PLUMBING),
                 ({"kernel"}, SELF + "test_kernel_engine_loss_and_rate_match_the_configuration"),
                 ({"userspace"}, SELF + "test_userspace_engine_loss_delay_and_rate_match_the_"
                  "configuration")],
    "--loss": [(ENGINES, SELFTEST_PLUMBING),
               ({"kernel"}, SELF + "test_kernel_engine_loss_and_rate_match_the_configuration")],
    # the kernel engine delays with netem; a kernel without it refuses, naming the option
    "--delay": [(ENGINES, SELFTEST_PLUMBING),
                ({"kernel"}, "test_netlab_spec.py::test_kernel_plan_with_netem_chains_tbf_"
                 "under_the_delay_line"),
                ({"kernel"}, HERE + "test_selftest_names_the_options_a_kernel_without_netem_"
                 "cannot_do")],
    "--jitter": [(ENGINES, SELFTEST_PLUMBING),
                 ({"kernel"}, HERE + "test_selftest_names_the_options_a_kernel_without_netem_"
                  "cannot_do")],
    "--rate": [(ENGINES, SELFTEST_PLUMBING),
               ({"userspace"}, SELF + "test_userspace_engine_loss_delay_and_rate_match_the_"
                "configuration")],
    "--queue": [(ENGINES, SELFTEST_PLUMBING),
                ({"kernel"}, "test_netlab_spec.py::test_tbf_queue_defaults_to_50ms_of_the_"
                 "rate_but_at_least_three_frames")],
    "--count": [(ENGINES, SELFTEST_PLUMBING),
                ({"kernel"}, SELF + "test_rootless_selftest_as_an_unprivileged_user")],
    "--privilege": [(ENGINES, SELFTEST_PLUMBING)],
    # the userspace engine's ledgers: with --engine kernel refused here, and when auto
    # picks the kernel engine, refused by the selftest once it knows
    "--ledger-dir": [({"auto", "userspace"}, SELFTEST_PLUMBING),
                     ({"auto"}, HERE + "test_selftest_refuses_ledgers_when_auto_picks_the_"
                      "kernel_engine")],
    "--json": [(ENGINES, SELFTEST_PLUMBING)],
}

DEMO_HERE = HERE + "test_demo_takes_out_in_both_modes"
DEMO_WORKS = {
    "--out": [(_all("demo"), DEMO_HERE),
              ({"lab"}, CHECKS + "test_demo_without_any_way_to_build_a_lab_shows_the_saved_"
               "run"),
              ({"loopback"}, "test_demo.py::test_demo_file_is_a_valid_capture")],
    "--loopback": [(_all("demo"), DEMO_HERE),
                   ({"loopback"}, "test_demo.py::test_demo_analysis_agrees")],
}

PLOT_HERE = HERE + "test_plot_hands_each_figure_its_options"


def _plots(*labels: str) -> set:
    return set(labels)


PLOT_WORKS = {      # an option a kind does not take is refused (OPTIONS in commands/plot.py)
    "--stream": [(_plots("ladder run", "time-sequence run", "time-sequence capture"),
                  PLOT_HERE),
                 (_plots("time-sequence run", "time-sequence capture"),
                  PLOTS + "test_time_sequence_of_one_capture_equals_the_run_at_that_point")],
    "--flow": [(_plots("ladder run", "time-sequence run", "rtt-cwnd run", "udp run",
                       "udp capture"), PLOT_HERE),
               ({"ladder run"}, PLOTS + "test_ladder_of_a_udp_flow_marks_its_lost_datagrams"),
               ({"rtt-cwnd run"}, PLOTS + "test_rtt_cwnd_has_a_tcp_info_point_per_report_"
                "interval"),
               ({"udp run"}, PLOTS + "test_udp_lost_marks_equal_the_udp_flows_lost_count_at_b"),
               ({"udp capture"}, HERE + "test_udp_of_one_capture_takes_a_lab_flow_id")],
    "--style": [(_plots("time-sequence run", "time-sequence capture"), PLOT_HERE),
                ({"time-sequence run"}, PLOTS + "test_time_sequence_points_and_marks_equal_"
                 "the_packets_table"),
                ({"time-sequence capture"}, PLOTS + "test_cli_writes_kind_png_here_by_"
                 "default")],
    "--direction": [(_plots("time-sequence run", "time-sequence capture"), PLOT_HERE),
                    ({"time-sequence run"}, PLOTS + "test_time_sequence_of_one_capture_equals_"
                     "the_run_at_that_point")],
    "--at": [({"time-sequence run"}, PLOT_HERE),       # of one capture: refused
             ({"time-sequence run"}, PLOTS + "test_time_sequence_of_one_capture_equals_the_"
              "run_at_that_point")],
    "--frames": [({"ladder run"}, PLOT_HERE),
                 ({"ladder run"}, PLOTS + "test_ladder_window_by_frames_and_by_time")],
    "--time": [({"ladder run"}, PLOT_HERE),
               ({"ladder run"}, PLOTS + "test_ladder_window_by_frames_and_by_time")],
    "--window": [(_plots("goodput run", "goodput capture"), PLOT_HERE),
                 ({"goodput run"}, "test_units.py::test_plot_window_takes_a_time_with_its_"
                  "unit")],
    "--output": [(_all("plot"), PLOT_HERE),
                 ({"ladder run"}, PLOTS + "test_cli_writes_a_png")],
}


def _conventional(role: str, client: bool, cport: bool = True) -> dict:
    """--port, --proto, --json, --json-file, -q (and a client's --cport): the same in every
    mode of a role: each is used before the mode matters (bind, connect, the report)."""
    every = _all(f"scenario {role}")
    reports = HERE + "test_every_scenario_role_reports_and_addresses_as_told"
    out = {o: [(every, reports)] for o in ("--port", "--json", "--json-file", "--quiet")}
    out["--proto"] = [(every, HERE + "test_each_scenario_takes_its_protocol_and_refuses_the_"
                       "other")]
    if client and cport:
        out["--cport"] = [(every, reports)]
    return out


ABRUPT_SERVER_HERE = HERE + "test_abrupt_close_server_options_reach_its_connection"
ABRUPT_CLIENT_HERE = HERE + "test_abrupt_close_client_closes_as_told"
STATES_HERE = HERE + "test_states_server_restarts_and_listens_again"
STATES_CLIENT_HERE = HERE + "test_states_client_sends_its_length_and_holds_before_closing"
BOTH = {"read", "write"}
SCENARIO_WORKS = {
    "scenario abrupt_close server": {
        **_conventional("abrupt_close server", client=False),
        "--keepalive": [(BOTH, ABRUPT_SERVER_HERE),
                        ({"read"}, SOCK + "test_a_vanished_client_is_noticed_only_by_"
                         "keepalive_or_a_write")],
        **{o: [(BOTH, ABRUPT_SERVER_HERE),
               (BOTH, SOCK + "test_keepalive_options_reach_the_socket")]
           for o in ("--keepidle", "--keepintvl", "--keepcnt")},   # without --keepalive: refused
        # reading, the server sends nothing: these are refused there (--user-timeout too,
        # unless --keepalive: it then bounds the probes; the walk's read mode has none)
        "--user-timeout": [(BOTH, ABRUPT_SERVER_HERE),
                           ({"write"}, SOCK + "test_a_vanished_client_is_noticed_only_by_"
                            "keepalive_or_a_write")],
        "--write-after": [(BOTH, SOCK + "test_write_to_a_closed_peer_succeeds_once_then_"
                           "raises_broken_pipe")],
        "--writes": [({"write"}, SOCK + "test_write_to_a_closed_peer_succeeds_once_then_raises_"
                      "broken_pipe")],
        "--write-gap": [({"write"}, SOCK + "test_write_to_a_closed_peer_succeeds_once_then_"
                         "raises_broken_pipe")],
        "--length": [({"write"}, ABRUPT_SERVER_HERE)],
    },
    "scenario abrupt_close client": {
        **_conventional("abrupt_close client", client=True),
        "--close": [({"fin", "rst", "vanish"}, ABRUPT_CLIENT_HERE),
                    ({"fin"}, SOCK + "test_fin_makes_recv_return_empty_bytes"),
                    ({"rst"}, SOCK + "test_linger_zero_makes_recv_raise_connection_reset")],
        "--length": [({"fin", "rst", "vanish"}, ABRUPT_CLIENT_HERE)],
        "--wait": [({"fin", "rst"}, ABRUPT_CLIENT_HERE)],           # vanish: refused
        "--hold": [({"vanish"}, ABRUPT_CLIENT_HERE)],               # fin, rst: refused
    },
    "scenario backlog server": {
        **_conventional("backlog server", client=False),
        "--backlog": [({"never", "accept"}, HERE + "test_every_scenario_role_reports_and_"
                       "addresses_as_told"),
                      ({"accept"}, BACKLOG + "test_a_late_accept_makes_the_clients_beyond_the_"
                       "queue_retry")],
        "--accept-after": [({"never", "accept"}, BACKLOG + "test_a_late_accept_makes_the_"
                            "clients_beyond_the_queue_retry")],
        "--accepts": [({"accept"}, BACKLOG + "test_a_late_accept_makes_the_clients_beyond_the_"
                       "queue_retry")],                         # never accepting: refused
        "--time": [({"never", "accept"}, HERE + "test_backlog_server_stops_on_time")],
    },
    "scenario backlog client": {
        **_conventional("backlog client", client=True),
        **{o: [({"client"}, BACKLOG + "test_a_late_accept_makes_the_clients_beyond_the_queue_"
                "retry")] for o in ("--connections", "--every")},
        "--timeout": [({"client"}, BACKLOG + "test_a_client_gives_up_at_its_timeout")],
        "--linger": [({"client"}, HERE + "test_backlog_client_waits_its_linger_for_the_close")],
    },
    "scenario states server": {
        **_conventional("states server", client=False),
        "--close": [({"first"}, SOCK + "test_server_closing_first_waits_in_time_wait_and_"
                     "cannot_rebind_without_reuseaddr"),
                    ({"never"}, SOCK + "test_server_that_never_closes_sits_in_close_wait"),
                    ({"first", "never"}, STATES_HERE)],
        "--hold": [({"never"}, STATES_HERE),                       # --close first: refused
                   ({"never"}, SOCK + "test_server_that_never_closes_sits_in_close_wait")],
        "--restart": [({"first"}, SOCK + "test_server_closing_first_waits_in_time_wait_and_"
                       "cannot_rebind_without_reuseaddr"),
                      ({"never"}, STATES_HERE)],
        "--listen-again": [({"first", "never"}, STATES_HERE)],    # without --restart: refused
        "--bind": [({"first", "never"}, HERE + "test_every_scenario_role_reports_and_"
                    "addresses_as_told")],
    },
    "scenario states client": {
        **_conventional("states client", client=True),
        "--close": [({"first", "second"}, STATES_CLIENT_HERE)],
        "--hold": [({"second"}, STATES_CLIENT_HERE)],              # --close first: refused
        "--length": [({"first", "second"}, STATES_CLIENT_HERE)],
    },
    "scenario syn-flood client": {
        **_conventional("syn-flood client", client=True, cport=False),  # --cport: refused
        **{o: [({"client"}, HERE + "test_syn_flood_crafts_what_its_options_say")]
           for o in ("--count", "--rate", "--sources", "--seed")},
    },
    "scenario udp-file server": {
        **_conventional("udp-file server", client=False),
        "--receive-dir": [({"server"}, UDPF + "test_a_whole_file_is_stored_as_sent")],
        "--limit": [({"server"}, HERE + "test_udp_file_options_do_what_they_say")],
        "--idle": [({"server"}, UDPF + "test_without_an_end_marker_the_receiver_judges_after_"
                    "idle")],
    },
    "scenario udp-file client": {
        **_conventional("udp-file client", client=True),
        "--file": [({"client"}, UDPF + "test_a_whole_file_is_stored_as_sent")],
        **{o: [({"client"}, HERE + "test_udp_file_options_do_what_they_say")]
           for o in ("--piece", "--rate", "--flow")},
    },
}

WORKS = {
    "run": RUN_WORKS, "check": CHECK_WORKS,
    "labs": {"--json": [({"list"}, "test_labs_spec.py::test_labkit_labs_json_lists_the_labs")],
             "--dir": [({"list"}, HERE + "test_labs_lists_the_labs_of_dir")]},
    "doctor": {o: [({"probe"}, HERE + "test_doctor_probes_with_the_privilege_asked")]
               for o in ("--json", "--privilege")},
    "selftest": SELFTEST_WORKS, "demo": DEMO_WORKS,
    # not root, the whole command is refused (exit 1: root runs' leftovers need root)
    "clean": {"--dry-run": [({"root"}, HERE + "test_clean_dry_run_lists_and_removes_"
                             "nothing")]},
    "plot": PLOT_WORKS, **SCENARIO_WORKS,
}


# ---- the walk ----

Trap = walk.Trap


@pytest.fixture
def trapped(monkeypatch, tmp_path):
    """cli.main(argv) -> ("accepted" | exit status, stderr), with every heavy entry point a
    trap; run in tmp_path, which holds f.bin, rules.toml and a copy of a saved run."""
    sprung = []

    def trap(*_a, **_k):
        sprung.append(True)
        raise Trap

    from toolkit import demo as loopback_demo
    from toolkit.labs import check, runner
    from toolkit.labs import demo as lab_demo
    from toolkit.labs import spec
    from toolkit.netlab import probe, registry, selftest
    from toolkit.plot import _common
    from toolkit.scenarios import syn_flood
    for mod, name in ((runner, "run"), (check, "check"), (check, "update"),
                      (spec, "all_labs"), (probe, "probe_machine"), (selftest, "run"),
                      (lab_demo, "run"), (loopback_demo, "run_demo"), (registry, "sweep"),
                      (_common, "open_source"), (syn_flood, "check_inside_lab"),
                      (socket, "socket")):
        monkeypatch.setattr(mod, name, trap)
    monkeypatch.setattr(os, "geteuid", lambda: 0)             # clean: as root
    monkeypatch.setattr(signal, "signal", lambda *a: None)    # a scenario's Stop
    monkeypatch.setattr(threading, "excepthook", lambda *a: None)   # a trap in a thread
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.bin").write_bytes(b"x" * 100)
    (tmp_path / "rules.toml").write_text(RULES)
    shutil.copytree(SAVED, tmp_path / "saved")

    def run(argv: list[str]) -> tuple[int | str, str]:
        argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
        sprung.clear()
        with _argv(["pytest"]):
            code, err = walk.run_trapped(cli.main, argv)
        return ("accepted" if sprung else code), err
    return run


RULES = """
[[expect]]
name = "no-retransmission"
table = "tcp"
where = {stream = 0}
value = "retransmissions"
op = "=="
expected = 0
"""


def test_every_command_and_scenario_role_is_walked():
    """A command or a scenario role added later must get its modes and table here."""
    commands = set(_subcommands()) - WALKED_ELSEWHERE - {"scenario"}
    roles = {f"scenario {n} {r}" for n in scenarios.names() for r in scenarios.roles(n)}
    assert commands | roles == set(MODES) == set(WORKS)
    for command in MODES:
        missing = [_name(a) for a in _options(command)
                   if a.nargs != 0 and _name(a) not in SAMPLE[command]]
        assert not missing, f"{command}: give these a SAMPLE value: {missing}"


@pytest.mark.parametrize("command", sorted(MODES))
def test_every_option_works_or_is_refused_in_every_mode(command, trapped):
    works = WORKS[command]
    problems = []
    for action in _options(command):
        name = _name(action)
        for mode, (base, words) in MODES[command].items():
            if any(mode in where for where, _ in works.get(name, ())):
                continue
            given = SAMPLE[command].get(name, [action.option_strings[0]])
            code, err = trapped([*base, *given])
            named = any(re.search(rf"(^|[\s/(]){re.escape(o)}\b", err)
                        for o in action.option_strings)
            said_mode = any(w.lower() in err.lower() for w in words)
            if code != 2 or not named or not said_mode:
                problems.append(f"labkit {command} {' '.join(given)} in mode {mode}: neither "
                                f"listed in WORKS nor refused (exit {code}: {err.strip()!r})")
    assert not problems, "\n".join(problems)
    unknown = set(works) - {_name(a) for a in _options(command)}
    assert not unknown, f"{command}: WORKS names options it has not: {unknown}"


def test_every_mode_and_the_base_of_every_walk_is_accepted(trapped):
    for command, modes in MODES.items():
        for mode, (base, _) in modes.items():
            code, err = trapped(base)
            assert code == "accepted", (command, mode, err)


@pytest.mark.parametrize("argv, option, needs", [
    (["scenario", "abrupt_close", "server", "--keepidle", "2"], "--keepidle", "--keepalive"),
    (["scenario", "abrupt_close", "server", "--keepintvl", "2"], "--keepintvl", "--keepalive"),
    (["scenario", "abrupt_close", "server", "--keepcnt", "2"], "--keepcnt", "--keepalive"),
    (["scenario", "states", "server", "--listen-again", "1"], "--listen-again", "--restart"),
    (["scenario", "abrupt_close", "server", "--user-timeout", "1"], "--user-timeout",
     "--keepalive"),
    (["selftest", "--queue", "64kb"], "--queue", "rate"),
    (["selftest", "--jitter", "1ms"], "--jitter", "delay"),
])
def test_an_option_without_the_switch_it_belongs_to_is_refused(argv, option, needs, trapped):
    code, err = trapped(argv)
    assert code == 2 and option in err and needs in err, err


def test_every_test_named_in_the_tables_exists():
    assert not walk.missing_tests(WORKS)


# ---- run, check, labs, doctor, selftest, demo, clean: what each hands on ----

def _main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _argv(["pytest"]):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def test_run_hands_every_option_to_the_runner_in_every_mode(monkeypatch, tmp_path):
    """--seed, --engine, --set, --out and --privilege reach the runner alone, in every run
    of --repeat (seeds seed .. seed+N-1, one folder each) and under --save (then saved)."""
    from toolkit.labs import runner, saved
    runs, saves = [], []

    def fake_run(spec, out, engine=None, privilege="auto", **_):
        runs.append((spec.seed, spec.params["loss"], Path(out), engine, privilege))
        return runner.EXIT_OK
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(saved, "save", lambda src, dest: saves.append((src, dest)) or dest)
    opts = ["--seed", "9", "--engine", "userspace", "--set", "loss=5%", "--privilege",
            "rootless"]
    assert _main(["run", "04-loss", *opts, "--out", tmp_path / "one"])[0] == 0
    assert runs == [(9, "5%", tmp_path / "one", "userspace", "rootless")]
    runs.clear()
    assert _main(["run", "04-loss", *opts, "--repeat", "3", "--out", tmp_path / "many"])[0] == 0
    assert runs == [(s, "5%", tmp_path / "many" / f"04-loss-seed{s}", "userspace", "rootless")
                    for s in (9, 10, 11)]
    runs.clear()
    status, out, _ = _main(["run", "04-loss", *opts, "--out", tmp_path / "ref", "--save",
                            tmp_path / "refs"])
    assert status == 0 and runs == [(9, "5%", tmp_path / "ref", "userspace", "rootless")]
    assert saves == [(tmp_path / "ref", tmp_path / "refs" / "04-loss")]
    assert "saved as the reference run" in out


EXTRA = """
[[expect]]
name = "extra-two-connections"
table = "tcp"
at = "a"
value = "count"
op = "=="
expected = 2
"""


def test_check_of_a_capture_writes_json_and_junit_and_of_a_run_takes_more(tmp_path):
    """A capture with --expect: --json is the document, --junit the XML. A saved run with
    --expect: those expectations are checked beside its own; -v prints the passing ones."""
    import xml.etree.ElementTree as ET
    (tmp_path / "rules.toml").write_text(RULES)
    junit = tmp_path / "j.xml"
    status, out, err = _main(["check", SAVED / "a.pcapng.gz", "--expect",
                              tmp_path / "rules.toml", "--json", "--junit", junit])
    assert status == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "labkit-check"
    assert [r["name"] for r in doc["targets"][0]["results"]] == ["no-retransmission"]
    assert ET.parse(junit).getroot().find("testsuite/testcase").get("name")
    (tmp_path / "extra.toml").write_text(EXTRA)
    status, out, _ = _main(["check", SAVED, "--expect", tmp_path / "extra.toml", "-v"])
    assert status == 1                                  # the run has one connection
    assert "extra-two-connections" in out and "PASS  expect[0] one-connection" in out


def test_check_refuses_lab_and_update_for_a_capture(tmp_path):
    for extra, option in ((["--expect", tmp_path / "r.toml", "--lab", "01-handshake"], "--lab"),
                          (["--update"], "--update")):
        status, _, err = _main(["check", SAVED / "a.pcapng.gz", *extra])
        assert status == 2 and f"labkit check: {option}" in err and "capture file" in err


def test_check_lab_with_runs_and_a_capture_grades_the_runs(monkeypatch, tmp_path):
    # the capture is checked against --expect, the run against the lab: --lab is not idle
    from toolkit.labs import check as C
    seen = {}

    def collect(paths, expect, lab):
        seen.update(paths=[str(p) for p in paths], lab=lab)
        raise C.CheckInputError("collected")
    monkeypatch.setattr(C, "collect", collect)
    status, _, err = _main(["check", SAVED, SAVED / "a.pcapng.gz", "--expect",
                            tmp_path / "r.toml", "--lab", "01-handshake"])
    assert status == 2 and "collected" in err, err
    assert seen == {"paths": [str(SAVED), str(SAVED / "a.pcapng.gz")], "lab": "01-handshake"}


def test_labs_lists_the_labs_of_dir(tmp_path):
    course = tmp_path / "course" / "01-handshake"
    course.mkdir(parents=True)
    shutil.copy(REPO / "labs" / "01-handshake" / "lab.toml", course / "lab.toml")
    status, out, err = _main(["labs", "--dir", tmp_path / "course", "--json"])
    assert status == 0, err
    assert [lab["name"] for lab in json.loads(out)["labs"]] == ["01-handshake"]
    status, out, _ = _main(["labs", "--dir", tmp_path / "course"])
    assert status == 0 and out.startswith("01-handshake") and "04-loss" not in out
    status, _, err = _main(["labs", "--dir", tmp_path / "none"])
    assert status == 2 and "--dir" in err


def test_doctor_probes_with_the_privilege_asked(monkeypatch):
    from toolkit.netlab import probe
    asked = []

    def fake(privilege="auto", kernel=True):
        asked.append(privilege)
        return probe.MachineReport({"mode": "rootless", "detail": "(test)"},
                                   tools={"tcpdump": "/usr/bin/tcpdump"},
                                   packages={"scapy": "2.6"})
    monkeypatch.setattr(probe, "probe_machine", fake)
    status, out, _ = _main(["doctor", "--privilege", "rootless", "--json"])
    assert status == 0 and asked == ["rootless"]
    assert json.loads(out)["privilege"] == {"mode": "rootless", "detail": "(test)"}
    status, out, _ = _main(["doctor"])
    assert asked == ["rootless", "auto"] and out.startswith("privilege: rootless: (test)")


def _result(engine: str) -> dict:
    return {"engine": engine, "engine_reason": "asked for", "netem": False,
            "privilege": {"mode": "rootless"}, "checks": [], "timing": {}, "ok": True,
            "seconds": 0.1}


def test_selftest_hands_every_option_to_the_selftest(monkeypatch, tmp_path):
    from toolkit.netlab import selftest
    got = []

    def fake(imp, engine="auto", privilege="auto", count=10_000, ledger_dir=None):
        got.append((imp, engine, privilege, count, ledger_dir))
        return _result(engine)
    monkeypatch.setattr(selftest, "run", fake)
    for engine in ("auto", "kernel", "userspace"):
        got.clear()
        ledgers = [] if engine == "kernel" else ["--ledger-dir", tmp_path / "l"]
        status, out, err = _main(["selftest", "--engine", engine, "--loss", "5%", "--delay",
                                  "10ms", "--jitter", "1ms", "--rate", "10mbit", "--queue",
                                  "64kb", "--count", "500", "--privilege", "rootless",
                                  *ledgers, "--json"])
        assert status == 0, err
        assert json.loads(out) == _result(engine)
        (imp, asked, privilege, count, ledger_dir), = got
        for d in (imp.a_to_b, imp.b_to_a):
            assert (d.loss, d.delay_s, d.jitter_s, d.rate_bps, d.queue_bytes) == \
                (0.05, 0.010, 0.001, 10_000_000, 64 * 1024)
        assert (asked, privilege, count) == (engine, "rootless", 500)
        assert ledger_dir == (None if engine == "kernel" else tmp_path / "l")
    status, _, err = _main(["selftest", "--engine", "kernel", "--ledger-dir", tmp_path / "l"])
    assert status == 2 and "--ledger-dir" in err and "kernel" in err


def test_selftest_names_the_options_a_kernel_without_netem_cannot_do(monkeypatch):
    from toolkit.netlab import selftest
    from toolkit.netlab.impairment import choose_engine

    def no_netem(imp, engine="auto", **_):
        choose_engine(imp, False, engine)        # as the selftest decides, in its lab
        return _result(engine)
    monkeypatch.setattr(selftest, "run", no_netem)
    status, _, err = _main(["selftest", "--engine", "kernel", "--delay", "10ms", "--jitter",
                            "1ms", "--loss", "1%"])
    assert status == 2
    assert "cannot do --delay, --jitter (this kernel has no netem qdisc)" in err, err
    assert _main(["selftest", "--engine", "kernel", "--loss", "1%"])[0] == 0


def test_selftest_refuses_ledgers_when_auto_picks_the_kernel_engine(monkeypatch, tmp_path):
    """The engine auto picks is known only in the lab: the kernel's, the selftest refuses
    --ledger-dir before it measures (and makes no folder); the userspace one writes there."""
    from toolkit.netlab import selftest
    started = []

    @contextlib.contextmanager
    def fake_up(*_a, **_k):
        yield types.SimpleNamespace(run_id="t0")

    def start(lab, imp, choice, netem, ledger):
        started.append(ledger)
        raise Trap
    monkeypatch.setattr(selftest, "up", fake_up)
    monkeypatch.setattr(selftest, "have_netem", lambda lab: False)
    monkeypatch.setattr(selftest, "start_engine", start)
    status, _, err = _main(["selftest", "--loss", "1%", "--ledger-dir", tmp_path / "l"])
    assert status == 2 and "--ledger-dir" in err and "kernel" in err, err
    assert not started and not (tmp_path / "l").exists()
    with pytest.raises(Trap):                      # delay without netem: userspace
        _main(["selftest", "--delay", "5ms", "--ledger-dir", tmp_path / "l"])
    assert started == [tmp_path / "l" / "selftest-t0-loss.jsonl"]


def test_demo_takes_out_in_both_modes(monkeypatch, tmp_path):
    from toolkit import demo as loopback
    from toolkit.labs import demo as lab
    calls = []
    monkeypatch.setattr(lab, "run", lambda out=None: calls.append(("lab", out)) or 0)
    monkeypatch.setattr(loopback, "run_demo", lambda out: calls.append(("loopback", out)) or 0)
    monkeypatch.chdir(tmp_path)
    assert _main(["demo", "--out", tmp_path / "a"])[0] == 0
    assert _main(["demo", "--loopback", "--out", tmp_path / "b"])[0] == 0
    assert _main(["demo"])[0] == 0 and _main(["demo", "--loopback"])[0] == 0
    assert calls[:3] == [("lab", tmp_path / "a"), ("loopback", tmp_path / "b"), ("lab", None)]
    assert calls[3][0] == "loopback" and calls[3][1].parent == Path("runs")


def test_clean_dry_run_lists_and_removes_nothing(monkeypatch, tmp_path):
    from toolkit.netlab import registry
    ran = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(registry, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(registry, "list_netns", lambda: ["lk-abc123-a", "lk-abc123-r", "other"])
    monkeypatch.setattr(registry, "subprocess", types.SimpleNamespace(
        run=lambda argv, **_: ran.append(argv) or types.SimpleNamespace(returncode=0)))
    status, out, _ = _main(["clean", "--dry-run"])
    assert status == 0 and not ran
    assert out.startswith("would remove run abc123 (no run record): lk-abc123-a lk-abc123-r")
    status, out, _ = _main(["clean"])
    assert status == 0 and out.startswith("removed run abc123")
    assert ran == [["ip", "netns", "del", "lk-abc123-a"], ["ip", "netns", "del", "lk-abc123-r"]]


# ---- plot ----

def test_plot_hands_each_figure_its_options(monkeypatch, tmp_path):
    """Each kind's options reach its figure (the figures' own tests show what they draw
    with them), of a run folder and of one capture; --output the format and the file."""
    from toolkit import plot
    from toolkit.plot import _common, _mpl
    calls, saved = [], []
    for kind in ("ladder", "time_sequence", "goodput", "rtt_cwnd", "udp", "side_by_side"):
        monkeypatch.setattr(plot, kind, lambda src, _k=kind, **kw: calls.append((_k, src, kw))
                            or f"figure {_k}")
    monkeypatch.setattr(_common, "open_source", lambda p: Path(p).name)
    monkeypatch.setattr(_mpl, "save", lambda fig, out, fmt: saved.append((fig, out, fmt)))
    monkeypatch.chdir(tmp_path)
    cap = CAPTURE.name
    cases = [
        ([LOSS, "ladder", "--stream", "0", "--frames", "2:9", "-o", "l.svg"],
         ("ladder", "04-loss", {"stream": 0, "flow": None, "frames": (2, 9)}), "svg"),
        ([LOSS, "ladder", "--flow", "udp", "--time", "0.5:0.75"],
         ("ladder", "04-loss", {"stream": None, "flow": "udp", "time_window": (0.5, 0.75)}),
         "png"),
        ([LOSS, "time-sequence", "--flow", "tcp", "--style", "tcptrace", "--direction",
          "b_to_a", "--at", "b", "-o", "t.pdf"],
         ("time_sequence", "04-loss", {"stream": None, "direction": "b_to_a",
                                       "style": "tcptrace", "at": "b", "flow": "tcp"}), "pdf"),
        ([LOSS, "time-sequence", "--stream", "1"],
         ("time_sequence", "04-loss", {"stream": 1, "direction": "a_to_b", "style": "stevens",
                                       "at": None, "flow": None}), "png"),
        ([CAPTURE, "time-sequence", "--stream", "0", "--direction", "b_to_a", "--style",
          "tcptrace"],
         ("time_sequence", cap, {"stream": 0, "direction": "b_to_a", "style": "tcptrace",
                                 "at": None, "flow": None}), "png"),
        ([LOSS, "goodput", "--window", "250ms"], ("goodput", "04-loss", {"window_s": 0.25}),
         "png"),
        ([CAPTURE, "goodput", "--window", "0.5", "-o", "g.svg"],
         ("goodput", cap, {"window_s": 0.5}), "svg"),
        ([LOSS, "rtt-cwnd", "--flow", "tcp"], ("rtt_cwnd", "04-loss", {"flow": "tcp"}), "png"),
        ([LOSS, "udp", "--flow", "udp"], ("udp", "04-loss", {"flow": "udp"}), "png"),
        ([CAPTURE, "udp", "--flow", "897394640"], ("udp", cap, {"flow": "897394640"}), "png"),
        ([LOSS, "side-by-side", "-o", "s.pdf"], ("side_by_side", "04-loss", {}), "pdf"),
    ]
    for argv, call, fmt in cases:
        calls.clear()
        saved.clear()
        status, out, err = _main(["plot", *argv])
        assert status == 0, (argv, err)
        assert calls == [call], argv
        (fig, path, got_fmt), = saved
        assert fig == f"figure {call[0]}" and got_fmt == fmt
        want = next((argv[i + 1] for i, a in enumerate(argv) if a == "-o"),
                    f"{argv[1]}.png")
        assert path == Path(want) and str(want) in out


def test_plot_refuses_at_and_flow_for_one_capture(monkeypatch):
    for option in (["--at", "a"], ["--flow", "tcp"]):
        status, _, err = _main(["plot", CAPTURE, "time-sequence", *option])
        assert status == 2 and f"labkit plot: {option[0]} needs a run folder" in err
        assert "of one capture takes --direction, --stream, --style" in err


def test_udp_of_one_capture_takes_a_lab_flow_id():
    from toolkit import plot
    from toolkit.plot import PlotInputError
    d = plot.udp_data(LOSS / "b.pcapng.gz", flow="897394640")
    assert d["lab_flow"] == 897394640 and len(d["lost"]) > 0
    with pytest.raises(PlotInputError, match="no lab flow 7"):
        plot.udp_data(LOSS / "b.pcapng.gz", flow="7")


# ---- the scenario roles ----

@pytest.mark.parametrize("role", sorted(SCENARIO_MODES))
def test_each_scenario_takes_its_protocol_and_refuses_the_other(role, trapped):
    name = role.split()[0]
    own = PROTO.get(name, "tcp")
    other = "tcp" if own == "udp" else "udp"
    base, _ = next(iter(MODES[f"scenario {role}"].values()))
    code, err = trapped([*base, "--proto", own])
    assert code == "accepted", err
    code, err = trapped([*base, "--proto", other])
    assert code == 2 and "--proto" in err and name in err, err


class FakeSocket:
    """socket.socket as a role sees it: bind and setsockopt recorded; listen, connect (and
    a UDP server's settimeout, its last step before receiving) recorded, then OSError."""

    calls: list = []

    def __init__(self, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0, *a, **k):
        self.type = type

    def _fail(self, what, *args):
        FakeSocket.calls.append((what, *args))
        raise OSError(99, "Cannot assign requested address (test)")

    def bind(self, addr):
        FakeSocket.calls.append(("bind", addr))

    def listen(self, *backlog):
        self._fail("listen", *backlog)

    def connect(self, addr):
        self._fail("connect", addr)

    def settimeout(self, t):
        if self.type == socket.SOCK_DGRAM:
            self._fail("settimeout", t)

    def setsockopt(self, *a):
        pass

    def close(self):
        pass


# per role: extra options, and the calls its sockets must see with -p 5999 and --cport 40100
ADDRESSES = {
    "abrupt_close server": ([], [("bind", ("0.0.0.0", 5999)), ("listen",)]),
    "abrupt_close client": (["127.0.0.1"], [("bind", ("0.0.0.0", 40100)),
                                            ("connect", ("127.0.0.1", 5999))]),
    "backlog server": (["--backlog", "5"], [("bind", ("", 5999)), ("listen", 5)]),
    "backlog client": (["127.0.0.1"], [("bind", ("0.0.0.0", 40100)),
                                       ("connect", ("127.0.0.1", 5999))]),
    "states server": (["--bind", "127.0.0.2"], [("bind", ("127.0.0.2", 5999)), ("listen",)]),
    "states client": (["127.0.0.1"], [("bind", ("0.0.0.0", 40100)),
                                      ("connect", ("127.0.0.1", 5999))]),
    "syn-flood client": (["10.201.3.2"], [("template", "10.201.3.2", 5999)]),
    "udp-file server": (["--proto", "udp", "--receive-dir", "{tmp}"],
                        [("bind", ("", 5999)), ("settimeout", 0.1)]),
    "udp-file client": (["127.0.0.1", "--proto", "udp", "--file", "{tmp}/f.bin"],
                        [("bind", ("", 40100)), ("connect", ("127.0.0.1", 5999))]),
}


@pytest.mark.parametrize("role", sorted(SCENARIO_MODES))
def test_every_scenario_role_reports_and_addresses_as_told(role, monkeypatch, tmp_path):
    """-p (and --bind, --backlog) where the server listens, -p and --cport where the
    client connects from; the report on stdout under --json, in --json-file's file, and
    its event lines only without -q. The role's socket fails at once (OSError), as a port
    taken would: its report says so."""
    from toolkit.scenarios import syn_flood
    assert set(ADDRESSES) == set(SCENARIO_MODES)
    name, side = role.split()
    extra, want = ADDRESSES[role]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    (tmp_path / "f.bin").write_bytes(b"x" * 100)
    monkeypatch.setattr(socket, "socket", FakeSocket)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    monkeypatch.setattr(syn_flood, "check_inside_lab", lambda dst: "10.201.3.2")

    def template(dst, port):
        FakeSocket.calls.append(("template", dst, port))
        raise OSError(1, "Operation not permitted (test)")
    monkeypatch.setattr(syn_flood, "_syn_template", template)
    cport = ["--cport", "40100"] if side == "client" and name != "syn-flood" else []
    argv = ["scenario", name, side, *extra, "-p", "5999", *cport]
    FakeSocket.calls = []
    report = tmp_path / "r.json"
    failed = 0 if role == "backlog client" else 1     # it reports each connection's fate
    status, out, err = _main([*argv, "--json-file", report])
    assert status == failed, err
    assert FakeSocket.calls == want
    doc = json.loads(report.read_text())
    assert (doc["start"]["scenario"], doc["start"]["role"]) == (name, side)
    assert doc["end"]["exit_status"] == failed and re.search(r"^\[ *[0-9.]+ s\] ", out, re.M)
    status, out, _ = _main([*argv, "-q"])
    assert status == failed and out == ""
    status, out, _ = _main([*argv, "--json"])
    assert status == failed and json.loads(out)["start"]["role"] == side


@pytest.fixture
def roles_here(monkeypatch):
    """The scenario roles run in this process: Stop without signal handlers (a role may
    run in a thread), a role's ready line left in stdout."""
    monkeypatch.setattr(signal, "signal", lambda *a: None)


class Role(threading.Thread):
    """`labkit scenario ...` in a thread of this process."""

    def __init__(self, *argv):
        super().__init__(daemon=True)
        self.argv, self.status, self.error = [str(a) for a in argv], None, None
        self.start()

    def run(self):
        try:
            with _argv(["pytest"]):
                self.status = cli.main(self.argv)
        except BaseException as e:          # handed to the test by result()
            self.error = e

    def result(self, timeout: float = 10.0) -> int:
        self.join(timeout)
        assert not self.is_alive(), f"{self.argv} did not end"
        if self.error is not None:
            raise self.error
        return self.status


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bound(port: int, proto: str = "tcp", timeout: float = 10.0) -> None:
    """Wait until something here listens on (tcp) or is bound to (udp) the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
            try:
                lines = Path(path).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                w = line.split()
                if int(w[1].rsplit(":", 1)[1], 16) == port and (proto == "udp" or
                                                                 w[3] == "0A"):
                    return
        time.sleep(0.02)
    raise AssertionError(f"nothing bound to {proto} port {port}")


def _server_side(port: int, peer: tuple) -> socket.socket:
    return walk.server_side(port, peer, wait_s=5)


@pytest.mark.parametrize("mode", ["read", "write"])
def test_abrupt_close_server_options_reach_its_connection(mode, roles_here, tmp_path):
    """--keepalive with its timing and --user-timeout on the accepted connection, reading
    or writing; writing, --length bytes each of --writes writes."""
    port = _free_port()
    keep = ["--keepalive", "--keepidle", "7", "--keepintvl", "3", "--keepcnt", "4",
            "--user-timeout", "1.5"]
    write = ["--write-after", "0.4", "--writes", "2", "--write-gap", "0.05",
             "--length", "7"] if mode == "write" else []
    report = tmp_path / "s.json"
    server = Role("scenario", "abrupt_close", "server", "-p", port, *keep, *write, "-q",
                  "--json-file", report)
    _bound(port)
    want = [1, 7, 3, 4, 1500]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        s = _server_side(port, c.getsockname())
        with s:
            deadline = time.monotonic() + 5           # set just after accept: wait for them
            while True:
                got = [s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                       *(s.getsockopt(socket.IPPROTO_TCP, o) for o in (
                           socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT,
                           socket.TCP_USER_TIMEOUT))]
                if got == want or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        assert got == want
        if mode == "write":
            data = b""
            while len(data) < 14:
                data += c.recv(100)
            assert data == b"w" * 14
    server.result()
    sends = [e["bytes"] for e in json.loads(report.read_text())["events"]
             if e["event"] == "send ok"]
    assert sends == ([7, 7] if mode == "write" else [])


def _accept_one(ls: socket.socket, want: int, out: dict) -> None:
    """The test's server: the client's bytes, then how its connection ended and when."""
    conn, _ = ls.accept()
    with conn:
        data = b""
        while len(data) < want:
            data += conn.recv(100)
        out["data"], t = data, time.monotonic()
        try:
            out["end"] = "FIN" if conn.recv(100) == b"" else "data"
        except ConnectionResetError:
            out["end"] = "RST"
        out["after_s"] = time.monotonic() - t


@pytest.mark.parametrize("close, timing, end", [("fin", "--wait", "FIN"),
                                                ("rst", "--wait", "RST"),
                                                ("vanish", "--hold", "RST")])
def test_abrupt_close_client_closes_as_told(close, timing, end, roles_here, tmp_path):
    """--length bytes, then --wait (fin, rst) or --hold (vanish) seconds, then the close
    --close names."""
    with socket.create_server(("127.0.0.1", 0)) as ls:
        got: dict = {}
        t = threading.Thread(target=_accept_one, args=(ls, 3, got), daemon=True)
        t.start()
        status, _, err = _main(["scenario", "abrupt_close", "client", "127.0.0.1", "-p",
                                ls.getsockname()[1], "--close", close, "--length", "3",
                                timing, "0.3", "-q"])
        t.join(5)
    assert status == 0, err
    assert got["data"] == b"hel" and got["end"] == end
    assert 0.25 <= got["after_s"] < 3


def test_states_server_restarts_and_listens_again(roles_here, tmp_path):
    """--close never holds the socket --hold seconds after the client's FIN; --restart
    binds again; --listen-again is how long the restarted server then listens."""
    port = _free_port()
    report = tmp_path / "s.json"
    server = Role("scenario", "states", "server", "-p", port, "--bind", "127.0.0.1", "--close",
                  "never", "--hold", "0.3", "--restart", "--listen-again", "0.4", "-q",
                  "--json-file", report)
    _bound(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"x" * 10)
        assert c.recv(100) == b"x" * 10
        c.shutdown(socket.SHUT_WR)
        t = time.monotonic()
        assert c.recv(100) == b""                           # the server's FIN, --hold later
        held = time.monotonic() - t
    assert server.result() == 0
    assert 0.25 <= held < 3
    doc = json.loads(report.read_text())
    again = [e for e in doc["events"] if e["event"] == "listening again"]
    assert again and again[-1]["so_reuseaddr"] is True
    assert doc["end"]["rebind_reuseaddr"] == "ok"
    assert doc["end"]["duration_s"] - again[-1]["t_s"] >= 0.35


def _echo_one(ls: socket.socket, fin_first: bool, out: dict) -> None:
    conn, _ = ls.accept()
    with conn:
        data = b""
        while len(data) < 37:
            data += conn.recv(100)
        conn.sendall(data)
        out["data"] = data
        if fin_first:
            conn.shutdown(socket.SHUT_WR)
        t = time.monotonic()
        while conn.recv(100):
            pass
        out["after_s"] = time.monotonic() - t


@pytest.mark.parametrize("close", ["first", "second"])
def test_states_client_sends_its_length_and_holds_before_closing(close, roles_here):
    """--length bytes of request; --close second waits for the server's FIN, then --hold
    seconds; --close first closes once the reply is in."""
    with socket.create_server(("127.0.0.1", 0)) as ls:
        got: dict = {}
        t = threading.Thread(target=_echo_one, args=(ls, close == "second", got), daemon=True)
        t.start()
        hold = ["--hold", "0.3"] if close == "second" else []
        status, _, err = _main(["scenario", "states", "client", "127.0.0.1", "-p",
                                ls.getsockname()[1], "--close", close, "--length", "37",
                                *hold, "-q"])
        t.join(5)
    assert status == 0, err
    assert got["data"] == b"x" * 37
    assert (0.25 <= got["after_s"] < 3) if close == "second" else got["after_s"] < 0.25


@pytest.mark.parametrize("mode", [[], ["--accept-after", "0"]])
def test_backlog_server_stops_on_time(mode, roles_here, tmp_path):
    port = _free_port()
    report = tmp_path / "s.json"
    server = Role("scenario", "backlog", "server", "-p", port, *mode, "--time", "0.3", "-q",
                  "--json-file", report)
    _bound(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        t = time.monotonic()
        assert server.result() == 0
        assert time.monotonic() - t < 3
    doc = json.loads(report.read_text())
    limit = [e for e in doc["events"] if e["event"] == "time limit"]
    assert limit == [{"t_s": limit[0]["t_s"], "event": "time limit", "limit_s": 0.3}]
    assert doc["end"]["accepted"] == (1 if mode else 0)


def test_backlog_client_waits_its_linger_for_the_close(roles_here, tmp_path):
    with socket.create_server(("127.0.0.1", 0), backlog=4) as ls:   # never accepts, never closes
        t = time.monotonic()
        status, _, err = _main(["scenario", "backlog", "client", "127.0.0.1", "-p",
                                ls.getsockname()[1], "--linger", "0.3", "-q", "--json-file",
                                tmp_path / "c.json"])
        took = time.monotonic() - t
    assert status == 0, err
    assert 0.25 <= took < 3
    conn, = json.loads((tmp_path / "c.json").read_text())["connections"]
    assert conn["connect_s"] is not None and conn["closed_by_server_s"] is None


class RawSocket:
    """The flood's raw socket: what it sends, and when."""

    sent: list = []

    def __init__(self, *a, **k):
        pass

    def sendto(self, pkt, addr):
        RawSocket.sent.append((time.monotonic(), pkt, addr))

    def close(self):
        pass


# an IPv4 header (no options) and a TCP header, as scapy's template would be
TEMPLATE = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 0, 0, 0, 0, 10, 201, 3, 2]) + \
    bytes([4, 0, 0x14, 0x5D, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xFA, 0xF0, 0, 0, 0, 0])


def test_syn_flood_crafts_what_its_options_say(monkeypatch, roles_here, tmp_path):
    """--count SYNs at --rate to -p, from the --sources in turn, each from a source port and
    sequence number --seed picks (the same again for the same seed); --cport refused."""
    from toolkit.scenarios import syn_flood
    ports = []
    monkeypatch.setattr(syn_flood, "check_inside_lab", lambda dst: "10.201.3.2")
    monkeypatch.setattr(syn_flood, "_syn_template",
                        lambda dst, port: ports.append((dst, port)) or TEMPLATE)
    monkeypatch.setattr(socket, "socket", RawSocket)

    def flood(seed: str) -> list[tuple]:
        RawSocket.sent = []
        status, _, err = _main(["scenario", "syn-flood", "client", "10.201.3.2", "-p", "5301",
                                "--count", "20", "--rate", "500", "--sources",
                                "10.201.3.128/30", "--seed", seed, "-q"])
        assert status == 0, err
        return RawSocket.sent
    sent = flood("5")
    assert ports == [("10.201.3.2", 5301)] and len(sent) == 20
    assert sent[-1][0] - sent[0][0] >= 19 / 500 * 0.9                 # paced at --rate
    pkts = [p for _, p, _ in sent]
    assert [socket.inet_ntoa(p[12:16]) for p in pkts[:4]] == ["10.201.3.129", "10.201.3.130"] * 2
    fields = [struct.unpack("!H2xI", p[20:28]) for p in pkts]        # source port, seq
    assert len(set(fields)) == 20
    assert [p for _, p, _ in flood("5")] == pkts                     # one seed, one flood
    assert [struct.unpack("!H2xI", p[20:28]) for _, p, _ in flood("6")] != fields
    status, _, err = _main(["scenario", "syn-flood", "client", "10.201.3.2", "--cport", "9"])
    assert status == 2 and "--cport" in err and "syn-flood" in err


def test_the_runner_gives_a_syn_flood_no_source_port(tmp_path):
    from toolkit.labs import spec
    from toolkit.labs.flows import endpoints_for
    lab = spec.load(REPO / "labs" / "06-backlog" / "lab.toml")
    net = types.SimpleNamespace(addr=lambda host: "10.201.2.2")
    for flow in lab.flows:
        _, send = endpoints_for(flow, net, tmp_path)
        assert ("--cport" in send.argv) is (flow.scenario != "syn-flood"), flow.name
        assert (flow.client_port is None) is (flow.scenario == "syn-flood"), flow.name
    # a lab that sets a client_port the flood would not use is refused when it loads
    text = (REPO / "labs" / "06-backlog" / "lab.toml").read_text().replace(
        'name = "flood-c"', 'name = "flood-c"\nclient_port = 43001')
    (tmp_path / "lab.toml").write_text(text)
    with pytest.raises(spec.LabError) as e:
        spec.load(tmp_path / "lab.toml")
    assert "flow[3].client_port: scenario 'syn-flood' sends each packet from its own" \
        in str(e.value), str(e.value)


def test_udp_file_options_do_what_they_say(roles_here, tmp_path):
    """The client sends --file in --piece byte datagrams paced at --rate with --flow as
    their flow id; the server stores it, and refuses a file beyond its --limit."""
    src = tmp_path / "f.bin"
    src.write_bytes(bytes(range(256)) * 8)                          # 2048 bytes, 11 pieces
    recv = tmp_path / "recv"
    recv.mkdir()

    def transfer(limit: str) -> tuple[dict, dict]:
        port = _free_port(socket.SOCK_DGRAM)
        server = Role("scenario", "udp-file", "server", "--proto", "udp", "-p", port,
                      "--receive-dir", recv, "--limit", limit, "--idle", "0.3", "-q",
                      "--json-file", tmp_path / "s.json")
        _bound(port, "udp")
        status, _, err = _main(["scenario", "udp-file", "client", "127.0.0.1", "--proto", "udp",
                                "-p", port, "--file", src, "--piece", "200", "--rate", "100k",
                                "--flow", "4321", "-q", "--json-file", tmp_path / "c.json"])
        assert status == 0, err
        server.result()
        return (json.loads((tmp_path / "s.json").read_text()),
                json.loads((tmp_path / "c.json").read_text()))
    serve, send = transfer("4K")
    assert serve["end"]["stored"] is True and (recv / "f.bin").read_bytes() == src.read_bytes()
    assert serve["end"]["pieces"] == send["end"]["pieces"] == 11
    assert serve["connections"][0]["flow"] == send["start"]["flow"] == 4321
    # 11 datagrams of 232 bytes at 100 kbit/s: 10 gaps of 18.6 ms before the last
    assert send["end"]["duration_s"] >= 0.18
    (recv / "f.bin").unlink()
    serve, _ = transfer("1K")
    refused = [e for e in serve["events"] if e["event"] == "hello refused"]
    assert refused and "size 2048" in refused[0]["error"] and not list(recv.iterdir())
