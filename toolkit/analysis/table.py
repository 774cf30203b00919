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
