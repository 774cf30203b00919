"""Expectations: the one small language that checks a run against its tables.

An expectation is a claim about one table a run produced: pick the table (at a vantage
point for the analyzer's tables), keep the rows a filter selects, reduce them to one value
(how many rows, a sum, a min, ..., or the one row's column), and compare that value with
what the lab expects. `[[expect]]` in lab.toml, `labkit check` on a saved run and the
notebooks' answer checks all use this module, so a claim means the same thing everywhere.

The shape is learned from suricata-verify's test.yaml (filters over the engine's output
records, with a count that must match) and Zeek's btest baselines (compare the engine's
tables, not its log lines). Their lesson: never compare volatile values raw. A check
names the column and the reduction, compares numbers with an explicit tolerance or range,
and a check that depends on the machine keeping time says so (`timing = true`): on a run
whose timing was not reliable such a check that fails is reported "unreliable", not
"fail".

Three stages, each strict about what it says:
- parse(): the spec as plain data (TOML tables) -> Expectation. Every key is validated;
  a malformed expectation raises ExpectError naming the key path (`expect[2].op`).
- evaluate(): Expectation + a table getter -> Result. Nothing raises: a missing table,
  an unknown column or a question the data cannot answer (a bare column matching many
  rows, `<` on text) is status "error" with what went wrong; a value that does not
  compare as expected is "fail" with "expected X op Y, found Z" and the rows looked at.
- summarize() / exit_status(): counts, and 0 (all pass) / 1 (a failure) / 2 (an error:
  the check itself is wrong, like a bad command line).

The module is pure: no files, no privileges; pandas is imported only when evaluating.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

TABLES = ("tcp", "udp", "udp_flows", "tcp_states", "packets",
          "reconciliation", "drops", "endpoints", "flows", "sockets", "counters")
RUN_TABLES = ("reconciliation", "drops", "endpoints", "flows", "sockets",
              "counters")                                      # no vantage point
OPS = ("==", "!=", "<", "<=", ">", ">=", "between")
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "contains")
FUNCTIONS = ("sum", "min", "max", "mean", "first", "last")
STATUSES = ("pass", "fail", "error", "unreliable")
KEYS = ("name", "table", "at", "where", "value", "op", "expected", "tolerance", "timing",
        "why")
REQUIRED = ("table", "value", "op", "expected")
TOLERANT_OPS = ("==", "!=", "between")
ORDER_OPS = ("<", "<=", ">", ">=")
# identity columns a sample row shows first, when the table has them
KEY_COLUMNS = ("frame", "stream", "flow", "name", "point", "direction", "endpoint", "proto",
               "seq", "time_s")
SAMPLE_ROWS = 10
SAMPLE_ALL_COLUMNS = 8           # a table this narrow is shown whole

_COLUMN = r"[A-Za-z_][A-Za-z0-9_]*"
_VALUE_RE = re.compile(rf"^\s*(?:(?P<fn>{'|'.join(FUNCTIONS)})\s*\(\s*(?P<arg>{_COLUMN})\s*\)"
                       rf"|(?P<bare>{_COLUMN}))\s*$")
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class ExpectError(ValueError):
    """A malformed expectation; the message names the key path (expect[2].op)."""


class _Problem(Exception):
    """The data cannot answer the question as asked: the result's status is "error"."""


