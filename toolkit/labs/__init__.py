"""Labs: experiments as data, run into self-describing run folders, checked and replayed.

    from toolkit import labs
    run = labs.open_run("captures/04-loss")      # a run folder (saved or fresh)
    run.table("flows")                           # TCP and UDP side by side
    labs.check_answer(run, "udp-lost", 54)       # a lab question, checked on this run

Modules: spec (lab.toml), runner (labkit run), flows, record, folder (RunFolder), expect
(the expectation language), questions, reconcile (ground truth), results, report,
saved (reference runs), check (labkit check), demo.
"""

from __future__ import annotations

__all__ = ["RunFolder", "open_run", "check_answer", "questions_of"]


def open_run(path):
    """A run folder (run.json, captures, ledger, reports), read-only."""
    from .folder import RunFolder
    return RunFolder(path)


def check_answer(run, question_id: str, answer):
    """Check a student's answer to one of the lab's questions on this run (a RunFolder or
    a run folder's path): right or wrong, with the rows that hold the right answer."""
    from .folder import RunFolder
    from .questions import check
    if not isinstance(run, RunFolder):
        run = RunFolder(run)
    return check(run, question_id, answer)


def questions_of(run):
    """The lab's questions as the run recorded them."""
    from .folder import RunFolder
    from .questions import run_questions
    if not isinstance(run, RunFolder):
        run = RunFolder(run)
    return run_questions(run)


def __getattr__(name):
    if name == "RunFolder":
        from .folder import RunFolder
        return RunFolder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
