"""The checked, translated ADQL tree (DuckDB-shaped) rewritten for Spark SQL.

The translator builds one tree whose function calls name DuckDB built-ins and the
engine's declared functions (geometry.sqlfunctions). For Spark the same tree is
rewritten node by node: built-ins to their Spark spellings, the SQL macros expanded
from the very MACROS text DuckDB registers (so both engines evaluate one formula), the
Arrow UDFs left as calls to the Spark UDFs of the same name (query.spark registers
them over the same Python kernels), and the archive's tables to the names of the temp
views a Spark session holds. sqlglot's spark dialect then prints it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlglot
from sqlglot import exp

from ...geometry.sqlfunctions import MACROS
from ...lake import schema

# a table of the archive -> its temp view (Spark temp views have no schema part)
Relation = Callable[[str, str, str | None], str]
# macros Spark gets as UDFs (regexp_escape has no Spark counterpart)
_NOT_EXPANDED = {"ivo_hasword"}
_RENAMED = {"random": "rand", "list_value": "array", "list_extract": "try_element_at",
            "string_split_regex": "split"}
# DuckDB's are DOUBLE whatever the argument; Spark's BIGINT
_TYPED = {"ceil", "floor"}
_INT_TYPES = {8: "TINYINT", 16: "SMALLINT", 32: "INT"}


def view_name(schema_name: str, table: str) -> str:
    """The temp view holding an archive table (ivoa.obscore -> ivoa__obscore)."""
    return f"{schema_name}__{table}".lower()


def default_relation(schema_name: str, table: str, alias: str | None) -> str:
    return view_name(schema_name, table)


_BUILT: dict[str, tuple[list[str], exp.Expr]] = {}


def _macros() -> dict[str, tuple[list[str], exp.Expr]]:
    """name -> (parameters, body already rewritten for Spark). Built in MACROS order, so
    a body naming an earlier macro (sky_distance uses sky_hav) finds it expanded."""
    if not _BUILT:
        for sig, body in MACROS.items():
            name, params = re.fullmatch(r"(\w+)\((.*)\)", sig).groups()
            if name not in _NOT_EXPANDED:
                tree = _rewrite(sqlglot.parse_one(body, read="duckdb"), default_relation)
                _BUILT[name] = ([p.strip() for p in params.split(",")], tree)
    return _BUILT


def to_spark(tree: exp.Expr, relation: Relation = default_relation) -> exp.Expr:
    """The tree, rewritten in place for Spark (see the module's docstring)."""
    return _rewrite(tree, relation)


def _rewrite(node: exp.Expr, relation: Relation) -> exp.Expr:
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expr):
            node.set(key, _rewrite(value, relation))
        elif isinstance(value, list):
            node.set(key, [_rewrite(v, relation) if isinstance(v, exp.Expr) else v
                           for v in value])
    if isinstance(node, exp.Anonymous) and isinstance(node.this, str):
        return _call(node)
    if isinstance(node, exp.Table) and node.args.get("db") is not None:
        return _table(node, relation)
    if isinstance(node, exp.Cast):
        return _cast(node)
    if type(node) is exp.Div:
        return _divide(node)
    if isinstance(node, exp.IntDiv):
        divisor = node.expression
        if node.meta.get("int_bits") in _INT_TYPES:
            # Spark's DIV is BIGINT; DuckDB keeps the operands' width
            node = exp.Cast(this=node, to=exp.DataType.build(_INT_TYPES[node.meta["int_bits"]]))
        return _null_if_zero(divisor, node)
    return node


def _null_if_zero(divisor: exp.Expr, value: exp.Expr) -> exp.Expr:
    """DuckDB's integer x DIV 0 and mod(x, 0) are NULL; Spark in ANSI mode (on, so that
    an overflow is an error in both engines) raises instead."""
    return exp.Paren(this=exp.Case(ifs=[exp.If(
        this=exp.EQ(this=divisor.copy(), expression=exp.Literal.number(0)),
        true=exp.Null())], default=value))


