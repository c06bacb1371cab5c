"""Name resolution: the FROM items a query can see and the columns each one offers.

Every FROM item gets a generated alias in the emitted SQL (t1, t2 ...), and every column
reference is emitted qualified by it, so user aliases, CTE names and derived-table column
names never reach DuckDB unchecked and can never shadow or reach anything undeclared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp

from ...lake import schema
from .values import Ref, Val, array_value, column_type


def same(ident: exp.Identifier, stored: str) -> bool:
    """ADQL name matching: delimited identifiers exactly, regular ones ignoring case."""
    return ident.this == stored if ident.quoted else ident.this.casefold() == stored.casefold()


@dataclass
class SrcCol:
    name: str  # the name queries use
    sql_name: str  # the name in the emitted SQL
    type: str
    column: schema.Column | None = None
    inner: Val | None = None  # a derived table's inner value (for IN_UNIT's unit inference)


@dataclass
class Source:
    """One FROM item: a stored table, a CTE reference or a derived table."""

    name: str  # alias, or the table's own (short) name
    sql_alias: str
    columns: list[SrcCol]
    aliased: bool = False
    schema_name: str | None = None  # for schema.table qualification of unaliased tables
    base: bool = False  # a stored table (served or uploaded)
    served: bool = False  # a served archive table (box pruning knows its footprints)
    table: str | None = None  # a served table's qualified name
    label: str = ""  # how error messages name it

    def matches(self, quals: list[exp.Identifier]) -> bool:
        if len(quals) == 1:
            return same(quals[0], self.name)
        if len(quals) == 2 and not self.aliased and self.schema_name is not None:
            return same(quals[0], self.schema_name) and same(quals[1], self.name)
        return False

    def find(self, ident: exp.Identifier) -> list[SrcCol]:
        return [c for c in self.columns if same(ident, c.name)]

    def col(self, name: str) -> SrcCol | None:
        return next((c for c in self.columns if c.name == name), None)

    def value(self, c: SrcCol) -> Val:
        return column_value(self, c)


@dataclass
class Entry:
    """A column visible without qualification (USING/NATURAL joins merge two into one)."""

    name: str
    make: Callable[[], Val]
    origin: str = ""  # the FROM item it comes from (for "ambiguous" messages)


@dataclass
class Scope:
    parent: Scope | None = None
    sources: list[Source] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def column_value(src: Source, c: SrcCol) -> Val:
    sql = exp.Column(this=exp.Identifier(this=c.sql_name, quoted=True),
                     table=exp.Identifier(this=src.sql_alias, quoted=True))
    v = array_value(sql, c.type)
    v.column, v.ref, v.owner, v.op = c.column, Ref(src.sql_alias, c.sql_name, src.base,
                                                     src.table), src, "col"
    v.extra = {"name": c.name, "inner": c.inner}
    return v


def entries_of(src: Source) -> list[Entry]:
    return [Entry(c.name, lambda c=c: column_value(src, c), src.label) for c in src.columns]


def table_columns(table: schema.Table) -> list[SrcCol]:
    """The served (non-internal) columns of a stored table."""
    return [SrcCol(c.name, c.name, column_type(c), c) for c in table.served]

