"""Compiled kernels: ahead of time into an extension module, or numba's njit with its cache.

The analyzer's loops are numba functions (ARCHITECTURE decision 3). Three decorators here
declare them without importing numba: `kernel` (called from Python; releases the GIL while
it runs, so two threads can decode at once), `inline` (a small helper numba inlines into
its callers) and `helper` (a function only kernels call).

Two ways to run a kernel:
- Ahead of time (aot.py, `make venv` / `make aot`): every kernel, for each set of argument
  types the analyzer was seen calling it with, compiled by numba.pycc for this machine's
  CPU into toolkit/pcap/_kernels*.so, with an index (_kernels.json) of which compiled
  function takes which argument types. Loading it costs a shared library's load: numba,
  llvmlite and LLVM are never imported, which saved 0.5 s and 107 MB of each analysis
  of a 1M-packet capture here (numba's import alone peaks at 90 MB resident, the LLVM it
  links cached code through at more). The index names the versions it was built with and
  a hash of the analyzer's sources: after any change to them (or to numpy, numba, Python)
  it is not used until rebuilt. `LABKIT_AOT=0` turns it off.
- Just in time, for any call the module has no function for (argument types never seen at
  build time, no build, a C compiler missing): numba is imported then, every declared
  function becomes an njit dispatcher (cache=True: compiled once per machine, next to the
  module), and the process goes on with those.

Called with argument types the module does not have, a compiled function would misread
memory (its wrapper checks an array's item size, not its type), so the key a call is
looked up by mirrors numba's own typing of the arguments (`arg_key`; the test suite
checks the two agree): dtype, dimensions, layout, writability.

Loading a kernel from numba's cache costs little, but numba first "refreshes" its target
context, which imports and registers the typing and lowering of every feature numba has
(unicode, dicts, random, linear algebra, ...): about 0.2 s. None of that is needed to link
machine code compiled already: the compiler refreshes the context itself before it
compiles, and the code loaded needs only numba's runtime (NRT), initialized here. So our
dispatchers load without the refresh, if this numba's cache has the shape it was written
against; otherwise numba's own load runs. Compiling them all takes a minute or two on a
small machine; the process that has to says so, at a terminal, so that a first
`labkit analyze` does not look hung.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import sys
import threading
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
INDEX = HERE / "_kernels.json"
MODULE = "toolkit.pcap._kernels"
# the sources a compiled kernel depends on: its own module, the helpers it inlines, and the
# constants it reads (numba freezes a global's value into the machine code)
SOURCE_DIRS = ("pcap", "analysis")
BUILDER = ("jit.py", "aot.py")       # how kernels are called and built, not what they do
KEY_FORMAT = 1                       # arg_key's shape: an index with another is not read

_DECLARED: list[Compiled] = []       # in declaration order
_numba: dict = {}                    # "loaded": True once numba is imported
_aot: dict = {}                      # "table": {(module, name): {key: function}}, "why"
_lock = threading.RLock()


class Compiled:
    """A function numba compiles: the Python function, how, and (once made) its dispatcher."""

    def __init__(self, fn, kind: str):
        self.py_func, self.kind = fn, kind
        self.dispatcher = None
        self.compiled = None             # {arg key: ahead-of-time function}, once looked up
        self.params = inspect.signature(fn)
        self.__name__, self.__qualname__ = fn.__name__, fn.__qualname__
        self.__module__, self.__doc__, self.__wrapped__ = fn.__module__, fn.__doc__, fn
        _DECLARED.append(self)

    def __call__(self, *args, **kwargs):
        if self.dispatcher is None:
            if self.compiled is None:
                self.compiled = aot_table().get((self.__module__, self.__name__), {})
            if self.compiled:
                if kwargs:                   # a compiled function takes its arguments in order
                    bound = self.params.bind(*args, **kwargs)
                    bound.apply_defaults()
                    args, kwargs = bound.args, {}
                try:
                    fn = self.compiled.get(arg_key(args))
                except TypeError:        # an argument numba's typing has no mirror for here
                    fn = None
                if fn is not None:
                    return fn(*args)
            load_numba()
        return self.dispatcher(*args, **kwargs)

    def __repr__(self):
        return f"<{self.kind} {self.__module__}.{self.__qualname__}>"


def kernel(fn) -> Compiled:
    """A loop called from Python: njit(cache=True, nogil=True), or compiled ahead of time."""
    return Compiled(fn, "kernel")


def inline(fn) -> Compiled:
    """A small helper inlined into the kernels that call it: njit(inline="always")."""
    return Compiled(fn, "inline")


def helper(fn) -> Compiled:
    """A function kernels call (not inlined): njit(cache=True)."""
    return Compiled(fn, "helper")


# --- the key a call is looked up by ---------------------------------------------------

_INT64 = (-(1 << 63), 1 << 63)


def arg_key(args) -> tuple:
    """What numba's typeof distinguishes in these arguments, as plain data (TypeError for
    an argument outside what the kernels take: then numba types it)."""
    return tuple(_key(v) for v in args)


def _key(v):
    t = type(v)
    if t is np.ndarray:
        if v.dtype.kind not in "biufc" or not v.dtype.isnative:
            raise TypeError(v.dtype)
        f = v.flags
        layout = "C" if f.c_contiguous else "F" if f.f_contiguous else "A"
        # no alignment: numba's typeof never tells an unaligned array from an aligned one
        return ("a", v.dtype.str, v.ndim, layout, bool(f.writeable))
    if t is bool or t is np.bool_:
        return ("s", "|b1")
    if t is int:
        if _INT64[0] <= v < _INT64[1]:
            return ("s", "<i8")
        if 0 <= v < 1 << 64:
            return ("s", "<u8")
        raise TypeError("an integer wider than 64 bits")
    if t is float:
        return ("s", "<f8")
    if isinstance(v, np.generic) and v.dtype.kind in "biuf":
        return ("s", v.dtype.str)
    if t is tuple:
        return ("t", *(_key(x) for x in v))
    if v is None:
        return ("n",)
    raise TypeError(t)


def type_key(t) -> tuple:
    """The same key made from numba's type of an argument (at build time)."""
    from numba import types as nt
    from numba.np.numpy_support import as_dtype

    if isinstance(t, nt.Array):
        return ("a", as_dtype(t.dtype).str, t.ndim, t.layout, bool(t.mutable))
    if isinstance(t, (nt.Integer, nt.Float, nt.Boolean)):
        return ("s", as_dtype(t).str)
    if isinstance(t, nt.BaseTuple):
        return ("t", *(type_key(x) for x in t))
    if isinstance(t, nt.NoneType):
        return ("n",)
    raise TypeError(f"no key for numba type {t}")


