"""RESPONSEFORMAT=html: a result as a page a person reads in a browser.

One table: column names as headers with the unit under them and the description, UCD
and unit as the header's title (hover text); cells that are http(s) URLs (access_url,
DataLink links, previews) as links; the query echoed; INFOs (release, warnings) and the
overflow stated above the table. Every value is HTML-escaped (names, units, descriptions,
cells, the query): a hostile value shows as text, never as markup. Only http and https
URLs become links (no javascript: or data: hrefs).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import pyarrow as pa

from chalicelib.render import encoders as formats
from chalicelib.render.fields import Field

CONTENT_TYPE = "text/html; charset=utf-8"
_STYLE = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;"
          "font-size:90%}th,td{border:1px solid #ccc;padding:2px 6px;vertical-align:top}"
          "th{background:#eef;position:sticky;top:0}th small{font-weight:normal;color:#555}"
          "pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}"
          ".overflow{color:#a00;font-weight:bold}.null{color:#999}")


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _header(f: Field) -> str:
    tip = " | ".join(x for x in (f.description, f"unit: {f.unit}" if f.unit else None,
                                 f"UCD: {f.ucd}" if f.ucd else None) if x)
    unit = f"<br><small>[{_e(f.unit)}]</small>" if f.unit else ""
    title = f' title="{_e(tip)}"' if tip else ""
    return f"<th{title}>{_e(f.name)}{unit}</th>"


def _is_url(text: str) -> bool:
    low = text[:8].lower()
    return (low.startswith("http://") or low.startswith("https://")) and not any(
        c.isspace() for c in text)


def _cell(value: str | None) -> str:
    if value is None:
        return '<td class="null"></td>'
    if _is_url(value):
        return f'<td><a href="{_e(value)}" rel="nofollow">{_e(value)}</a></td>'
    return f"<td>{_e(value)}</td>"


def _texts(col: pa.ChunkedArray) -> list[str | None]:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return formats.to_text(arr).to_pylist()


def document(table: pa.Table, fields: Sequence[Field], *, title: str | None = None,
             query: str | None = None, overflow: bool = False,
             infos: Sequence[tuple[str, str, str | None]] = ()) -> bytes:
    """The page for `table` (already prepared: columns in `fields` order, served values)."""
    n = table.num_rows
    head = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title or 'Query result')}</title><style>{_STYLE}</style></head>"
            f"<body>\n<h1>{_e(title or 'Query result')}</h1>\n"]
    if query:
        head.append(f"<p>Query:</p>\n<pre class=\"query\">{_e(query)}</pre>\n")
    if infos:
        head.append("<ul class=\"infos\">" + "".join(
            f"<li><b>{_e(name)}</b> {_e(value)}{': ' + _e(text) if text else ''}</li>"
            for name, value, text in infos) + "</ul>\n")
    rows_text = f"{n:,} row{'s' if n != 1 else ''}"
    if overflow:
        head.append(f'<p class="overflow">{rows_text}: the result was truncated at MAXREC '
                    "rows; there are more (raise MAXREC or narrow the query).</p>\n")
    else:
        head.append(f"<p>{rows_text}.</p>\n")
    head.append("<table>\n<thead><tr>" + "".join(_header(f) for f in fields)
                + "</tr></thead>\n<tbody>\n")
    cols = [_texts(table.column(i)) for i in range(table.num_columns)]
    body = ["<tr>" + "".join(_cell(c[r]) for c in cols) + "</tr>\n" for r in range(n)]
    tail = "</tbody></table>\n</body></html>\n"
    return "".join([*head, *body, tail]).encode()