@dataclass(frozen=True)
class Expectation:
    """One parsed `[[expect]]` entry. Build with parse(), which validates."""
    index: int
    name: str                      # the id; "expect[i]" unless the lab named it
    table: str
    at: str | None                 # vantage point; None: the run's default point
    where: dict                    # {column: value} or {column: {op: value, ...}}
    value: str                     # "count", "column" or "fn(column)"
    op: str
    expected: object               # number, str, bool; (low, high) for between
    tolerance: tuple | None = None     # ("rel", 0.05) / ("abs", 2.0)
    timing: bool = False
    why: str = ""

    @property
    def function(self) -> str | None:
        """"count", one of FUNCTIONS, or None for a bare column."""
        if self.value == "count":
            return "count"
        m = _VALUE_RE.match(self.value)
        return m.group("fn") if m else None

    @property
    def column(self) -> str | None:
        """The column the value reads; None for count."""
        if self.value == "count":
            return None
        m = _VALUE_RE.match(self.value)
        return (m.group("arg") or m.group("bare")) if m else None

    def conditions(self) -> list[tuple[str, str, object]]:
        """The filter as (column, op, value) triples; all must hold."""
        out = []
        for col, cond in self.where.items():
            if isinstance(cond, dict):
                out.extend((col, op, v) for op, v in cond.items())
            else:
                out.append((col, "==", cond))
        return out

    @property
    def label(self) -> str:
        """How a line names this expectation: expect[i], with the lab's name if any."""
        default = f"expect[{self.index}]"
        return default if self.name == default else f"{default} {self.name}:"

    def describe(self) -> str:
        """The check in one line: `tcp@b[direction == "a_to_b"] sum(x) == 5 ±2%`."""
        where = ""
        if self.where:
            where = "[" + ", ".join(f"{c} {op} {_fmt(v)}" for c, op, v in self.conditions()) + "]"
        return (f"{self.table}{'@' + self.at if self.at else ''}{where} {self.value} "
                f"{self.op} {_fmt_expected(self)}")

    def as_dict(self) -> dict:
        """The plain TOML-like form: parse([e.as_dict()]) gives this expectation back."""
        d: dict = {}
        if self.name != f"expect[{self.index}]":
            d["name"] = self.name
        d["table"] = self.table
        if self.at is not None:
            d["at"] = self.at
        if self.where:
            d["where"] = _plain_where(self.where)
        d["value"] = self.value
        d["op"] = self.op
        d["expected"] = list(self.expected) if self.op == "between" else self.expected
        if self.tolerance is not None:
            d["tolerance"] = _tolerance_text(self.tolerance)
        if self.timing:
            d["timing"] = True
        if self.why:
            d["why"] = self.why
        return d


@dataclass
class Result:
    """What one expectation found in a run."""
    expectation: Expectation
    status: str                    # pass | fail | error | unreliable
    found: object = None           # int, float, str, bool or None
    rows: int = 0                  # rows the filter matched
    detail: str = ""
    sample: list = field(default_factory=list)   # up to SAMPLE_ROWS dicts, JSON-ready

    def as_dict(self) -> dict:
        """JSON-ready: the expectation's keys (all of them), then what was found."""
        e = self.expectation
        return {
            "index": e.index, "name": e.name, "table": e.table, "at": e.at,
            "where": _plain_where(e.where), "value": e.value, "op": e.op,
            "expected": list(e.expected) if e.op == "between" else e.expected,
            "tolerance": None if e.tolerance is None else _tolerance_text(e.tolerance),
            "timing": e.timing, "why": e.why,
            "status": self.status, "found": self.found, "rows": self.rows,
            "detail": self.detail, "sample": [dict(r) for r in self.sample],
        }

    def line(self) -> str:
        """`PASS  expect[0] tcp@b sum(payload_bytes_a_to_b) == 2000000 (found 2000000)`, and
        for anything but a pass what went wrong and the lab's why on indented lines."""
        e = self.expectation
        head = f"{self.status.upper():<5} {e.label} {e.describe()}"
        if self.status != "error":
            head += f" (found {_fmt(self.found)})"
        lines = [head]
        if self.status != "pass":
            routine = self.status == "fail" and self.found is not None and self.rows > 0
            if self.detail and not routine:       # the head line already says it
                lines += ["      " + t for t in self.detail.splitlines()]
            if e.why and self.status in ("fail", "unreliable"):
                why = e.why.strip().splitlines()
                lines += ["      why: " + why[0]] + ["           " + t for t in why[1:]]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- parse