def _table(node: exp.Table, relation: Relation) -> exp.Expr:
    alias = node.args.get("alias")
    name = relation(node.args["db"].this, node.this.this, alias.this.this if alias else None)
    node.set("db", None)  # in place: a nested join's other tables hang off this node
    node.set("this", exp.Identifier(this=name, quoted=True))
    return node


def _cast(node: exp.Cast) -> exp.Expr:
    # DuckDB's TIMESTAMP has no time zone: so has Spark's TIMESTAMP_NTZ (its TIMESTAMP
    # is an instant shown in the session's zone)
    if node.to.this == exp.DataType.Type.TIMESTAMP:
        node.set("to", exp.DataType.build("TIMESTAMP_NTZ", dialect="spark"))
    if node.meta.get("round"):  # a float to an integer: DuckDB rounds, Spark truncates
        node.set("this", exp.Anonymous(this="round", expressions=[node.this]))
    return node


def _call(node: exp.Anonymous) -> exp.Expr:
    name, args = node.this.lower(), list(node.expressions)
    if name.endswith("_bin"):  # the packed footprint twin: Spark reads the list column
        return exp.Anonymous(this=name[:-4], expressions=[_unpacked(a) for a in args])
    macro = _macros().get(name)
    if macro is not None:
        return _expand(*macro, args)
    if name == "trunc":
        return _trunc(node, args)
    if name in _TYPED:
        return exp.Cast(this=node, to=exp.DataType.build("DOUBLE"))
    if name == "mod":
        if node.meta.get("int_bits") in _INT_TYPES:
            node = exp.Cast(this=node, to=exp.DataType.build(_INT_TYPES[node.meta["int_bits"]]))
        return _null_if_zero(args[1], node)
    if name in _RENAMED:
        return exp.Anonymous(this=_RENAMED[name], expressions=args)
    return node


def _divide(node: exp.Div) -> exp.Expr:
    """x / 0.0 is +-inf (NaN for 0 / 0) in DuckDB, as IEEE says; NULL in Spark."""
    a, b = node.this, node.expression
    inf = exp.Cast(this=exp.Literal.string("Infinity"), to=exp.DataType.build("DOUBLE"))
    return exp.Paren(this=exp.Case(ifs=[exp.If(
        this=exp.EQ(this=b.copy(), expression=exp.Literal.number(0)),
        true=exp.Mul(this=a.copy(), expression=inf))], default=node))


def _unpacked(arg: exp.Expr) -> exp.Expr:
    if isinstance(arg, exp.Column) and arg.name == schema.PACKED_REGION:
        table = arg.args.get("table")
        return exp.column("s_region", table=table.this if table else None, quoted=True)
    return arg


def _expand(params: list[str], body: exp.Expr, args: list[exp.Expr]) -> exp.Expr:
    """A macro's body with each parameter replaced by its (parenthesised) argument."""
    bound = dict(zip(params, args, strict=True))

    def sub(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Column) and not n.table and n.name in bound:
            return exp.Paren(this=bound[n.name].copy())
        return n

    return exp.Paren(this=body.copy().transform(sub, copy=False))


def _trunc(node: exp.Anonymous, args: list[exp.Expr]) -> exp.Expr:
    """DuckDB's trunc(x[, digits]) towards zero (Spark's trunc is about dates)."""
    x = args[0]
    if node.meta.get("adql_type") == "integer" and len(args) == 1:
        return x  # an integer truncated is itself, of its own width (as in DuckDB)
    scale = exp.Anonymous(this="power", expressions=[exp.Literal.number(10), args[1]]) \
        if len(args) > 1 else exp.Literal.number(1)
    shifted = exp.Mul(this=exp.Anonymous(this="abs", expressions=[x.copy()]),
                      expression=scale.copy())
    cut = exp.Div(this=exp.Mul(this=exp.Anonymous(this="sign", expressions=[x.copy()]),
                               expression=exp.Anonymous(this="floor", expressions=[shifted])),
                  expression=scale)
    return exp.Cast(this=exp.Paren(this=cut), to=exp.DataType.build("DOUBLE"))
