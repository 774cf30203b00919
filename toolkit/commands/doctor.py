"""`labkit doctor`: what this machine offers, and which labs can run here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

def register(sub) -> None:
    p = sub.add_parser("doctor", help="what this machine offers (privileges, netem, tbf, "
                                      "nftables, capture tools) and which labs can run",
                       description="Probes privileges, kernel features (by trying them in a "
                                   "throwaway lab), tools and Python packages.")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--privilege", choices=["auto", "root", "rootless"], default="auto",
                   help="how to get network privileges (default: root if root, else rootless)")
    p.set_defaults(func=run)


def lab_verdicts(report, labs_dir: Path | None = None) -> dict[str, str]:
    """For each lab (labs/*/lab.toml, read as `labkit run` reads it): 'ok (engine ...)' or
    why it cannot run here."""
    from ..labs import spec as S
    from ..netlab.impairment import SpecError, choose_engine

    root = labs_dir or S.labs_dir()
    out = {}
    for path in S.all_labs(root):
        name = path.parent.name
        try:
            lab = S.load(path)
            choice = choose_engine(lab.impairment, report.have_netem, lab.engine)
        except S.LabError as e:
            out[name] = f"invalid: {e}"
            continue
        except SpecError as e:              # the engine it asks for cannot do its link here
            out[name] = f"cannot run here: {e}"
            continue
        if not report.can_build:
            out[name] = "cannot run: no privileges for a lab network (see privilege)"
        elif not (report.tools.get("dumpcap") or report.tools.get("tcpdump")):
            out[name] = "cannot run: no capture tool (install wireshark-common)"
        else:
            out[name] = f"ok ({choice.engine} engine: {choice.reason})"
    return out


def run(args) -> int:
    from ..netlab.forwarder import MAX_FPS, MAX_RATE_BPS
    from ..netlab.probe import TOOLS, probe_machine

    report = probe_machine(args.privilege)
    labs = lab_verdicts(report)
    userspace = {"available": bool(report.kernel.get("af_packet")),
                 "max_rate_bps": MAX_RATE_BPS, "max_frames_per_s": MAX_FPS}
    if args.json:
        print(json.dumps({**report.as_dict(), "userspace_engine": userspace, "labs": labs},
                         indent=1))
        return 0 if report.can_build else 1
    w = sys.stdout.write
    priv = report.privilege
    w(f"privilege: {priv['mode'] or 'NONE'}: {priv['detail']}\n")
    if report.kernel:
        w("kernel:\n")
        for name, ok in report.kernel.items():
            why = report.kernel_errors.get(name, "")
            w(f"  {name:16} {'yes' if ok else 'no '}{'  (' + why + ')' if why else ''}\n")
        if not report.have_netem:
            w("  without netem, delay/jitter/reordering/duplication/corruption use the "
              "userspace link emulator\n")
        w(f"userspace engine: {'yes' if userspace['available'] else 'no (needs AF_PACKET)'}"
          f"; every impairment and scripted fault, up to {MAX_RATE_BPS / 1e6:g} Mbit/s and "
          f"{MAX_FPS} frames/s per direction\n")
    elif report.kernel_errors:
        w(f"kernel: not probed: {report.kernel_errors}\n")
    w("tools:\n")
    for name, path in report.tools.items():
        w(f"  {name:16} {path or 'MISSING (Debian package ' + TOOLS[name] + ')'}\n")
    w("python packages:\n")
    for name, version in report.packages.items():
        w(f"  {name:16} {version or 'MISSING (make test installs it into .venv)'}\n")
    w("labs:\n" if labs else "labs: none found (labs/*/lab.toml)\n")
    for name, verdict in labs.items():
        w(f"  {name:16} {verdict}\n")
    return 0 if report.can_build else 1
