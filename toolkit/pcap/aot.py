"""Build the analyzer's kernels ahead of time: `python -m toolkit.pcap.aot` (`make aot`).

Runs the analyzer just in time on the saved captures (every output: summaries, states,
per-packet CSV, JSON Lines, Parquet, the DataFrame), which compiles each kernel for the
argument types it is really called with (and fills numba's cache, the fallback); then
compiles those same functions and types with numba.pycc into one extension module,
toolkit/pcap/_kernels*.so, and writes the index jit.py looks calls up in. Up to date (the
same sources and versions): exits at once. No C compiler, or any failure: says why and
exits 0, and the analyzer runs just in time as before (`--strict`: exit 1 instead).

Three settings pycc has no option for, set here for this build only: each export is
compiled with its own copy of the compiler's flags (as numba's JIT does), the wrappers
release the GIL (as the kernels' njit(nogil=True), so two threads decode at once), and the
code is generated for this machine's CPU and the features it reports (what numba's JIT
does; pycc's default is the generic CPU, its "host" a model name that a virtual machine
may not fully provide).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from . import jit

REPO = jit.PACKAGE.parent


def warm_up(captures: list[Path]) -> int:
    """Every analysis output on each capture, just in time; returns the captures used."""
    import toolkit

    done = 0
    with tempfile.TemporaryDirectory(prefix="labkit-aot-") as tmp:
        for path in captures:
            a = toolkit.analyze(path)
            if a.error is not None:
                continue
            a.summary()
            _ = a.tcp_states, a.udp_flows, a.packets     # each computed on first use
            for fmt in ("csv", "json"):
                with open(os.path.join(tmp, "out"), "wb") as out:
                    a.write_packets(out, fmt)
            a.write_packets(os.path.join(tmp, "out.parquet"), "parquet")
            done += 1
    return done


def exports() -> list[dict]:
    """One entry per (kernel, argument types) compiled so far in this process."""
    out = []
    for c in jit.declared():
        if c.kind != "kernel" or c.dispatcher is None:
            continue
        for argtypes in c.dispatcher.signatures:
            try:
                key = tuple(jit.type_key(t) for t in argtypes)
            except TypeError as e:       # an argument type the lookup has no key for
                print(f"labkit: {c.__module__}.{c.__name__}{argtypes}: stays just in time "
                      f"({e})", file=sys.stderr)
                continue
            out.append({"module": c.__module__, "name": c.__name__, "key": key,
                        "symbol": f"k{len(out)}", "compiled": c,
                        "signature": c.dispatcher.overloads[argtypes].signature})
    return out


def _build_settings() -> None:
    import numba.pycc.compiler as pycc_compiler
    from numba.core import codegen
    from numba.core.compiler import Flags, compile_extra

    def release_gil():
        flags = Flags()
        flags.release_gil = True
        return flags

    def own_flags(typingctx, targetctx, func, args, return_type, flags, *a, **k):
        # pycc compiles every export with one Flags object, and numba's inliner turns SSA
        # off in the flags it is given (inline_closurecall.run_untyped_passes): the exports
        # after a kernel with inlined helpers would be typed without SSA and fail. Each
        # gets its own copy, as each njit compilation has.
        return compile_extra(typingctx, targetctx, func, args, return_type, flags.copy(),
                             *a, **k)

    pycc_compiler.Flags = release_gil
    pycc_compiler.compile_extra = own_flags
    codegen.AOTCPUCodegen._customize_tm_features = \
        lambda self: self._get_host_cpu_features()


def compile_module(entries: list[dict], out_dir: Path) -> Path:
    """The extension module, built in out_dir; returns its path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # numba.pycc's pending-deprecation note
        from numba.pycc import CC
    _build_settings()
    cc = CC(jit.MODULE.rsplit(".", 1)[1])
    cc.output_dir = str(out_dir)
    cc.target_cpu = "host"
    for e in entries:
        cc.export(e["symbol"], e["signature"])(e["compiled"].py_func)
    cc.compile()
    return out_dir / cc.output_file


