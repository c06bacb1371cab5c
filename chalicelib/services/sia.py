"""SIA 2.0 query: a thin translation of its parameters onto the ObsCore catalogue.

Values of one parameter are ORed, different parameters ANDed; intervals may be open
(-Inf/+Inf); NULL metadata never matches (SQL comparisons with NULL are not true).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .. import dali
from ..config import Settings, settings
from ..geometry import sky
from ..geometry.sqlfunctions import sql_str
from ..lake import schema
from ..query import runtime
from ..query.catalogue import Catalogue, QueryError, QueryTimeout
from ..render import votable
from ..render.votable import Param, service_descriptor
from ..web import observability
from ..web.load import sync_slot
from ..web.params import Params, parse_maxrec
from ..web.replies import Reply
from ..web.request import Request
from ..web.routes import Handler, dispatch
from . import datalink
from .tap.availability import availability
from .tap.meta import vosi_capabilities

TABLE = schema.TABLES["ivoa.obscore"]

# parameter -> (column, kind); kind: interval | text | int
SIMPLE = {
    "FOV": ("s_fov", "interval"), "SPATRES": ("s_resolution", "interval"),
    "EXPTIME": ("t_exptime", "interval"), "TIMERES": ("t_resolution", "interval"),
    "SPECRP": ("em_res_power", "interval"),
    "ID": ("obs_publisher_did", "text"), "COLLECTION": ("obs_collection", "text"),
    "FACILITY": ("facility_name", "text"), "INSTRUMENT": ("instrument_name", "text"),
    "DPTYPE": ("dataproduct_type", "text"), "TARGET": ("target_name", "text"),
    "FORMAT": ("access_format", "text"), "CALIB": ("calib_level", "int"),
}
POL_STATES = {"I", "Q", "U", "V", "RR", "LL", "RL", "LR", "XX", "YY", "XY", "YX", "POLI",
              "POLA"}


class SiaUsageError(dali.UsageError):
    pass


def _interval(text: str, what: str) -> tuple[float, float]:
    return dali.interval(text, what, error=SiaUsageError)


def _bound(col: str, op: str, v: float) -> str | None:
    return None if math.isinf(v) else f"{col} {op} {v!r}"


def _overlap(lo_col: str, hi_col: str, lo: float, hi: float) -> str:
    """[lo_col, hi_col] overlaps [lo, hi]; infinite ends impose nothing."""
    terms = [t for t in (_bound(hi_col, ">=", lo), _bound(lo_col, "<=", hi)) if t]
    terms.append(f"{lo_col} IS NOT NULL AND {hi_col} IS NOT NULL")
    return "(" + " AND ".join(terms) + ")"


def _within(col: str, lo: float, hi: float) -> str:
    terms = [t for t in (_bound(col, ">=", lo), _bound(col, "<=", hi)) if t]
    return "(" + " AND ".join(terms + [f"{col} IS NOT NULL"]) + ")"


def _range_polygons(ra1, ra2, de1, de2) -> list[list[float]]:
    """A RANGE as polygons of < 90 deg in RA with edges sampled every <= 1 deg, so the
    great-circle chords follow the constant-Dec sides closely."""
    de1, de2 = max(de1, -89.999999), min(de2, 89.999999)
    if ra2 < ra1:
        ra2 += 360.0
    pieces, start = [], ra1
    while start < ra2 - 1e-12:
        end = min(start + 90.0, ra2)
        n = max(2, int(math.ceil(end - start)) + 1)
        ras = [start + (end - start) * i / (n - 1) for i in range(n)]
        ring = [(r, de1) for r in ras] + [(r, de2) for r in reversed(ras)]
        pieces.append([v for r, d in ring for v in (r % 360.0, d)])
        start = end
    return pieces


# ---- the request as a model: parsed and checked first, then translated to SQL -----------

Shape = tuple[str, tuple[float, ...]]  # (CIRCLE | RANGE | POLYGON, normalised numbers)
Interval = tuple[float, float]


@dataclass(frozen=True)
class SiaQuery:
    """One SIA 2.0 query. Values of one parameter are ORed, parameters ANDed; `simple`
    holds the SIMPLE parameters given, in SIMPLE's order, as (name, values): intervals,
    integers or strings by the parameter's kind. MAXREC=0 asks for the service's own
    description, so its constraints are not looked at (nor checked)."""
    maxrec: int
    responseformat: str  # a votable.parse_format name
    pos: tuple[Shape, ...] = ()
    band: tuple[Interval, ...] = ()
    time: tuple[Interval, ...] = ()
    pol: tuple[str, ...] = ()
    simple: tuple[tuple[str, tuple[Interval | int | str, ...]], ...] = ()

    @classmethod
    def parse(cls, params: Params, default_maxrec: int, hard_maxrec: int) -> SiaQuery:
        """Raises SiaUsageError (or votable.UnsupportedFormat) on the first bad value, in
        the order RESPONSEFORMAT, MAXREC, POS, BAND, TIME, POL, then SIMPLE's."""
        fmt = votable.parse_format(params.get("RESPONSEFORMAT"))
        maxrec = parse_maxrec(params, default_maxrec, hard_maxrec, SiaUsageError)
        if maxrec == 0:
            return cls(maxrec, fmt)

        def given(name: str) -> list[str]:
            return [v.strip() for v in params.getall(name) if v.strip()]

        return cls(
            maxrec, fmt,
            pos=tuple(dali.shape(v, "POS", error=SiaUsageError) for v in given("POS")),
            band=tuple(_interval(v, "BAND") for v in given("BAND")),
            time=tuple(_interval(v, "TIME") for v in given("TIME")),
            pol=tuple(_pol(v) for v in given("POL")),
            simple=tuple((name, tuple(_simple(name, v) for v in given(name)))
                         for name in SIMPLE if given(name)))