def parse(raw: list[dict], where: str = "expect",
          tables: set[str] | None = None) -> list[Expectation]:
    """Validate `[[expect]]` entries (parameters already substituted) into Expectations.

    `where` prefixes the key paths of error messages; `tables` the names allowed (default
    TABLES). Raises ExpectError on the first problem.
    """
    known = TABLES if tables is None else tuple(sorted(tables))
    if not isinstance(raw, (list, tuple)):
        raise ExpectError(f"{where}: expected a list of expectations ([[{where}]] tables), "
                          f"got {_kind_words(raw)}")
    out: list[Expectation] = []
    names: dict[str, int] = {}
    for i, item in enumerate(raw):
        exp = _parse_one(item, i, f"{where}[{i}]", known)
        if exp.name in names:
            raise ExpectError(f"{where}[{i}].name: {exp.name!r} is already the name of "
                              f"{where}[{names[exp.name]}]")
        names[exp.name] = i
        out.append(exp)
    return out


def _parse_one(item, index: int, path: str, tables: tuple) -> Expectation:
    if not isinstance(item, dict):
        raise ExpectError(f"{path}: expected a table of keys ({', '.join(KEYS)}), "
                          f"got {_kind_words(item)}")
    for key in item:
        if key not in KEYS:
            raise ExpectError(f"{path}.{_key(key)}: unknown key; the keys are "
                              f"{', '.join(KEYS)}")
    for key in REQUIRED:
        if key not in item:
            raise ExpectError(f"{path}.{key}: missing; every expectation needs "
                              f"{', '.join(REQUIRED)}")

    name = item.get("name", f"expect[{index}]")
    if not isinstance(name, str) or not name.strip():
        raise ExpectError(f"{path}.name: {name!r}; expected a short non-empty text")
    table = item["table"]
    if table not in tables:
        raise ExpectError(f"{path}.table: {table!r} is not one of {', '.join(tables)}")
    at = item.get("at")
    if at is not None:
        if not isinstance(at, str) or not at.strip():
            raise ExpectError(f"{path}.at: {at!r}; expected a vantage point's name")
        if table in RUN_TABLES:
            per_point = ", ".join(t for t in tables if t not in RUN_TABLES)
            raise ExpectError(f"{path}.at: table {table!r} is one per run, not per vantage "
                              f"point; `at` is for {per_point}")

    value = item["value"]
    m = _VALUE_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ExpectError(f"{path}.value: {value!r} is not \"count\", a column name or fn(column) "
                          f"with fn one of {', '.join(FUNCTIONS)}")
    value = f"{m.group('fn')}({m.group('arg')})" if m.group("fn") else m.group("bare")
    fn = "count" if value == "count" else m.group("fn")

    op = item["op"]
    if not isinstance(op, str) or op not in OPS:
        raise ExpectError(f"{path}.op: {op!r} is not one of {', '.join(OPS)}")

    expected = _parse_expected(_native(item["expected"]), op, fn, value, f"{path}.expected")

    tolerance = None
    if "tolerance" in item:
        if op not in TOLERANT_OPS:
            raise ExpectError(f"{path}.tolerance: only with {', '.join(TOLERANT_OPS)}, "
                              f"not with {op}")
        if op != "between" and not _is_number(expected):
            raise ExpectError(f"{path}.tolerance: only for numbers; expected is "
                              f"{_fmt(expected)}")
        tolerance = _parse_tolerance(_native(item["tolerance"]), f"{path}.tolerance")

    timing = item.get("timing", False)
    if not isinstance(timing, bool):
        raise ExpectError(f"{path}.timing: {timing!r}; expected true or false")
    why = item.get("why", "")
    if not isinstance(why, str):
        raise ExpectError(f"{path}.why: {why!r}; expected a text")
    filters = _parse_where(item.get("where", {}), f"{path}.where")
    return Expectation(index=index, name=name, table=table, at=at, where=filters, value=value,
                       op=op, expected=expected, tolerance=tolerance, timing=timing, why=why)


def _parse_expected(x, op: str, fn: str | None, value: str, path: str):
    if op == "between":
        if not isinstance(x, (list, tuple)) or len(x) != 2:
            raise ExpectError(f"{path}: between needs [low, high], got {_fmt(x)}")
        low, high = (_native(v) for v in x)
        for v in (low, high):
            _check_number(v, path, "between needs numbers")
        if low > high:
            raise ExpectError(f"{path}: between [{_fmt(low)}, {_fmt(high)}]: low is above high")
        return (low, high)
    if op in ORDER_OPS:
        _check_number(x, path, f"{op} compares numbers")
        return x
    if isinstance(x, (bool, str)):
        if fn in ("count", "sum", "mean"):
            raise ExpectError(f"{path}: {value} gives a number; {_fmt(x)} is not one")
        return x
    _check_number(x, path, "expected a number, a text or true/false")
    return x


