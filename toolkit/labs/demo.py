"""`labkit demo` (and `make demo`): the loss lab, run for real; or, where this machine can
build no lab (no root and no unprivileged user namespace), the saved reference run of it,
replayed from its captures, with the reason said first."""

from __future__ import annotations

import sys
from pathlib import Path

from . import runner
from . import spec as S

LAB = "04-loss"


def saved_run() -> Path:
    return Path(__file__).resolve().parents[2] / "captures" / LAB


def run(out: Path | None = None, stream=sys.stdout) -> int:
    lab = S.load(S.find(LAB))
    status = runner.run(lab, out or runner.default_out(lab), stream=stream)
    if status != runner.EXIT_CANNOT:
        return status
    return replay(saved_run(), stream)


def replay(folder: Path, stream=sys.stdout) -> int:
    """Analyze a saved run afresh and print its report (no privileges needed)."""
    from . import expect
    from .folder import RunFolder, RunFolderError
    from .report import build

    print(f"\nShowing the saved reference run in {folder} instead (analyzed afresh from its "
          f"captures):\n", file=stream)
    try:
        saved = RunFolder(folder)
    except RunFolderError as e:
        print(f"labkit demo: no saved run to show: {e}", file=stream)
        return runner.EXIT_CANNOT
    exps = expect.parse(saved.doc["spec"].get("expect", []), "expect")
    results = expect.evaluate(exps, saved.table, timing_reliable=saved.timing_reliable)
    print(build(saved, results), file=stream)
    return expect.exit_status(results)
