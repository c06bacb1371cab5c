"""The one error type of the translator: what is wrong, and where."""

from __future__ import annotations

from sqlglot import exp


class AdqlError(ValueError):
    """A query the service will not run; the message is meant for the person who wrote it."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.line, self.column = line, column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(message + where)


def position(text: str, node: exp.Expr | None) -> tuple[int | None, int | None]:
    """Line and column (1-based) of a node: its own position, else its first positioned
    descendant's (sqlglot records positions on identifiers, literals and functions)."""
    if node is None:
        return None, None
    for n in node.walk():
        start = n.meta.get("start") if n._meta else None  # _meta: reading meta allocates
        if start is not None:
            return offset_position(text, start)
    return None, None


def offset_position(text: str, start: int) -> tuple[int, int]:
    line = text.count("\n", 0, start) + 1
    return line, start - (text.rfind("\n", 0, start) + 1) + 1


def fail(message: str, text: str = "", node: exp.Expr | None = None) -> AdqlError:
    """An AdqlError positioned at node (raise the result)."""
    line, col = position(text, node) if text else (None, None)
    return AdqlError(message, line, col)
