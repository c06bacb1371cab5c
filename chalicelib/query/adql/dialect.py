"""ADQL 2.1 as a sqlglot dialect: the tokenizer and parser that turn query text into an AST.

Deliberately narrow: the tokenizer knows only ADQL's keywords and operators (no `::`, `->`,
brackets, `$`/`?`/`@` parameters or block comments), every function call becomes an
`exp.Anonymous` that the translator checks against the ADQL function list, and CAST has
its own parser for the ADQL types. Whatever else sqlglot's generic grammar accepts is
rejected later by the translator's allow-list, which handles only ADQL node types.
"""

from __future__ import annotations

import re
from typing import ClassVar

import sqlglot
from sqlglot import exp, tokens
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.parser import Parser
from sqlglot.tokens import TokenType

from .errors import AdqlError, offset_position

_WORDS = """ALL AND ASC BETWEEN CASE CROSS DESC DISTINCT ELSE END EXCEPT EXISTS FROM FULL
HAVING ILIKE IN INNER INTERSECT IS JOIN LEFT LIKE NATURAL NOT NULL OFFSET ON OR OUTER RIGHT
SELECT THEN UNION USING WHEN WHERE WITH""".split()

_KEYWORDS = {w: tokens.Tokenizer.KEYWORDS[w] for w in _WORDS} | {
    "AS": TokenType.ALIAS,
    "GROUP BY": TokenType.GROUP_BY,
    "ORDER BY": TokenType.ORDER_BY,
    "TOP": TokenType.TOP,
    "||": TokenType.DPIPE,
    ">=": TokenType.GTE,
    "<=": TokenType.LTE,
    "<>": TokenType.NEQ,
    "!=": TokenType.NEQ,
}
# & | ^ ~ % stay tokens so that their misuse gets a clear "not ADQL" message
_SINGLE = {k: v for k, v in tokens.Tokenizer.SINGLE_TOKENS.items() if k in "(),.-=<>+*/;'\"&|^~%!"}


_STARTS = {TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN}


