"""Result tables as plain columns, with pandas only when a DataFrame is asked for.

The analyses build their tables (one row per conversation, per flow ...) as ordered
columns: numpy arrays or lists of str, all of one length. JSON output and the text report
read those directly; `to_frame()` makes the DataFrame the API promises. Importing pandas
takes longer than analyzing a large capture, so a command that does not need a DataFrame
does not import it.
"""

from __future__ import annotations

import math

import numpy as np


class Table:
    """Named columns of equal length, in order."""

    def __init__(self, columns: dict):
        self.columns = {name: (v if isinstance(v, list) else np.asarray(v))
                        for name, v in columns.items()}
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._n = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str):
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def take(self, mask_or_index) -> Table:
        """The rows a boolean mask or an index array selects."""
        sel = np.asarray(mask_or_index)
        if sel.dtype == bool:
            sel = np.flatnonzero(sel)
        return Table({name: ([v[i] for i in sel.tolist()] if isinstance(v, list) else v[sel])
                      for name, v in self.columns.items()})

    def records(self) -> list[dict]:
        """One dict per row, of Python values, NaN as None: ready for json.dumps."""
        cols = {name: (v if isinstance(v, list) else v.tolist())
                for name, v in self.columns.items()}
        out = [dict.fromkeys(cols) for _ in range(self._n)]
        for name, values in cols.items():
            for rec, x in zip(out, values, strict=True):
                rec[name] = None if isinstance(x, float) and math.isnan(x) else x
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.columns, columns=self.names)

    def to_arrow(self):
        """A pyarrow Table, NaN as null as pandas would give it (for Parquet without
        importing pandas)."""
        import pyarrow as pa

        return pa.Table.from_arrays([arrow_array(v) for v in self.columns.values()],
                                    names=self.names)


def arrow_array(v, valid: np.ndarray | None = None):
    """A pyarrow Array from a numpy column (NaN as null) or a list of str, made from
    buffers: pyarrow's own conversion (pa.array) imports pandas, 50 MB and half a second
    that a per-packet export to Parquet does not need."""
    import pyarrow as pa

    if isinstance(v, np.ndarray) and v.dtype.kind in "OU":
        v = v.tolist()                                       # text (or None) per row
    if isinstance(v, list):
        if any(x is not None and not isinstance(x, str) for x in v):
            return pa.array(v)                               # not text: pyarrow's way
        enc = [b"" if x is None else x.encode() for x in v]
        offsets = np.zeros(len(enc) + 1, np.int64)
        offsets[1:] = np.cumsum([len(e) for e in enc])
        valid = np.array([x is not None for x in v], bool)
        return pa.Array.from_buffers(pa.large_string(), len(enc), [
            _bitmap(valid), pa.py_buffer(offsets), pa.py_buffer(b"".join(enc))]) \
            .cast(pa.string())
    v = np.ascontiguousarray(v)
    if v.dtype.kind == "f":
        nan = np.isnan(v)
        if nan.any():
            valid = ~nan if valid is None else valid & ~nan
    if v.dtype.kind == "b":
        data = pa.py_buffer(np.packbits(v, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(v), [_bitmap(valid), data])
    if v.dtype.kind not in "iuf":
        return pa.array(v)
    return pa.Array.from_buffers(pa.from_numpy_dtype(v.dtype), len(v),
                                 [_bitmap(valid), pa.py_buffer(v)])


def _bitmap(valid):
    import pyarrow as pa
    if valid is None or valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))
