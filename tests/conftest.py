"""Shared fixtures: the conformance corpus beside the repository, tool probes."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_or_skip() -> Path:
    if not (CORPUS / "files").is_dir():
        pytest.skip(f"conformance corpus not found at {CORPUS} (it sits beside the repo in CI)")
    return CORPUS


def corpus_names() -> list[str]:
    if not (CORPUS / "files").is_dir():
        return []
    return sorted(p.name.split(".")[0] for p in (CORPUS / "files").iterdir())


def corpus_file(name: str) -> Path:
    corpus_or_skip()
    matches = sorted((CORPUS / "files").glob(name + ".*"))
    assert matches, f"no corpus file for {name}"
    return matches[0]


def tshark_or_skip() -> str:
    exe = shutil.which("tshark")
    if not exe:
        pytest.skip("tshark is not installed (make test installs it when run as root)")
    return exe


def is_root() -> bool:
    return os.geteuid() == 0


def network_or_skip() -> str:
    """How this process builds a lab: "root", or "rootless" through an unprivileged user
    namespace; skips, saying what is missing, where neither is possible."""
    from toolkit.netlab import rootless
    try:
        return rootless.detect().mode
    except rootless.PrivilegeError as e:
        pytest.skip(str(e))


def as_nobody_or_skip() -> str:
    """The interpreter to run a rootless lab with as user nobody (runuser), from a root
    test process; skips, saying what is missing, where that cannot be done."""
    if not is_root():
        pytest.skip("switching to user nobody needs root (run as an ordinary user, the lab "
                    "tests themselves build rootless labs)")
    if not shutil.which("runuser"):
        pytest.skip("runuser (util-linux) is missing")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to run the rootless test as")
    probe = subprocess.run(["runuser", "-u", "nobody", "--", "unshare", "--user",
                            "--map-root-user", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel forbids unprivileged user namespaces: {probe.stderr.strip()}")
    # the venv's interpreter may sit under a root-only home: the netlab and capture are
    # stdlib-only, so the system python3 runs them
    python = shutil.which("python3", path="/usr/bin:/bin")
    if not python:
        pytest.skip("no system python3 for the unprivileged user")
    return python


@pytest.fixture(scope="module")
def lab():
    """An a-r-b lab shared by a module's tests (modules that need more define their own)."""
    network_or_skip()
    from toolkit import netlab
    with netlab.up(netlab.default_topology()) as lab:
        yield lab


# ---- the suite leaves nothing of the kit behind (issue: no namespace, veth or table) ----

def _kit_leftovers() -> set[str]:
    """Network namespaces, links and nftables tables named with the kit's prefixes, in
    this (the caller's) namespace."""
    import subprocess

    found: set[str] = set()
    if not is_root():
        return found
    for argv, parse in (
            (["ip", "netns", "list"], lambda line: line.split()[0]),
            (["ip", "-o", "link", "show"], lambda line: line.split(":")[1].strip().split("@")[0]),
            (["nft", "list", "tables"], lambda line: line.split()[-1])):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in out.splitlines():
            if not line.strip():
                continue
            name = parse(line)
            if name.startswith(("lk", "labkit_")):
                found.add(f"{argv[0]} {argv[1] if argv[1] != '-o' else 'link'}: {name}")
    return found


