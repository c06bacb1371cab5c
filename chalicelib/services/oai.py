"""The archive's registry records over OAI-PMH 2.0 at /oai (IVOA Registry Interfaces 1.1).

Records are VOResource 1.1: the naming authority (vg:Authority), this publishing registry
(vg:Registry, in Identify's description too), one per service (TAP, SIA 2.0, DataLink,
SODA, spectrophotometry UWS) with the capabilities its /capabilities endpoint gives, and
one vs:DataCollection per collection with its coverage computed from the release: the
collection MOC, the time span and the spectral range of its ObsCore rows, and the
wavebands those imply. Identifiers, titles, publisher and contacts come from
registry.toml next to this module, which an operator edits.

Metadata formats oai_dc and ivo_vor; one set, ivo_managed; stateless resumption tokens;
errors as OAI-PMH 2.0 section 3.6 names them.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ..lake.moc import collection_moc, collections, to_bytes
from ..query import runtime
from ..query.catalogue import Catalogue
from ..web.params import Params
from ..web.replies import Reply
from ..web.request import Request
from . import photometry, sia
from .tap import meta as tapmeta

CONFIG = Path(__file__).with_name("registry.toml")
OAI_NS = "http://www.openarchives.org/OAI/2.0/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
RI = "http://www.ivoa.net/xml/RegistryInterface/v1.0"
VR = "http://www.ivoa.net/xml/VOResource/v1.0"
VS = "http://www.ivoa.net/xml/VODataService/v1.1"
VG = "http://www.ivoa.net/xml/VORegistry/v1.0"
TR = "http://www.ivoa.net/xml/TAPRegExt/v1.0"
SIA = sia.SIA_NS
DC = "http://purl.org/dc/elements/1.1/"
OAI_DC = "http://www.openarchives.org/OAI/2.0/oai_dc/"
FORMATS = {
    "oai_dc": ("http://www.openarchives.org/OAI/2.0/oai_dc.xsd", OAI_DC),
    "ivo_vor": ("http://www.ivoa.net/xml/RegistryInterface/RegistryInterface-v1.0.xsd", RI),
}
SET = "ivo_managed"
MOC_ORDER = 7  # registry MOCs stay small (RegTAP recommends moderate orders)
HC = 6.62607015e-34 * 299792458.0  # J m: photon energy = HC / wavelength
# IVOA messenger vocabulary wavebands by wavelength (m)
WAVEBANDS = [("Radio", 1e-3, 1e9), ("Millimeter", 1e-4, 1e-3), ("Infrared", 7e-7, 1e-4),
             ("Optical", 3e-7, 7e-7), ("UV", 1e-8, 3e-7), ("EUV", 1e-9, 1e-8),
             ("X-ray", 1e-12, 1e-9), ("Gamma-ray", 0.0, 1e-12)]
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$")


class OaiError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@cache
def config() -> dict:
    return tomllib.loads(CONFIG.read_text())


@dataclass
class Record:
    identifier: str
    datestamp: str  # YYYY-MM-DDThh:mm:ssZ
    vor: str  # the ri:Resource element
    dc: str  # the oai_dc:dc element


# ---- VOResource pieces -----------------------------------------------------------------


def _t(tag: str, value: object, attrs: str = "") -> str:
    return f"<{tag}{attrs}>{escape(str(value))}</{tag}>" if value not in (None, "") else ""


def _curation(cfg: dict) -> str:
    pub, contact, creator = cfg["publisher"], cfg["contact"], cfg.get("creator", {})
    pub_id = f" ivo-id={quoteattr(pub['ivo_id'])}" if pub.get("ivo_id") else ""
    return ("<curation>" + _t("publisher", pub["name"], pub_id)
            + (f"<creator>{_t('name', creator['name'])}</creator>" if creator else "")
            + "<contact>" + _t("name", contact["name"]) + _t("address", contact.get("address"))
            + _t("email", contact.get("email")) + "</contact></curation>")


def _content(entry: dict, kind: str, subjects=None) -> str:
    subjects = subjects or entry.get("subjects") or ["Astronomy"]
    ref = entry.get("reference_url") or config()["registry_record"]["reference_url"]
    return ("<content>" + "".join(_t("subject", s) for s in subjects)
            + _t("description", entry["description"]) + _t("referenceURL", ref)
            + _t("type", kind) + "<contentLevel>Research</contentLevel></content>")


def _resource(xsi_type: str, entry: dict, created: str, updated: str, kind: str,
              body: str, subjects=None) -> str:
    cfg = config()
    short = _t("shortName", entry.get("short_name", "")[:16])
    # xmlns="": the children are unqualified, not in OAI-PMH's default namespace
    return (f'<ri:Resource xmlns="" xmlns:ri="{RI}" xmlns:vr="{VR}" xmlns:vs="{VS}" '
            f'xmlns:vg="{VG}" xmlns:tr="{TR}" xmlns:sia="{SIA}" xmlns:xsi="{XSI}" '
            f'xsi:type="{xsi_type}" '
            f'created="{created}" updated="{updated}" status="active">'
            + _t("title", entry["title"]) + short + _t("identifier", entry["identifier"])
            + _curation(cfg) + _content(entry, kind, subjects) + body + "</ri:Resource>")


def _dc(entry: dict, date: str, kind: str, subjects=None) -> str:
    cfg = config()
    return (f'<oai_dc:dc xmlns:oai_dc="{OAI_DC}" xmlns:dc="{DC}" xmlns:xsi="{XSI}" '
            f'xsi:schemaLocation="{OAI_DC} {FORMATS["oai_dc"][0]}">'
            + _t("dc:title", entry["title"]) + _t("dc:identifier", entry["identifier"])
            + _t("dc:creator", cfg.get("creator", {}).get("name"))
            + "".join(_t("dc:subject", s) for s in subjects or entry.get("subjects") or [])
            + _t("dc:description", entry["description"])
            + _t("dc:publisher", cfg["publisher"]["name"]) + _t("dc:date", date[:10])
            + _t("dc:type", kind) + "</oai_dc:dc>")


def _capabilities_of(document: str) -> str:
    """The <capability> elements of a VOSI capabilities document, as they are served."""
    start = document.index(">", document.index("<vosi:capabilities")) + 1
    return document[start:document.rindex("</vosi:capabilities>")]


def _interface(url: str, std: bool = True, version: str | None = None) -> str:
    role = ' role="std"' + (f' version="{version}"' if version else "") if std else ""
    return (f'<interface xsi:type="vs:ParamHTTP"{role}><accessURL use="base">'
            f"{escape(url)}</accessURL></interface>")


def _split(capabilities: str) -> list[str]:
    """The <capability> elements of a capabilities body, one string each."""
    parts = capabilities.split("<capability ")
    return [parts[0]] * bool(parts[0].strip()) + ["<capability " + p for p in parts[1:]]


def tableset() -> str:
    """The TAP service's vs:tableset, as /tap/tables gives it (the schema module's)."""
    doc = tapmeta.tableset()
    start = doc.index(">", doc.index("<vosi:tableset")) + 1
    return "<tableset>" + doc[start:doc.rindex("</vosi:tableset>")] + "</tableset>"


def service_capabilities(base: str) -> dict[str, str]:
    """Each service's capabilities, as its /capabilities gives them where it has one."""
    return {
        "tap": _capabilities_of(tapmeta.capabilities(base)),
        # the SIA 2.0 query as SimpleDALRegExt describes it; its VOSI capabilities as served
        "sia": sia.registry_capability(base) + "".join(
            c for c in _split(_capabilities_of(sia.capabilities(base)))
            if 'standardID="ivo://ivoa.net/std/SIA#query-2.0"' not in c),
        "datalink": '<capability standardID="ivo://ivoa.net/std/DataLink#links-1.1">'
                    + _interface(f"{base}/datalink/links", version="1.1") + "</capability>",
        "soda": "".join(
            f'<capability standardID="ivo://ivoa.net/std/SODA#{mode}-1.0">'
            + _interface(f"{base}/soda/{mode}", version="1.0") + "</capability>"
            for mode in ("sync", "async")),
        "spectrophotometry": _capabilities_of(photometry.capabilities(base)),
    }