def _pol(value: str) -> str:
    if value not in POL_STATES:
        raise SiaUsageError(f"POL: {value!r} is not a polarization state")
    return value


def _simple(name: str, value: str) -> Interval | int | str:
    kind = SIMPLE[name][1]
    if kind == "interval":
        return _interval(value, name)
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise SiaUsageError(f"{name}: {value!r} is not an integer") from None
    return value


def pos_condition(shape: Shape, cat: Catalogue) -> str:
    kind, args = shape
    if kind == "CIRCLE":
        ra, dec, r = args
        box = cat.box_sql("s_ra", "s_dec", ra, dec, r, footprint=True, table=TABLE.name)
        return f"({box} AND sky_circle_x_poly_bin({ra!r}, {dec!r}, {r!r}, " \
               f"{schema.PACKED_REGION}))"
    if kind == "RANGE":
        ra1, ra2, de1, de2 = args
        return "(" + " OR ".join(_poly_condition(p, cat) for p in
                                 _range_polygons(ra1, ra2, de1, de2)) + ")"
    return _poly_condition(list(args), cat)


def _poly_condition(poly: list[float], cat: Catalogue) -> str:
    polys = sky.Polys.one(poly)
    ra, dec = sky.radec(polys.centre())
    box = cat.box_sql("s_ra", "s_dec", float(ra[0]), float(dec[0]),
                      float(polys.radius()[0]), footprint=True, table=TABLE.name)
    arr = "[" + ", ".join(repr(float(v)) for v in poly) + "]::DOUBLE[]"
    return f"({box} AND sky_poly_x_poly({arr}, s_region))"


def _simple_condition(name: str, value: Interval | int | str) -> str:
    col, kind = SIMPLE[name]
    if kind == "interval":
        return _within(col, *value)
    if kind == "int":
        return f"({col} = {value})"
    return f"({col} = {sql_str(value)})"