def _is_worker(config) -> bool:
    """A pytest-xdist worker (make test runs two): while one worker ends, the other's labs
    are still up, so only the controlling process, before any worker starts and after
    every one ended, looks for what the suite left."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    if not _is_worker(session.config):
        session.config._kit_before = _kit_leftovers()


def pytest_sessionfinish(session, exitstatus):
    if _is_worker(session.config):
        return
    before = getattr(session.config, "_kit_before", set())
    left = _kit_leftovers() - before
    if left:
        print("\nthe test suite left kit resources behind:\n  " + "\n  ".join(sorted(left)))
        session.exitstatus = 1


@contextlib.contextmanager
def dead_runs_lock():
    """Held by a test from the moment it leaves a dead run (a runner killed with SIGKILL)
    until its own `labkit clean` has been checked: make test runs two test files at once,
    and the other's `labkit clean` would otherwise remove that run first (every dead run
    on the machine is its to clean)."""
    import fcntl
    import tempfile
    with open(Path(tempfile.gettempdir()) / "labkit-tests-dead-runs.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def as_nobody(*argv, timeout=300, env=()) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "nobody", "--", "env", *env, *argv],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def nobody_python(tmp_path_factory, request):
    """(home, python) for user nobody: a venv of its own, made from the system python3 and
    the wheels this venv was installed from (downloaded once into a folder nobody can read;
    pip takes them from its cache). The suite's own interpreter may live where an ordinary
    user cannot read it (a pyenv under /root). Made once per run: the two test processes
    of make test (pytest-xdist) share it, the second waiting for the first."""
    import fcntl
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if _is_worker(request.config) else base
    with open(shared / "nobody.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        home = shared / "nobody"
        if (home / "skipped").exists():
            pytest.skip((home / "skipped").read_text())
        if (home / "made").exists():
            return NobodyPython(home, home / "venv" / "bin" / "python",
                                home / "numba-cache")
        try:
            made = _make_nobody_python(home)
        except pytest.skip.Exception as e:
            home.mkdir(exist_ok=True)
            (home / "skipped").write_text(str(e.msg))
            raise
        (home / "made").touch()
        return made


def _make_nobody_python(home: Path) -> NobodyPython:
    system_python = as_nobody_or_skip()
    home.mkdir(exist_ok=True)
    os.chmod(home, 0o777)
    for parent in home.parents:                  # pytest's tmp folders are 0700
        if str(parent).startswith("/tmp/pytest-of-"):
            os.chmod(parent, 0o755)
    if as_nobody("test", "-r", str(REPO / "toolkit" / "cli.py")).returncode != 0:
        pytest.skip(f"user nobody cannot read this checkout ({REPO})")
    wheels = home / "wheels"
    wheels.mkdir()
    req = wheels / "requirements.txt"
    req.write_text("".join(f"{r}\n" for r in runtime_requirements()))
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels),
                          "-r", str(req), "--only-binary", ":all:"],
                         capture_output=True, text=True, timeout=600)
    if got.returncode != 0:
        pytest.skip(f"the wheels of this venv cannot be had for user nobody: "
                    f"{got.stderr.strip()[-300:]}")
    subprocess.run(["chmod", "-R", "a+rX", str(wheels)], check=True)
    venv = home / "venv"
    made = as_nobody(system_python, "-m", "venv", str(venv), env=[f"HOME={home}"])
    if made.returncode != 0:
        pytest.skip(f"the system python cannot make a venv: {made.stderr.strip()[-300:]}")
    done = as_nobody(str(venv / "bin" / "pip"), "install", "-q", "--no-index",
                      "--find-links", str(wheels), "-r", str(req), env=[f"HOME={home}"],
                      timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return NobodyPython(home, venv / "bin" / "python", _numba_cache_for_nobody(home))


def runtime_requirements() -> list[str]:
    """labkit's own dependencies and theirs, pinned to the versions installed here (not
    the test or notebook extras: an ordinary user runs labkit, not its test suite)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    todo = [Requirement(r) for r in metadata.requires("labkit") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue                      # an extra's requirement, or another platform's
        name = canonicalize_name(req.name)
        if name in pinned:
            continue
        dist = metadata.distribution(req.name)
        pinned[name] = dist.version
        todo += [Requirement(r) for r in dist.requires or []]
    return sorted(f"{n}=={v}" for n, v in pinned.items())


@dataclass(frozen=True)
class NobodyPython:
    home: Path
    python: Path
    numba_cache: Path

    def env(self) -> list[str]:
        """HOME, this checkout on the path, and numba's kernels compiled already."""
        return [f"HOME={self.home}", f"PYTHONPATH={REPO}", f"NUMBA_CACHE_DIR={self.numba_cache}"]


def _numba_cache_for_nobody(home: Path) -> Path:
    """The kernels this suite's runs compiled (numba's cache beside each module, where
    nobody may not write) copied to where numba looks when NUMBA_CACHE_DIR is set:
    <dir>/<folder>_<sha1 of the folder's path> (numba.core.caching's user-provided
    locator). Same source files, same numba: they load instead of compiling for a minute.
    Whatever is not there nobody compiles into it itself."""
    import hashlib
    cache = home / "numba-cache"
    for pycache in (REPO / "toolkit").rglob("__pycache__"):
        files = [f for f in pycache.iterdir() if f.suffix in (".nbi", ".nbc")]
        if not files:
            continue
        src = str(pycache.parent.resolve())
        dest = cache / f"{pycache.parent.name}_{hashlib.sha1(src.encode()).hexdigest()}"
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / f.name)
    cache.mkdir(exist_ok=True)
    subprocess.run(["chmod", "-R", "a+rwX", str(cache)], check=True)
    return cache
