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
"""

from __future__ import annotations

import types

from numba import njit

try:
    from numba.core.runtime import rtsys
except ImportError:          # a numba without this layout: keep its own loading
    rtsys = None


def _load_overload(cache, sig, target_context):
    rtsys.initialize(target_context)
    with cache._guard_against_spurious_io_errors():
        return cache._load_overload(sig, target_context)


def kernel(fn):
    """njit(cache=True, nogil=True), loaded from the cache without the refresh."""
    dispatcher = njit(cache=True, nogil=True)(fn)
    cache = getattr(dispatcher, "_cache", None)
    if (rtsys is not None and hasattr(cache, "_load_overload")
            and hasattr(cache, "_guard_against_spurious_io_errors")):
        cache.load_overload = types.MethodType(_load_overload, cache)
    return dispatcher
