"""The expectation language: parse (every key checked), evaluate (statuses, found values),
summaries. Small DataFrames stand in for a run's tables."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.labs import expect as X

NAN = float("nan")


def tcp_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "stream": [0, 1, 2, 3],
        "direction": ["a_to_b", "b_to_a", "a_to_b", "a_to_b"],
        "payload": [1000, 0, 500, 250],
        "rtt_ms": [10.0, NAN, 30.0, 20.0],
        "state": ["ESTABLISHED", "CLOSED", "FIN_WAIT", "ESTABLISHED"],
        "sack": [True, False, True, True],
        "note": ["retransmission", "", "dup ack", "spurious retransmission"],
    })


def run(spec: dict, frame: pd.DataFrame | None = None, **kw) -> X.Result:
    exps = X.parse([{"table": "tcp", **spec}])
    frame = tcp_frame() if frame is None else frame
    (result,) = X.evaluate(exps, lambda table, at: frame, **kw)
    return result


def same(a, b) -> bool:
    """Equal, with the type kept (1 is not True, 1.0 is accepted for 1)."""
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


# ----------------------------------------------------------------------- every op

@pytest.mark.parametrize("op, expected, status", [
    ("==", 4, "pass"), ("==", 5, "fail"), ("==", 4.0, "pass"),
    ("!=", 5, "pass"), ("!=", 4, "fail"),
    ("<", 5, "pass"), ("<", 4, "fail"),
    ("<=", 4, "pass"), ("<=", 3, "fail"),
    (">", 3, "pass"), (">", 4, "fail"),
    (">=", 4, "pass"), (">=", 5, "fail"),
    ("between", [4, 4], "pass"), ("between", [1, 4], "pass"), ("between", [4, 9], "pass"),
    ("between", [1, 3], "fail"), ("between", [5, 9], "fail"),
])
def test_ops_on_count(op, expected, status):
    r = run({"value": "count", "op": op, "expected": expected})
    assert (r.status, r.found, r.rows) == (status, 4, 4)
    if status == "fail":
        shown = "[" + ", ".join(map(str, expected)) + "]" if op == "between" else str(expected)
        assert r.detail == f"expected count {op} {shown}, found 4"
    else:
        assert r.detail == ""


# --------------------------------------------------------------- every value function

@pytest.mark.parametrize("value, where, found", [
    ("count", {}, 4),
    ("sum(payload)", {}, 1750),
    ("min(payload)", {}, 0),
    ("max(payload)", {}, 1000),
    ("mean(payload)", {}, 437.5),
    ("first(payload)", {}, 1000),
    ("last(payload)", {}, 250),
    ("sum(rtt_ms)", {}, 60.0),              # NaN skipped
    ("min(rtt_ms)", {}, 10.0),
    ("max(rtt_ms)", {}, 30.0),
    ("mean(rtt_ms)", {}, 20.0),
    ("sum(sack)", {}, 3),                   # true counts 1
    ("mean(sack)", {}, 0.75),
    ("first(sack)", {}, True),
    ("last(sack)", {"stream": 1}, False),
    ("first(state)", {}, "ESTABLISHED"),
    ("last(direction)", {}, "a_to_b"),
    ("min(state)", {}, "CLOSED"),           # text: in order
    ("max(state)", {}, "FIN_WAIT"),
    ("payload", {"stream": 2}, 500),        # a bare column: exactly one row
    ("state", {"stream": 1}, "CLOSED"),
    ("sack", {"stream": 1}, False),
])
def test_value_functions(value, where, found):
    r = run({"value": value, "where": where, "op": "==", "expected": found})
    assert r.status == "pass", r.line()
    assert same(r.found, found), (r.found, found)
    assert type(r.found) in (int, float, str, bool)      # plain Python, not numpy


@pytest.mark.parametrize("value, expected, typ", [
    ("count", -1, int), ("sum(payload)", -1, int), ("sum(sack)", -1, int),
    ("max(payload)", -1, int), ("mean(payload)", -1, float), ("max(rtt_ms)", -1, float),
    ("first(sack)", False, bool), ("first(state)", "x", str),
])
def test_found_types_are_plain(value, expected, typ):
    r = run({"value": value, "op": "!=", "expected": expected})
    assert r.status == "pass"
    assert type(r.found) is typ


# ---------------------------------------------------------------------- filters

@pytest.mark.parametrize("where, rows", [
    ({"direction": "a_to_b"}, 3),
    ({"direction": {"==": "a_to_b"}}, 3),
    ({"direction": {"!=": "a_to_b"}}, 1),
    ({"payload": {"<": 500}}, 2),
    ({"payload": {"<=": 500}}, 3),
    ({"payload": {">": 500}}, 1),
    ({"payload": {">=": 500}}, 2),
    ({"payload": 1000.0}, 1),                       # a float matches an integer column
    ({"stream": {"in": [0, 3, 9]}}, 2),
    ({"direction": {"in": ["b_to_a"]}}, 1),
    ({"stream": {"in": []}}, 0),
    ({"note": {"contains": "retrans"}}, 2),
    ({"note": {"contains": "RETRANS"}}, 0),         # exact text, no case folding
    ({"note": {"contains": "."}}, 0),               # not a regular expression
    ({"payload": {">=": 250, "<": 1000}}, 2),       # several ops on one column: all hold
    ({"direction": "a_to_b", "sack": True}, 3),     # several columns: all hold
    ({"direction": "a_to_b", "payload": {">": 300}}, 2),
    ({"sack": False}, 1),
    ({"rtt_ms": {">": 0}}, 3),                      # NaN is not > 0
    ({"rtt_ms": {"!=": 10.0}}, 3),                  # ... but it is != 10
    ({"stream": 9}, 0),
])
def test_filters(where, rows):
    r = run({"value": "count", "where": where, "op": "==", "expected": rows})
    assert (r.status, r.found, r.rows) == ("pass", rows, rows), r.line()


def test_filters_on_nullable_and_categorical_columns():
    frame = pd.DataFrame({
        "stream": pd.array([0, 1, None, 3], dtype="Int64"),
        "kind": pd.Categorical(["data", "ack", "data", "fin"]),
        "label": pd.array(["x", None, "xy", "z"], dtype="string"),
        "flag": pd.array([True, None, False, True], dtype="boolean"),
    })
    cases = [({"stream": {">=": 1}}, 2), ({"stream": {"!=": 0}}, 2), ({"kind": "data"}, 2),
             ({"kind": {"in": ["ack", "fin"]}}, 2), ({"label": {"contains": "x"}}, 2),
             ({"flag": True}, 2), ({"flag": {"!=": True}}, 1)]
    for where, rows in cases:
        r = run({"value": "count", "where": where, "op": "==", "expected": rows}, frame)
        assert (r.status, r.found) == ("pass", rows), (where, r.line())
    r = run({"value": "sum(stream)", "op": "==", "expected": 4}, frame)
    assert (r.status, r.found) == ("pass", 4)
    r = run({"value": "stream", "where": {"kind": "ack"}, "op": "==", "expected": 1}, frame)
    assert (r.status, r.found) == ("pass", 1)
    r = run({"value": "stream", "where": {"label": "xy"}, "op": "==", "expected": 1}, frame)
    assert (r.status, r.found, r.rows) == ("fail", None, 1)     # NA counts as no value


# -------------------------------------------------------------------- tolerance, between

@pytest.mark.parametrize("value, op, expected, tolerance, status", [
    ("sum(payload)", "==", 1800, "5%", "pass"),      # |1750-1800| = 50 <= 90
    ("sum(payload)", "==", 1800, "2%", "fail"),      # 50 > 36
    ("sum(payload)", "==", 1800, 50, "pass"),        # absolute, inclusive
    ("sum(payload)", "==", 1800, 49.5, "fail"),
    ("sum(payload)", "==", 1750, 0, "pass"),
    ("sum(payload)", "==", 1700, "2.9411764706%", "pass"),
    ("sum(payload)", "!=", 1800, "5%", "fail"),      # within the slack: equal
    ("sum(payload)", "!=", 1800, 10, "pass"),
    ("sum(payload)", "between", [1800, 2000], "5%", "pass"),    # low widened to 1710
    ("sum(payload)", "between", [1800, 2000], "2%", "fail"),    # 1764
    ("sum(payload)", "between", [1500, 1700], 50, "pass"),      # high widened to 1750
    ("sum(payload)", "between", [1500, 1700], 49, "fail"),
    ("sum(payload)", "between", [1500, 1700], "3%", "pass"),    # 1700 * 1.03 = 1751
    ("sum(payload)", "between", [1500, 1700], "2.9%", "fail"),  # 1749.3
    ("mean(rtt_ms)", "==", 20.5, 0.5, "pass"),
    ("mean(rtt_ms)", "==", 20.5, 0.4, "fail"),
    ("mean(rtt_ms)", "==", -20.0, "100%", "fail"),  # relative to |expected|: 20 < 40
    ("mean(rtt_ms)", "==", -20.0, "200%", "pass"),
])
def test_tolerance(value, op, expected, tolerance, status):
    r = run({"value": value, "op": op, "expected": expected, "tolerance": tolerance})
    assert r.status == status, r.line()


def test_between_without_tolerance_is_inclusive():
    for low, high, status in [(10.0, 30.0, "pass"), (10.0, 10.0, "pass"),
                              (10.5, 30.0, "fail"), (0, 9.99, "fail")]:
        r = run({"value": "min(rtt_ms)", "op": "between", "expected": [low, high]})
        assert (r.status, r.found) == (status, 10.0)


def test_text_and_bool_compare_exactly():
    r = run({"value": "first(state)", "op": "==", "expected": "established"})
    assert (r.status, r.found) == ("fail", "ESTABLISHED")
    assert r.detail == 'expected first(state) == "established", found "ESTABLISHED"'
    assert run({"value": "first(state)", "op": "!=", "expected": "X"}).status == "pass"
    assert run({"value": "first(sack)", "op": "==", "expected": False}).status == "fail"
    assert run({"value": "first(sack)", "op": "!=", "expected": False}).status == "pass"


# --------------------------------------------------------------------------- zero rows

NONE = {"stream": 9}


@pytest.mark.parametrize("value, op, expected, status, found", [
    ("count", "==", 0, "pass", 0),
    ("sum(payload)", "==", 0, "pass", 0),
    ("sum(rtt_ms)", "==", 0, "pass", 0),
    ("sum(payload)", "==", 5, "fail", 0),
    ("min(payload)", "==", 0, "fail", None),
    ("max(payload)", "<", 1, "fail", None),
    ("mean(payload)", "==", 0, "fail", None),
    ("first(payload)", "==", 0, "fail", None),
    ("last(state)", "!=", "x", "fail", None),
    ("payload", "==", 0, "fail", None),
    ("payload", "!=", 0, "fail", None),             # no value proves nothing
])
def test_zero_rows(value, op, expected, status, found):
    r = run({"value": value, "where": NONE, "op": op, "expected": expected})
    assert (r.status, r.rows) == (status, 0), r.line()
    assert same(r.found, found)
    if found is not None:
        assert type(r.found) is int             # sum over nothing is 0, even of floats
    if status == "fail":
        assert "no rows matched the filter" in r.detail
        assert len(r.sample) == 4          # nothing matched: the table's first rows instead
    else:
        assert r.sample == []


def test_zero_rows_in_an_empty_table():
    empty = tcp_frame().iloc[0:0]
    assert run({"value": "count", "op": "==", "expected": 0}, empty).status == "pass"
    r = run({"value": "max(payload)", "op": "==", "expected": 0}, empty)
    assert (r.status, r.found, r.sample) == ("fail", None, [])
    assert r.detail == "no rows matched the filter (the table is empty)"


def test_nan_found_counts_as_none():
    r = run({"value": "rtt_ms", "where": {"stream": 1}, "op": "==", "expected": 0})
    assert (r.status, r.found, r.rows) == ("fail", None, 1)
    assert "found no value" in r.detail
    frame = pd.DataFrame({"x": [NAN, NAN]})
    r = run({"value": "mean(x)", "op": ">", "expected": 0}, frame)
    assert (r.status, r.found, r.rows) == ("fail", None, 2)


def test_bare_column_with_many_rows_is_an_error():
    r = run({"value": "payload", "where": {"direction": "a_to_b"}, "op": "==", "expected": 1})
    assert (r.status, r.found, r.rows) == ("error", None, 3)
    assert r.detail.startswith("3 rows match; use sum(), min(), ")
    assert r.detail.endswith("or narrow `where`")
    assert [row["stream"] for row in r.sample] == [0, 2, 3]
    r = run({"value": "state", "where": {"payload": {">=": 500}}, "op": "==", "expected": "x"})
    assert (r.status, r.rows) == ("error", 2) and r.detail.startswith("2 rows match")


# ------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("spec, detail", [
    ({"value": "sum(nope)", "op": "==", "expected": 1},
     "value: unknown column 'nope' in tcp; columns: stream, direction, payload, rtt_ms, "
     "state, sack, note"),
    ({"value": "count", "where": {"nope": 1}, "op": "==", "expected": 1},
     "where: unknown column 'nope' in tcp; columns: stream, direction, payload, rtt_ms, "
     "state, sack, note"),
    ({"value": "first(state)", "op": "<", "expected": 3},
     '< compares numbers; found "ESTABLISHED" (text)'),
    ({"value": "first(state)", "op": "between", "expected": [1, 2]},
     'between compares numbers; found "ESTABLISHED" (text)'),
    ({"value": "first(sack)", "op": ">", "expected": 0},
     "> compares numbers; found true (true/false)"),
    ({"value": "first(state)", "op": "==", "expected": 3},
     'found "ESTABLISHED" (text) cannot equal 3 (a number)'),
    ({"value": "first(sack)", "op": "==", "expected": 1},
     "found true (true/false) cannot equal 1 (a number)"),
    ({"value": "first(payload)", "op": "==", "expected": "1000"},
     'found 1000 (a number) cannot equal "1000" (text)'),
    ({"value": "sum(state)", "op": "==", "expected": 1},
     "sum() needs numbers; column 'state' holds text"),
    ({"value": "mean(note)", "op": "==", "expected": 1},
     "mean() needs numbers; column 'note' holds text"),
    ({"value": "count", "where": {"state": {"<": 3}}, "op": "==", "expected": 1},
     "where.state: < compares numbers; column 'state' holds text"),
    ({"value": "count", "where": {"sack": {">=": 1}}, "op": "==", "expected": 1},
     "where.sack: >= compares numbers; column 'sack' holds true/false"),
    ({"value": "count", "where": {"payload": {"contains": "1"}}, "op": "==", "expected": 1},
     "where.payload: contains looks in text; column 'payload' holds a number"),
    ({"value": "count", "where": {"stream": "0"}, "op": "==", "expected": 1},
     "where.stream: column 'stream' holds a number; \"0\" never matches"),
    ({"value": "count", "where": {"direction": {"in": ["a_to_b", 1]}}, "op": "==",
      "expected": 1},
     "where.direction: column 'direction' holds text; 1 never matches"),
    ({"value": "count", "where": {"sack": 1}, "op": "==", "expected": 1},
     "where.sack: column 'sack' holds true/false; 1 never matches"),
])
def test_errors(spec, detail):
    r = run(spec)
    assert (r.status, r.detail) == ("error", detail)


def test_table_lookup_errors_become_results():
    exps = X.parse([
        {"table": "tcp", "at": "x", "value": "count", "op": "==", "expected": 1},
        {"table": "drops", "value": "count", "op": "==", "expected": 0},
        {"table": "udp", "at": "b", "value": "count", "op": "==", "expected": 0},
        {"table": "tcp", "at": "b", "value": "count", "op": "==", "expected": 4},
        {"table": "tcp", "at": "b", "value": "sum(nope)", "op": "==", "expected": 4},
        {"table": "tcp", "at": "b", "value": "count", "op": "==", "expected": 5},
    ])
    calls = []

    def get_table(table, at):
        calls.append((table, at))
        if at == "x":
            raise KeyError("no vantage point 'x'; points: a, b")
        if table == "drops":
            raise LookupError("no table drops: the kernel engine keeps no ledger")
        if table == "udp":
            raise OSError("disk on fire")
        return tcp_frame()

    results = X.evaluate(exps, get_table)
    assert [r.status for r in results] == ["error", "error", "error", "pass", "error", "fail"]
    assert results[0].detail == "no vantage point 'x'; points: a, b"
    assert results[1].detail == "no table drops: the kernel engine keeps no ledger"
    assert results[2].detail == "could not read udp@b: OSError: disk on fire"
    assert calls == [("tcp", "x"), ("drops", None), ("udp", "b"), ("tcp", "b")]   # cached
    assert X.exit_status(results) == 2
    assert X.summarize(results) == {"pass": 1, "fail": 1, "error": 4, "unreliable": 0}


def test_get_table_may_return_a_toolkit_table():
    from toolkit.analysis.table import Table
    table = Table({"stream": np.arange(3), "lost": np.array([0, 2, 1])})
    (r,) = X.evaluate(X.parse([{"table": "udp_flows", "value": "sum(lost)", "op": "==",
                                "expected": 3}]), lambda t, at: table)
    assert (r.status, r.found) == ("pass", 3)


# ---------------------------------------------------------------------------- timing

@pytest.mark.parametrize("timing, reliable, expected, status", [
    (True, False, 1, "unreliable"),
    (True, False, 4, "pass"),
    (True, True, 1, "fail"),
    (False, False, 1, "fail"),
])
def test_timing(timing, reliable, expected, status):
    r = run({"value": "count", "op": "==", "expected": expected, "timing": timing,
             "why": "needs a clock"}, timing_reliable=reliable)
    assert (r.status, r.found) == (status, 4)
    if status == "unreliable":
        assert "could not keep time" in r.detail
        assert r.detail.endswith("expected count == 1, found 4")


def test_timing_does_not_hide_errors():
    r = run({"value": "sum(nope)", "op": "==", "expected": 1, "timing": True},
            timing_reliable=False)
    assert r.status == "error"


# ------------------------------------------------------------------ summaries, exit

def _result(status: str) -> X.Result:
    (exp,) = X.parse([{"table": "tcp", "value": "count", "op": "==", "expected": 1}])
    return X.Result(exp, status)


@pytest.mark.parametrize("statuses, code", [
    ([], 0), (["pass"], 0), (["pass", "unreliable"], 0), (["unreliable"], 0),
    (["pass", "fail"], 1), (["fail", "unreliable"], 1),
    (["error"], 2), (["pass", "error"], 2), (["fail", "error", "unreliable"], 2),
])
def test_exit_status(statuses, code):
    results = [_result(s) for s in statuses]
    assert X.exit_status(results) == code
    counts = X.summarize(results)
    assert counts == {s: statuses.count(s) for s in X.STATUSES}


# ------------------------------------------------------------------------- reporting

def test_lines():
    r = run({"at": "b", "value": "sum(payload)", "op": "==", "expected": 1750})
    assert r.line() == "PASS  expect[0] tcp@b sum(payload) == 1750 (found 1750)"
    r = run({"at": "b", "value": "sum(payload)", "op": "==", "expected": 2000000,
             "why": "TCP delivers every byte\nhowever many were lost"})
    assert r.line().splitlines() == [
        "FAIL  expect[0] tcp@b sum(payload) == 2000000 (found 1750)",
        "      why: TCP delivers every byte",
        "           however many were lost",
    ]
    r = run({"name": "rtt", "where": {"direction": "a_to_b"}, "value": "mean(rtt_ms)",
             "op": "==", "expected": 21, "tolerance": "5%"})
    assert r.line() == ('PASS  expect[0] rtt: tcp[direction == "a_to_b"] mean(rtt_ms) == 21 '
                        "±5% (found 20)")
    r = run({"value": "count", "where": {"stream": {"in": [8, 9]}}, "op": "between",
             "expected": [1, 2], "tolerance": 0.5})
    assert r.line().splitlines()[0] == ("FAIL  expect[0] tcp[stream in [8, 9]] count between "
                                        "[1, 2] ±0.5 (found 0)")
    r = run({"value": "max(payload)", "where": NONE, "op": "==", "expected": 1, "why": "w"})
    assert r.line().splitlines() == [
        "FAIL  expect[0] tcp[stream == 9] max(payload) == 1 (found no value)",
        "      no rows matched the filter (the table has 4 rows; the sample shows its first)",
        "      why: w",
    ]
    r = run({"value": "sum(nope)", "op": "==", "expected": 1, "why": "w"})
    assert r.line().splitlines()[0] == "ERROR expect[0] tcp sum(nope) == 1"
    assert r.line().splitlines()[1].startswith("      value: unknown column 'nope'")
    r = run({"value": "count", "op": "==", "expected": 1, "timing": True, "why": "w"},
            timing_reliable=False)
    assert r.line().splitlines()[0] == "UNRELIABLE expect[0] tcp count == 1 (found 4)"
    assert r.line().splitlines()[-1] == "      why: w"


def test_result_as_dict_is_json_ready():
    frame = pd.DataFrame({"stream": np.array([0, 1], np.int64),
                          "ok": np.array([True, False]),
                          "t": pd.to_datetime(["2024-01-01", None]),
                          "x": np.array([1.5, NAN], np.float32)})
    r = run({"name": "n", "at": "b", "where": {"stream": {"in": [0, 1]}}, "value": "sum(x)",
             "op": "between", "expected": [1, 2], "tolerance": "1%", "timing": True,
             "why": "w"}, frame)
    d = r.as_dict()
    json.dumps(d, allow_nan=False)                 # plain types, no NaN
    assert d == {"index": 0, "name": "n", "table": "tcp", "at": "b",
                 "where": {"stream": {"in": [0, 1]}}, "value": "sum(x)", "op": "between",
                 "expected": [1, 2], "tolerance": "1%", "timing": True, "why": "w",
                 "status": "pass", "found": 1.5, "rows": 2, "detail": "",
                 "sample": [{"stream": 0, "ok": True, "t": "2024-01-01T00:00:00", "x": 1.5},
                            {"stream": 1, "ok": False, "t": None, "x": None}]}
    assert type(d["sample"][0]["stream"]) is int and type(d["sample"][0]["ok"]) is bool


def wide_frame(n: int = 25) -> pd.DataFrame:
    cols = {"frame": np.arange(1, n + 1), "junk0": np.zeros(n), "stream": np.arange(n) % 3,
            "len": (np.arange(n) * 7) % 11}
    cols.update({f"junk{i}": np.zeros(n) for i in range(1, 9)})
    return pd.DataFrame(cols)


def test_sample_narrows_wide_rows_and_looks_where_the_value_looked():
    frame = wide_frame()
    r = run({"where": {"stream": 1}, "value": "count", "op": ">", "expected": 0}, frame)
    assert r.rows == 8 and len(r.sample) == 8
    assert list(r.sample[0]) == ["frame", "stream"]          # identity first, then filtered
    r = run({"value": "sum(len)", "op": ">", "expected": 0}, frame)
    assert list(r.sample[0]) == ["frame", "stream", "len"] and len(r.sample) == 10
    assert [row["frame"] for row in r.sample] == list(range(1, 11))
    r = run({"value": "last(len)", "op": ">", "expected": -1}, frame)
    assert [row["frame"] for row in r.sample] == list(range(16, 26))
    r = run({"value": "max(len)", "op": "==", "expected": 10}, frame)
    assert r.status == "pass" and r.sample[0]["len"] == 10
    r = run({"value": "min(len)", "op": "==", "expected": 0}, frame)
    assert r.status == "pass" and r.sample[0]["len"] == 0
    narrow = tcp_frame()
    r = run({"value": "count", "op": ">", "expected": 0}, narrow)
    assert list(r.sample[0]) == list(narrow.columns)          # a narrow table: whole rows


# ------------------------------------------------------------------------------- parse

def test_parse_defaults_and_normalization():
    (e,) = X.parse([{"table": "udp_flows", "value": " sum( lost ) ", "op": "<=",
                     "expected": 3}])
    assert e == X.Expectation(index=0, name="expect[0]", table="udp_flows", at=None,
                              where={}, value="sum(lost)", op="<=", expected=3,
                              tolerance=None, timing=False, why="")
    assert (e.function, e.column) == ("sum", "lost")
    (e,) = X.parse([{"table": "tcp", "value": "count", "op": "==", "expected": 1}])
    assert (e.function, e.column) == ("count", None)
    (e,) = X.parse([{"table": "tcp", "value": "payload", "op": "==", "expected": 1}])
    assert (e.function, e.column) == (None, "payload")


@pytest.mark.parametrize("raw, parsed", [
    ("5%", ("rel", 0.05)), (" 0.5 %", ("rel", 0.005)), ("0%", ("rel", 0.0)),
    ("150%", ("rel", 1.5)), (2, ("abs", 2.0)), (0.25, ("abs", 0.25)), (0, ("abs", 0.0)),
])
def test_parse_tolerance(raw, parsed):
    (e,) = X.parse([{"table": "tcp", "value": "count", "op": "==", "expected": 1,
                     "tolerance": raw}])
    assert e.tolerance == pytest.approx(parsed) and e.tolerance[0] == parsed[0]


def test_parse_numpy_values_become_plain():
    (e,) = X.parse([{"table": "tcp", "value": "count", "op": "==", "expected": np.int64(5),
                     "where": {"stream": np.int64(1)}}])
    assert type(e.expected) is int and type(e.where["stream"]) is int


def test_as_dict_round_trips():
    raw = [
        {"table": "tcp", "at": "b", "value": "sum(payload_bytes_a_to_b)", "op": "==",
         "expected": 2000000, "why": "TCP delivers every byte"},
        {"name": "loss", "table": "udp_flows", "at": "b",
         "where": {"direction": "a_to_b", "lost": {">=": 1, "<": 100},
                   "flow": {"in": ["udp", "udp2"]}, "note": {"contains": "x"}},
         "value": "mean(loss_ratio)", "op": "between", "expected": [0.01, 0.05],
         "tolerance": "7%", "timing": True},
        {"table": "drops", "value": "count", "op": "!=", "expected": 0, "tolerance": 1.5},
        {"table": "endpoints", "value": "first(ok)", "op": "==", "expected": True},
    ]
    exps = X.parse(raw)
    assert [e.as_dict() for e in exps] == raw
    assert X.parse([e.as_dict() for e in exps]) == exps


def test_parse_custom_tables():
    (e,) = X.parse([{"table": "answers", "value": "count", "op": "==", "expected": 1}],
                   tables={"answers"})
    assert e.table == "answers"
    with pytest.raises(X.ExpectError, match=r"^expect\[0\]\.table: 'tcp' is not one of answers$"):
        X.parse([{"table": "tcp", "value": "count", "op": "==", "expected": 1}],
                tables={"answers"})


OK = {"table": "tcp", "value": "count", "op": "==", "expected": 1}


@pytest.mark.parametrize("raw, message", [
    ({"table": "tcp"}, "expect: expected a list of expectations"),
    (["x"], "expect[0]: expected a table of keys"),
    ([{**OK, "colour": 1}], "expect[0].colour: unknown key; the keys are name, table, at, "
                            "where, value, op, expected, tolerance, timing, why"),
    ([{**OK, "a b": 1}], 'expect[0]."a b": unknown key'),
    ([{"table": "tcp", "op": "==", "expected": 1}],
     "expect[0].value: missing; every expectation needs table, value, op, expected"),
    ([OK, {"value": "count", "op": "==", "expected": 1}], "expect[1].table: missing"),
    ([{**OK, "expected": 1}, {**OK, "table": "tpc"}],
     "expect[1].table: 'tpc' is not one of tcp, udp, udp_flows, tcp_states, packets, "
     "reconciliation, drops, endpoints, flows"),
    ([{**OK, "name": ""}], "expect[0].name: ''"),
    ([{**OK, "name": 3}], "expect[0].name: 3"),
    ([{**OK, "name": "x"}, {**OK, "name": "x"}],
     "expect[1].name: 'x' is already the name of expect[0]"),
    ([{**OK, "at": ""}], "expect[0].at: ''"),
    ([{**OK, "at": 1}], "expect[0].at: 1"),
    ([{**OK, "table": "drops", "at": "b"}], "expect[0].at: table 'drops' is one per run"),
    ([{**OK, "value": "median(rtt)"}], "expect[0].value: 'median(rtt)' is not \"count\""),
    ([{**OK, "value": "sum(a b)"}], "expect[0].value: 'sum(a b)'"),
    ([{**OK, "value": "sum()"}], "expect[0].value: 'sum()'"),
    ([{**OK, "value": "count(x)"}], "expect[0].value: 'count(x)'"),
    ([{**OK, "value": 5}], "expect[0].value: 5"),
    ([OK, OK, {**OK, "op": "approx"}],
     "expect[2].op: 'approx' is not one of ==, !=, <, <=, >, >=, between"),
    ([{**OK, "op": "="}], "expect[0].op: '=' is not one of"),
    ([{**OK, "op": "between", "expected": 5}],
     "expect[0].expected: between needs [low, high], got 5"),
    ([{**OK, "op": "between", "expected": [1, 2, 3]}], "expect[0].expected: between needs"),
    ([{**OK, "op": "between", "expected": [3, 1]}],
     "expect[0].expected: between [3, 1]: low is above high"),
    ([{**OK, "op": "between", "expected": ["a", 2]}],
     'expect[0].expected: between needs numbers, got "a"'),
    ([{**OK, "op": "between", "expected": [True, 2]}], "expect[0].expected: between needs"),
    ([{**OK, "op": "<", "expected": "x"}], 'expect[0].expected: < compares numbers, got "x"'),
    ([{**OK, "op": ">=", "expected": False}], "expect[0].expected: >= compares numbers"),
    ([{**OK, "expected": None}], "expect[0].expected: expected a number, a text or "
                                 "true/false, got no value"),
    ([{**OK, "expected": {"a": 1}}], "expect[0].expected:"),
    ([{**OK, "expected": [1, 2]}], "expect[0].expected:"),
    ([{**OK, "expected": NAN}], "expect[0].expected: nan; expected a finite number"),
    ([{**OK, "expected": math.inf}], "expect[0].expected: inf"),
    ([{**OK, "expected": "five"}], 'expect[0].expected: count gives a number; "five"'),
    ([{**OK, "value": "sum(x)", "expected": True}], "expect[0].expected: sum(x) gives a"),
    ([{**OK, "op": "<", "tolerance": "5%"}], "expect[0].tolerance: only with ==, !=, "
                                             "between, not with <"),
    ([{**OK, "value": "first(s)", "expected": "x", "tolerance": 1}],
     'expect[0].tolerance: only for numbers; expected is "x"'),
    ([{**OK, "tolerance": "5"}], "expect[0].tolerance: '5'; expected a percentage"),
    ([{**OK, "tolerance": "-5%"}], "expect[0].tolerance: '-5%'"),
    ([{**OK, "tolerance": "x%"}], "expect[0].tolerance: 'x%'"),
    ([{**OK, "tolerance": -1}], "expect[0].tolerance: -1"),
    ([{**OK, "tolerance": True}], "expect[0].tolerance: True"),
    ([{**OK, "timing": "yes"}], "expect[0].timing: 'yes'; expected true or false"),
    ([{**OK, "why": 5}], "expect[0].why: 5"),
    ([{**OK, "where": ["stream"]}], "expect[0].where: expected a table"),
    ([{**OK, "where": {"seq": {"~=": 1}}}], 'expect[0].where.seq."~=": \'~=\' is not one of '
                                            "==, !=, <, <=, >, >=, in, contains"),
    ([{**OK, "where": {"seq": {}}}], "expect[0].where.seq: an empty condition"),
    ([{**OK, "where": {"seq": [1, 2]}}], "expect[0].where.seq: a list matches nothing"),
    ([{**OK, "where": {"seq": {"in": 1}}}], "expect[0].where.seq.in: in needs a list"),
    ([{**OK, "where": {"seq": {"in": [1, None]}}}], "expect[0].where.seq.in[1]:"),
    ([{**OK, "where": {"note": {"contains": 5}}}],
     "expect[0].where.note.contains: contains needs a text, got 5"),
    ([{**OK, "where": {"seq": {"<": "x"}}}], 'expect[0].where.seq."<": < compares numbers'),
    ([{**OK, "where": {"seq": None}}], "expect[0].where.seq:"),
    ([{**OK, "where": {"seq": NAN}}], "expect[0].where.seq: nan"),
])
def test_malformed(raw, message):
    with pytest.raises(X.ExpectError) as info:
        X.parse(raw)
    assert str(info.value).startswith(message), str(info.value)


def test_malformed_path_prefix():
    with pytest.raises(X.ExpectError, match=r"^lab\.expect\[0\]\.op: "):
        X.parse([{**OK, "op": "~"}], where="lab.expect")
    assert issubclass(X.ExpectError, ValueError)


# ------------------------------------------------------------------------------ module

def test_module_imports_only_the_standard_library():
    source = Path(X.__file__).read_text()
    tree = ast.parse(source)
    top = set()
    for node in tree.body:                     # module level only: pandas comes lazily
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    assert top <= {"__future__", "json", "math", "re", "dataclasses"}, top
