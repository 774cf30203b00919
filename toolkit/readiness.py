"""Which of some sockets or descriptors are readable, without select()'s limit: select(2)
takes only descriptors below FD_SETSIZE (1024), and a server that raised its descriptor
limit for a thousand clients (labkit serve) gets higher ones (Python's select.select then
raises ValueError). poll(2) takes any descriptor; Linux and macOS have it."""

from __future__ import annotations

import select


def readable(objs, timeout_s: float | None) -> list:
    """Those of `objs` (sockets, or ints: descriptors) readable within `timeout_s` seconds
    (None: no limit), in their order; [] when none became so."""
    if not objs:
        return []
    poller = select.poll()
    by_fd = {}
    for obj in objs:
        fd = obj if isinstance(obj, int) else obj.fileno()
        by_fd[fd] = obj
        # POLLIN only, as select()'s read set: urgent data alone (POLLPRI) leaves a recv()
        # blocking; POLLHUP and POLLERR come anyway, and a read then returns what ended it
        poller.register(fd, select.POLLIN)
    ms = None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))
    ready = {fd for fd, _ in poller.poll(ms)}
    return [obj for fd, obj in by_fd.items() if fd in ready]
