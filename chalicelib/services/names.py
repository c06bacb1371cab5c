"""Object names the portal resolves without any outside service: a small table shipped in
the package (names.csv beside this module, built from catalogue files by
chalicelib/devtools/names_table.py; its header names the sources): Messier objects, bright
NGC/IC objects (from the Caldwell list), the Magellanic Clouds and the SPHEREx deep fields
(NEP, SEP).

Names match loosely, as people type them: case, spaces, '-', '_' and leading zeros of
catalogue numbers do not matter ('m 31', 'NGC0224', 'Messier 31' and 'andromeda' are M31).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).with_name("names.csv")


@dataclass(frozen=True)
class Named:
    name: str  # the table's main name, e.g. 'M31'
    aliases: tuple[str, ...]
    ra: float  # ICRS degrees
    dec: float
    kind: str


def normalise(text: str) -> str:
    """The lookup key of a name: upper case, no blanks or punctuation, 'MESSIER' as 'M',
    no leading zeros in catalogue numbers ('Andromeda Galaxy' also answers to 'Andromeda')."""
    key = re.sub(r"[\s_\-'.]+", "", text.upper())
    key = re.sub(r"^MESSIER(?=\d)", "M", key)
    return re.sub(r"^(M|NGC|IC)0+(?=\d)", r"\1", key)


@lru_cache(maxsize=1)
def _index() -> dict[str, Named]:
    lines = [line for line in TABLE.read_text().splitlines() if not line.startswith("#")]
    out: dict[str, Named] = {}
    for row in csv.DictReader(lines):
        aliases = tuple(a for a in row["aliases"].split(";") if a)
        entry = Named(row["name"], aliases, float(row["ra"]), float(row["dec"]), row["kind"])
        for n in (entry.name, *aliases):
            out.setdefault(normalise(n), entry)
    for entry in {e.name: e for e in out.values()}.values():  # 'Andromeda' for 'Andromeda Galaxy'
        for n in entry.aliases:
            stem = _GENERIC.sub("", n)
            if stem != n and len(normalise(stem)) > 2:
                out.setdefault(normalise(stem), entry)
    return out


_GENERIC = re.compile(r"\s+(Galaxy|Nebula|Cluster|Star Cloud)$", re.IGNORECASE)


def lookup(text: str) -> Named | None:
    """The object a name means, or None."""
    return _index().get(normalise(text)) if text.strip() else None


def suggestions(text: str, limit: int = 5) -> list[str]:
    """Main names whose names start like the text (for an unknown-name message)."""
    key = normalise(text)
    if len(key) < 2:
        return []
    seen: list[str] = []
    for test in (str.startswith, str.__contains__):
        for k, entry in _index().items():
            if test(k, key) and entry.name not in seen:
                seen.append(entry.name)
    return seen[:limit]


def all_names() -> list[Named]:
    return list({e.name: e for e in _index().values()}.values())
