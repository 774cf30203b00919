"""[lab].figures: a lab names the figure kinds its run draws (drawing costs seconds per
figure); the names are toolkit.plot's, a wrong one is refused naming the key, and
figures_for draws only those asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from toolkit import plot
from toolkit.labs import spec as S

LAB = """
[lab]
title = "t"
{figures}
[[flow]]
name = "tcp"
send = {{mode = "bulk", bytes = 1000}}
"""


def _load(figures: str):
    return S.loads(LAB.format(figures=figures), Path("labs/x/lab.toml"))


def test_the_kinds_named_in_spec_are_the_plot_kinds():
    assert set(S.FIGURE_KINDS) == set(plot.KINDS)


@pytest.mark.parametrize("text", ['figures = ["ladder"]', "figures = []",
                                  'figures = ["udp", "goodput"]', ""])
def test_a_lab_may_name_its_figures(text):
    lab = _load(text)
    assert lab.resolved["lab"].get("figures") == (None if not text else
                                                  eval(text.split("=", 1)[1]))


@pytest.mark.parametrize("text", ['figures = ["ladders"]', 'figures = "ladder"',
                                  "figures = [1]"])
def test_a_wrong_figure_kind_is_refused_naming_the_key(text):
    with pytest.raises(S.LabError, match="lab.figures"):
        _load(text)


def test_figures_for_draws_only_the_kinds_asked_for():
    saved = REPO / "captures" / "01-handshake"
    if not (saved / "run.json").exists():
        pytest.skip("no saved run of 01-handshake")
    from toolkit.labs.folder import RunFolder
    run = RunFolder(saved)
    assert list(plot.figures_for(run, kinds=["ladder"])) == ["ladder"]
    assert plot.figures_for(run, kinds=[]) == {}
