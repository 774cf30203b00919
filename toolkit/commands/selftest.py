"""`labkit selftest`: measure the emulated link against its configuration."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("selftest", help="build the lab, measure loss, RTT and rate of the "
                                        "emulated link, compare with the configuration",
                       description="Values as tc writes them: --loss 5%% --delay 20ms "
                                   "--rate 10mbit (each applies to both directions). Exit 0 "
                                   "when no check failed; a timing check the machine "
                                   "could not keep time for is reported unreliable.")
    p.add_argument("--engine", choices=["auto", "kernel", "userspace"], default="auto")
    p.add_argument("--loss", metavar="P", help="random loss, e.g. 5%%")
    p.add_argument("--delay", metavar="D", help="one-way delay, e.g. 20ms")
    p.add_argument("--jitter", metavar="J", help="delay jitter, e.g. 2ms")
    p.add_argument("--rate", metavar="R", help="bottleneck rate, e.g. 10mbit")
    p.add_argument("--queue", metavar="SIZE", help="bottleneck queue limit, e.g. 64kb")
    p.add_argument("--count", type=int, default=10_000,
                   help="UDP datagrams for the loss measurement (default 10000)")
    p.add_argument("--privilege", choices=["auto", "root", "rootless"], default="auto")
    p.add_argument("--ledger-dir", metavar="DIR",
                   help="keep the userspace engine's ledgers (one per phase) in DIR")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..netlab import PrivilegeError, SpecError, selftest
    from ..netlab.executor import ApplyError
    from ..netlab.impairment import from_dict

    link = {k: getattr(args, k) for k in ("loss", "delay", "jitter", "rate", "queue")
            if getattr(args, k) is not None}
    if args.ledger_dir and args.engine == "kernel":
        print("labkit selftest: --ledger-dir keeps the userspace engine's ledgers; the kernel "
              "engine (--engine kernel) writes none", file=sys.stderr)
        return 2
    try:
        imp = from_dict({"both": link}, where="option")
        if not 100 <= args.count <= 1_000_000:
            raise SpecError(f"--count {args.count}: expected 100 to 1000000 datagrams")
        result = selftest.run(imp, engine=args.engine, privilege=args.privilege,
                              count=args.count,
                              ledger_dir=Path(args.ledger_dir) if args.ledger_dir else None)
    except SpecError as e:
        # "option.both.loss: ..." -> "--loss: ..."
        msg = str(e)
        cannot = re.match(r"the kernel engine cannot do ([a-z]+(?:, [a-z]+)*)", msg)
        if cannot:          # what this kernel lacks, named as the options that asked for it
            named = ", ".join(f"--{n}" if n in link else n
                              for n in cannot.group(1).split(", "))
            msg = msg[:cannot.start(1)] + named + msg[cannot.end(1):]
        for key in link:
            msg = msg.replace(f"option.both.{key}", f"--{key}")
            for d in ("a_to_b", "b_to_a"):
                msg = msg.replace(f"link.{d}.{key}", f"--{key}")
        print(f"labkit selftest: {msg}", file=sys.stderr)
        return 2
    except (PrivilegeError, ApplyError, RuntimeError) as e:
        print(f"labkit selftest: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0 if result["ok"] else 1
    print(f"engine: {result['engine']} ({result['engine_reason']}); "
          f"privilege: {result['privilege']['mode']}; netem: {'yes' if result['netem'] else 'no'}")
    print(f"{'check':14} {'configured':>20} {'measured':>22}  status      bound")
    for c in result["checks"]:
        print(f"{c['name']:14} {c['configured']:>20} {c['measured']:>22}  "
              f"{c['status']:10}  {c['detail']}")
    timing = result.get("timing") or {}
    if not timing.get("reliable", True):
        print("timing degraded: " + "; ".join(timing.get("notes", [])))
    unreliable = sum(c["status"] == "unreliable" for c in result["checks"])
    verdict = "passed" if result["ok"] else "FAILED"
    if unreliable:
        verdict += f" ({unreliable} timing checks not judged: timing unreliable)"
    print(f"selftest {verdict} in {result['seconds']:.1f} s")
    return 0 if result["ok"] else 1
