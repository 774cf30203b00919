"""`labkit labs`: the labs in labs/, what each runs and what it needs."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("labs", help="list the labs (name, title, duration, what each needs)",
                       description="Lists the labs in labs/ (or --dir): name, title, "
                                   "duration, flows and what running each one needs.")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--dir", metavar="DIR",
                   help="where the labs are (default: ./labs, else labs/ of labkit)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..labs import spec as S

    root = Path(args.dir) if args.dir else S.labs_dir()
    if not root.is_dir():
        print(f"labkit labs: --dir {root}: not a directory", file=sys.stderr)
        return 2
    labs, errors = [], []
    for path in S.all_labs(root):
        try:
            labs.append(S.load(path).describe())
        except S.LabError as e:
            errors.append(str(e))
    if args.json:
        print(json.dumps({"labs": labs, "errors": errors}, indent=1))
    else:
        for lab in labs:
            needs = lab["needs"]
            print(f"{lab['name']:<18} {lab['title']}")
            print(f"{'':<18} {lab['duration_s']:g} s, flows: {', '.join(lab['flows'])}; "
                  f"link: {needs['impairment']}; engine: {needs['engine']}; "
                  f"hosts: {', '.join(needs['hosts'])}; root or rootless")
        if not labs:
            print(f"no labs in {root}")
        for e in errors:
            print(f"labkit labs: {e}", file=sys.stderr)
    return 2 if errors else 0