def _check_number(x, path: str, what: str) -> None:
    if not _is_number(x):
        raise ExpectError(f"{path}: {what}, got {_fmt(x)}")
    if not math.isfinite(x):
        raise ExpectError(f"{path}: {x!r}; expected a finite number")


def _parse_tolerance(x, path: str) -> tuple:
    if isinstance(x, str):
        text = x.strip()
        try:
            pct = float(text[:-1]) if text.endswith("%") else None
        except ValueError:
            pct = None
        if pct is None or not math.isfinite(pct) or pct < 0:
            raise ExpectError(f"{path}: {x!r}; expected a percentage such as \"5%\" "
                              "(relative) or a non-negative number (absolute)")
        return ("rel", pct / 100)
    if not _is_number(x) or not math.isfinite(x) or x < 0:
        raise ExpectError(f"{path}: {x!r}; expected a percentage such as \"5%\" (relative) "
                          "or a non-negative number (absolute)")
    return ("abs", float(x))


def _parse_where(raw, path: str) -> dict:
    if not isinstance(raw, dict):
        raise ExpectError(f"{path}: expected a table such as {{direction = \"a_to_b\", "
                          f"seq = {{\">=\" = 10}}}}, got {_kind_words(raw)}")
    out = {}
    for col, cond in raw.items():
        cpath = f"{path}.{_key(col)}"
        if not isinstance(col, str) or not col:
            raise ExpectError(f"{cpath}: a column name must be a non-empty text")
        cond = _native(cond)
        if isinstance(cond, dict):
            if not cond:
                raise ExpectError(f"{cpath}: an empty condition; expected {{op = value}} with "
                                  f"op one of {', '.join(FILTER_OPS)}")
            ops = {}
            for op, v in cond.items():
                if op not in FILTER_OPS:
                    raise ExpectError(f"{cpath}.{_key(op)}: {op!r} is not one of "
                                      f"{', '.join(FILTER_OPS)}")
                ops[op] = _parse_filter_value(op, _native(v), f"{cpath}.{_key(op)}")
            out[col] = ops
        elif isinstance(cond, (list, tuple)):
            raise ExpectError(f"{cpath}: a list matches nothing by itself; write "
                              f"{{in = {_fmt(list(cond))}}}")
        else:
            out[col] = _parse_filter_value("==", cond, cpath)
    return out


def _parse_filter_value(op: str, v, path: str):
    if op == "in":
        if not isinstance(v, (list, tuple)):
            raise ExpectError(f"{path}: in needs a list, got {_fmt(v)}")
        return tuple(_parse_filter_value("==", _native(x), f"{path}[{i}]")
                     for i, x in enumerate(v))
    if op == "contains":
        if not isinstance(v, str):
            raise ExpectError(f"{path}: contains needs a text, got {_fmt(v)}")
        return v
    if op in ORDER_OPS:
        _check_number(v, path, f"{op} compares numbers")
        return v
    if isinstance(v, (bool, str)):
        return v
    _check_number(v, path, "expected a number, a text or true/false")
    return v


# ------------------------------------------------------------------------------- evaluate