# ---- the records -------------------------------------------------------------------------


def _holdings(cat: Catalogue) -> dict[str, dict]:
    """Per collection: time span (MJD), wavelength range (m) and row count."""
    table = cat.query("SELECT obs_collection, min(t_min) AS t0, max(t_max) AS t1, "
                      "min(em_min) AS e0, max(em_max) AS e1, count(*) AS n "
                      "FROM ivoa.obscore GROUP BY obs_collection")
    return {r["obs_collection"]: r for r in table.to_pylist()}


def wavebands(em_min: float | None, em_max: float | None) -> list[str]:
    if em_min is None or em_max is None:
        return []
    return [name for name, lo, hi in WAVEBANDS if em_min < hi and em_max > lo]


def _coverage(moc_ascii: str | None, h: dict | None) -> str:
    parts = []
    if moc_ascii:
        parts.append(f'<spatial frame="ICRS">{escape(moc_ascii)}</spatial>')
    if h and h.get("t0") is not None and h.get("t1") is not None:
        parts.append(f"<temporal>{h['t0']!r} {h['t1']!r}</temporal>")
    if h and h.get("e0") and h.get("e1"):
        parts.append(f"<spectral>{HC / h['e1']!r} {HC / h['e0']!r}</spectral>")
    for band in wavebands(h and h.get("e0"), h and h.get("e1")):
        parts.append(_t("waveband", band))
    return "<coverage>" + "".join(parts) + "</coverage>" if parts else ""


