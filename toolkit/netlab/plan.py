"""A plan: the commands that build a piece of the lab network, each with its undo.

Pure data, so tests check plans without privileges. A Step runs `argv`, inside network
namespace `netns` when given (via `ip netns exec`, or setns by the executor), and records
`undo` (an argv, or None when removing something else already removes this, e.g. a veth
end that disappears with its namespace). `why` is a short human reason shown by
`--dry-run`-style listings and in error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    undo: tuple[str, ...] | None = None
    netns: str | None = None
    why: str = ""
    stdin: str | None = None      # e.g. an nftables ruleset fed to `nft -f -`

    def render(self) -> str:
        where = f"[{self.netns}] " if self.netns else ""
        return where + " ".join(self.argv)


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def add(self, *argv: str, undo: tuple[str, ...] | list[str] | None = None,
            netns: str | None = None, why: str = "", stdin: str | None = None) -> Step:
        step = Step(tuple(argv), tuple(undo) if undo else None, netns, why, stdin)
        self.steps.append(step)
        return step

    def extend(self, other: Plan) -> Plan:
        self.steps.extend(other.steps)
        return self

    def __iter__(self):
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def render(self) -> str:
        return "\n".join(s.render() for s in self.steps)