def evaluate(exps: list[Expectation], get_table, *,
             timing_reliable: bool = True) -> list[Result]:
    """Check each expectation against `get_table(table, at) -> DataFrame`.

    get_table may raise KeyError / LookupError (no such table or vantage point): that
    expectation is an "error" with the message. Each (table, at) is asked for once.
    Never raises for bad data; see the module docstring for the statuses.
    """
    cache: dict = {}

    def table(name: str, at: str | None):
        key = (name, at)
        if key not in cache:
            try:
                cache[key] = (_as_frame(get_table(name, at)), None)
            except LookupError as e:
                cache[key] = (None, _lookup_text(e, name, at))
            except Exception as e:      # a run must still report: the check errs, not labkit
                cache[key] = (None, f"could not read {name}{'@' + at if at else ''}: "
                                    f"{type(e).__name__}: {e}")
        return cache[key]

    results = []
    for exp in exps:
        frame, err = table(exp.table, exp.at)
        if err is not None:
            result = Result(exp, "error", None, 0, err, [])
        else:
            try:
                result = _judge(exp, frame)
            except _Problem as e:
                result = Result(exp, "error", None, 0, str(e), [])
            except Exception as e:      # pandas refusing something: still a report line
                result = Result(exp, "error", None, 0,
                                f"could not evaluate: {type(e).__name__}: {e}", [])
        if result.status == "fail" and exp.timing and not timing_reliable:
            result.status = "unreliable"
            result.detail = ("the run could not keep time (timing unreliable), so this timing "
                             f"check is not judged; it would fail: {result.detail}")
        results.append(result)
    return results


def summarize(results: list[Result]) -> dict:
    """{pass, fail, error, unreliable}: how many results have each status."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def exit_status(results: list[Result]) -> int:
    """2 if any check errored (bad input), else 1 if any failed, else 0 ("unreliable"
    does not fail)."""
    statuses = {r.status for r in results}
    if "error" in statuses:
        return 2
    if "fail" in statuses:
        return 1
    return 0


def _as_frame(obj):
    import pandas as pd
    if isinstance(obj, pd.DataFrame):
        return obj
    if hasattr(obj, "to_frame") and not isinstance(obj, pd.Series):   # toolkit Table
        return obj.to_frame()
    raise TypeError(f"the table getter returned {type(obj).__name__}, not a DataFrame")


def _lookup_text(e: LookupError, name: str, at: str | None) -> str:
    if len(e.args) == 1 and isinstance(e.args[0], str) and e.args[0]:
        return e.args[0]                # KeyError's str() would add quotes
    text = str(e)
    return text or f"no table {name}{'@' + at if at else ''}"


def _judge(exp: Expectation, df) -> Result:
    label = f"{exp.table}{'@' + exp.at if exp.at else ''}"
    available = ", ".join(str(c) for c in df.columns) or "(none)"
    for col in exp.where:
        if col not in df.columns:
            raise _Problem(f"where: unknown column {col!r} in {label}; columns: {available}")
    col = exp.column
    if col is not None and col not in df.columns:
        raise _Problem(f"value: unknown column {col!r} in {label}; columns: {available}")

    mask = None
    for c, op, v in exp.conditions():
        m = _condition(df[c], c, op, v)
        mask = m if mask is None else (mask & m)
    sub = df if mask is None else df[mask]
    rows = len(sub)
    fn = exp.function

    def sample(matched=None):
        """The matched rows; None: the table's first rows (when nothing matched)."""
        return _sample(df, exp, ordered=False) if matched is None else _sample(matched, exp)

    if fn == "count":
        found = rows
    else:
        kind = _kind(df[col])
        s = sub[col]
        if fn in ("sum", "mean"):
            if kind not in ("number", "bool", "empty"):
                raise _Problem(f"{fn}() needs numbers; column {col!r} holds {_WORDS[kind]}")
            vals = _numbers(s.dropna(), kind)
            if fn == "sum":
                found = 0 if rows == 0 else vals.sum()
            else:
                found = vals.mean() if len(vals) else None
        elif fn in ("min", "max"):
            if kind == "other":
                raise _Problem(f"{fn}() needs values of one type; column {col!r} holds "
                               f"{_WORDS[kind]}")
            vals = s.dropna()
            found = (vals.min() if fn == "min" else vals.max()) if len(vals) else None
        elif fn in ("first", "last"):
            found = None if rows == 0 else s.iloc[0 if fn == "first" else -1]
        else:                                   # a bare column: exactly one row
            if rows > 1:
                return Result(exp, "error", None, rows,
                              f"{rows} rows match; use sum(), min(), max(), mean(), first(), "
                              f"last() or count, or narrow `where`", sample(sub))
            found = None if rows == 0 else s.iloc[0]
    found = _plain(found)

    if found is None:
        if rows == 0:
            detail = "no rows matched the filter" + _table_note(df)
            return Result(exp, "fail", None, 0, detail, sample())
        return Result(exp, "fail", None, rows,
                      f"expected {exp.value} {exp.op} {_fmt_expected(exp)}, found no value "
                      f"(missing or NaN in the {rows} matched row{'s' if rows > 1 else ''})",
                      sample(sub))
    try:
        ok = _compare(exp, found)
    except _Problem as e:
        return Result(exp, "error", found, rows, str(e), sample(sub))
    if ok:
        return Result(exp, "pass", found, rows, "", sample(sub) if rows else [])
    detail = f"expected {exp.value} {exp.op} {_fmt_expected(exp)}, found {_fmt(found)}"
    if rows == 0:
        detail += "; no rows matched the filter" + _table_note(df)
        return Result(exp, "fail", found, 0, detail, sample())
    return Result(exp, "fail", found, rows, detail, sample(sub))