def _iso(stamp: str) -> str:
    """A release's creation time (ISO 8601) as an OAI-PMH datestamp (UTC, seconds)."""
    try:
        t = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return config()["updated"]
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _moc_ascii(cat: Catalogue, coll: str) -> str:
    moc = collection_moc(cat.archive, coll, cat.release)
    if moc.max_order > MOC_ORDER:
        moc = moc.degrade_to_order(MOC_ORDER)
    text = to_bytes(moc, "ascii").decode().strip()
    return " ".join(text.split())


def collection_entry(name: str) -> dict:
    cfg = config()
    entry = dict(cfg.get("collections", {}).get(name, {}))
    entry.setdefault("identifier", f"ivo://{cfg['authority']}/{name}")
    entry.setdefault("title", f"SPHEREx collection {name}")
    entry.setdefault("description", f"The data products of collection {name}.")
    entry.setdefault("short_name", name[:16])
    entry.setdefault("subjects", ["Infrared astronomy", "Sky surveys"])
    return entry


def _collection(cat: Catalogue, name: str, h: dict | None, base: str, released: str,
                tap_id: str, mapped: bool) -> Record:
    cfg = config()
    entry = collection_entry(name)
    body = ("<facility>SPHEREx</facility><instrument>SPHEREx</instrument>"
            "<rights>https://www.ipac.caltech.edu/ (public data)</rights>"
            "<format>application/fits</format>"
            + _coverage(_moc_ascii(cat, name) if mapped else None, h)
            + f'<accessURL use="base">{escape(base)}/tap</accessURL>')
    rel = (f"<relationship><relationshipType>IsServedBy</relationshipType>"
           f'<relatedResource ivo-id="{escape(tap_id)}">'
           f"{escape(cfg['services']['tap']['title'])}</relatedResource></relationship>")
    vor = _resource("vs:DataCollection", entry, cfg["created"], released, "Survey",
                    body).replace("</contentLevel></content>",
                                  "</contentLevel>" + rel + "</content>", 1)
    return Record(entry["identifier"], released, vor, _dc(entry, released, "Survey"))


def registry_resource(base: str) -> str:
    cfg = config()
    reg = cfg["registry_record"]
    body = (f"<full>false</full><managedAuthority>{escape(cfg['authority'])}</managedAuthority>"
            '<capability xsi:type="vg:Harvest" standardID="ivo://ivoa.net/std/Registry">'
            '<interface xsi:type="vg:OAIHTTP" role="std" version="1.0">'
            f'<accessURL use="base">{escape(base)}/oai</accessURL></interface>'
            f"<maxRecords>{int(cfg['page_size'])}</maxRecords></capability>")
    # VORegistry: vg:Registry is a vr:Service: rights?, capability*, then full, managedAuthority
    cap_start = body.index("<capability")
    body = body[cap_start:] + body[:cap_start]
    return _resource("vg:Registry", reg, cfg["created"], cfg["updated"], "Registry", body,
                     ["Virtual observatory"])


def records(base: str) -> list[Record]:
    """Every record, for the current release (cached per release and base URL)."""
    cat = runtime.catalogue(base)
    return _records(base, cat.release.number, cat)


_CACHE: dict[tuple[str, int], list[Record]] = {}


def _records(base: str, release: int, cat: Catalogue) -> list[Record]:
    key = (base, release)
    if key in _CACHE:
        return _CACHE[key]
    cfg = config()
    upd, crt = cfg["updated"], cfg["created"]
    auth = cfg["authority_record"]
    out = [Record(auth["identifier"], upd, _resource(
        "vg:Authority", auth, crt, upd, "Archive",
        f'<managingOrg ivo-id="{escape(cfg["publisher"]["ivo_id"])}">'
        f"{escape(cfg['publisher']['name'])}</managingOrg>", ["Virtual observatory"]),
        _dc(auth, upd, "Archive", ["Virtual observatory"])),
        Record(cfg["registry_record"]["identifier"], upd, registry_resource(base),
               _dc(cfg["registry_record"], upd, "Registry", ["Virtual observatory"]))]
    caps = service_capabilities(base)
    for name, entry in cfg["services"].items():
        kind = "vs:CatalogService" if name in ("tap", "sia") else "vr:Service"
        out.append(Record(entry["identifier"], upd,
                          _resource(kind, entry, crt, upd, "Archive", caps[name]
                                    + (tableset() if name == "tap" else "")),
                          _dc(entry, upd, "Archive")))
    released = _iso(cat.release.created) if cat.release.created else upd
    holdings = _holdings(cat)
    mapped = set(collections(cat.archive, cat.release))  # those with footprints have a MOC
    for coll in sorted(mapped | set(holdings)):
        out.append(_collection(cat, coll, holdings.get(coll), base, released,
                               cfg["services"]["tap"]["identifier"], coll in mapped))
    _CACHE.clear()
    _CACHE[key] = out
    return out


