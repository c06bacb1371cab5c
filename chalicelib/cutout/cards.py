"""FITS header cards as raw 80-byte records: fast structural reads and minimal edits.

Cutout headers are the parent's bytes with a few cards replaced, removed or appended, so
everything else (order, comments, formatting) survives exactly and no astropy Header has
to be built per request.
"""

from __future__ import annotations

from astropy.io import fits

CARD = 80
BLOCK = 2880
END = b"END" + b" " * 77


def split(raw: bytes) -> list[bytes]:
    """The cards before END."""
    out = []
    for i in range(0, len(raw) - CARD + 1, CARD):
        c = raw[i:i + CARD]
        if c == END:
            break
        out.append(c)
    return out


def join(cards: list[bytes]) -> bytes:
    """A header: cards, END, blank-padded to whole blocks."""
    raw = b"".join(cards) + END
    return raw + b" " * (-len(raw) % BLOCK)


def keyword(card: bytes) -> str:
    return card[:8].decode("ascii", "replace").rstrip()


def value(card: bytes):
    """The value of a simple 'KEY     = value / comment' card: str, bool, int or float."""
    text = card[10:].decode("ascii", "replace").strip()
    if text.startswith("'"):
        end, i = None, 1
        while i < len(text):
            if text[i] == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                end = i
                break
            i += 1
        return text[1:end].replace("''", "'").rstrip()
    text = text.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        return float(text.replace("D", "E"))


def scan(raw: bytes, wanted: set[str]) -> dict:
    """Values of the wanted keywords (first occurrence) of a header."""
    out = {}
    for c in split(raw):
        k = keyword(c)
        if k in wanted and k not in out and c[8:10] == b"= ":
            out[k] = value(c)
    return out


def make(key: str, val, comment: str = "") -> list[bytes]:
    """Card images for key = val (long strings take CONTINUE cards)."""
    if isinstance(val, int | float) and not isinstance(val, bool) and len(key) <= 8:
        text = _number(val)
        if text is not None:  # fixed format, as the standard wants for NAXISn & co
            card = f"{key:<8}= {text:>20}" + (f" / {comment}" if comment else "")
            if len(card) <= CARD:
                return [card.ljust(CARD).encode("ascii")]
    image = fits.Card(key, val, comment).image.encode("ascii")
    return [image[i:i + CARD] for i in range(0, len(image), CARD)]


def _number(val: int | float) -> str | None:
    if isinstance(val, int):
        return str(val)
    if val != val or val in (float("inf"), float("-inf")):
        return None
    text = repr(float(val)).upper()  # shortest exact form; > 20 chars is free format
    if "." not in text and "E" not in text:
        text += ".0"
    return text


def comment(card: bytes) -> str:
    """The comment of a numeric or logical card (text after the value's '/')."""
    text = card[10:].decode("ascii", "replace")
    if text.lstrip().startswith("'"):
        return fits.Card.fromstring(card.decode("ascii")).comment
    return text.split("/", 1)[1].strip() if "/" in text else ""


def edit(raw: bytes, updates: dict | None = None, remove: set[str] = frozenset(),
         append: list[bytes] = ()) -> bytes:
    """The header with updated values (comments kept), cards removed, cards appended."""
    updates = dict(updates or {})
    out = []
    for c in split(raw):
        k = keyword(c)
        if k in remove:
            continue
        if k in updates and c[8:10] == b"= ":
            out += make(k, updates.pop(k), comment(c))
            continue
        out.append(c)
    for k, v in updates.items():  # keywords that were not there yet
        out += make(k, v)
    return join(out + list(append))
