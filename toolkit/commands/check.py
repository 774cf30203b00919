"""`labkit check`: replay saved runs or captures against their expectations (CI's job)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("check", help="replay saved runs (or a capture) against their "
                                     "expectations; no privileges, no external tools",
                       description="PATH is a saved run (a folder with run.json), a folder of "
                                   "saved runs, or a capture file with --expect FILE. The "
                                   "captures are analyzed afresh. Exit 0: every expectation "
                                   "holds; 1: one failed; 2: bad input (a damaged capture, "
                                   "a malformed expectation).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--expect", metavar="FILE",
                   help="a TOML file of [[expect]] tables (required for a capture file; "
                        "for saved runs, checked in addition to theirs)")
    p.add_argument("--lab", metavar="NAME|PATH",
                   help="grade runs against this lab's own expectations (a course's copy of "
                        "the lab), not those the run folders carry; each run must have been "
                        "made from that very lab file, with no --set")
    p.add_argument("--update", action="store_true",
                   help="re-bless the saved runs' exact expectations (expect.toml) from a "
                        "fresh analysis of their captures, instead of checking")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (schema labkit-check) instead of text")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print passing expectations too")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os
    from pathlib import Path

    from ..labs import check as C

    if args.update and (args.junit or args.json or args.expect or args.lab):
        print("labkit check: --update re-blesses and checks nothing; it takes no --junit, "
              "--json, --expect or --lab", file=sys.stderr)
        return 2
    if args.verbose and (args.json or args.update):
        print("labkit check: -v prints passing expectations in the text report; --json holds "
              "every result already and --update prints none", file=sys.stderr)
        return 2
    captures = [p for p in args.paths if os.path.isfile(p)]
    if captures and args.update:
        print(f"labkit check: --update re-blesses saved runs; {captures[0]} is a capture file "
              f"(checked against --expect, nothing blessed)", file=sys.stderr)
        return 2
    if args.lab and len(captures) == len(args.paths):
        # with saved runs among the paths, --lab grades those (the captures: --expect)
        print(f"labkit check: --lab grades saved runs against the lab's own expectations; "
              f"{captures[0]} is a capture file, checked against --expect only",
              file=sys.stderr)
        return 2
    try:
        targets = C.collect(args.paths, args.expect, args.lab)
    except C.CheckInputError as e:
        print(f"labkit check: {e}", file=sys.stderr)
        return 2
    if args.update:
        status = 0
        for t in targets:
            try:
                path, n = C.update(t)
            except C.CheckInputError as e:
                print(f"labkit check: {e}", file=sys.stderr)
                status = 2
                continue
            print(f"blessed {n} expectations into {path}")
        return status
    outcomes = []
    for t in targets:
        o = C.check(t)
        outcomes.append(o)
        if not args.json:
            print(C.text(o, verbose=args.verbose), flush=True)
    status = max(o.status for o in outcomes)
    if args.junit:
        tmp = Path(args.junit).with_name(Path(args.junit).name + ".part")
        tmp.write_text(C.junit(outcomes))
        os.replace(tmp, args.junit)
    if args.json:
        print(json.dumps(C.as_dict(outcomes), indent=1, default=str))
    else:
        total = {k: sum(C.expect.summarize(o.results)[k] for o in outcomes)
                 for k in ("pass", "fail", "error", "unreliable")}
        bad = sum(len(o.errors) for o in outcomes)
        print(f"labkit check: {len(outcomes)} target{'s' if len(outcomes) != 1 else ''}, "
              f"{total['pass']} expectations hold, {total['fail']} failed, "
              f"{total['error'] + bad} errors, {total['unreliable']} unreliable")
    return status