# ---- OAI-PMH -------------------------------------------------------------------------------

_ARGS = {
    "Identify": (set(), set()),
    "ListMetadataFormats": (set(), {"identifier"}),
    "ListSets": (set(), {"resumptionToken"}),
    "ListIdentifiers": ({"metadataPrefix"}, {"from", "until", "set", "resumptionToken"}),
    "ListRecords": ({"metadataPrefix"}, {"from", "until", "set", "resumptionToken"}),
    "GetRecord": ({"identifier", "metadataPrefix"}, set()),
}
_NAMES = {n.lower(): n for n in ("verb", "identifier", "metadataPrefix", "from", "until",
                                 "set", "resumptionToken")}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _envelope(base: str, args: dict[str, str] | None, body: str) -> Reply:
    attrs = "".join(f" {k}={quoteattr(v)}" for k, v in (args or {}).items())
    doc = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<OAI-PMH xmlns="{OAI_NS}" xmlns:xsi="{XSI}" xsi:schemaLocation="{OAI_NS} '
           f'http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd">'
           f"<responseDate>{_now()}</responseDate>"
           f"<request{attrs}>{escape(base)}/oai</request>{body}</OAI-PMH>\n")
    return Reply(200, doc.encode(), "text/xml; charset=utf-8")


def _args(params: Params) -> dict[str, str]:
    out = {}
    for key, values in params.items():
        name = _NAMES.get(key)
        if name is None:
            raise OaiError("badArgument", f"Unknown argument {key!r}")
        if len(values) > 1:
            raise OaiError("badArgument", f"Argument {name} is repeated")
        out[name] = values[0]
    return out


def _check(verb: str, args: dict[str, str]) -> None:
    required, optional = _ARGS[verb]
    given = set(args) - {"verb"}
    if "resumptionToken" in given and given != {"resumptionToken"}:
        raise OaiError("badArgument", "resumptionToken is an exclusive argument")
    if "resumptionToken" not in given and required - given:
        raise OaiError("badArgument", f"{verb} needs {', '.join(sorted(required - given))}")
    extra = given - required - optional
    if extra:
        raise OaiError("badArgument", f"{verb} does not take {', '.join(sorted(extra))}")


def _date(value: str, end: bool) -> str:
    if not _DATE.match(value):
        raise OaiError("badArgument", f"{value!r} is not a UTC date (YYYY-MM-DD or "
                                      "YYYY-MM-DDThh:mm:ssZ)")
    if len(value) == 10:
        return value + ("T23:59:59Z" if end else "T00:00:00Z")
    return value


def _header(r: Record) -> str:
    return (f"<header><identifier>{escape(r.identifier)}</identifier>"
            f"<datestamp>{r.datestamp}</datestamp><setSpec>{SET}</setSpec></header>")


def _metadata(r: Record, prefix: str) -> str:
    return f"<metadata>{r.vor if prefix == 'ivo_vor' else r.dc}</metadata>"


def _token(state: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, sort_keys=True).encode()).decode()


def _untoken(token: str) -> dict:
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(state, dict) or not isinstance(state.get("offset"), int) or \
                state.get("metadataPrefix") not in FORMATS or state["offset"] < 0:
            raise ValueError
        return state
    except (ValueError, TypeError, UnicodeError):
        raise OaiError("badResumptionToken", "The resumptionToken is not valid (it was not "
                                            "issued by this repository)") from None


