"""What a function implementation gets: its translated arguments and how to complain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from .errors import AdqlError
from .values import NULL, NUMERIC, STR, Val, describe


@dataclass
class Call:
    name: str  # ADQL name, upper case
    args: list[Val]
    nodes: list[exp.Expr]  # the ADQL argument nodes (for error positions)
    node: exp.Expr
    fail: Callable[[str, exp.Expr | None], AdqlError]
    note: Callable[[str], None] = lambda message: None  # a warning for the answer's INFO

    def error(self, message: str, i: int | None = None) -> AdqlError:
        return self.fail(message, self.nodes[i] if i is not None else self.node)

    def arity(self, *allowed: int, usage: str) -> None:
        if len(self.args) not in allowed:
            raise self.error(f"{self.name} takes {usage}")

    def number(self, i: int, what: str = "") -> Val:
        v = self.args[i]
        if v.type not in NUMERIC:
            raise self.error(f"{self.name} needs a number{what}, not {describe(v.type)}", i)
        return v

    def string(self, i: int) -> Val:
        v = self.args[i]
        if v.type not in (STR, NULL):
            raise self.error(f"{self.name} needs a string, not {describe(v.type)}", i)
        return v

    def literal_string(self, i: int, what: str) -> str:
        v = self.args[i]
        if "literal" not in v.extra:
            raise self.error(f"{self.name} needs {what} as a string literal ('...')", i)
        return v.extra["literal"]
