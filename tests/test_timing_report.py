"""Timing reports: the one judgement of whether a run kept time (forwarder.timing_report),
and the runner's use of it and of a paced UDP sender's own count (docs/timing.md)."""

from __future__ import annotations

import json

import pytest

from toolkit.labs import runner
from toolkit.netlab.forwarder import LATE_SHARE_RELIABLE, timing_report


@pytest.mark.parametrize("stats,reliable,words", [
    ({"late": {"count": 0, "sent": 1000, "max_s": 1e-8}, "overruns": 0}, True, None),
    ({"late": {"count": 10, "sent": 1000, "max_s": 3e-3}, "overruns": 0}, True, None),
    ({"late": {"count": 11, "sent": 1000, "max_s": 3e-3}, "overruns": 0,
      "scheduling": "nice -20"}, False, "11 of 1000 frames more than 1 ms late"),
    ({"late": {"count": 0, "sent": 1000, "max_s": 0}, "overruns": 2}, False, "overruns"),
    ({"error": "the engine died: x"}, False, "failed"),
    ({"late": {"count": 0, "sent": 0, "max_s": 0}}, True, None),
])
def test_timing_report(stats, reliable, words):
    r = timing_report(stats)
    assert r["reliable"] is reliable and r["threshold"] == LATE_SHARE_RELIABLE
    if words:
        assert any(words in n for n in r["notes"]), r


class _Rec:
    def __init__(self, flows):
        self.doc = {"timing": {"reliable": True, "notes": []}, "flows": flows}


@pytest.mark.parametrize("late,reliable", [(0, True), (10, True), (11, False)])
def test_a_paced_sender_behind_schedule_makes_the_run_timing_unreliable(tmp_path, late,
                                                                         reliable):
    (tmp_path / "f.send.json").write_text(json.dumps({"end": {"pacing": {
        "sends": 1000, "late": late, "max_late_s": 0.004, "tolerance_s": 1e-4}}}))
    rec = _Rec([{"name": "f", "send": {"report": "f.send.json"}},
                {"name": "g", "send": {"report": None}}])
    runner._judge_pacing(rec, tmp_path)
    assert rec.doc["timing"]["reliable"] is reliable
    if not reliable:
        assert "flow f: the UDP sender left 11 of 1000 sends" in rec.doc["timing"]["notes"][0]
    # the engine's judgement comes after, and keeps the sender's note
    runner._judge_timing(rec, {"late": {"count": 0, "sent": 10, "max_s": 0}})
    assert rec.doc["timing"]["reliable"] is reliable
