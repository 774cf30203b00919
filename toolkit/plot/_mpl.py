"""matplotlib, imported only when a figure is drawn.

Figures are made without pyplot (matplotlib.figure.Figure on an Agg canvas): nothing
global is kept, so a script or the lab runner that draws many figures leaks none, and no
display is needed. In Jupyter a returned figure shows inline once (its `_repr_png_`, or
the inline backend's own formatter when pyplot is in use). When nobody has chosen a
backend (no MPLBACKEND, no matplotlibrc entry, pyplot not imported, not in a kernel),
matplotlib is set to the non-interactive Agg backend, so a later pyplot call in a script
or CI without a display does not try to open a window.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

FORMATS = ("png", "svg", "pdf")
DPI = 110


def ensure_backend() -> None:
    import matplotlib

    if os.environ.get("MPLBACKEND") or "matplotlib.pyplot" in sys.modules:
        return
    if "ipykernel" in sys.modules:
        return                                   # Jupyter picks its inline backend
    try:
        chosen = matplotlib.rcParams._get_backend_or_none()
    except AttributeError:                       # matplotlib < 3.8: no way to ask
        chosen = None
    if chosen is None:
        matplotlib.use("Agg")


def new_figure(figsize, **kw):
    """A Figure (with `labkit_data`, shown inline in Jupyter) on an Agg canvas."""
    ensure_backend()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cls = _figure_class(Figure)
    fig = cls(figsize=figsize, dpi=DPI, **kw)
    FigureCanvasAgg(fig)
    fig.labkit_data = {}
    return fig


_CLASS = None


def _figure_class(Figure):
    global _CLASS
    if _CLASS is None:
        class LabkitFigure(Figure):
            """A matplotlib Figure that Jupyter shows inline without pyplot; the data it
            draws is in `labkit_data`."""

            def _repr_png_(self):
                buf = io.BytesIO()
                self.savefig(buf, format="png", bbox_inches="tight")
                return buf.getvalue()

        LabkitFigure.__module__ = __name__
        LabkitFigure.__qualname__ = "LabkitFigure"
        _CLASS = LabkitFigure
    return _CLASS


def __getattr__(name: str):
    # the class is made when matplotlib is first needed; this finds it for pickle too
    if name == "LabkitFigure":
        from matplotlib.figure import Figure
        return _figure_class(Figure)
    raise AttributeError(name)


def save(fig, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write a figure atomically (a temporary file, then rename); fmt from the suffix."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"{path}: a figure is written as {', '.join(FORMATS)} "
                         f"(give a file name ending in one of them)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        fig.savefig(tmp, format=fmt, bbox_inches="tight",
                    metadata={"Software": "labkit"} if fmt == "png" else None)
        os.replace(tmp, path)
    except OSError as e:
        # said of the file asked for, not of the temporary one beside it
        if e.filename is not None:
            e.filename, e.filename2 = str(path), None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def colors() -> dict:
    """The same colors for the same things in every figure."""
    return {"tcp": "#1f77b4", "udp": "#ff7f0e", "drop": "#d62728", "repair": "#2ca02c",
            "ack": "#2ca02c", "window": "#bcbd22", "sack": "#9467bd", "dupack": "#e377c2",
            "zero": "#8c564b", "retrans": "#d62728", "ooo": "#9467bd", "grey": "#7f7f7f",
            "other": ["#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#9467bd"]}


def flow_color(proto: str, i: int) -> str:
    c = colors()
    if i == 0 and proto in ("tcp", "udp"):
        return c[proto]
    return c["other"][i % len(c["other"])]