class AdqlCast(exp.Expression):
    """CAST(this AS to[(length)]) with the ADQL type name kept as written."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "to": True, "length": False}


def _parse_cast(self: Parser) -> exp.Expr:
    this = self._parse_assignment()
    if not self._match(TokenType.ALIAS):
        self.raise_error("Expected AS in CAST(value AS type)")
    words = []
    while self._curr and self._curr.token_type not in (TokenType.L_PAREN, TokenType.R_PAREN):
        words.append(self._curr.text.upper())
        self._advance()
    length = None
    if self._match(TokenType.L_PAREN):
        length = self._parse_primary()
        self._match_r_paren()
    return self.expression(AdqlCast(this=this, to=" ".join(words), length=length))


class ADQL(Dialect):
    class Tokenizer(tokens.Tokenizer):
        KEYWORDS = _KEYWORDS
        SINGLE_TOKENS = _SINGLE
        COMMENTS = ["--"]
        HEX_STRINGS = [("0x", ""), ("0X", "")]
        COMMANDS: ClassVar[set] = set()
        COMMAND_PREFIX_TOKENS: ClassVar[set] = set()

    class Parser(Parser):
        FUNCTIONS: ClassVar[dict] = {}
        NO_PAREN_FUNCTIONS: ClassVar[dict] = {}
        NO_PAREN_FUNCTION_PARSERS: ClassVar[dict] = {"CASE": lambda self: self._parse_case()}
        FUNCTION_PARSERS: ClassVar[dict] = {"CAST": _parse_cast}
        STATEMENT_PARSERS: ClassVar[dict] = {}

        def _parse_statement(self) -> exp.Expr | None:
            if self._curr and self._curr.token_type not in _STARTS:
                self.raise_error("An ADQL query starts with SELECT or WITH")
            return super()._parse_statement()

        def _parse_select_query(self, *args, **kwargs) -> exp.Expr | None:
            if self._curr and self._curr.token_type == TokenType.FROM:  # DuckDB's FROM-first
                self.raise_error("A query starts with SELECT, not FROM")
            return super()._parse_select_query(*args, **kwargs)

        def _parse_join(self, *args, **kwargs) -> exp.Join | None:
            # sqlglot gives `a, b` and `a JOIN b` (no condition: not ADQL) the same shape
            comma = self._curr is not None and self._curr.token_type == TokenType.COMMA
            join = super()._parse_join(*args, **kwargs)
            if join is not None and comma:
                join.meta["comma"] = True
            return join


_REGULAR = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse(text: str) -> exp.Expr:
    """One ADQL query -> its AST; syntax errors become AdqlErrors with a position."""
    if bad := _CONTROL.search(text):
        line, col = offset_position(text, bad.start())
        raise AdqlError(f"The query contains a control character ({bad.group()!r})", line, col)
    try:
        trees = [t for t in sqlglot.parse(text, read=ADQL) if t is not None]
    except ParseError as e:
        raise _syntax_error(text, e) from None
    except TokenError as e:
        raise AdqlError(f"Cannot read the query: {e}") from None
    except RecursionError:
        raise AdqlError("The query is nested too deeply") from None
    if not trees:
        raise AdqlError("The query is empty")
    if len(trees) > 1:
        raise AdqlError("Only one query can be run at a time (found a ';' between statements)")
    return trees[0]


# sqlglot's messages name its own classes ("missing for <class 'sqlglot.expressions.
# query.Limit'>") and token reprs ("got <Token token_type: TokenType.SENTINEL, ...>")
_CLASS = re.compile(r"<class '(?:\w+\.)*(\w+)'>")
_TOKEN = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: \d+, col: \d+, "
                    r"start: \d+, end: \d+, comments: \[.*?\]>", re.S)


def _plain(message: str) -> str:
    """A parser message in the query's own words: keywords and tokens, not classes."""
    message = _CLASS.sub(lambda m: m.group(1).upper(), message)
    return _TOKEN.sub(lambda m: "the end of the query" if m.group(1) == "SENTINEL"
                      else f"'{m.group(2)}'", message)


def _syntax_error(text: str, e: ParseError) -> AdqlError:
    info = e.errors[0] if e.errors else {}
    near = (info.get("highlight") or "").strip()
    what = _plain(info.get("description") or str(e))
    msg = f"Syntax error near '{near}': {what}" if near else f"Syntax error: {what}"
    if "/*" in text:
        msg += " (ADQL comments start with -- and run to the end of the line)"
    line, col = info.get("line"), info.get("col")
    if near and line is not None and col is not None:
        col = max(1, col - len(near) + 1)  # sqlglot reports the token's last column
    return AdqlError(msg, line, col)


def check_identifier(ident: exp.Identifier) -> str | None:
    """Why an unquoted identifier is not a valid ADQL regular identifier, or None."""
    if ident.quoted:
        return None
    name = ident.this
    if not _REGULAR.match(name):
        return f"'{name}' is not a valid name (write names that do not start with a letter " \
               "or contain other characters than letters, digits and _ in double quotes)"
    if name.upper() in RESERVED:
        return f"'{name}' is an ADQL reserved word: write it in double quotes (\"{name}\")"
    return None


# ADQL 2.1 reserved words (section 2.1.3) that could be mistaken for names.
RESERVED = frozenset("""ABS ACOS AREA ASIN ATAN ATAN2 BIT_AND BIT_NOT BIT_OR BIT_XOR BOX
CEILING CENTROID CIRCLE CONTAINS COORD1 COORD2 COORDSYS COS COT DEGREES DISTANCE EXP FLOOR
ILIKE INTERSECTS IN_UNIT LOG LOG10 LOWER MOD PI POINT POLYGON POWER RADIANS REGION RAND ROUND
SIN SQRT TAN TOP TRUNCATE UPPER""".split())
