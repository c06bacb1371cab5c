"""Arrow datasets over a Delta table's files, kept up to date incrementally.

deltalake's to_pyarrow_dataset() rebuilds every fragment with a guarantee expression
over all columns' statistics: its cost grows with the number of files (every week adds
some) and those long expressions slow every scan. Here a table's fragments are built
once per file, with a short guarantee (partition values and the ranges of the columns
queries prune on), and reused when a new release only adds files.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pds

# columns whose per-file ranges let a scan skip whole files
PRUNE_COLUMNS = ("s_ra", "s_dec", "t_min", "t_max", "em_min", "em_max", "hpx")
FORMAT = pds.ParquetFileFormat()


class TableFiles:
    """Fragments of one Delta table, by file path."""

    def __init__(self) -> None:
        self.fragments: dict[str, pds.Fragment] = {}
        self.filesystem = None
        self.schema: pa.Schema | None = None

    def dataset(self, dt) -> pds.Dataset:
        if self.filesystem is None:  # one full build gives the filesystem and schema
            full = dt.to_pyarrow_dataset()
            self.filesystem, self.schema = full.filesystem, full.schema
        actions = dt.get_add_actions(flatten=True)
        actions = actions if isinstance(actions, pa.Table) else pa.table(actions)
        rows = actions.to_pylist()
        wanted = {r["path"] for r in rows}
        self.fragments = {p: f for p, f in self.fragments.items() if p in wanted}
        for r in rows:
            if r["path"] not in self.fragments:
                self.fragments[r["path"]] = FORMAT.make_fragment(
                    r["path"], self.filesystem, partition_expression=_guarantee(r))
        return pds.FileSystemDataset(list(self.fragments.values()), self.schema, FORMAT,
                                     self.filesystem)


def _guarantee(action: dict) -> pds.Expression:
    """What every row of the file satisfies: its partition values and column ranges."""
    expr = pds.scalar(True)
    for key, value in action.items():
        if key.startswith("partition.") and value is not None:
            expr = expr & (pds.field(key[len("partition."):]) == value)
    for col in PRUNE_COLUMNS:
        lo, hi = action.get(f"min.{col}"), action.get(f"max.{col}")
        if lo is not None and hi is not None and action.get(f"null_count.{col}") == 0:
            expr = expr & (pds.field(col) >= lo) & (pds.field(col) <= hi)
    return expr
