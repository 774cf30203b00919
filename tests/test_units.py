"""The one parser for times, rates and sizes (toolkit/units.py), and every place that reads
them through it: the command line, the impairment spec, lab files and `--set`."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from toolkit import units
from toolkit.labs.spec import LabError, load
from toolkit.netlab import impairment as I

from conftest import REPO


@pytest.mark.parametrize("text,bps", [
    ("10mbit", 10_000_000), ("1gbit", 10**9), ("500kbit", 500_000), ("1.5mbit", 1_500_000),
    (2_000_000, 2_000_000), ("64kibit", 65536),
    ("10M", 10_000_000), ("10m", 10_000_000), ("1.5G", 1_500_000_000), ("200k", 200_000),
    ("2 mbit", 2_000_000), ("1e6", 1_000_000),
])
def test_rate_reads_tc_and_iperf3_forms_alike(text, bps):
    assert units.rate(text) == bps


@pytest.mark.parametrize("text,size", [
    ("64kb", 65536), ("64K", 65536), ("64k", 65536), ("64KiB", 65536), ("64KB", 65536),
    ("1500", 1500), (1500, 1500), ("1mb", 1 << 20), ("1M", 1 << 20), ("1500b", 1500),
    ("1G", 1 << 30),
])
def test_size_reads_tc_and_iperf3_forms_alike(text, size):
    assert units.size(text) == size


@pytest.mark.parametrize("text,seconds", [("20ms", 0.02), ("1s", 1.0), ("300us", 3e-4),
                                          ("2 ms", 0.002), ("1.5sec", 1.5), ("0", 0.0),
                                          (0, 0.0)])
def test_seconds_with_a_unit(text, seconds):
    assert math.isclose(units.seconds(text), seconds)


def test_a_bare_time_is_refused_where_tc_would_read_microseconds():
    # tc(8): a time without a unit is in microseconds; iperf3's -t 10 is seconds. The spec
    # refuses to guess and shows the forms it takes.
    for bare in ("20", 20, 1.5):
        with pytest.raises(units.UnitError, match=r"ambiguous.*'20ms'|ambiguous.*'1.5ms'"):
            units.seconds(bare)
    # where iperf3's convention holds (the command line's -t, -i), a bare number is seconds
    assert units.seconds("10", bare_time="s") == 10.0
    assert units.seconds(1.5, bare_time="s") == 1.5
    assert units.seconds("10ms", bare_time="s") == 0.01


@pytest.mark.parametrize("fn,text,words", [
    (units.rate, "10 furlongs", "unknown unit 'furlongs'"),
    (units.rate, "0mbit", "above zero"),
    (units.rate, "fast", "expected a rate"),
    (units.rate, "125kbps", "ambiguous.*BYTES"),        # tc: bps is bytes per second
    (units.rate, "10Mbps", "ambiguous"),
    (units.rate, "-5M", "negative"),
    (units.size, "64kbit", "sizes are in bytes"),
    (units.size, "1.5", "whole number of bytes"),
    (units.size, "-1K", "negative"),
    (units.seconds, "20 parsecs", "unknown unit"),
    (units.seconds, "-1s", "negative"),
    (units.fraction, "5", "write '5%'"),
    (units.fraction, "150%", "between 0% and 100%"),
    (units.fraction, True, "expected a percentage"),
    (units.rate, None, "expected a rate"),
    (units.size, "1e400", "too large"),                 # float infinity: no traceback
    (units.rate, "1e400M", "too large"),
    (units.seconds, float("inf"), "too large"),
    (units.seconds, "nan", "expected a time"),
])
def test_errors_quote_the_text_and_show_the_forms(fn, text, words):
    with pytest.raises(units.UnitError, match=words):
        fn(text)


def test_option_prefixes_the_flag_and_gives_the_default():
    assert units.option(units.size, None, "--limit", default=7) == 7
    with pytest.raises(units.UnitError, match=r"^--limit: size 'lots'"):
        units.option(units.size, "lots", "--limit")


def test_a_rate_of_zero_only_where_it_means_unlimited():
    assert units.rate("0", zero_ok=True) == 0
    with pytest.raises(units.UnitError, match="above zero"):
        units.rate("0")


# ---- every reader uses it ----

def test_the_impairment_spec_refuses_a_bare_delay_and_names_the_key():
    with pytest.raises(I.SpecError, match=r"link.a_to_b.delay: .*ambiguous.*'20ms'"):
        I.from_dict({"a_to_b": {"delay": "20"}})
    with pytest.raises(I.SpecError, match=r"link.fault\[0\]: .*ambiguous"):
        I.from_dict({"fault": [{"action": "delay", "delay": 300}]})
    imp = I.from_dict({"both": {"delay": "20ms", "rate": "10M", "queue": "64K"}})
    assert (imp.a_to_b.delay_s, imp.a_to_b.rate_bps, imp.a_to_b.queue_bytes) == \
        (pytest.approx(0.02), 10_000_000, 65536)


def test_a_lab_file_refuses_a_bare_duration_with_its_line(tmp_path):
    lab = tmp_path / "lab.toml"
    lab.write_text('[lab]\nname = "x"\ntitle = "x"\nduration = 10\n')
    with pytest.raises(LabError, match=r"lab.duration.*ambiguous.*'10s'"):
        load(lab)


def _labkit(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_selftest_delay_20_is_refused_not_read_as_20_seconds():
    got = _labkit("selftest", "--delay", "20", "--count", "10")
    assert got.returncode == 2, got.stderr
    assert "delay" in got.stderr and "ambiguous" in got.stderr and "'20ms'" in got.stderr
    assert "Traceback" not in got.stderr


@pytest.mark.parametrize("args", [["-t", "10ms"], ["-b", "10mbit"], ["-l", "64kb"],
                                  ["-b", "10M", "-l", "64K", "-t", "0.2"]])
def test_send_takes_tc_forms_as_well_as_iperf3_forms(args):
    # nothing listens on the port: the options are read (no exit 2), then the connection is
    # refused (exit 1), which is the point of this test
    got = _labkit("send", "127.0.0.1", "-p", "9", "--mode", "paced" if "-b" in args else "bulk",
                  *args, timeout=30)
    assert got.returncode == 1, (got.returncode, got.stderr)
    assert "refused" in got.stderr.lower() or "connect" in got.stderr.lower(), got.stderr


@pytest.mark.parametrize("args,words", [(["-b", "10mbps"], "--rate: rate '10mbps'"),
                                        (["-t", "soon"], "--time"),
                                        (["-l", "64kbit"], "--length")])
def test_send_refuses_a_bad_quantity_naming_the_option(args, words):
    got = _labkit("send", "127.0.0.1", "-p", "9", *args, timeout=30)
    assert got.returncode == 2, (got.returncode, got.stderr)
    assert words in got.stderr and "Traceback" not in got.stderr


def test_plot_window_takes_a_time_with_its_unit(tmp_path):
    from toolkit import cli
    run = str(REPO / "captures" / "04-loss")
    out = tmp_path / "g.png"
    assert cli.main(["plot", run, "goodput", "--window", "100ms", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    assert cli.main(["plot", run, "goodput", "--window", "soon", "-o", str(out)]) == 2