def up_to_date() -> bool:
    try:
        index = json.loads(jit.INDEX.read_text())
        return (index.get("key_format") == jit.KEY_FORMAT
                and index.get("versions") == jit.versions()
                and index.get("sources") == jit.source_hash()
                and (jit.HERE / index["file"]).exists())
    except (OSError, ValueError, KeyError):
        return False


def _loads(so: Path) -> str | None:
    """Import the module in a child (a broken build must not take this process down)."""
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location(sys.argv[1], "
            "sys.argv[2]); m = u.module_from_spec(s); s.loader.exec_module(m); "
            "assert 'numba' not in sys.modules, 'it imported numba'")
    p = subprocess.run([sys.executable, "-c", code, jit.MODULE, str(so)],
                       capture_output=True, text=True, timeout=120)
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["crashed"])[-1]


def build(captures: list[Path]) -> str:
    """Build and install the module and its index; returns what was done."""
    sources = jit.source_hash()
    os.environ["LABKIT_AOT"] = "0"           # this process compiles just in time
    jit.load_numba()
    if not warm_up(captures):
        raise RuntimeError("no capture to run the analyzer on: "
                           + ", ".join(map(str, captures)))
    entries = exports()
    with tempfile.TemporaryDirectory(prefix="labkit-aot-") as tmp:
        so = compile_module(entries, Path(tmp))
        why = _loads(so)
        if why:
            raise RuntimeError(f"the compiled module does not load: {why}")
        final = jit.HERE / so.name
        staged = final.with_name(final.name + ".new")
        shutil.copyfile(so, staged)
        for old in jit.HERE.glob(jit.MODULE.rsplit(".", 1)[1] + ".*.so"):
            old.unlink()
        jit.INDEX.unlink(missing_ok=True)    # never an index naming a module being replaced
        os.replace(staged, final)
    index = {"file": final.name, "key_format": jit.KEY_FORMAT, "versions": jit.versions(),
             "sources": sources,
             "kernels": [{k: e[k] for k in ("module", "name", "key", "symbol")}
                         for e in entries]}
    staged = jit.INDEX.with_name(jit.INDEX.name + ".new")
    staged.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(staged, jit.INDEX)
    kernels = {(e["module"], e["name"]) for e in entries}
    return f"{len(entries)} compiled functions of {len(kernels)} kernels"


def default_captures() -> list[Path]:
    return sorted((REPO / "captures").glob("*/*.pcap*"))


def missing_tools() -> str | None:
    """What the build needs besides numba: a C compiler and Python's headers (pycc builds
    a small C part of the module with them)."""
    import sysconfig

    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")):
        return "C compiler (cc, gcc; `make test` as root installs gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return f"Python.h in {sysconfig.get_paths()['include']} (Debian: python3-dev)"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toolkit.pcap.aot",
                                 description="compile the analyzer's kernels ahead of time")
    ap.add_argument("captures", nargs="*", type=Path,
                    help="captures to run the analyzer on first (default: captures/*/)")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when the build fails (default: say why, exit 0)")
    args = ap.parse_args(argv)
    if not args.force and up_to_date():
        print("labkit: the analyzer's kernels are compiled ahead of time, up to date")
        return 0
    print("labkit: compiling the analyzer's kernels for this machine (a few minutes, once)",
          flush=True)
    missing = missing_tools()
    if missing:
        print(f"labkit: no {missing}: the analyzer's kernels stay just in time (numba, "
              "cached), which loads numba in every analysis", file=sys.stderr)
        return 1 if args.strict else 0
    try:
        done = build(args.captures or default_captures())
    except Exception as e:                   # noqa: BLE001 - a build that fails falls back
        print(f"labkit: ahead-of-time build failed ({type(e).__name__}: {e}); the analyzer's "
              "kernels stay just in time (numba, cached)", file=sys.stderr)
        return 1 if args.strict else 0
    print(f"labkit: {done}, in {jit.HERE / jit.INDEX.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
