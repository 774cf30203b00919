"""`labkit run`: one scripted experiment, captured, analyzed, reconciled and checked."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("run", help="run a lab: build it, capture, run its flows, analyze",
                       description="Runs the lab NAME (e.g. 04-loss) or the lab file PATH "
                                   "into a run folder (run.json, captures, ledger, endpoint "
                                   "reports, analysis, report.md). Exit 0: every expectation "
                                   "holds; 1: one failed; 2: bad spec or option; 3: this "
                                   "machine cannot run the lab.")
    p.add_argument("lab", metavar="NAME|PATH")
    p.add_argument("--seed", type=int, metavar="N", help="the link's seed (default: the lab's)")
    p.add_argument("--engine", choices=["auto", "kernel", "userspace"],
                   help="link engine (default: the lab's choice, else auto)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a parameter (loss=5%%) or a spec value by key path "
                        "(link.a_to_b.delay=20ms); repeatable")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<lab>-<time>); with "
                                                "--repeat, the folder that holds the runs")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="N runs with seeds seed .. seed+N-1")
    p.add_argument("--save", metavar="DIR",
                   help="then save the run as the reference run DIR/<lab> (gzip captures, "
                        "blessed expectations; what `labkit check` replays)")
    p.add_argument("--privilege", choices=["auto", "root", "rootless"], default="auto",
                   help="build the lab as root, or in an unprivileged user namespace "
                        "(rootless); default: root when root, else rootless")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..labs import runner
    from ..labs import spec as S

    if args.repeat < 1:
        print("labkit run: --repeat: give 1 or more runs", file=sys.stderr)
        return 2
    if args.save and args.repeat != 1:
        print("labkit run: --save keeps one reference run per lab; it takes no --repeat",
              file=sys.stderr)
        return 2
    if args.seed is not None and args.seed < 0:
        print("labkit run: --seed: a seed is a non-negative integer", file=sys.stderr)
        return 2
    try:
        path = S.find(args.lab)
        base = S.load(path, overrides=args.sets)
    except S.LabError as e:
        print(f"labkit run: {e}", file=sys.stderr)
        return 2
    why = unwritable(args.out, args.save)
    if why:
        print(f"labkit run: {why}", file=sys.stderr)
        return 2
    seed0 = base.seed if args.seed is None else args.seed
    worst = 0
    for k in range(args.repeat):
        seed = seed0 + k
        spec = base if seed == base.seed else S.load(path, overrides=[*args.sets,
                                                                      f"lab.seed={seed}"])
        if args.repeat == 1:
            out = Path(args.out) if args.out else runner.default_out(spec)
        else:
            root = Path(args.out) if args.out else runner.default_out(spec)
            out = root / f"{spec.name}-seed{seed}"
        try:
            status = runner.run(spec, out, engine=args.engine, privilege=args.privilege)
        except S.LabError as e:
            print(f"labkit run: {e}", file=sys.stderr)
            return 2
        worst = max(worst, status) if status != runner.EXIT_INTERRUPTED else status
        if args.save:
            if status != runner.EXIT_OK:
                print(f"labkit run: not saved: a reference run must pass its expectations "
                      f"(exit {status}); {out} keeps this run", file=sys.stderr)
                return status
            from ..labs.saved import save
            dest = save(out, Path(args.save) / spec.name)
            print(f"saved as the reference run {dest}")
        if status in (runner.EXIT_INPUT, runner.EXIT_CANNOT, runner.EXIT_INTERRUPTED):
            return status
    return worst


def unwritable(out: str | None, save: str | None = None) -> str | None:
    """Why the results could not be written where they go (--out, --save, or ./runs by
    default), or None: said before a lab runs, not after."""
    for flag, folder in (("--save", save), ("--out", out)):
        if folder and not _writable(Path(folder)):
            return f"{flag} {folder}: cannot write there"
    if not out and not _writable(Path("runs")):
        return f"cannot write the run folder under {Path('runs').resolve()} (give --out DIR)"
    return None


def _writable(folder: Path) -> bool:
    """Could a folder be made and written here? (The nearest existing ancestor decides.)"""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
