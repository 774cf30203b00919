"""Lab specs: every lab in labs/ loads; a broken spec names its file and key path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from toolkit.labs import spec as S

LABS = sorted((REPO / "labs").glob("*/lab.toml"))

GOOD = """
[lab]
title = "t"
duration = "5s"
seed = 3
[params]
loss = "2%"
count = 100
[link]
a_to_b = {loss = "{loss}"}
[[flow]]
name = "u"
proto = "udp"
send = {mode = "bulk", count = "{count}", rate = "1M"}
[[expect]]
table = "udp_flows"
at = "b"
value = "sum(lost)"
op = ">="
expected = 0
"""


def load(text: str, overrides=()):
    return S.loads(text, Path("labs/x/lab.toml"), overrides=overrides)


@pytest.mark.parametrize("path", LABS, ids=[p.parent.name for p in LABS])
def test_every_lab_loads_and_has_a_readme(path):
    lab = S.load(path)
    assert lab.name == path.parent.name
    assert lab.title and lab.flows and lab.expectations
    assert (path.parent / "README.md").is_file(), "a lab needs its README"
    assert lab.duration_s <= 15, "a lab runs in at most 15 s"


def test_there_are_the_first_three_labs():
    assert {p.parent.name for p in LABS} >= {"01-handshake", "03-boundaries", "04-loss"}


def test_parameters_keep_their_type_and_fill_text():
    lab = load(GOOD)
    assert lab.impairment.a_to_b.loss == pytest.approx(0.02)
    assert lab.flows[0].send["count"] == 100             # "{count}" became the integer
    assert lab.flows[0].send_args() == ["--mode", "bulk", "--count", "100", "--rate", "1M"]
    assert lab.impairment.seed == 3                      # the link's seed is the lab's
    assert (lab.flows[0].port, lab.flows[0].client_port) == (5201, 41000)


@pytest.mark.parametrize("override, check", [
    ("loss=5%", lambda lab: lab.impairment.a_to_b.loss == pytest.approx(0.05)),
    ("count=7", lambda lab: lab.flows[0].send["count"] == 7),
    ("link.b_to_a.delay=20ms", lambda lab: lab.impairment.b_to_a.delay_s == pytest.approx(0.02)),
    ("flow[0].send.rate=5M", lambda lab: lab.flows[0].send["rate"] == "5M"),
    ("lab.seed=9", lambda lab: lab.seed == 9 and lab.impairment.seed == 9),
    ("lab.duration=8s", lambda lab: lab.duration_s == 8),
])
def test_overrides(override, check):
    lab = load(GOOD, [override])
    assert check(lab)
    assert lab.overrides == (override,)


@pytest.mark.parametrize("text, override, message", [
    (GOOD.replace('seed = 3', 'seed = 3\nsed = 4'), None, "lab.sed: unknown key"),
    (GOOD.replace('rate = "1M"', 'rate = "1M", colour = 1'), None,
     "flow[0].send.colour: `labkit send` has no such option"),
    (GOOD.replace('rate = "1M"', 'rate = "1M", port = 1'), None,
     "flow[0].send.port: set by the runner"),
    (GOOD.replace('mode = "bulk"', 'mode = "sideways"'), None,
     "flow[0].send: argument --mode: invalid choice"),
    (GOOD.replace('{loss}"}', '{lost}"}'), None, "link.a_to_b.loss: {lost} is not a parameter"),
    (GOOD.replace('proto = "udp"', 'proto = "sctp"'), None, "flow[0].proto: 'sctp'"),
    (GOOD.replace('name = "u"', 'name = "u"\nclient = "z"'), None, "flow[0].client: 'z'"),
    (GOOD.replace('op = ">="', 'op = "approx"'), None, "expect[0].op"),
    (GOOD.replace('at = "b"', 'at = "r-c"'), None, "expect[0].at"),
    (GOOD.replace('duration = "5s"', 'duration = "5 fortnights"'), None, "lab.duration"),
    (GOOD + "\n[extra]\nx = 1\n", None, "extra: unknown section"),
    (GOOD.replace('[link]', '[link]\nseed = 4'), None, "link.seed"),
    (GOOD, "nosuch=1", "--set nosuch: not a parameter of this lab"),
    (GOOD, "flow[3].send.rate=1M", "flow[3]: this lab has 1 flow entries"),
    (GOOD, "loss", "expected KEY=VALUE"),
    ("[lab\ntitle='x'", None, "not valid TOML"),
])
def test_broken_specs_name_file_and_key(text, override, message):
    with pytest.raises(S.LabError) as e:
        load(text, [override] if override else [])
    assert message in str(e.value)
    assert str(e.value).startswith("labs/x/lab.toml: ")


def test_find_by_name_number_and_path(monkeypatch, tmp_path):
    assert S.find("04-loss").resolve() == REPO / "labs" / "04-loss" / "lab.toml"
    assert S.find("04").resolve() == REPO / "labs" / "04-loss" / "lab.toml"
    assert S.find(str(REPO / "labs" / "04-loss")).name == "lab.toml"
    with pytest.raises(S.LabError, match="no such lab"):
        S.find("99-nothing")
    # a course's own labs/ in the current directory comes first
    (tmp_path / "labs" / "04-loss").mkdir(parents=True)
    (tmp_path / "labs" / "04-loss" / "lab.toml").write_text("[lab]\ntitle = 'x'\n")
    monkeypatch.chdir(tmp_path)
    assert S.find("04-loss").resolve() == tmp_path / "labs" / "04-loss" / "lab.toml"


def _labkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=60)


def test_labkit_labs_json_lists_the_labs():
    done = _labkit("labs", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    names = [lab["name"] for lab in doc["labs"]]
    assert names == sorted(p.parent.name for p in LABS)
    loss = next(lab for lab in doc["labs"] if lab["name"] == "04-loss")
    assert loss["duration_s"] == 15 and loss["needs"]["engine"] == "userspace"


def test_labkit_run_refuses_a_broken_spec_with_exit_2(tmp_path):
    bad = tmp_path / "lab.toml"
    bad.write_text(GOOD.replace('count = "{count}"', 'count = "{count}", speed = 3'))
    out = tmp_path / "run"
    done = _labkit("run", str(bad), "--out", str(out))
    assert done.returncode == 2
    assert f"{bad}: flow[0].send.speed" in done.stderr
    assert not out.exists(), "nothing is built or written for a broken spec"
    done = _labkit("run", "04-loss", "--set", "nosuch=1", "--out", str(out))
    assert done.returncode == 2 and "--set nosuch" in done.stderr


def test_a_bad_value_given_with_set_is_blamed_on_the_set_not_the_file():
    lab = S.find("04-loss")

    def said(*overrides):
        with pytest.raises(S.LabError) as e:
            S.load(lab, overrides=overrides)
        return str(e.value)
    assert said("loss=5x").startswith(f"{lab}: --set loss=5x: link.both.loss: ")
    # the --set that brings the error in, not a good one beside it, not one that a later
    # --set undid, not an earlier bad one the lab checks later
    assert said("loss=1%", "flow[1].send.rate=2Q").startswith(
        f"{lab}: --set flow[1].send.rate=2Q: flow[1].send: --rate")
    assert said("loss=5x", "loss=5%", "flow[1].send.rate=2Q").startswith(
        f"{lab}: --set flow[1].send.rate=2Q: ")
    first = said("flow[1].send.rate=2Q", "loss=5x")
    assert first.startswith(f"{lab}: --set loss=5x: link.both.loss"), first
    # the file's own error stays the file's, whatever --set says
    text = GOOD.replace('count = "{count}"', 'count = "{count}", speed = 3')
    with pytest.raises(S.LabError) as e:
        load(text, overrides=("count=3",))
    assert str(e.value).startswith("labs/x/lab.toml: flow[0].send.speed")
    # and a --set that mends the file's error is not blamed for the next one
    text = GOOD.replace('rate = "1M"', 'rate = "2Q"')
    with pytest.raises(S.LabError) as e:
        load(text, overrides=("flow[0].send.rate=1M", "count=0.5"))
    assert str(e.value).startswith("labs/x/lab.toml: --set count=0.5: "), str(e.value)


SCENARIO_LAB = """
[lab]
title = "t"
duration = "5s"
[[flow]]
name = "s"
scenario = "{scenario}"
serve = {serve}
send = {send}
[[expect]]
table = "tcp"
at = "b"
value = "count"
op = ">="
expected = 0
"""


@pytest.mark.parametrize("scenario, serve, send, message", [
    ("states", '{close = "first", hold = "1s"}', "{}",
     "flow[0].serve: --hold: the time the server keeps its socket open"),
    ("states", '{listen_again = "1s"}', "{}", "flow[0].serve: --listen-again"),
    ("states", "{}", '{hold = "1s"}', "flow[0].send: --hold: the time the client"),
    ("abrupt_close", "{keepidle = 3}", "{}", "flow[0].serve: --keepidle"),
    ("abrupt_close", "{writes = 3}", "{}", "flow[0].serve: --writes"),
    ("abrupt_close", "{}", '{close = "vanish", wait = "1s"}', "flow[0].send: --wait"),
    ("backlog", "{accepts = 2}", "{}", "flow[0].serve: --accepts 2: with --accept-after never"),
])
def test_a_scenario_option_its_mode_ignores_is_refused_when_the_lab_loads(scenario, serve, send,
                                                                          message):
    text = SCENARIO_LAB.format(scenario=scenario, serve=serve, send=send)
    with pytest.raises(S.LabError) as e:
        load(text)
    assert message in str(e.value), str(e.value)
    # the same options with the switch they belong to load
    fixed = {"states": ('{close = "never", hold = "1s"}', '{close = "second", hold = "1s"}'),
             "abrupt_close": ('{keepalive = true, keepidle = 3, user_timeout = "2s"}',
                              '{close = "fin", wait = "1s"}'),
             "backlog": ('{accepts = 2, accept_after = "1s"}', "{}")}[scenario]
    load(SCENARIO_LAB.format(scenario=scenario, serve=fixed[0], send=fixed[1]))


@pytest.mark.parametrize("override,words", [
    ("flow[1].send.rate=2Q", "flow[1].send: --rate: rate '2Q': unknown unit 'q'"),
    ("flow[0].send.interval=3x", "flow[0].send: --interval: "),
    ("flow[0].serve.slow_read=5Q", "flow[0].serve: --slow-read"),
    ("flow[0].send.length=0", "flow[0].send: --length 0: sizes must be above zero"),
])
def test_a_flows_option_values_are_checked_when_the_lab_is_loaded(override, words):
    """A value the command's parser takes but the command refuses (a rate of '2Q') is
    refused when the lab loads, naming the flow and the option, not when the flow starts
    inside a lab that then runs to the end."""
    with pytest.raises(S.LabError) as e:
        S.load(S.find("04-loss"), overrides=(override,))
    assert words in str(e.value)