def _table_note(df) -> str:
    if len(df) == 0:
        return " (the table is empty)"
    return f" (the table has {len(df)} rows; the sample shows its first)"


def _condition(s, col: str, op: str, v):
    """The boolean mask (numpy) of `s op v`; _Problem if it can never make sense."""
    kind = _kind(s)
    if op in ORDER_OPS:
        if kind in ("text", "bool"):
            raise _Problem(f"where.{col}: {op} compares numbers; column {col!r} holds "
                           f"{_WORDS[kind]}")
        m = {"<": s.__lt__, "<=": s.__le__, ">": s.__gt__, ">=": s.__ge__}[op](v)
    elif op == "contains":
        if kind in ("number", "bool"):
            raise _Problem(f"where.{col}: contains looks in text; column {col!r} holds "
                           f"{_WORDS[kind]}")
        text = s if kind == "text" else s.astype(str)
        m = text.str.contains(v, regex=False, na=False)
    else:
        values = list(v) if op == "in" else [v]
        if kind in ("number", "text", "bool"):
            for x in values:
                if _value_kind(x) != kind:
                    raise _Problem(f"where.{col}: column {col!r} holds {_WORDS[kind]}; "
                                   f"{_fmt(x)} never matches")
        if op == "in":
            m = s.isin(values)
        elif op == "==":
            m = s == v
        else:
            m = s != v
    return m.to_numpy(dtype=bool, na_value=False)


def _numbers(s, kind: str):
    import pandas as pd
    if kind == "bool":
        return s.astype(bool).astype("int64")
    if s.dtype == object:
        return pd.to_numeric(s)
    return s


def _compare(exp: Expectation, found) -> bool:
    """Whether `found op expected` holds; _Problem when the two cannot be compared."""
    op, expected = exp.op, exp.expected
    fk = _value_kind(found)
    if op == "between" or op in ORDER_OPS:
        if fk != "number":
            raise _Problem(f"{op} compares numbers; found {_fmt(found)} ({_WORDS[fk]})")
    else:
        ek = _value_kind(expected)
        if fk != ek:
            raise _Problem(f"found {_fmt(found)} ({_WORDS[fk]}) cannot equal "
                           f"{_fmt(expected)} ({_WORDS[ek]})")
        if fk != "number":
            return (found == expected) == (op == "==")
    tol = exp.tolerance
    if op == "between":
        low, high = expected
        return low - _slack(low, tol) <= found <= high + _slack(high, tol)
    if op in ("==", "!="):
        equal = abs(found - expected) <= _slack(expected, tol)
        return equal == (op == "==")
    return {"<": found < expected, "<=": found <= expected,
            ">": found > expected, ">=": found >= expected}[op]


def _slack(x, tol) -> float:
    if tol is None:
        return 0
    kind, amount = tol
    return amount * abs(x) if kind == "rel" else amount


