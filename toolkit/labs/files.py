"""A lab's own files: made in the run folder before any flow starts, never committed.

    [files]
    "transfer.bin" = {size = "200K"}      # a file of that many bytes, from the lab's seed
    "received-tcp" = {folder = true}      # an empty folder (e.g. `labkit serve --receive-dir`)

Everything lands in `files/` of the run folder, and a flow's options name it `{files}`
(`send = {file = "{files}/transfer.bin"}`): the runner puts the folder's absolute path in
its place when it starts the flow's programs. A file's bytes are SHAKE-256 of the lab's
seed and the file's name (FIPS 202): the same seed makes the same bytes on every machine and
Python, a seed or name apart makes others, and nothing compresses them away. Names are plain
(no path, no leading dot); sizes at most MAX_BYTES, so a typo cannot fill the disk.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .. import units

FOLDER = "files"                 # inside the run folder
PLACEHOLDER = "{files}"          # in a flow's option values: that folder's absolute path
MAX_BYTES = 64 << 20
MAX_ENTRIES = 16
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class FilesError(ValueError):
    """A [files] entry is wrong; the message names its key."""


@dataclass(frozen=True)
class FileSpec:
    name: str
    size_bytes: int | None       # None: an empty folder

    @property
    def folder(self) -> bool:
        return self.size_bytes is None


def parse(table, where: str = "files") -> tuple[FileSpec, ...]:
    if table is None:
        return ()
    if not isinstance(table, dict):
        raise FilesError(f"{where}: expected a table of name = {{size = \"200K\"}} or "
                         f"{{folder = true}}")
    if len(table) > MAX_ENTRIES:
        raise FilesError(f"{where}: {len(table)} entries; at most {MAX_ENTRIES}")
    out = []
    for name, entry in table.items():
        key = f"{where}.{name}" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'{where}."{name}"'
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise FilesError(f"{key}: a plain name of letters, digits, '.', '_' and '-' "
                             f"(not starting with '.' or '-', at most 64), no path")
        if not isinstance(entry, dict) or set(entry) - {"size", "folder"} or \
                ("size" in entry) == bool(entry.get("folder")):
            raise FilesError(f"{key}: expected {{size = \"200K\"}} (a file made from the "
                             f"seed) or {{folder = true}} (an empty folder)")
        if "folder" in entry and entry["folder"] is not True:
            raise FilesError(f"{key}.folder: {entry['folder']!r}; expected true")
        size = None
        if "size" in entry:
            try:
                size = units.size(entry["size"])
            except units.UnitError as e:
                raise FilesError(f"{key}.size: {e}") from None
            if not 0 <= size <= MAX_BYTES:
                raise FilesError(f"{key}.size: {size} bytes; at most {MAX_BYTES} "
                                 f"({MAX_BYTES >> 20} MiB)")
        out.append(FileSpec(name, size))
    return tuple(out)


def content(seed: int, name: str, size: int) -> bytes:
    """The bytes of file `name` in a lab with this seed (see the module doc)."""
    return hashlib.shake_256(f"labkit file {seed} {name}".encode()).digest(size)


def make(specs: tuple[FileSpec, ...], run_dir: Path, seed: int) -> list[dict]:
    """Make the files and folders in run_dir/files; what was made, for run.json."""
    if not specs:
        return []
    folder = Path(run_dir) / FOLDER
    folder.mkdir(exist_ok=True)
    made = []
    for f in specs:
        path = folder / f.name
        if f.folder:
            path.mkdir()
            made.append({"path": f"{FOLDER}/{f.name}", "folder": True})
            continue
        data = content(seed, f.name, f.size_bytes)
        with open(path, "xb") as out:
            out.write(data)
        made.append({"path": f"{FOLDER}/{f.name}", "bytes": f.size_bytes,
                     "sha256": hashlib.sha256(data).hexdigest()})
    return made


def expand(argv: list[str], run_dir: Path) -> list[str]:
    """A flow's command line with {files} made the run's files folder (absolute)."""
    where = str((Path(run_dir) / FOLDER).resolve())
    return [a.replace(PLACEHOLDER, where) for a in argv]


def mentions(obj) -> bool:
    """Does a flow's option table say {files} anywhere?"""
    if isinstance(obj, dict):
        return any(mentions(v) for v in obj.values())
    if isinstance(obj, list):
        return any(mentions(v) for v in obj)
    return isinstance(obj, str) and PLACEHOLDER in obj