def _tuples(x):
    return tuple(_tuples(y) for y in x) if isinstance(x, list) else x


# --- ahead of time ----------------------------------------------------------------------

def source_hash() -> str:
    h = hashlib.sha256()
    for d in SOURCE_DIRS:
        for p in sorted((PACKAGE / d).glob("*.py")):
            if p.name in BUILDER:
                continue
            h.update(f"{d}/{p.name}\0".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def versions() -> dict:
    """What a compiled module is bound to besides our sources."""
    return {"python": sys.version, "numpy": np.__version__, "numba": _numba_version()}


def _numba_version() -> str | None:
    """numba's installed version, without importing numba: the name of its dist-info
    folder beside the package, as pip installs it. importlib.metadata, the general way,
    costs every command 40 ms of imports and a walk over every installed distribution."""
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.origin:
        return None
    found = [p.name[len("numba-"):-len(".dist-info")]
             for p in Path(spec.origin).parent.parent.glob("numba-*.dist-info")]
    if len(found) == 1:
        return found[0]
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("numba")
    except PackageNotFoundError:
        return None


def aot_table() -> dict:
    """{(module, function name): {arg key: compiled function}}; empty when there is no
    usable build (the reason in aot_status())."""
    with _lock:
        if "table" in _aot:
            return _aot["table"]
        table, why = {}, None
        try:
            if os.environ.get("LABKIT_AOT", "1") == "0":
                why = "turned off (LABKIT_AOT=0)"
            elif not INDEX.exists():
                why = "not built (make aot)"
            else:
                index = json.loads(INDEX.read_text())
                if index.get("key_format") != KEY_FORMAT:
                    why = "built by another version of labkit (make aot)"
                elif index.get("versions") != versions():
                    why = "built for other versions of Python, numpy or numba (make aot)"
                elif index.get("sources") != source_hash():
                    why = "built from other sources of the analyzer (make aot)"
                else:
                    spec = importlib.util.spec_from_file_location(MODULE, HERE / index["file"])
                    mod = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(mod)
                    for e in index["kernels"]:
                        table.setdefault((e["module"], e["name"]), {})[_tuples(e["key"])] = \
                            getattr(mod, e["symbol"])
        except (OSError, ValueError, KeyError, ImportError, AttributeError) as e:
            table, why = {}, f"unusable ({type(e).__name__}: {e})"
        _aot["table"], _aot["why"] = table, why
        return table


def aot_status() -> str:
    """How many compiled functions the ahead-of-time module gives, or why it is not used."""
    table = aot_table()
    return _aot["why"] or f"{sum(map(len, table.values()))} compiled functions"


# --- just in time -----------------------------------------------------------------------

def load_numba() -> None:
    """Import numba and make every declared function's dispatcher; each module's globals
    then name the dispatchers (numba types a kernel's calls by the globals it reads).
    Functions declared later (a module imported after this) get theirs on their first call."""
    with _lock:
        fresh = [c for c in _DECLARED if c.dispatcher is None]
        if not fresh:
            return
        from numba import njit

        if not _numba:
            _numba["loaded"] = True
            _install_cache_load()
            _install_compile_note()
        for c in fresh:
            if c.kind == "kernel":
                d = njit(cache=True, nogil=True)(c.py_func)
                _fast_cache_load(d)
            elif c.kind == "inline":
                d = njit(inline="always")(c.py_func)
            else:
                d = njit(cache=True)(c.py_func)
            c.dispatcher = d
        made = {id(c): c.dispatcher for c in fresh}
        homes = {c.__module__ for c in _DECLARED} | {"__main__"}
        for name, mod in list(sys.modules.items()):
            if name in homes or name.startswith("toolkit."):
                g = getattr(mod, "__dict__", None) or {}
                for k, v in list(g.items()):
                    if isinstance(v, Compiled) and id(v) in made:
                        g[k] = made[id(v)]


def declared() -> list[Compiled]:
    return list(_DECLARED)


_fast: dict = {}


def _install_cache_load() -> None:
    try:
        from numba.core.runtime import rtsys
    except ImportError:          # a numba without this layout: keep its own loading
        return
    _fast["rtsys"] = rtsys


def _load_overload(cache, sig, target_context):
    _fast["rtsys"].initialize(target_context)
    with cache._guard_against_spurious_io_errors():
        return cache._load_overload(sig, target_context)


def _fast_cache_load(dispatcher) -> None:
    cache = getattr(dispatcher, "_cache", None)
    if ("rtsys" in _fast and hasattr(cache, "_load_overload")
            and hasattr(cache, "_guard_against_spurious_io_errors")):
        cache.load_overload = types.MethodType(_load_overload, cache)


def _install_compile_note() -> None:
    """numba's "numba:compile" event fires only when no cached machine code fits (the
    cache is tried first): the first one of a kernel of ours in a process writes a line
    to stderr, where a person watches it (a terminal: as the progress bar, never into a
    pipe or a log a test compares)."""
    try:
        from numba.core import event
    except ImportError:          # a numba without its event API: no note, compiling works
        return

    class CompileNote(event.Listener):
        said = False

        def on_start(self, ev):
            data = ev.data or {}
            if CompileNote.said or \
                    id(data.get("dispatcher")) not in {id(c.dispatcher) for c in _DECLARED}:
                return
            CompileNote.said = True
            try:                        # a note: nothing here may fail a compilation
                if sys.stderr is not None and sys.stderr.isatty():
                    print("\nlabkit: compiling the analyzer's kernels for this machine, "
                          "once (a minute or two); later runs load them from numba's cache",
                          file=sys.stderr, flush=True)
            except (OSError, ValueError):   # a closed or broken stderr
                pass

        def on_end(self, ev):
            pass

    event.register("numba:compile", CompileNote())