def where(q: SiaQuery, cat: Catalogue) -> str:
    """The model as a SQL condition on ivoa.obscore."""
    groups = [
        [pos_condition(shape, cat) for shape in q.pos],
        [_overlap("em_min", "em_max", lo, hi) for lo, hi in q.band],
        [_overlap("t_min", "t_max", lo, hi) for lo, hi in q.time],
        [f"(pol_states LIKE {sql_str('%/' + v + '/%')})" for v in q.pol],
        *([_simple_condition(name, v) for v in values] for name, values in q.simple),
    ]
    clauses = ["(" + " OR ".join(group) + ")" for group in groups if group]
    return " AND ".join(clauses) or "TRUE"


def query(params: Params, base: str, conf: Settings | None = None) -> Reply:
    cat = runtime.catalogue(base)
    conf = conf or settings()
    try:
        q = SiaQuery.parse(params, conf.sia_default_maxrec, conf.sia_hard_maxrec)
        fmt, maxrec = q.responseformat, q.maxrec
        fields = datalink.bind_fields([votable.Field.from_column(c) for c in TABLE.served])
        if maxrec == 0:
            body, ctype = votable.write(TABLE.arrow_schema().empty_table().select(
                [c.name for c in TABLE.served]), fields, "votable",
                resources_after=[self_description(base, conf.sia_hard_maxrec)]
                + datalink.descriptors(base))
            return Reply(200, body, ctype)
        cols = ", ".join(c.name for c in TABLE.served)
        sql = (f"SELECT {cols} FROM ivoa.obscore WHERE {where(q, cat)} "
               "ORDER BY t_min, obs_publisher_did")
        with sync_slot():
            table = cat.query(sql, timeout=conf.sia_timeout, max_rows=maxrec + 1)
    except (SiaUsageError, votable.UnsupportedFormat, QueryError) as e:
        return Reply(400, votable.error_document(f"UsageError: {e}"),
                     "application/x-votable+xml")
    except QueryTimeout as e:
        return Reply(503, votable.error_document(f"Error: {e}"), "application/x-votable+xml")
    overflow = table.num_rows > maxrec
    observability.add(rows=min(table.num_rows, maxrec))
    extra = datalink.descriptors(base) if fmt.startswith("votable") else []
    body, ctype = votable.write(table.slice(0, maxrec), fields, fmt, overflow=overflow,
                                resources_after=extra, title="SIA 2.0 query result",
                                query=_echo(params))
    return Reply(200, body, ctype)


def _echo(params: Params) -> str:
    """The query parameters as the html page echoes them."""
    names = ["POS", "BAND", "TIME", "POL", *SIMPLE, "MAXREC"]
    return "&".join(f"{n}={v}" for n in names for v in params.getall(n)) or "(no constraint)"


def self_description(base: str, hard_maxrec: int) -> str:
    """MAXREC=0: the service's own input parameters as a service descriptor."""
    p = [
        Param("POS", "char", arraysize="*", description="CIRCLE ra dec r | RANGE ra1 ra2 "
              "dec1 dec2 | POLYGON ra1 dec1 ... (deg, ICRS)"),
        Param("BAND", "double", arraysize="2", xtype="interval", unit="m",
              description="wavelength interval"),
        Param("TIME", "double", arraysize="2", xtype="interval", unit="d",
              description="MJD interval"),
        Param("POL", "char", arraysize="*", options=sorted(POL_STATES)),
        Param("FOV", "double", arraysize="2", xtype="interval", unit="deg"),
        Param("SPATRES", "double", arraysize="2", xtype="interval", unit="arcsec"),
        Param("EXPTIME", "double", arraysize="2", xtype="interval", unit="s"),
        Param("TIMERES", "double", arraysize="2", xtype="interval", unit="s"),
        Param("SPECRP", "double", arraysize="2", xtype="interval"),
        Param("ID", "char", arraysize="*"),
        Param("COLLECTION", "char", arraysize="*",
              options=["spherex_qr2", "spherex_qr2_deep", "spherex_qr2_cal"]),
        Param("FACILITY", "char", arraysize="*", options=["SPHEREx"]),
        Param("INSTRUMENT", "char", arraysize="*", options=["SPHEREx"]),
        Param("DPTYPE", "char", arraysize="*", options=["image", "measurements"]),
        Param("CALIB", "int", options=["0", "1", "2", "3", "4"]),
        Param("TARGET", "char", arraysize="*"),
        Param("FORMAT", "char", arraysize="*"),
        Param("MAXREC", "int", min="0", max=str(hard_maxrec)),
        Param("RESPONSEFORMAT", "char", arraysize="*",
              options=["votable", "votable/b2", "csv", "tsv", "fits", "parquet", "html"],
              description="votable (default), votable/b2, csv, tsv, fits, parquet or "
              "html (a page for a browser: units and descriptions in the headers, links "
              "to the DataLink and files); MIME types (text/html, ...) too"),
    ]
    return service_descriptor("sia", f"{base}/sia/query", "ivo://ivoa.net/std/SIA#query-2.0",
                              p, description="SIA 2.0 query parameters")


