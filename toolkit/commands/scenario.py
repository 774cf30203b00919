"""`labkit scenario NAME ROLE ...`: one of the lab runner's scenario programs, by hand."""

from __future__ import annotations

import sys


def register(sub) -> None:
    from .. import scenarios
    p = sub.add_parser("scenario", help="run one of the labs' scenario programs (a server "
                       "that never accepts, a vanishing client, a SYN flood, ...)",
                       description="The socket programs the labs use beyond send and serve; "
                                   "`labkit scenario --list` lists them.")
    p.add_argument("--list", action="store_true", help="list the scenarios and their roles")
    p.set_defaults(func=_list)
    names = p.add_subparsers(dest="scenario", metavar="NAME")
    wanted = _named_on_command_line(scenarios.names())
    for name in scenarios.names():
        sp = names.add_parser(name, help=scenarios.describe(name))
        if wanted is not None and name != wanted:
            # `labkit scenario NAME ...` parses only NAME's roles: importing every other
            # scenario (and what it imports: numpy, scapy) would cost each lab process
            # a few tenths of a second of CPU at start
            continue
        roles = scenarios.roles(name)
        rs = sp.add_subparsers(dest="role", metavar="ROLE", required=True)
        for role_name, role in roles.items():
            rp = rs.add_parser(role_name, help=role.help, description=role.help)
            scenarios.add_conventional(rp, role_name)
            role.add_arguments(rp)
            rp.set_defaults(func=role.run)


def _named_on_command_line(known: list[str]) -> str | None:
    """The scenario this process was started to run (`... scenario NAME ROLE ...`); ""
    when `labkit` was started for another command (send, serve, run: no scenario's roles
    are parsed); None when every scenario may be (help, --list, the CLI as a library)."""
    from pathlib import Path
    argv = sys.argv[1:]
    started_as_labkit = Path(sys.argv[0]).name == "labkit" or sys.argv[0].endswith(
        str(Path("toolkit", "cli.py")))
    if started_as_labkit and argv and "scenario" not in argv:
        return ""
    if "scenario" in argv:
        i = argv.index("scenario")
        if i + 1 < len(argv) and argv[i + 1] in known:
            return argv[i + 1]
    return None


def _list(args) -> int:
    from .. import scenarios
    if not args.list:
        print("labkit scenario: give a scenario name and a role, or --list", file=sys.stderr)
        return 2
    for name in scenarios.names():
        print(f"{name:20s} {scenarios.describe(name)}")
        for role_name, role in scenarios.roles(name).items():
            print(f"  {role_name:18s} {role.help}")
    return 0
