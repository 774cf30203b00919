"""A lab's questions, answered from the student's own run and checked against it.

    [[question]]                       # in lab.toml
    id = "udp-lost"
    text = "How many datagrams of the UDP flow never arrived at b?"
    hint = "b.pcapng: the lab header's sequence numbers (udp_flows: lost)"
    answer = {table = "udp_flows", at = "b", where = {dst_port = 5202}, value = "sum(lost)"}
    tolerance = 0                      # optional: relative ("5%") or absolute (a number)

The answer is an expectation without its comparison (toolkit.labs.expect): which table,
which rows, which value. Checking a student's answer makes it whole (`==` the value given,
within the tolerance) and evaluates it on their run, so a notebook, a script and a course's
grader (`check_answer`) agree, and a wrong answer is shown the rows (the frames) that hold
the right one.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from . import expect

QUESTION_KEYS = ("id", "text", "hint", "answer", "tolerance")
ANSWER_KEYS = ("table", "at", "where", "value")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")


class QuestionError(ValueError):
    """A malformed [[question]]; the message names the key path."""


@dataclass(frozen=True)
class Question:
    index: int
    id: str
    text: str
    hint: str
    answer: dict               # table, at, where, value
    tolerance: object = None

    def as_expectation(self, given) -> expect.Expectation:
        raw = {**self.answer, "name": self.id, "op": "==", "expected": given,
               "why": f"question {self.id}: {self.text}"}
        if self.tolerance is not None:
            raw["tolerance"] = self.tolerance
        return expect.parse([raw], f"question[{self.index}]")[0]


def parse(raw, where: str = "question") -> tuple[Question, ...]:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise QuestionError(f"{where}: expected [[{where}]] tables")
    out: list[Question] = []
    for i, q in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(q, dict):
            raise QuestionError(f"{path}: expected a table")
        for key in q:
            if key not in QUESTION_KEYS:
                raise QuestionError(f"{path}.{key}: unknown key; known: "
                                    f"{', '.join(QUESTION_KEYS)}")
        qid = q.get("id")
        if not isinstance(qid, str) or not _ID.fullmatch(qid):
            raise QuestionError(f"{path}.id: {qid!r}; expected a short id of lower-case "
                                f"letters, digits, - and _")
        if qid in (o.id for o in out):
            raise QuestionError(f"{path}.id: {qid!r} names two questions")
        text = q.get("text")
        if not isinstance(text, str) or not text.strip():
            raise QuestionError(f"{path}.text: the question, as the student reads it")
        hint = q.get("hint", "")
        if not isinstance(hint, str):
            raise QuestionError(f"{path}.hint: expected text")
        answer = q.get("answer")
        if not isinstance(answer, dict):
            raise QuestionError(f"{path}.answer: expected a table such as {{table = 'tcp', "
                                f"at = 'a', value = 'mss_a'}}")
        for key in answer:
            if key not in ANSWER_KEYS:
                raise QuestionError(f"{path}.answer.{key}: unknown key; known: "
                                    f"{', '.join(ANSWER_KEYS)} (the comparison is the "
                                    f"student's answer)")
        question = Question(i, qid, text.strip(), hint.strip(), dict(answer),
                            q.get("tolerance"))
        try:            # a probe answer of each kind proves the rest of the spec sound
            question.as_expectation(0)
        except expect.ExpectError as e:
            raise QuestionError(str(e).replace(f"question[{i}]", f"{path}.answer", 1)) \
                from None
        out.append(question)
    return tuple(out)


@dataclass
class Answer:
    question: Question
    given: object
    right: bool | None          # None: no answer given yet, or the run cannot answer it
    result: expect.Result | None
    message: str

    @property
    def frames(self) -> list[dict]:
        """The rows (frames, conversations, flows) that hold the answer."""
        return self.result.sample if self.result is not None else []

    def __str__(self) -> str:
        lines = [self.message]
        for row in self.frames[:5]:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {True: "#1a7f37", False: "#cf222e", None: "#6e7781"}[self.right]
        rows = ""
        if self.frames:
            cols = list(self.frames[0])
            rows = ("<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
                    + "</tr>" + "".join("<tr>" + "".join(
                        f"<td>{html.escape(str(r.get(c)))}</td>" for c in cols) + "</tr>"
                        for r in self.frames[:10]) + "</table>")
        return (f"<div style='border-left:4px solid {colour};padding-left:8px'>"
                f"<b>{html.escape(self.message)}</b>{rows}</div>")


def find(questions, qid: str) -> Question:
    for q in questions:
        if q.id == qid:
            return q
    known = ", ".join(q.id for q in questions) or "none"
    raise KeyError(f"no question {qid!r} in this lab (questions: {known})")


def check(run, qid: str, given) -> Answer:
    """Is `given` the right answer to question `qid` on this run (a RunFolder)?"""
    questions = run_questions(run)
    q = find(questions, qid)
    if given is None or (isinstance(given, str) and not given.strip()):
        return Answer(q, given, None, None, f"{q.id}: no answer yet. {q.text}")
    if isinstance(given, str):
        given = _number_or_text(given)
    try:
        exp = q.as_expectation(given)
    except expect.ExpectError as e:
        return Answer(q, given, None, None, f"{q.id}: {given!r} is not an answer of the "
                                            f"kind asked ({e})")
    result = expect.evaluate([exp], run.table)[0]
    if result.status == "pass":
        return Answer(q, given, True, result, f"{q.id}: right, {_show(given)}.")
    if result.status == "fail":
        return Answer(q, given, False, result,
                      f"{q.id}: not {_show(given)}. Look again: {q.hint or q.text}")
    return Answer(q, given, None, result, f"{q.id}: this run cannot answer it: "
                                          f"{result.detail}")


def run_questions(run) -> tuple[Question, ...]:
    return parse((run.doc.get("spec") or {}).get("question", []))


def _number_or_text(text: str):
    t = text.strip()
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            continue
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    return t


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
