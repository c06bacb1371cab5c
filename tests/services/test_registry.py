"""The registry records over OAI-PMH (/oai): protocol, errors, paging, VOResource content.

Schemas: the VOResource 1.1, VODataService 1.2 and TAPRegExt 1.0 XSDs are vendored in
tests/data/xsd (copied from STILTS's taplint, which ships them); no PyPI package ships
OAI-PMH.xsd, RegistryInterface or VORegistry, so the OAI-PMH envelope and the vg:
records are checked structurally here, and ri:Resource is declared as RegistryInterface
declares it (an element of type vr:Resource)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
import requests
from astropy import units as u
from lxml import etree
from mocpy import MOC
from pyvo.io.vosi.endpoint import parse_capabilities

from chalicelib.services import oai
from tests.support import REPO_ROOT

NS = {"o": oai.OAI_NS, "ri": oai.RI, "dc": oai.DC, "oai_dc": oai.OAI_DC}
XSI_TYPE = f"{{{oai.XSI}}}type"
XSD = REPO_ROOT / "tests" / "data" / "xsd"
LOCAL = {"VOResource": "VOResource-v1.1.xsd", "VODataService": "VODataService-v1.2.xsd",
         "TAPRegExt": "TAPRegExt-v1.0-Erratum1.xsd", "stc-v1.30": "stc-v1.30.xsd",
         "xlink": "xlink.xsd", "xml.xsd": "xmlnamespace.xsd"}


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
            f'xmlns:vr="{oai.VR}">{caps}</vosi:capabilities>').encode()


@pytest.mark.parametrize("name,path", [("tap", "/tap/capabilities"),
                                       ("sia", "/sia/capabilities"),
                                       ("spectrophotometry", "/spectrophotometry/capabilities")])
def test_service_capabilities_as_served_and_pyvo_parses_them(resources, server, name, path):
    rec = resources[oai.config()["services"][name]["identifier"]]
    ours = parse_capabilities(io.BytesIO(_capabilities_doc(rec)), pedantic=True)
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
        for key, name in LOCAL.items():
            if key in url:
                return self.resolve_filename(str(XSD / name), context)
        return None


@pytest.fixture(scope="module")
def schema():
    parser = etree.XMLParser()
    parser.resolvers.add(_Local())
    wrapper = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
        xmlns:vr="{oai.VR}" targetNamespace="{oai.RI}" elementFormDefault="unqualified">
      <xs:import namespace="{oai.VR}" schemaLocation="{XSD / LOCAL['VOResource']}"/>
      <xs:import namespace="{oai.VS}" schemaLocation="{XSD / LOCAL['VODataService']}"/>
      <xs:import namespace="{oai.TR}" schemaLocation="{XSD / LOCAL['TAPRegExt']}"/>
      <xs:element name="Resource" type="vr:Resource"/>
    </xs:schema>"""
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), parser))


def test_records_validate_against_voresource_schemas(server, schema):
    body = requests.get(server + "/oai", params={"verb": "ListRecords",
                                                 "metadataPrefix": "ivo_vor"}, timeout=60)
    checked = 0
    for res in etree.fromstring(body.content).iterfind(".//ri:Resource", NS):
        if res.get(XSI_TYPE).startswith("vg:"):
            continue  # VORegistry-v1.0.xsd is not available offline (see module doc)
        ident = res.findtext("identifier")
        assert schema.validate(res), (ident, [str(e) for e in schema.error_log][:5])
        checked += 1
    assert checked >= 8


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
