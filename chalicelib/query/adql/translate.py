"""ADQL AST -> DuckDB AST. The translator is the sandbox: it handles only ADQL node types,
resolves every table and column against the declared schema and builds a new tree from
what it understood, so nothing a query says reaches DuckDB untranslated."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlglot import exp

from ...lake import schema
from .dialect import AdqlCast, check_identifier
from .errors import AdqlError, fail
from .expressions import Ctx, Expressions, OutCol, atom, quoted
from .scope import Entry, Scope, Source, SrcCol, column_value, entries_of, same, table_columns
from .values import BOOL, Val, fn, integer, merge_types

SETOPS = (exp.Union, exp.Except, exp.Intersect)
QUERIES = (exp.Select, exp.Subquery, *SETOPS)
_SELECT_ARGS = {"expressions", "distinct", "from_", "joins", "where", "group", "having", "order",
                "limit", "offset", "with_", "kind"}
_SETOP_ARGS = {"this", "expression", "distinct", "order", "offset", "with_"}
_JOIN_ARGS = {"this", "on", "side", "kind", "using", "method", "pivots"}
_TABLE_ARGS = {"this", "db", "catalog", "alias", "joins", "pivots"}


@dataclass
class Cte:
    name: str
    sql_name: str
    cols: list[OutCol]


class Translator(Expressions):
    def __init__(self, text: str, tables: Mapping[str, schema.Table],
                 uploads: Mapping[str, schema.Table], box_sql: Callable[..., str] | None):
        self.text, self.tables, self.uploads, self.box_sql = text, tables, uploads, box_sql
        self.ctes: list[Cte] = []
        self.referenced: list[str] = []
        self.physical: set[tuple[str, str]] = set()  # (schema, table) the SQL may name
        self.notes: list[str] = []  # warnings for the answer (INFO elements), once each
        self.n = 0

    def fail(self, message: str, node: exp.Expr | None = None) -> AdqlError:
        return fail(message, self.text, node)

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def new_alias(self, prefix: str = "t") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    # ---- queries ----------------------------------------------------------------------
    def run(self, tree: exp.Expr) -> tuple[exp.Expr, list[OutCol]]:
        self.check_names(tree)
        if not isinstance(tree, QUERIES) or isinstance(tree, exp.Subquery) and tree.alias:
            word = self.text.strip().split(None, 1)[0] if self.text.strip() else ""
            raise self.fail(f"Only a single SELECT query can be run (this one starts with "
                            f"'{word[:20]}')", tree)
        with_ = tree.args.get("with_")
        ctes = self.with_(with_) if with_ else None
        sql, cols = self.query(tree, None, "top", allow_with=True)
        if ctes is not None:
            sql.set("with_", ctes)
        return sql, cols

    def check_names(self, tree: exp.Expr) -> None:
        for ident in tree.find_all(exp.Identifier):
            if why := check_identifier(ident):
                raise self.fail(why, ident)

    def with_(self, node: exp.With) -> exp.With:
        if node.args.get("recursive"):
            raise self.fail("WITH RECURSIVE is not part of ADQL", node)
        out = []
        for cte in node.expressions:
            ident = cte.args["alias"].this
            if any(same(ident, c.name) for c in self.ctes):
                raise self.fail(f"WITH defines '{ident.this}' twice", ident)
            sql, cols = self.query(cte.this, None, "inner")
            self.rename(cols, cte.args["alias"])
            sql_name = self.new_alias("w")
            self.ctes.append(Cte(ident.this, sql_name, cols))
            self.physical.add(("", sql_name))
            out.append(exp.CTE(this=sql, alias=exp.TableAlias(this=quoted(sql_name))))
        return exp.With(expressions=out)

    def rename(self, cols: list[OutCol], alias: exp.TableAlias) -> None:
        names = alias.args.get("columns") or []
        if names and len(names) != len(cols):
            raise self.fail(f"'{alias.this.this}' names {len(names)} columns but its query "
                            f"returns {len(cols)}", alias)
        for c, ident in zip(cols, names):
            c.name = ident.this

    def query(self, node: exp.Expr, parent: Scope | None, naming: str,
              allow_with: bool = False) -> tuple[exp.Expr, list[OutCol]]:
        if node.args.get("with_") and not allow_with:
            raise self.fail("WITH is only allowed at the start of the whole query", node)
        if isinstance(node, exp.Select):
            return self.select(node, parent, naming)
        if isinstance(node, SETOPS):
            return self.setop(node, parent, naming)
        if isinstance(node, exp.Subquery) and isinstance(node.this, QUERIES):
            self.check_args(node, {"this", "order", "offset", "with_"}, "a subquery")
            inner, cols = self.query(node.this, parent, naming)
            return self.modifiers(node, exp.Subquery(this=inner), cols), cols
        raise self.fail("Expected a SELECT query here", node)

    def check_args(self, node: exp.Expr, allowed: set[str], what: str) -> None:
        for key, value in node.args.items():
            if key not in allowed and value not in (None, False, []):
                raise self.fail(f"Unsupported in {what} (not ADQL): {key.rstrip('_').upper()}",
                                value if isinstance(value, exp.Expr) else node)

    def setop(self, node: exp.Expr, parent: Scope | None, naming: str):
        word = type(node).__name__.upper()
        self.check_args(node, _SETOP_ARGS, word)
        left, lcols = self.query(node.this, parent, naming)
        right, rcols = self.query(node.expression, parent, "inner")
        if len(lcols) != len(rcols):
            raise self.fail(f"The two sides of {word} have {len(lcols)} and {len(rcols)} "
                            "columns", node)
        for a, b in zip(lcols, rcols):
            try:
                a.val = Val(None, merge_types([a.val.type, b.val.type], word),
                            column=a.val.column, op=a.val.op, extra=a.val.extra)
            except TypeError as e:
                raise self.fail(f"{e} (column '{a.name}')", node) from None
        sql = type(node)(this=self.member(left), expression=self.member(right),
                         distinct=bool(node.args.get("distinct")))
        return self.modifiers(node, sql, lcols), lcols

    @staticmethod
    def member(sql: exp.Expr) -> exp.Expr:
        """Set-operation members with their own TOP/ORDER BY/OFFSET need parentheses."""
        if isinstance(sql, exp.Select) and any(sql.args.get(k) for k in ("order", "limit",
                                                                          "offset")):
            return exp.Subquery(this=sql)
        return sql

    def modifiers(self, node: exp.Expr, sql: exp.Expr, cols: list[OutCol]) -> exp.Expr:
        """ORDER BY / OFFSET after a set operation: result columns by name or position."""
        if order := node.args.get("order"):
            items = []
            for o in order.expressions:
                self.check_args(o, {"this", "desc", "nulls_first"}, "ORDER BY")
                items.append(exp.Ordered(this=self.result_position(o.this, cols),
                                         desc=bool(o.args.get("desc")), nulls_first=False))
            sql.set("order", exp.Order(expressions=items))
        if offset := node.args.get("offset"):
            sql.set("offset", exp.Offset(expression=self.count_literal(offset, "OFFSET")))
        return sql

    def result_position(self, e: exp.Expr, cols: list[OutCol]) -> exp.Expr:
        if isinstance(e, exp.Literal) and not e.is_string:
            return self.ordinal(e, len(cols))
        if isinstance(e, exp.Column) and not e.table:
            hits = [i for i, c in enumerate(cols) if same(e.this, c.name)]
            if len(hits) == 1:
                return integer(hits[0] + 1)
        raise self.fail("ORDER BY after UNION, EXCEPT or INTERSECT can only name result "
                        "columns or give their positions", e)

    def ordinal(self, e: exp.Literal, n: int) -> exp.Expr:
        if not re.fullmatch(r"\d+", e.this) or not 1 <= int(e.this) <= n:
            raise self.fail(f"Column position {e.this} is not between 1 and {n}", e)
        return integer(int(e.this))

    def count_literal(self, node: exp.Expr, what: str) -> exp.Expr:
        """TOP and OFFSET take non-negative integer literals."""
        e = node.args.get("expression")
        extra = {k for k, v in node.args.items() if v and k != "expression"}
        if extra or not isinstance(e, exp.Literal) or e.is_string or not e.this.isdigit():
            raise self.fail(f"{what} needs a non-negative integer", e or node)
        return integer(int(e.this))

    # ---- SELECT -----------------------------------------------------------------------
    def select(self, node: exp.Select, parent: Scope | None, naming: str):
        self.check_args(node, _SELECT_ARGS, "SELECT")
        if node.args.get("kind"):
            raise self.fail("Unsupported SELECT form", node)
        if not node.args.get("from_"):
            raise self.fail("A SELECT needs a FROM clause", node)
        if not node.expressions:
            raise self.fail("A SELECT needs at least one column", node)
        scope = Scope(parent)
        sel = exp.Select()
        sel.set("from_", exp.From(this=self.from_item(node.args["from_"].this, scope)))
        sel.set("joins", [self.join(j, scope) for j in node.args.get("joins") or []])
        ctx = Ctx(scope)
        cols = self.name_columns(self.select_list(node.expressions, ctx), naming)
        sel.set("expressions", [exp.Alias(this=self.output(c.val), alias=quoted(c.sql_name))
                                for c in cols])
        self.clauses(node, sel, scope, cols)
        return sel, cols

    def clauses(self, node: exp.Select, sel: exp.Select, scope: Scope,
                cols: list[OutCol]) -> None:
        distinct = node.args.get("distinct")
        if distinct is not None:
            if distinct.args.get("on"):
                raise self.fail("DISTINCT ON is not ADQL", distinct)
            sel.set("distinct", exp.Distinct())
        if where := node.args.get("where"):
            sel.set("where", exp.Where(this=self.where(where.this, Ctx(scope))))
        if group := node.args.get("group"):
            self.check_args(group, {"expressions"}, "GROUP BY")
            ctx = Ctx(scope, cols)
            sel.set("group", exp.Group(expressions=[self.group_item(g, ctx, len(cols))
                                                    for g in group.expressions]))
        if having := node.args.get("having"):
            sel.set("having", exp.Having(this=self.condition(having.this, Ctx(scope, cols)).sql))
        if order := node.args.get("order"):
            ctx = Ctx(scope, cols, alias_first=True)
            sel.set("order", exp.Order(expressions=[self.order_item(o, ctx, cols)
                                                    for o in order.expressions]))
        if limit := node.args.get("limit"):
            sel.set("limit", exp.Limit(expression=self.count_literal(limit, "TOP")))
        if offset := node.args.get("offset"):
            sel.set("offset", exp.Offset(expression=self.count_literal(offset, "OFFSET")))

    def group_item(self, g: exp.Expr, ctx: Ctx, n: int) -> exp.Expr:
        if isinstance(g, exp.Literal) and not g.is_string:
            return self.ordinal(g, n)
        return self.output(self.scalar(g, ctx))

    def order_item(self, o: exp.Expr, ctx: Ctx, cols: list[OutCol]) -> exp.Expr:
        self.check_args(o, {"this", "desc", "nulls_first"}, "ORDER BY")
        e = o.this
        if isinstance(e, exp.Literal) and not e.is_string:
            key = self.ordinal(e, len(cols))
        elif isinstance(e, exp.Column) and not e.table and self.alias_hits(e.this, cols):
            key = integer(cols.index(self.alias_hits(e.this, cols, e)[0]) + 1)
        else:
            key = self.output(self.scalar(e, ctx))
        return exp.Ordered(this=key, desc=bool(o.args.get("desc")), nulls_first=False)

    def alias_hits(self, ident: exp.Identifier, cols: list[OutCol],
                   node: exp.Expr | None = None) -> list[OutCol]:
        hits = [c for c in cols if same(ident, c.name)]
        if node is not None and len(hits) > 1:
            raise self.fail(f"'{ident.this}' names more than one result column", node)
        return hits

    def select_list(self, items: list[exp.Expr], ctx: Ctx) -> list[tuple[str, Val, exp.Expr]]:
        out = []
        for item in items:
            if isinstance(item, exp.Star):
                self.check_args(item, set(), "SELECT *")
                out += [(e.name, e.make(), item) for e in ctx.scope.entries]
            elif isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                src = self.source(self.qualifiers(item), ctx.scope, item)
                out += [(c.name, column_value(src, c), item) for c in src.columns]
            elif isinstance(item, exp.Alias):
                out.append((item.alias, self.item_value(item.this, ctx), item))
            else:
                v = self.item_value(item, ctx)
                out.append((self.default_name(item, v), v, item))
        return out

    def item_value(self, node: exp.Expr, ctx: Ctx) -> Val:
        v = self.expr(node, ctx)
        if v.type == BOOL:
            raise self.fail("A condition cannot be a result column (use CASE WHEN ... THEN 1 "
                            "ELSE 0 END)", node)
        return v

    def default_name(self, node: exp.Expr, v: Val) -> str:
        if isinstance(node, exp.Column):
            return v.extra.get("name", node.name)
        if isinstance(node, exp.Anonymous) and isinstance(node.this, str):
            return node.this.lower()
        if isinstance(node, AdqlCast):
            return "cast"
        if isinstance(node, exp.Paren):
            return self.default_name(node.this, v)
        return "expr"

    def name_columns(self, items: list[tuple[str, Val, exp.Expr]], naming: str) -> list[OutCol]:
        """Result names are unique (TAP); inner names need only unique SQL names."""
        taken: set[str] = set()
        cols = []
        for name, v, _ in items:
            base = name if naming == "top" else re.sub(r"\W", "_", name.lower()) or "c"
            unique, k = base, 1
            while unique.casefold() in taken:
                k += 1
                unique = f"{base}_{k}"
            taken.add(unique.casefold())
            cols.append(OutCol(unique if naming == "top" else name, unique, v))
        return cols

    # ---- FROM -------------------------------------------------------------------------
    def from_item(self, node: exp.Expr, scope: Scope) -> exp.Expr:
        """Translate one FROM item, adding its columns to the scope."""
        sql, entries = self.relation(node, scope)
        scope.entries += entries
        return sql

    def relation(self, node: exp.Expr, scope: Scope) -> tuple[exp.Expr, list[Entry]]:
        if isinstance(node, exp.Table) and node.args.get("joins"):
            return self.nested_join(node, scope)
        if isinstance(node, exp.Table):
            return self.table(node, scope)
        if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Table) \
                and not node.alias:
            return self.relation(node.this, scope)
        if isinstance(node, exp.Subquery) and isinstance(node.this, QUERIES):
            return self.derived(node, scope)
        raise self.fail("FROM takes tables and subqueries only", node)

    def nested_join(self, node: exp.Table, scope: Scope) -> tuple[exp.Expr, list[Entry]]:
        """(a JOIN b ON ...): its own column list, its tables visible to the whole query."""
        outer, scope.entries = scope.entries, []
        joins = node.args["joins"]
        first = node.copy()
        first.set("joins", None)
        sql = self.from_item(first, scope)
        sql.set("joins", [self.join(j, scope) for j in joins])
        inner, scope.entries = scope.entries, outer
        return exp.Subquery(this=sql), inner

    def table(self, node: exp.Table, scope: Scope) -> tuple[exp.Expr, list[Entry]]:
        self.check_args(node, _TABLE_ARGS, "FROM")
        if not isinstance(node.this, exp.Identifier):
            raise self.fail("Table functions are not allowed in FROM; name a table", node)
        alias = self.alias_of(node)
        cte = self.find_cte(node)
        if cte is not None:
            src = Source(alias.this if alias else cte.name, self.new_alias(), [
                SrcCol(c.name, c.sql_name, c.val.type, c.val.column, c.val) for c in cte.cols],
                aliased=bool(alias), label=alias.this if alias else cte.name)
            table_sql = exp.Table(this=quoted(cte.sql_name))
        else:
            src, table_sql = self.stored(node, alias)
        self.add_source(src, scope, node)
        table_sql.set("alias", exp.TableAlias(this=quoted(src.sql_alias)))
        return table_sql, entries_of(src)

    def alias_of(self, node: exp.Expr) -> exp.Identifier | None:
        alias = node.args.get("alias")
        if alias is None:
            return None
        if alias.args.get("columns"):
            raise self.fail("Column lists after a table alias are not ADQL", alias)
        return alias.this

    def add_source(self, src: Source, scope: Scope, node: exp.Expr) -> None:
        if any(s.name.casefold() == src.name.casefold() and s.schema_name == src.schema_name
               for s in scope.sources):
            raise self.fail(f"'{src.name}' appears twice in FROM: give one of them an alias "
                            "(AS ...)", node)
        scope.sources.append(src)

    def find_cte(self, node: exp.Table) -> Cte | None:
        if node.args.get("db") is not None:
            return None
        return next((c for c in self.ctes if same(node.this, c.name)), None)

    def stored(self, node: exp.Table, alias: exp.Identifier | None):
        table, upload_name = self.lookup_table(node)
        schema_name, short = table.name.split(".", 1)
        if upload_name is not None:
            schema_name, short = "TAP_UPLOAD", upload_name
            sql = exp.Table(this=quoted(f"_upload_{upload_name}"))
            self.physical.add(("", f"_upload_{upload_name}"))
        else:
            sql = exp.Table(this=quoted(short), db=quoted(schema_name))
            self.physical.add((schema_name, short))
        full = f"{schema_name}.{short}"
        if full not in self.referenced:
            self.referenced.append(full)
        served = upload_name is None and schema_name != "TAP_SCHEMA"
        src = Source(alias.this if alias else short, self.new_alias(),
                     table_columns(table), aliased=bool(alias), schema_name=schema_name,
                     base=True, served=served, table=table.name if served else None,
                     label=f"{full} AS {alias.this}" if alias else full)
        return src, sql

    def lookup_table(self, node: exp.Table) -> tuple[schema.Table, str | None]:
        name, db = node.this, node.args.get("db")
        if node.args.get("catalog") is not None:
            raise self.fail(f"Unknown table '{node.sql()}'", node)
        if db is not None and same(db, "TAP_UPLOAD"):
            hits = [(t, k) for k, t in self.uploads.items() if same(name, k)]
        else:
            hits = [(t, None) for k, t in self.tables.items()
                    if same(name, k.split(".", 1)[1]) and (db is None or same(db, k.split(".")[0]))]
        if len(hits) == 1:
            return hits[0]
        shown = f"{db.this}.{name.this}" if db is not None else name.this
        if len(hits) > 1:
            options = ", ".join(t.name for t, _ in hits)
            raise self.fail(f"Table '{shown}' is ambiguous: write one of {options}", node)
        known = sorted(self.tables) + [f"TAP_UPLOAD.{k}" for k in self.uploads]
        raise self.fail(f"Unknown table '{shown}'. Tables here: {', '.join(known)}", node)

    def derived(self, node: exp.Subquery, scope: Scope) -> tuple[exp.Expr, list[Entry]]:
        alias = self.alias_of(node)
        if alias is None:
            raise self.fail("A subquery in FROM needs a name: (SELECT ...) AS name", node)
        sql, cols = self.query(node.this, scope.parent, "inner")
        src = Source(alias.this, self.new_alias(), [
            SrcCol(c.name, c.sql_name, c.val.type, c.val.column, c.val) for c in cols],
            aliased=True, label=alias.this)
        self.add_source(src, scope, node)
        return exp.Subquery(this=sql, alias=exp.TableAlias(this=quoted(src.sql_alias))), \
            entries_of(src)

    def join(self, node: exp.Join, scope: Scope) -> exp.Join:
        self.check_args(node, _JOIN_ARGS, "JOIN")
        kind, side = (node.args.get("kind") or "").upper(), (node.args.get("side") or "").upper()
        natural = (node.args.get("method") or "").upper() == "NATURAL"
        if kind not in ("", "INNER", "OUTER", "CROSS") or node.args.get("method") and not natural:
            raise self.fail(f"Unsupported join: {kind or node.args.get('method')}", node)
        left = scope.entries
        sql, right = self.relation(node.this, scope)
        on, using = node.args.get("on"), node.args.get("using")
        out = exp.Join(this=sql, side=side or None,
                       kind=kind if kind in ("OUTER", "CROSS") else None if side else "INNER")
        if kind == "CROSS" or node.meta.get("comma"):
            if on or using or natural:
                raise self.fail("A CROSS JOIN takes no condition", node)
            scope.entries = left + right
            if node.meta.get("comma"):
                out.set("kind", None)
            return out
        if natural or using:
            names = [e.name for e in left if any(e.name.casefold() == r.name.casefold()
                                                 for r in right)] if natural else None
            idents = using or [exp.Identifier(this=n, quoted=False) for n in names]
            scope.entries, cond = self.merge(left, right, idents, side, node)
            out.set("on", cond)
            return out
        if on is None:
            raise self.fail("JOIN needs ON or USING (or write CROSS JOIN / NATURAL JOIN)", node)
        scope.entries = left + right
        out.set("on", self.condition(on, Ctx(scope)).sql)
        return out

    def merge(self, left: list[Entry], right: list[Entry], idents: list[exp.Identifier],
              side: str, node: exp.Expr) -> tuple[list[Entry], exp.Expr]:
        """USING/NATURAL: each named column once, compared for equality."""
        merged, conds, ls, rs = [], [], [], []
        for ident in idents:
            if isinstance(ident, exp.Column):
                ident = ident.this
            lh = [e for e in left if same(ident, e.name)]
            rh = [e for e in right if same(ident, e.name)]
            if len(lh) != 1 or len(rh) != 1:
                where = "left" if len(lh) != 1 else "right"
                n = len(lh) if where == "left" else len(rh)
                raise self.fail(f"USING column '{ident.this}' is "
                                f"{'ambiguous' if n else 'missing'} on the {where} side", node)
            a, b = lh[0], rh[0]
            ls.append(a)
            rs.append(b)
            conds.append(exp.EQ(this=a.make().sql, expression=b.make().sql))
            merged.append(Entry(a.name, self.merged_value(a, b, side), origin=""))
        rest = [e for e in left if e not in ls] + [e for e in right if e not in rs]
        if not conds:
            raise self.fail("NATURAL JOIN found no column common to both sides", node)
        return merged + rest, exp.and_(*conds)

    @staticmethod
    def merged_value(a: Entry, b: Entry, side: str) -> Callable[[], Val]:
        if side == "RIGHT":
            return b.make
        if side != "FULL":
            return a.make

        def full() -> Val:
            x, y = a.make(), b.make()
            t = merge_types([x.type, y.type], "USING")
            return Val(fn("coalesce", x.sql, y.sql), t, column=x.column, op="col",
                       extra={"name": x.extra.get("name")})
        return full

    # ---- names ------------------------------------------------------------------------
    @staticmethod
    def qualifiers(node: exp.Column) -> list[exp.Identifier]:
        return [p for p in (node.args.get("catalog"), node.args.get("db"), node.args.get("table"))
                if p is not None]

    def source(self, quals: list[exp.Identifier], scope: Scope | None, node: exp.Expr) -> Source:
        s = scope
        while s is not None:
            hits = [src for src in s.sources if src.matches(quals)]
            if len(hits) > 1:
                raise self.fail(f"'{'.'.join(q.this for q in quals)}' could mean "
                                f"{' or '.join(h.label for h in hits)}: use aliases", node)
            if hits:
                return hits[0]
            s = s.parent
        raise self.fail(f"Unknown table '{'.'.join(q.this for q in quals)}' (not in FROM)", node)

    def column(self, node: exp.Column, ctx: Ctx) -> Val:
        if isinstance(node.this, exp.Star):
            raise self.fail("* is only allowed in the select list and in COUNT(*)", node)
        quals, ident = self.qualifiers(node), node.this
        if quals:
            src = self.source(quals, ctx.scope, node)
            hits = src.find(ident)
            if len(hits) != 1:
                raise self.unknown(ident, [src], node, len(hits))
            return column_value(src, hits[0])
        if ctx.aliases and ctx.alias_first and self.alias_hits(ident, ctx.aliases):
            return self.alias_value(ident, ctx, node)
        v = self.lookup(ident, ctx.scope, node)
        if v is None and ctx.aliases and self.alias_hits(ident, ctx.aliases):
            v = self.alias_value(ident, ctx, node)
        if v is None:
            raise self.unknown(ident, ctx.scope.sources, node)
        return v

    def alias_value(self, ident: exp.Identifier, ctx: Ctx, node: exp.Expr) -> Val:
        v = self.alias_hits(ident, ctx.aliases, node)[0].val.fresh()
        if v.sql is not None:
            v.sql = atom(v.sql)
        return v

    def lookup(self, ident: exp.Identifier, scope: Scope | None, node: exp.Expr) -> Val | None:
        s = scope
        while s is not None:
            hits = [e for e in s.entries if same(ident, e.name)]
            if len(hits) > 1:
                where = " and ".join(sorted({e.origin for e in hits if e.origin}))
                raise self.fail(f"Column '{ident.this}' is ambiguous (in {where}): qualify it "
                                "with a table name or alias", node)
            if hits:
                return hits[0].make()
            s = s.parent
        return None

    def unknown(self, ident: exp.Identifier, sources: list[Source], node: exp.Expr,
                n: int = 0) -> AdqlError:
        if n > 1:
            return self.fail(f"Column '{ident.this}' is ambiguous in {sources[0].label}", node)
        where = f" in table {sources[0].label}" if len(sources) == 1 else \
            f" in any of {', '.join(s.label for s in sources)}" if sources else ""
        names = [c.name for s in sources for c in s.columns]
        close = difflib.get_close_matches(ident.this.lower(), names, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        reserved = " (quoted names are case-sensitive)" if ident.quoted else ""
        return self.fail(f"Unknown column '{ident.this}'{where}{hint}{reserved}", node)