def _list(verb: str, args: dict[str, str], base: str) -> str:
    if "resumptionToken" in args:
        state = _untoken(args["resumptionToken"])
    else:
        state = {k: args[k] for k in ("metadataPrefix", "from", "until", "set") if k in args}
        state["offset"] = 0
    prefix = state["metadataPrefix"]
    if prefix not in FORMATS:
        raise OaiError("cannotDisseminateFormat", f"metadataPrefix {prefix!r} is not "
                                                  f"supported; use {' or '.join(FORMATS)}")
    lo = _date(state["from"], False) if state.get("from") else None
    hi = _date(state["until"], True) if state.get("until") else None
    if state.get("from") and state.get("until") and \
            len(state["from"]) != len(state["until"]):
        raise OaiError("badArgument", "from and until have different granularities")
    if lo and hi and lo > hi:
        raise OaiError("badArgument", "from is later than until")
    if state.get("set") not in (None, SET):
        raise OaiError("noRecordsMatch", f"No records in set {state['set']!r}; the only set "
                                         f"is {SET}")
    hits = [r for r in records(base) if (lo is None or r.datestamp >= lo)
            and (hi is None or r.datestamp <= hi)]
    if not hits:
        raise OaiError("noRecordsMatch", "No records match the given dates")
    size, start = int(config()["page_size"]), state["offset"]
    if start >= len(hits) and start:
        raise OaiError("badResumptionToken", "The resumptionToken is past the end of the list")
    page = hits[start:start + size]
    if verb == "ListIdentifiers":
        items = "".join(_header(r) for r in page)
    else:
        items = "".join(f"<record>{_header(r)}{_metadata(r, prefix)}</record>" for r in page)
    more = start + size < len(hits)
    if more or start:
        token = _token({**state, "offset": start + size}) if more else ""
        items += (f'<resumptionToken completeListSize="{len(hits)}" cursor="{start}">'
                  f"{token}</resumptionToken>")
    return f"<{verb}>{items}</{verb}>"


def _find(identifier: str, base: str) -> Record:
    for r in records(base):
        if r.identifier.lower() == identifier.lower():  # IVOA identifiers: case-insensitive
            return r
    raise OaiError("idDoesNotExist", f"No record {identifier!r} in this registry")


def _identify(base: str) -> str:
    cfg = config()
    earliest = min([cfg["created"], *(r.datestamp for r in records(base))])
    return ("<Identify>" + _t("repositoryName", cfg["registry_record"]["title"])
            + f"<baseURL>{escape(base)}/oai</baseURL><protocolVersion>2.0</protocolVersion>"
            + _t("adminEmail", cfg["admin_email"]) + f"<earliestDatestamp>{earliest}"
            "</earliestDatestamp><deletedRecord>no</deletedRecord>"
            "<granularity>YYYY-MM-DDThh:mm:ssZ</granularity>"
            f"<description>{registry_resource(base)}</description></Identify>")


def _formats(args: dict[str, str], base: str) -> str:
    if "identifier" in args:
        _find(args["identifier"], base)
    return "<ListMetadataFormats>" + "".join(
        f"<metadataFormat><metadataPrefix>{p}</metadataPrefix><schema>{s}</schema>"
        f"<metadataNamespace>{ns}</metadataNamespace></metadataFormat>"
        for p, (s, ns) in FORMATS.items()) + "</ListMetadataFormats>"


def handle(req: Request) -> Reply:
    params, base = req.params, req.base
    args: dict[str, str] | None = None
    try:
        args = _args(params)
        verb = args.get("verb")
        if verb not in _ARGS:
            raise OaiError("badVerb", "verb is missing" if verb is None else
                           f"{verb!r} is not an OAI-PMH verb; use one of {', '.join(_ARGS)}")
        _check(verb, args)
        if verb == "Identify":
            body = _identify(base)
        elif verb == "ListMetadataFormats":
            body = _formats(args, base)
        elif verb == "ListSets":
            if "resumptionToken" in args:
                raise OaiError("badResumptionToken", "ListSets has no resumptionToken")
            body = (f"<ListSets><set><setSpec>{SET}</setSpec><setName>Resources managed by "
                    "this registry</setName></set></ListSets>")
        elif verb == "GetRecord":
            prefix = args["metadataPrefix"]
            record = _find(args["identifier"], base)
            if prefix not in FORMATS:
                raise OaiError("cannotDisseminateFormat", f"metadataPrefix {prefix!r} is not "
                               f"supported; use {' or '.join(FORMATS)}")
            body = f"<GetRecord><record>{_header(record)}{_metadata(record, prefix)}" \
                   "</record></GetRecord>"
        else:
            body = _list(verb, args, base)
        return _envelope(base, args, body)
    except OaiError as e:
        # badVerb/badArgument: the request element carries no attributes (section 3.2)
        echo = None if e.code in ("badVerb", "badArgument") else args
        return _envelope(base, echo, f'<error code="{e.code}">{escape(str(e))}</error>')
