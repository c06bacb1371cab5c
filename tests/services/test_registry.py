"""The registry records over OAI-PMH (/oai): protocol, errors, paging, VOResource content.

Schemas, vendored in tests/data/xsd (tests/data/xsd/SOURCES.md says where each came
from): OAI-PMH 2.0 with oai_dc and simple Dublin Core, RegistryInterface, VOResource 1.1,
VODataService 1.2, VORegistry, TAPRegExt 1.0 and SimpleDALRegExt's SIA schema. Every
OAI-PMH response (envelope, records, errors) is validated whole, offline, with lxml;
OAI-PMH's metadata and description are xs:any processContents="strict", so the records
inside are validated against their own schemas too."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from lxml import etree
from mocpy import MOC
from pyvo.io.vosi.endpoint import parse_capabilities, parse_tables

from chalicelib.services import oai
from tests.support import REPO_ROOT

NS = {"o": oai.OAI_NS, "ri": oai.RI, "dc": oai.DC, "oai_dc": oai.OAI_DC, "sia": oai.SIA}
XSI_TYPE = f"{{{oai.XSI}}}type"
XSD = REPO_ROOT / "tests" / "data" / "xsd"
# a schemaLocation containing the key -> the vendored file (imports name remote URLs)
LOCAL = {"VOResource": "VOResource-v1.1.xsd", "VODataService": "VODataService-v1.2.xsd",
         "TAPRegExt": "TAPRegExt-v1.0-Erratum1.xsd", "stc": "stc-v1.30.xsd",
         "xlink": "xlink.xsd", "simpledc": "simpledc20021212.xsd",
         "xml.xsd": "xmlnamespace.xsd"}
SCHEMAS = {oai.OAI_NS: "OAI-PMH.xsd", oai.OAI_DC: "oai_dc.xsd",
           oai.RI: "RegistryInterface-v1.0.xsd", oai.VR: LOCAL["VOResource"],
           oai.VS: LOCAL["VODataService"], oai.VG: "VORegistry-v1.1.xsd",
           oai.TR: LOCAL["TAPRegExt"], oai.SIA: "SIA-v1.2.xsd"}


def get(server, **args):
    r = requests.get(server + "/oai", params=args, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(r.content)
    assert root.tag == f"{{{oai.OAI_NS}}}OAI-PMH"
    kids = [c.tag.split("}")[1] for c in root]
    assert kids[:2] == ["responseDate", "request"] and len(kids) == 3
    assert root.find("o:request", NS).text == server + "/oai"
    return root


def error(root):
    e = root.find("o:error", NS)
    return None if e is None else e.get("code")


def test_identify(server):
    root = get(server, verb="Identify")
    ident = root.find("o:Identify", NS)
    order = [c.tag.split("}")[1] for c in ident]
    assert order == ["repositoryName", "baseURL", "protocolVersion", "adminEmail",
                     "earliestDatestamp", "deletedRecord", "granularity", "description"]
    assert ident.find("o:baseURL", NS).text == server + "/oai"
    assert ident.find("o:protocolVersion", NS).text == "2.0"
    reg = ident.find("o:description/ri:Resource", NS)
    assert reg.get(XSI_TYPE) == "vg:Registry" and reg.find("managedAuthority").text == \
        oai.config()["authority"]
    assert reg.find("capability/interface/accessURL").text == server + "/oai"
    assert root.find("o:request", NS).get("verb") == "Identify"


def test_formats_and_sets(server):
    root = get(server, verb="ListMetadataFormats")
    prefixes = [e.text for e in root.iterfind(".//o:metadataPrefix", NS)]
    assert prefixes == ["oai_dc", "ivo_vor"]
    root = get(server, verb="ListSets")
    assert [e.text for e in root.iterfind(".//o:setSpec", NS)] == ["ivo_managed"]
    root = get(server, verb="ListMetadataFormats", identifier="ivo://irsa.ipac/spherex/tap")
    assert error(root) is None
    assert error(get(server, verb="ListMetadataFormats", identifier="ivo://no/such")) == \
        "idDoesNotExist"


@pytest.mark.parametrize("args,code", [
    ({}, "badVerb"), ({"verb": "Listrecords"}, "badVerb"),
    ({"verb": "ListRecords"}, "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "oai_dc", "bogus": "1"}, "badArgument"),
    ({"verb": "Identify", "set": "x"}, "badArgument"),
    ({"verb": "GetRecord", "metadataPrefix": "oai_dc"}, "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2025/01/01"}, "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2025-01-01",
      "until": "2030-01-01T00:00:00Z"}, "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "oai_dc", "resumptionToken": "x"},
     "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "marc21"}, "cannotDisseminateFormat"),
    ({"verb": "GetRecord", "metadataPrefix": "marc21", "identifier": "ivo://irsa.ipac"},
     "cannotDisseminateFormat"),
    ({"verb": "GetRecord", "metadataPrefix": "oai_dc", "identifier": "ivo://no/such"},
     "idDoesNotExist"),
    ({"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "set": "other"},
     "noRecordsMatch"),
    ({"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "until": "1999-01-01"},
     "noRecordsMatch"),
    ({"verb": "ListRecords", "resumptionToken": "not-a-token"}, "badResumptionToken"),
    ({"verb": "ListSets", "resumptionToken": "abc"}, "badResumptionToken"),
])
def test_errors(server, args, code):
    root = get(server, **args)
    assert error(root) == code
    if code in ("badVerb", "badArgument"):
        assert not root.find("o:request", NS).attrib  # section 3.2: no echoed arguments


def test_repeated_argument_is_bad(server):
    r = requests.get(server + "/oai?verb=Identify&verb=Identify", timeout=60)
    assert error(ET.fromstring(r.content)) == "badArgument"


def _identifiers(root):
    return [e.text for e in root.iterfind(".//o:header/o:identifier", NS)]


def test_resumption_tokens_page_through_everything(server, monkeypatch):
    everything = _identifiers(get(server, verb="ListIdentifiers", metadataPrefix="ivo_vor"))
    assert len(everything) >= 9 and len(set(everything)) == len(everything)
    cfg = {**oai.config(), "page_size": 3}
    monkeypatch.setattr(oai, "config", lambda: cfg)
    got, token, pages = [], None, 0
    while True:
        args = {"resumptionToken": token} if token else {"metadataPrefix": "oai_dc"}
        root = get(server, verb="ListRecords", **args)
        assert error(root) is None
        got += _identifiers(root)
        pages += 1
        rt = root.find(".//o:resumptionToken", NS)
        assert rt is not None and rt.get("completeListSize") == str(len(everything))
        assert rt.get("cursor") == str(3 * (pages - 1))
        token = rt.text
        if not token:
            break
    assert got == everything and pages == -(-len(everything) // 3)


def test_dates_select(server):
    recs = get(server, verb="ListIdentifiers", metadataPrefix="oai_dc")
    stamps = sorted({e.text for e in recs.iterfind(".//o:datestamp", NS)})
    newest = stamps[-1]
    root = get(server, verb="ListIdentifiers", metadataPrefix="oai_dc", **{"from": newest})
    assert all(e.text >= newest for e in root.iterfind(".//o:datestamp", NS))
    assert len(_identifiers(root)) < len(_identifiers(recs))


# ---- the records -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def resources(server):
    root = get(server, verb="ListRecords", metadataPrefix="ivo_vor")
    return {r.find("o:header/o:identifier", NS).text: r.find("o:metadata/ri:Resource", NS)
            for r in root.iterfind(".//o:record", NS)}


def _obscore(archive, *columns):
    import deltalake

    return deltalake.DeltaTable(f"{archive.url}/tables/ivoa.obscore").to_pyarrow_table(
        columns=list(columns)).to_pylist()


def test_one_record_per_service_and_collection(resources, server, archive):
    cfg = oai.config()
    types = {k: v.get(XSI_TYPE) for k, v in resources.items()}
    assert types[cfg["authority_record"]["identifier"]] == "vg:Authority"
    assert types[cfg["registry_record"]["identifier"]] == "vg:Registry"
    for name, entry in cfg["services"].items():
        assert entry["identifier"] in types, name
    colls = [k for k, t in types.items() if t == "vs:DataCollection"]
    held = {r["obs_collection"] for r in _obscore(archive, "obs_collection")}
    assert {oai.collection_entry(c)["identifier"] for c in held} == set(colls)
    mapped = {c["collection"] for c in _coverage_rows(server)}
    for c in held:  # a collection without footprints (calibration files) has no MOC
        cov = resources[oai.collection_entry(c)["identifier"]].find("coverage")
        assert (cov.find("spatial") is not None) == (c in mapped)
    for r in resources.values():
        assert r.find("identifier").text.startswith("ivo://" + cfg["authority"])
        assert r.find("curation/publisher").text == cfg["publisher"]["name"]
        assert r.find("curation/contact/email").text == cfg["contact"]["email"]


def _coverage_rows(server):
    from astropy.io.votable import parse_single_table

    r = requests.get(server + "/coverage", timeout=60)
    t = parse_single_table(io.BytesIO(r.content)).to_table()
    return [{"collection": str(c)} for c in t["collection"]]


def _capabilities_doc(resource) -> bytes:
    caps = "".join(ET.tostring(c, encoding="unicode") for c in resource.iterfind("capability"))
    return (f'<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
            f'xmlns:xsi="{oai.XSI}" xmlns:vs="{oai.VS}" xmlns:tr="{oai.TR}" '
            f'xmlns:vr="{oai.VR}" xmlns:sia="{oai.SIA}">{caps}</vosi:capabilities>').encode()


@pytest.mark.parametrize("name,path", [("tap", "/tap/capabilities"),
                                       ("sia", "/sia/capabilities"),
                                       ("spectrophotometry", "/spectrophotometry/capabilities")])
@pytest.mark.filterwarnings("ignore:.*Unknown (element|xsi.type)")  # pyvo on sia:...
def test_service_capabilities_as_served_and_pyvo_parses_them(resources, server, name, path):
    rec = resources[oai.config()["services"][name]["identifier"]]
    # pyvo's VOSI module does not know SimpleDALRegExt's sia:SimpleImageAccess (it warns
    # and reads it as a plain capability), so the SIA record is read without pedantry
    ours = parse_capabilities(io.BytesIO(_capabilities_doc(rec)), pedantic=name != "sia")
    served = parse_capabilities(io.BytesIO(requests.get(server + path, timeout=60).content))
    assert [c.standardid for c in ours] == [c.standardid for c in served]
    assert [[i.accessurls[0].content for i in c.interfaces] for c in ours] == \
        [[i.accessurls[0].content for i in c.interfaces] for c in served]
    if name == "tap":
        tap = next(c for c in ours if c.standardid == "ivo://ivoa.net/std/TAP")
        assert "text/html" in [f.mime for f in tap.outputformats]


def test_datalink_and_soda_capabilities(resources, server):
    services = oai.config()["services"]
    for name, ids in (("datalink", ["ivo://ivoa.net/std/DataLink#links-1.1"]),
                      ("soda", ["ivo://ivoa.net/std/SODA#sync-1.0",
                                "ivo://ivoa.net/std/SODA#async-1.0"])):
        caps = parse_capabilities(io.BytesIO(_capabilities_doc(resources[
            services[name]["identifier"]])), pedantic=True)
        assert [c.standardid for c in caps] == ids
        for c in caps:
            assert c.interfaces[0].accessurls[0].content.startswith(server + "/")


def test_collection_coverage_from_the_holdings(resources, server, archive):
    rows = _obscore(archive, "obs_collection", "t_min", "t_max", "em_min", "em_max")
    mapped = {c["collection"] for c in _coverage_rows(server)}
    for coll in {r["obs_collection"] for r in rows}:
        mine = [r for r in rows if r["obs_collection"] == coll]
        rec = resources[oai.collection_entry(coll)["identifier"]]
        cov = rec.find("coverage")
        t0, t1 = map(float, cov.find("temporal").text.split())
        assert t0 == min(r["t_min"] for r in mine) and t1 == max(r["t_max"] for r in mine)
        lo, hi = map(float, cov.find("spectral").text.split())
        em0, em1 = min(r["em_min"] for r in mine), max(r["em_max"] for r in mine)
        assert lo == pytest.approx(oai.HC / em1) and hi == pytest.approx(oai.HC / em0)
        assert [w.text for w in cov.iterfind("waveband")] == ["Infrared"]
        if coll not in mapped:
            continue
        moc = MOC.from_string(cov.find("spatial").text, format="ascii")
        served = MOC.from_fits(io.BytesIO(requests.get(f"{server}/coverage/{coll}",
                                                       timeout=60).content))
        # the registry MOC is the served one at order <= 7: it holds it, and no more
        assert moc.contains_lonlat(*_centres(served)).all()
        assert moc.sky_fraction >= served.sky_fraction
        assert moc == served.degrade_to_order(min(7, served.max_order))


def _centres(moc):
    import cdshealpix

    order = moc.max_order
    cells = moc.flatten()
    lon, lat = cdshealpix.nested.healpix_to_lonlat(cells, order)
    return lon.to(u.deg), lat.to(u.deg)


def test_oai_dc_records(server):
    root = get(server, verb="GetRecord", metadataPrefix="oai_dc",
               identifier="IVO://IRSA.IPAC/spherex/TAP")  # IVOIDs compare case-blind
    dc = root.find(".//oai_dc:dc", NS)
    assert dc.find("dc:identifier", NS).text == "ivo://irsa.ipac/spherex/tap"
    assert dc.find("dc:title", NS).text == oai.config()["services"]["tap"]["title"]


# ---- schema validation ----------------------------------------------------------------


class _Local(etree.Resolver):
    def resolve(self, url, pubid, context):
        name = url.rsplit("/", 1)[-1]
        if (XSD / name).is_file():
            return self.resolve_filename(str(XSD / name), context)
        for key, local in LOCAL.items():
            if key in name:
                return self.resolve_filename(str(XSD / local), context)
        raise AssertionError(f"schema {url} is not vendored in tests/data/xsd")  # no network


@pytest.fixture(scope="module")
def schema():
    """One schema set: OAI-PMH and every namespace the records use."""
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_Local())
    imports = "".join(f'<xs:import namespace="{ns}" schemaLocation="{XSD / name}"/>'
                      for ns, name in SCHEMAS.items())
    wrapper = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), parser))


def _valid(schema, content: bytes) -> etree._Element:
    doc = etree.fromstring(content)
    assert schema.validate(doc), [str(e) for e in schema.error_log][:5]
    return doc


def _harvest(server, prefix):
    """Every page of ListRecords, each as served."""
    args = {"verb": "ListRecords", "metadataPrefix": prefix}
    while True:
        body = requests.get(server + "/oai", params=args, timeout=60).content
        yield body
        token = etree.fromstring(body).findtext(".//o:resumptionToken", namespaces=NS)
        if not token:
            return
        args = {"verb": "ListRecords", "resumptionToken": token}


def test_schema_set_rejects_what_it_should(schema, server):
    """The validation is strict: a record of an undeclared type, a misplaced element and
    a bad OAI-PMH error code all fail."""
    good = requests.get(server + "/oai", params={"verb": "GetRecord", "metadataPrefix":
                        "ivo_vor", "identifier": oai.config()["services"]["sia"][
                            "identifier"]}, timeout=60).content
    assert schema.validate(etree.fromstring(good))
    for bad in (good.replace(b'xsi:type="sia:SimpleImageAccess"', b'xsi:type="sia:Nope"'),
                good.replace(b"<imageServiceType>Pointed", b"<imageServiceType>Tiled"),
                good.replace(b"<datestamp>", b"<datestamp>x", 1),
                good.replace(b"</title>", b"</title><title>again</title>", 1)):
        assert bad != good
        assert not schema.validate(etree.fromstring(bad))


@pytest.mark.parametrize("args", [
    {"verb": "Identify"},
    {"verb": "ListMetadataFormats"},
    {"verb": "ListMetadataFormats", "identifier": "ivo://irsa.ipac/spherex/tap"},
    {"verb": "ListSets"},
    {"verb": "ListIdentifiers", "metadataPrefix": "ivo_vor"},
    {"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "set": "ivo_managed",
     "from": "2000-01-01", "until": "2999-12-31"},
    {"verb": "GetRecord", "metadataPrefix": "oai_dc", "identifier": "ivo://irsa.ipac"},
    {"verb": "GetRecord", "metadataPrefix": "ivo_vor",
     "identifier": "ivo://irsa.ipac/spherex/registry"},
    # errors are OAI-PMH documents too
    {"verb": "Nope"},
    {"verb": "ListRecords"},
    {"verb": "ListRecords", "metadataPrefix": "marc21"},
    {"verb": "ListRecords", "resumptionToken": "garbage"},
    {"verb": "GetRecord", "metadataPrefix": "ivo_vor", "identifier": "ivo://no/such"},
    {"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "until": "1999-01-01"},
], ids=lambda a: "-".join(f"{v}" for v in a.values())[:60])
def test_responses_validate_whole(schema, server, args):
    r = requests.get(server + "/oai", params=args, timeout=60)
    assert r.status_code == 200
    doc = _valid(schema, r.content)
    assert (doc.find("o:error", NS) is not None) == (
        args["verb"] == "Nope" or args.get("metadataPrefix") == "marc21"
        or "garbage" in args.values() or args.get("identifier") == "ivo://no/such"
        or args == {"verb": "ListRecords"} or args.get("until") == "1999-01-01")


@pytest.mark.parametrize("prefix", ["ivo_vor", "oai_dc"])
def test_every_page_of_records_validates(schema, server, monkeypatch, prefix):
    cfg = {**oai.config(), "page_size": 4}  # several pages, each with its resumptionToken
    monkeypatch.setattr(oai, "config", lambda: cfg)
    types, pages = set(), 0
    for body in _harvest(server, prefix):
        doc = _valid(schema, body)
        types |= {e.get(XSI_TYPE) for e in doc.iterfind(".//ri:Resource", NS)}
        pages += 1
    assert pages > 2
    if prefix == "ivo_vor":
        assert types == {"vg:Authority", "vg:Registry", "vs:CatalogService", "vr:Service",
                         "vs:DataCollection"}


# ---- what registries and pyvo read from the records ------------------------------------


def test_tap_record_has_the_tableset_as_served(resources, server):
    rec = resources[oai.config()["services"]["tap"]["identifier"]]
    ts = rec.find("tableset")
    assert ts is not None
    doc = ET.tostring(ts, encoding="unicode").replace("<tableset", (
        '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0"'), 1).replace(
        "</tableset>", "</vosi:tableset>")
    ours = parse_tables(io.BytesIO(doc.encode()), pedantic=True)
    served = parse_tables(io.BytesIO(requests.get(server + "/tap/tables",
                                                  timeout=60).content))

    def columns(tableset):
        return {t.name: [(c.name, c.datatype.content, c.unit, c.ucd) for c in t.columns]
                for t in tableset.iter_tables()}

    assert columns(ours) == columns(served)
    assert {"ivoa.obscore", "TAP_SCHEMA.columns"} <= set(columns(ours))
    assert "s_region" in [c[0] for c in columns(ours)["ivoa.obscore"]]


def test_sia_record_has_a_simple_image_access_capability(resources, server, archive):
    from chalicelib.config import settings
    from chalicelib.services import sia

    rec = resources[oai.config()["services"]["sia"]["identifier"]]
    cap = next(c for c in rec.iterfind("capability")
               if c.get("standardID") == "ivo://ivoa.net/std/SIA#query-2.0")
    assert cap.get(XSI_TYPE) == "sia:SimpleImageAccess"
    assert cap.findtext("interface/accessURL") == server + "/sia/query"
    assert cap.find("interface").get("role") == "std"
    assert cap.findtext("imageServiceType") == "Pointed"
    assert float(cap.findtext("maxQueryRegionSize/long")) == 360
    assert int(cap.findtext("maxRecords")) == settings().sia_hard_maxrec
    # no image is larger than maxImageExtent: each footprint of the holdings spans no
    # more in declination, and no two of its corners are further apart than its diagonal
    extent = float(cap.findtext("maxImageExtent/lat"))
    footprints = [r["s_region"] for r in _obscore(archive, "s_region") if r["s_region"]]
    assert footprints
    for poly in footprints:
        corners = SkyCoord(poly[0::2] * u.deg, poly[1::2] * u.deg)
        assert max(poly[1::2]) - min(poly[1::2]) <= extent
        assert max(corners[i].separation(corners).deg.max() for i in range(len(corners))) \
            <= extent * 2 ** 0.5
    # the test query is one a harvester can run: it finds images
    ra, dec = (float(cap.findtext(f"testQuery/pos/{k}")) for k in ("long", "lat"))
    size = float(cap.findtext("testQuery/size/long"))
    r = requests.get(server + "/sia/query", params={"POS": f"CIRCLE {ra} {dec} {size}"},
                     timeout=60)
    assert r.status_code == 200 and b"<TR>" in r.content
    assert extent == sia.MAX_IMAGE_EXTENT and extent >= 3.485 * 2 ** 0.5


def _regtap_rows(resources):
    """The records as a RegTAP service would hold them after a harvest (RegTAP 1.1:
    rr.resource joined with rr.capability and rr.interface, lower-cased where RegTAP
    lower-cases, aggregated as pyvo's regsearch asks with ivo_string_agg and pyvo's
    separator), as a VOTable."""
    from astropy.io.votable.tree import VOTableFile
    from astropy.table import Table
    from pyvo.registry.regtap import TOKEN_SEP

    rows = []
    for ivoid, res in resources.items():
        caps = [(c, i) for c in res.iterfind("capability") for i in c.iterfind("interface")]
        rows.append({
            "ivoid": ivoid.lower(), "res_type": res.get(XSI_TYPE).lower(),
            "short_name": res.findtext("shortName") or "", "res_title": res.findtext("title"),
            "content_level": "research",
            "res_description": res.findtext("content/description"),
            "reference_url": res.findtext("content/referenceURL"),
            "creator_seq": res.findtext("curation/creator/name") or "",
            "created": res.get("created"), "updated": res.get("updated"), "rights": "",
            "content_type": res.findtext("content/type").lower(), "source_format": "",
            "source_value": "", "region_of_regard": 0.0,
            "waveband": "#".join(w.text.lower() for w in res.iterfind("coverage/waveband")),
            "access_urls": TOKEN_SEP.join(i.findtext("accessURL") for _, i in caps),
            "standard_ids": TOKEN_SEP.join(c.get("standardID", "").lower() for c, _ in caps),
            "intf_types": TOKEN_SEP.join(i.get(XSI_TYPE).lower() for _, i in caps),
            "intf_roles": TOKEN_SEP.join(i.get("role") or "" for _, i in caps),
            "cap_descriptions": TOKEN_SEP.join(c.findtext("description") or ""
                                               for c, _ in caps)})
    return VOTableFile.from_table(Table(rows=rows))


def test_pyvo_finds_and_uses_the_services_from_the_records(resources, server):
    """What pyvo.regsearch(servicetype='sia2' / 'tap') gives a user once a RegTAP
    registry has harvested /oai: pyvo's RegistryResource from the records' rows, then
    its get_service() to query this archive."""
    from pyvo.registry.regtap import RegistryResults

    found = RegistryResults(_regtap_rows(resources), url="harvested")
    by_id = {r.ivoid: r for r in found}
    services = oai.config()["services"]
    sia2 = by_id[services["sia"]["identifier"]]
    assert sia2.res_type == "vs:catalogservice"
    assert "sia2" in sia2.access_modes() and "tap" not in sia2.access_modes()
    images = sia2.get_service("sia2").search(pos=(270.0, 66.56, 0.1)).to_table()
    assert len(images) and "access_url" in images.colnames
    tap = by_id[services["tap"]["identifier"]]
    assert "tap" in tap.access_modes()
    n = tap.get_service("tap").run_sync("SELECT COUNT(*) AS n FROM ivoa.obscore").to_table()
    assert n["n"][0] > 0
    assert by_id[oai.collection_entry("spherex_qr2")["identifier"]].waveband == ["infrared"]


# ---- updated per release ----------------------------------------------------------------


def test_collection_records_follow_the_deliveries(tmp_path, deliveries):
    from chalicelib.ingest.delivery import ingest
    from chalicelib.lake.storage import Archive
    from chalicelib.query.catalogue import Catalogue

    arch = Archive.from_env(str(tmp_path / "a"))
    ingest(deliveries[0], arch)
    first = {r.identifier: r for r in oai._records("http://x", 1, Catalogue(arch))}
    ingest(deliveries[1], arch)
    cat = Catalogue(arch)
    second = {r.identifier: r for r in oai._records("http://x", cat.release.number, cat)}
    coll = oai.collection_entry("spherex_qr2")["identifier"]

    def t1(rec):
        return float(ET.fromstring(rec.vor).find("coverage/temporal").text.split()[1])

    assert t1(second[coll]) > t1(first[coll])
    assert second[coll].datestamp >= first[coll].datestamp
    assert second[coll].datestamp == oai._iso(cat.release.created)
