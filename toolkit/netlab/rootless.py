"""Root, or rootless through a user namespace: how the kit gets to build a network.

Rootless (ARCHITECTURE decision 7): an unprivileged process may create a user namespace
in which it is uid 0, with a mount namespace and a network namespace owned by it. There it
holds CAP_NET_ADMIN and CAP_NET_RAW over every network namespace it creates, so `ip netns`,
veth, tc, nftables and dumpcap all work. A *holder* process keeps those namespaces alive:

    unshare --user --map-root-user --mount --net --propagation private  sh -c '...sleep'

Its own network namespace matters: `ip netns add` returns to the caller's namespace with
setns(), which is refused for the host's namespace (owned by the initial user namespace)
but allowed for one our user namespace owns. /run is replaced by a private tmpfs so
`ip netns` can keep its bind mounts in /run/netns. Every command then runs under
`nsenter --target <holder> --user --mount`. The holder dies with us (PR_SET_PDEATHSIG), and
with it every namespace of the run: a rootless run leaves nothing behind even after SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
_HOLDER_SCRIPT = ("mount -t tmpfs lk-run /run && mkdir -p /run/netns && "
                  "echo labkit-userns-ready && exec sleep 2147483647")


class PrivilegeError(RuntimeError):
    """Neither root nor a usable user namespace; the message says what is missing and how
    to get it."""


@dataclass(frozen=True)
class Privilege:
    mode: str            # "root" or "rootless"
    detail: str

    def as_dict(self) -> dict:
        return {"mode": self.mode, "detail": self.detail}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_blockers() -> list[str]:
    """Kernel settings that forbid unprivileged user namespaces, each with its remedy."""
    out = []
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        out.append("kernel.unprivileged_userns_clone = 0 (Debian/Ubuntu): "
                   "sudo sysctl -w kernel.unprivileged_userns_clone=1")
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        out.append("user.max_user_namespaces = 0: sudo sysctl -w user.max_user_namespaces=10000")
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        out.append("AppArmor restricts unprivileged user namespaces (Ubuntu 24.04+): "
                   "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            out.append(f"`{tool}` is missing: install util-linux")
    return out


def try_userns(timeout: float = 5.0) -> str | None:
    """None when a user+mount+net namespace can be made here; else what went wrong."""
    if not shutil.which("unshare"):
        return "`unshare` is missing (util-linux)"
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--net",
                               "--propagation", "private", "sh", "-c", "mount -t tmpfs x /run"],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if done.returncode == 0 else (done.stderr.strip() or f"status {done.returncode}")


def detect(prefer: str = "auto") -> Privilege:
    """Root when we are root; else rootless when the kernel allows it; else PrivilegeError.
    prefer="rootless" uses a user namespace even as root (how the tests cover that path)."""
    if prefer not in ("auto", "root", "rootless"):
        raise ValueError(f"privilege mode {prefer!r}: expected auto, root or rootless")
    if os.geteuid() == 0 and prefer != "rootless":
        return Privilege("root", "running as root")
    if prefer == "root":
        raise PrivilegeError("root was asked for, but this process is not root: run with sudo")
    problem = try_userns()
    if problem is None:
        return Privilege("rootless", "unprivileged user namespace with its own mount namespace")
    blockers = userns_blockers()
    raise PrivilegeError(
        "building a lab network needs CAP_NET_ADMIN: either run as root (sudo), or allow "
        "unprivileged user namespaces. Creating one failed here: " + problem
        + ("".join(f"\n  - {b}" for b in blockers) if blockers else ""))


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Run in a child between fork and exec (Popen's preexec_fn): the kernel sends it `sig`
    when the parent dies, even by SIGKILL. The setting survives exec (of anything but a
    set-user-ID program), so `ip netns exec` and nsenter pass it on."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


class Holder:
    """The process that owns the kit's user, mount and net namespaces when rootless."""

    def __init__(self, timeout: float = 10.0):
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "--net",
             "--propagation", "private", "sh", "-c", _HOLDER_SCRIPT],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=die_with_parent)
        line = self.proc.stdout.readline()       # sh writes it after /run is ours
        if line.strip() != "labkit-userns-ready":
            err = self.stop()
            raise PrivilegeError(f"could not set up the user namespace: {err or 'no answer'}")

    @property
    def prefix(self) -> tuple[str, ...]:
        # entering a mount namespace moves the working directory to its root: --wd keeps
        # ours, so the relative paths a lab passes (runs/<lab>-<time>/...) stay valid
        return ("nsenter", f"--target={self.proc.pid}", "--user", "--mount", "--net",
                "--preserve-credentials", f"--wd={os.getcwd()}")

    def stop(self) -> str:
        """Kill the holder; its namespaces (and every lab namespace in them) go with it."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            err = ""
        return (err or "").strip()
