"""`labkit clean`: remove what runs killed with SIGKILL left behind, and nothing else."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("clean", help="remove namespaces of lab runs whose process is gone",
                       description="Removes lk-<run>-<host> network namespaces (and with them "
                                   "their veths, qdiscs and nftables tables) of runs whose "
                                   "process no longer exists. Live runs are never touched.")
    p.add_argument("-n", "--dry-run", action="store_true", help="only list what would go")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from ..netlab import registry

    if os.geteuid() != 0:
        # rootless runs leave nothing: their namespaces die with their user namespace
        print("labkit clean: not root; rootless runs leave nothing behind, and root runs' "
              "leftovers need root: sudo labkit clean", file=sys.stderr)
        return 1
    found, errors = registry.sweep(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for left in found:
        print(f"{verb} run {left.run_id} ({left.reason}): {' '.join(left.netns)}")
    if not found:
        print("nothing to clean")
    for e in errors:
        print(f"labkit clean: {e}", file=sys.stderr)
    return 1 if errors else 0
