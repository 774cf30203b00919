"""The runner's small scenario library: socket programs a lab needs that `labkit send` and
`labkit serve` are not (a server that never calls accept, a client whose host vanishes, a
raw SYN sender, ...). Each is written the way a student's own program would be, so the lab
can show its code next to its capture.

A scenario is a module here with a `ROLES` mapping, role name ("server" or "client") to a
Role: how to add its options to an argparse parser, and the function that runs it. The
conventions every role keeps, so the lab runner treats it like the endpoints:

- the server role takes `-p/--port` and `--json-file FILE`, and prints a line starting with
  "Server listening" once it is ready for clients (the runner waits for it);
- the client role takes the server's address, `-p/--port`, `--cport` and `--json-file FILE`
  (a client with no source port to fix, the SYN flood, says so: Role.takes_cport False,
  and refuses `--cport`; the runner then passes none);
- SIGINT ends either cleanly with its report written (base.Report);
- exit status 0 when the scenario went as scripted, 1 when it did not, 2 for bad options.

Run one by hand with `labkit scenario NAME ROLE ...`; in a lab, `scenario = "NAME"` on a
[[flow]] (its `send` and `serve` tables are then the roles' options). A scenario without a
server role (the SYN flood) aims at another flow's server.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

# name -> module (imported only when used: the lab runner lists them without importing)
REGISTRY: dict[str, str] = {
    "backlog": "backlog",
    "syn-flood": "syn_flood",
    "abrupt_close": "abrupt_close",
    "states": "states",
    "udp-file": "udp_file",
}


@dataclass(frozen=True)
class Role:
    help: str
    add_arguments: Callable          # (parser) -> None, beyond the conventional options
    run: Callable                    # (args) -> exit status
    takes_cport: bool = True         # False: a client with no source port to fix (the
    #                                  runner passes no --cport; the role refuses one)
    check: Callable | None = None    # (args) -> why options given do nothing together, or
    #                                  None: the role refuses them (exit 2), and a lab file
    #                                  that sets them is refused when it is loaded


class ScenarioError(ValueError):
    pass


def names() -> list[str]:
    return sorted(REGISTRY)


def roles(name: str) -> dict[str, Role]:
    if name not in REGISTRY:
        raise ScenarioError(f"{name!r}: no such scenario; known: {', '.join(names()) or 'none'}")
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}").ROLES


def describe(name: str) -> str:
    """The first line of the scenario module's docstring, read without importing it."""
    import ast
    from pathlib import Path
    path = Path(__file__).with_name(f"{REGISTRY[name]}.py")
    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError):
        doc = None
    return doc.strip().splitlines()[0] if doc else ""


def add_conventional(parser, role: str) -> None:
    """The options the runner passes to every scenario role."""
    if role == "client":
        parser.add_argument("host", help="the server's address")
        parser.add_argument("--cport", type=int, metavar="PORT",
                            help="local (source) port (default: ephemeral)")
    parser.add_argument("-p", "--port", type=int, default=5201, help="the server's port")
    parser.add_argument("--proto", choices=["tcp", "udp"], default="tcp",
                        help="set by the runner from the flow; a scenario may refuse one")
    from ..endpoints.options import add_output_options
    add_output_options(parser)