def _sample(df, exp: Expectation, ordered: bool = True) -> list[dict]:
    """Up to SAMPLE_ROWS rows of df as JSON-ready dicts, narrowed to the columns that
    identify a row plus those filtered and valued (a narrow table is shown whole).
    ordered: the rows the value looked at first (last(): the last rows; min(), max():
    the rows nearest the extreme); else simply the first rows."""
    if len(df) == 0:
        return []
    cols = list(df.columns)
    if len(cols) > SAMPLE_ALL_COLUMNS:
        wanted = [c for c in KEY_COLUMNS if c in df.columns]
        wanted += [c for c in exp.where if c in df.columns]
        if exp.column is not None:
            wanted.append(exp.column)
        cols = list(dict.fromkeys(wanted)) or cols[:SAMPLE_ALL_COLUMNS]
    fn, col = exp.function, exp.column
    part = df[cols]
    if ordered and fn == "last":
        part = part.tail(SAMPLE_ROWS)
    elif ordered and fn in ("min", "max") and _kind(df[col]) == "number":
        part = part.sort_values(col, ascending=(fn == "min"), kind="stable",
                                na_position="last").head(SAMPLE_ROWS)
    else:
        part = part.head(SAMPLE_ROWS)
    names = [str(c) for c in cols]
    return [{n: _plain(v) for n, v in zip(names, row)}
            for row in part.itertuples(index=False, name=None)]


# --------------------------------------------------------------------------------- values

_WORDS = {"number": "a number", "text": "text", "bool": "true/false", "empty": "no values",
          "other": "values of mixed or other types", "none": "no value"}
_INFERRED = {"string": "text", "integer": "number", "floating": "number",
             "mixed-integer-float": "number", "decimal": "number", "boolean": "bool",
             "empty": "empty"}


def _kind(s) -> str:
    """What a column holds: number, text, bool, empty (no values) or other."""
    import pandas as pd
    from pandas.api.types import infer_dtype, is_bool_dtype, is_numeric_dtype
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _INFERRED.get(infer_dtype(dtype.categories, skipna=True), "other")
    if is_bool_dtype(dtype):
        return "bool"
    if is_numeric_dtype(dtype):
        return "number"
    return _INFERRED.get(infer_dtype(s, skipna=True), "other")


def _value_kind(x) -> str:
    if x is None:
        return "none"
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, (int, float)):
        return "number"
    if isinstance(x, str):
        return "text"
    return "other"


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _native(x):
    """numpy scalars (a notebook's computed expectation) as plain Python."""
    if type(x).__module__ == "numpy" and hasattr(x, "item"):
        return x.item()
    return x


def _plain(x):
    """A JSON-ready scalar: int, float, str, bool or None (NaN, NA, NaT: None)."""
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, str):
        return str(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return None if math.isnan(x) else float(x)
    if type(x).__module__ == "numpy" and hasattr(x, "item"):
        return _plain(x.item())
    try:
        import pandas as pd
        if pd.isna(x) is True:
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(x, "isoformat"):
        return x.isoformat()
    if isinstance(x, bytes):
        return x.hex()
    return str(x)


def _fmt(x) -> str:
    """A value as the lab would write it: 2000000, 0.25, "text", true."""
    if x is None:
        return "no value"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.10g}"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, str):
        return json.dumps(x, ensure_ascii=False)
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return repr(x)


def _fmt_expected(exp: Expectation) -> str:
    text = _fmt(exp.expected)
    if exp.tolerance is not None:
        kind, amount = exp.tolerance
        text += f" ±{amount * 100:.12g}%" if kind == "rel" else f" ±{amount:.12g}"
    return text


def _tolerance_text(tol: tuple):
    kind, amount = tol
    return f"{amount * 100:.12g}%" if kind == "rel" else amount


def _plain_where(where: dict) -> dict:
    out = {}
    for col, cond in where.items():
        if isinstance(cond, dict):
            out[col] = {op: (list(v) if isinstance(v, tuple) else v) for op, v in cond.items()}
        else:
            out[col] = cond
    return out


def _key(k) -> str:
    """A key as a TOML key path writes it: bare if it can be, else quoted."""
    k = str(k)
    return k if _BARE_KEY_RE.match(k) else json.dumps(k, ensure_ascii=False)


def _kind_words(x) -> str:
    return {dict: "a table", list: "a list", str: "a text", bool: "true/false"}.get(
        type(x), type(x).__name__)
