"""Compiled kernels: numba's njit with an on-disk cache, and a quicker load from it.

`kernel` compiles a function once per machine (numba's cache, next to the module) and
releases the GIL while it runs, so kernels can work on two threads at once.

Loading a kernel from the cache costs little; but numba first "refreshes" its target
context, which imports and registers the typing and lowering of every feature numba
has (unicode, dicts, random, linear algebra, ...): about 0.2 s, most of a short run's
time. None of that is needed to link machine code that was compiled already: the
compiler refreshes the context itself before it compiles, and the code loaded needs only
numba's runtime (NRT), which is initialized here. So the kernels declared with `kernel`
load without the refresh. This touches our own dispatchers only, and only if this
numba's cache has the shape it was written against; otherwise numba's own load runs.

Compiling them all takes a minute or two on a small machine, the first time any capture
is analyzed after an install (or after a kernel's source changed). `make venv` does it
once at install; otherwise the process that has to compile says so, at a terminal, so
that a first `labkit analyze` does not look hung.
"""

from __future__ import annotations

import sys
import types

from numba import njit

try:
    from numba.core.runtime import rtsys
except ImportError:          # a numba without this layout: keep its own loading
    rtsys = None
try:
    from numba.core import event
except ImportError:          # a numba without its event API: no note, compiling still works
    event = None

_OURS: set[int] = set()      # id() of the dispatchers made by `kernel`


class _CompileNote(event.Listener if event else object):
    """numba's "numba:compile" event fires only when no cached machine code fits (the
    cache is tried first): the first one of a kernel of ours in a process writes a line
    to stderr, where a person watches it (a terminal: as the progress bar, never into a
    pipe or a log a test compares)."""

    said = False

    def on_start(self, ev):
        data = ev.data or {}
        if _CompileNote.said or id(data.get("dispatcher")) not in _OURS:
            return
        _CompileNote.said = True
        try:                            # a note: nothing here may fail a compilation
            if sys.stderr is not None and sys.stderr.isatty():
                print("\nlabkit: compiling the analyzer's kernels for this machine, once (a "
                      "minute or two); later runs load them from numba's cache",
                      file=sys.stderr, flush=True)
        except (OSError, ValueError):   # a closed or broken stderr
            pass

    def on_end(self, ev):
        pass


if event is not None:
    event.register("numba:compile", _CompileNote())


def _load_overload(cache, sig, target_context):
    rtsys.initialize(target_context)
    with cache._guard_against_spurious_io_errors():
        return cache._load_overload(sig, target_context)


def kernel(fn):
    """njit(cache=True, nogil=True), loaded from the cache without the refresh."""
    dispatcher = njit(cache=True, nogil=True)(fn)
    _OURS.add(id(dispatcher))
    cache = getattr(dispatcher, "_cache", None)
    if (rtsys is not None and hasattr(cache, "_load_overload")
            and hasattr(cache, "_guard_against_spurious_io_errors")):
        cache.load_overload = types.MethodType(_load_overload, cache)
    return dispatcher
