"""A last look at the emitted tree: only the node types, functions and tables the translator
is meant to produce. The translator already builds nothing else; this catches our own bugs
before they can become an escape."""

from __future__ import annotations

from sqlglot import exp

from .errors import AdqlError
from .functions import EMITTED

_NODES = frozenset((
    exp.Select, exp.Union, exp.Except, exp.Intersect, exp.Subquery, exp.From, exp.Join,
    exp.Table, exp.TableAlias, exp.Identifier, exp.Column, exp.Alias, exp.Where, exp.Group,
    exp.Having, exp.Order, exp.Ordered, exp.Limit, exp.Offset, exp.With, exp.CTE, exp.Literal,
    exp.Null, exp.Boolean, exp.Paren, exp.Neg, exp.Not, exp.And, exp.Or, exp.EQ, exp.NEQ,
    exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod,
    exp.DPipe,
    exp.Like, exp.ILike, exp.Between, exp.In, exp.Is, exp.Exists, exp.Case, exp.If,
    exp.Anonymous, exp.Distinct, exp.Cast, exp.DataType, exp.DataTypeParam, exp.Star,
))


def check(tree: exp.Expr, tables: set[tuple[str, str]]) -> None:
    """Raise unless tree only uses allowed nodes, declared functions and known tables."""
    for node in tree.walk():
        if type(node) not in _NODES:
            raise _internal(f"node {type(node).__name__}")
        if isinstance(node, exp.Anonymous) and (not isinstance(node.this, str)
                                                or node.this.lower() not in EMITTED):
            raise _internal(f"function {node.this}")
        if isinstance(node, exp.Table) and (node.db or "", node.name) not in tables:
            raise _internal(f"table {node.sql()}")
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Anonymous):
            raise _internal("a * outside COUNT(*)")


def _internal(what: str) -> AdqlError:
    return AdqlError(f"Internal error: the translation produced an unexpected {what}; "
                     "please report this query")