def capabilities(base: str) -> str:
    return vosi_capabilities(f"{base}/sia", [
        ("ivo://ivoa.net/std/SIA#query-2.0", "query", ' role="std" version="2.0"'),
        ("ivo://ivoa.net/std/VOSI#capabilities", "capabilities", ""),
        ("ivo://ivoa.net/std/VOSI#availability", "availability", "")])


SIA_NS = "http://www.ivoa.net/xml/SIA/v1.1"  # SimpleDALRegExt's SIA schema, also for SIA 2.0
# every SPHEREx image is 2040 x 2040 pixels of 6.15 arcsec (3.485 deg a side) at any
# rotation: 5 deg along each axis encloses the largest one
MAX_IMAGE_EXTENT = 5.0
TEST_QUERY = (270.0, 66.56, 0.1)  # the north ecliptic pole deep field


def registry_capability(base: str, conf: Settings | None = None) -> str:
    """The SIA 2.0 query capability as the registry describes it (SimpleDALRegExt 1.1+:
    xsi:type sia:SimpleImageAccess with the SIA 2.0 standardID): a "Pointed" archive of
    fixed images, any query region size, and the row limit of the query. The element
    needs the sia, vs and xsi prefixes bound where it is placed."""
    conf = conf or settings()
    ra, dec, size = TEST_QUERY
    return ('<capability standardID="ivo://ivoa.net/std/SIA#query-2.0" '
            'xsi:type="sia:SimpleImageAccess">'
            '<description>SIA 2.0 search of the SPHEREx spectral images</description>'
            '<interface xsi:type="vs:ParamHTTP" role="std" version="2.0">'
            f'<accessURL use="base">{escape(base)}/sia/query</accessURL>'
            "</interface>"
            "<imageServiceType>Pointed</imageServiceType>"
            "<maxQueryRegionSize><long>360</long><lat>180</lat></maxQueryRegionSize>"
            f"<maxImageExtent><long>{MAX_IMAGE_EXTENT}</long><lat>{MAX_IMAGE_EXTENT}</lat>"
            "</maxImageExtent>"
            f"<maxRecords>{int(conf.sia_hard_maxrec)}</maxRecords>"
            f"<testQuery><pos><long>{ra}</long><lat>{dec}</lat></pos>"
            f"<size><long>{size}</long><lat>{size}</lat></size></testQuery></capability>")


def _query(rest: str, req: Request) -> Reply:
    return query(req.params, req.base, req.settings)


ROUTES: dict[str, Handler] = {
    "query": _query,
    "": _query,
    "capabilities": lambda rest, req: Reply.xml(capabilities(req.base)),
    "availability": lambda rest, req: availability(),
}


def handle(req: Request) -> Reply:
    return dispatch(req, ROUTES, lambda rest: Reply.text(f"Not found: /sia/{rest}", 404))
