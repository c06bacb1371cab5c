"""The portal at /: the position resolver against astropy, the page and its static files,
and the page itself driven in a real headless Chromium over the session archive (typed
position -> coverage and images checked against /coverage and TAP, preview, cutout
checked against the parent's pixels, a spectrophotometry job checked against its result).

The browser tests skip, saying why, when selenium, chromium or chromedriver is missing or
the browser does not start (.ci/run installs chromium and chromium-driver with apt).
Screenshots of every step are written under pytest's tmp_path (the path is printed).
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse

from chalicelib.services import names, portal
from chalicelib.web.params import Params
from tests.support.fitscheck import same_pixels_as_parent

STATIC = Path(portal.__file__).with_name("portal_static")


# ------------------------------------------------------------------ resolver vs astropy

CASES = [  # (typed, frame, the same position as astropy is told it explicitly)
    ("17h18m51.62s -26d08m55.6s", "icrs", SkyCoord("17h18m51.62s", "-26d08m55.6s")),
    ("17:18:51.62 -26:08:55.6", "icrs", SkyCoord("17:18:51.62 -26:08:55.6",
                                                  unit=(u.hourangle, u.deg))),
    ("17 18 51.62 -26 08 55.6", "icrs", SkyCoord("17 18 51.62 -26 08 55.6",
                                                  unit=(u.hourangle, u.deg))),
    ("270.0 66.56", "icrs", SkyCoord(270.0 * u.deg, 66.56 * u.deg)),
    ("10.5, +41.2", "icrs", SkyCoord(10.5 * u.deg, 41.2 * u.deg)),
    ("359.9999 -89.5", "icrs", SkyCoord(359.9999 * u.deg, -89.5 * u.deg)),
    ("00h42m44.3s +41d16m09s", "icrs", SkyCoord("00h42m44.3s +41d16m09s")),
    ("120.5 -3.2", "galactic", SkyCoord(l=120.5 * u.deg, b=-3.2 * u.deg, frame="galactic")),
    ("0 90", "galactic", SkyCoord(l=0 * u.deg, b=90 * u.deg, frame="galactic")),
]


@pytest.mark.parametrize(("text", "frame", "expected"), CASES)
def test_resolver_reads_positions_as_astropy_does(text, frame, expected) -> None:
    got = portal.parse_position(text, frame)
    here = SkyCoord(got["ra"] * u.deg, got["dec"] * u.deg)
    assert here.separation(expected.icrs).arcsec < 1e-3
    g = expected.galactic
    assert SkyCoord(l=got["l"] * u.deg, b=got["b"] * u.deg, frame="galactic").separation(
        g).arcsec < 0.01


@pytest.mark.parametrize(("typed", "name"), [
    ("M31", "M31"), ("m 31", "M31"), ("Messier 31", "M31"), ("NGC 224", "M31"),
    ("ngc0224", "M31"), ("Andromeda", "M31"), ("M1", "M1"), ("crab nebula", "M1"),
    ("NGC 6543", "NGC 6543"), ("NEP", "NEP"), ("sep", "SEP"), ("IC 342", "IC 342")])
def test_names_resolve_from_the_shipped_table(typed, name) -> None:
    got = portal.parse_position(typed)
    assert got["name"] == name
    entry = names.lookup(name)
    assert (got["ra"], got["dec"]) == (entry.ra, entry.dec)


def test_names_table_is_complete_and_sane() -> None:
    entries = names.all_names()
    messier = {e.name for e in entries if re.fullmatch(r"M\d+", e.name)}
    assert messier == {f"M{i}" for i in range(1, 111)}
    for e in entries:
        assert 0 <= e.ra < 360 and -90 <= e.dec <= 90, e
    nep, sep = names.lookup("NEP"), names.lookup("SEP")
    assert abs(nep.ra - 270.0) < 1e-4 and abs(nep.dec - 66.56) < 0.01
    assert abs(sep.ra - 90.0) < 1e-4 and abs(sep.dec + 66.56) < 0.01


NAME_SOURCES = Path(__file__).parents[1] / "data" / "names"


def _source_rows(name: str, **kw) -> list[dict]:
    import csv

    lines = [x for x in (NAME_SOURCES / name).read_text().splitlines() if not x.startswith("#")]
    return list(csv.DictReader(lines, **kw))


def test_names_table_is_the_one_built_from_the_catalogue_files() -> None:
    """names.csv is exactly what the builder makes of the vendored source rows."""
    from chalicelib.devtools import names_table

    shipped = Path(names.__file__).with_name("names.csv").read_text()
    assert names_table.render(names_table.build(NAME_SOURCES)) == shipped


def _sexagesimal(ra: str, dec: str) -> SkyCoord:
    """The source's position as astropy reads it (the sources write '06 08 60.00' for
    06 09 00, '+15 46 60.0' and '06 46 -0.00': astropy is given those as numbers)."""
    h, m, sec = (float(x) for x in ra.split())
    sign = -1 if dec.startswith("-") else 1
    d, dm, ds = (abs(float(x)) for x in dec.lstrip("+-").split())
    if sec >= 60 or ds >= 60 or ra.split()[2].startswith("-"):
        return SkyCoord((h + m / 60 + sec / 3600) * u.hourangle,
                        sign * (d + dm / 60 + ds / 3600) * u.deg)
    return SkyCoord(ra, dec, unit=(u.hourangle, u.deg))


def test_names_table_positions_are_the_catalogues() -> None:
    """Every entry against its source row read by astropy; the SSCore positions against
    OpenNGC's (an independent compilation) where both are vendored; the deep fields against
    astropy's ecliptic poles."""
    from astropy.coordinates import BarycentricMeanEcliptic

    def at(entry) -> SkyCoord:
        return SkyCoord(entry.ra * u.deg, entry.dec * u.deg)

    checked = set()
    for r in _source_rows("sscore_messier.csv"):
        name = r["IDs"].split(";")[0].replace(" ", "")
        if name == "M40":
            continue
        assert at(names.lookup(name)).separation(_sexagesimal(r["RA"], r["Dec"])).arcsec < 0.1
        checked.add(name)
    for r in _source_rows("sscore_caldwell.csv"):
        ids = r["IDs"].split(";") + (r["Names"] or "").split(";")
        e = names.lookup(next(i for i in ids if re.match(r"(NGC|IC) |LMC|SMC", i)))
        assert at(e).separation(_sexagesimal(r["RA"], r["Dec"])).arcsec < 0.1, e
        checked.add(e.name)
    ngc = {r["Name"]: r for r in _source_rows("openngc.csv", delimiter=";")}
    m40 = ngc["M040"]
    assert at(names.lookup("M40")).separation(SkyCoord(
        m40["RA"], m40["Dec"], unit=(u.hourangle, u.deg))).arcsec < 0.1
    checked.add("M40")
    # two compilations agree (to an arcminute; the Pleiades' centre differs by ~6')
    for ours, theirs, arcmin in [("M31", "NGC0224", 1), ("M32", "NGC0221", 1),
                                 ("M110", "NGC0205", 1), ("LMC", "ESO056-115", 1),
                                 ("M45", "Mel022", 10),
                                 ("M101", "M102", 1)]:  # OpenNGC: M102 is M101 seen twice
        r = ngc[theirs]
        assert at(names.lookup(ours)).separation(SkyCoord(
            r["RA"], r["Dec"], unit=(u.hourangle, u.deg))).arcmin < arcmin, ours
    for name, lat in [("NEP", 90), ("SEP", -90)]:
        pole = SkyCoord(0 * u.deg, lat * u.deg, frame=BarycentricMeanEcliptic()).icrs
        assert at(names.lookup(name)).separation(pole).arcsec < 0.05
        checked.add(name)
    assert checked == {e.name for e in names.all_names()}  # nothing from memory


@pytest.mark.parametrize(("text", "words"), [
    ("Foo Bar", "unknown object name"), ("M 200", "unknown object name"),
    ("10 95", r"between -90 and \+90"), ("12h 13h", "could not read")])
def test_unreadable_lines_say_why(text, words) -> None:
    with pytest.raises(portal.Unreadable, match=words):
        portal.parse_position(text)


def test_resolve_endpoint_takes_a_list_and_reports_each_bad_line() -> None:
    reply = portal.resolve(Params([("q", "M31\nnot a thing\n270 66.56; NEP")]))
    assert reply.status == 200
    import json

    doc = json.loads(reply.body)
    assert [t["line"] for t in doc["targets"]] == [1, 3, 4]
    assert [e["line"] for e in doc["errors"]] == [2]
    assert "unknown object name" in doc["errors"][0]["message"]
    bad = portal.resolve(Params([("q", "nowhere at all")]))
    assert bad.status == 400 and "unknown object name" in json.loads(bad.body)["errors"][0][
        "message"]
    assert portal.resolve(Params([("q", " ")])).status == 400


def _votable_text(fmt: str, masked: bool = False) -> str:
    from astropy.io.votable import from_table
    from astropy.table import MaskedColumn, Table

    t = Table({"id": ["a", "b", "c"], "RAJ2000": [10.684708, 83.822083, 201.365063],
               "DEJ2000": [41.26875, -5.391111, -43.019113],
               "mag": MaskedColumn([3.4, 0.0, 6.8], mask=[False, masked, False])})
    vot = from_table(t)
    f = vot.get_first_table().fields
    f[1].ucd, f[2].ucd = "pos.eq.ra;meta.main", "pos.eq.dec;meta.main"
    buf = io.BytesIO()
    vot.to_xml(buf, tabledata_format=fmt)
    return buf.getvalue().decode()


@pytest.mark.parametrize("fmt", ["binary", "binary2", "tabledata"])
def test_uploaded_votables_are_read_in_every_serialization(fmt) -> None:
    import json

    text = _votable_text(fmt, masked=True)
    assert ("<BINARY" in text) == (fmt != "tabledata")
    reply = portal.table_rows(Params([("votable", text)]))
    assert reply.status == 200, reply.body
    doc = json.loads(reply.body)
    assert doc["names"] == ["id", "RAJ2000", "DEJ2000", "mag"]
    assert doc["ucds"][1:3] == ["pos.eq.ra;meta.main", "pos.eq.dec;meta.main"]
    assert [r[0] for r in doc["rows"]] == ["a", "b", "c"]
    assert [r[3] for r in doc["rows"]] == ["3.4", "", "6.8"]  # the NULL: empty
    got = [(float(r[1]), float(r[2])) for r in doc["rows"]]
    assert got == [(10.684708, 41.26875), (83.822083, -5.391111), (201.365063, -43.019113)]


def test_uploaded_votables_that_cannot_be_read_say_why() -> None:
    import json

    def error(text: str) -> str:
        reply = portal.table_rows(Params([("votable", text)]))
        assert reply.status == 400
        return json.loads(reply.body)["error"]

    assert "no VOTable" in error("")
    assert "larger than" in error("<" + "x" * portal.MAX_TABLE_BYTES)
    assert "not a VOTable" in error("<VOTABLE><RESOURCE><TABLE><FIELD")
    # a STREAM with an href would make astropy fetch it: refused before any parsing
    binary = _votable_text("binary2")
    remote = re.sub(r"<STREAM[^>]*>[^<]*</STREAM>",
                    '<STREAM href="http://169.254.169.254/latest/meta-data/"/>', binary)
    assert remote != binary and "external STREAM" in error(remote)


# ------------------------------------------------------------------ page and static files

def test_page_and_static_files_are_served(server) -> None:
    r = requests.get(server + "/", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert f'{server}/portal/static/portal.js' in r.text and "__BASE__" not in r.text
    assert "/tap/capabilities" in r.text  # the landing content is folded in
    assert requests.get(server + "/about", timeout=30).status_code == 200
    for name, ctype in [("portal.js", "text/javascript"), ("portal.css", "text/css"),
                        ("icon.svg", "image/svg+xml")]:
        f = requests.get(f"{server}/portal/static/{name}", timeout=30)
        assert f.status_code == 200 and f.headers["Content-Type"].startswith(ctype)
        assert f.content == (STATIC / name).read_bytes()
    for bad in ["..%2Fportal.py", "../portal.py", "nothere.js", ".hidden", "index.htm"]:
        assert requests.get(f"{server}/portal/static/{bad}", timeout=30).status_code == 404
    j = requests.get(f"{server}/portal/resolve", params={"q": "NEP"}, timeout=30).json()
    assert j["targets"][0]["name"] == "NEP"


def test_static_files_name_no_other_host() -> None:
    """No URL to any host: every request the page makes is to the archive's own base
    (XML namespace names are identifiers, never fetched)."""
    for path in STATIC.iterdir():
        text = path.read_text()
        for m in re.finditer(r"[a-z]+://[^\s\"'`)]+", text):
            assert m.group(0).startswith("http://www.w3.org/"), (path.name, m.group(0))
        assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text), path.name
        assert "import(" not in text and "@import" not in text, path.name


# ------------------------------------------------------------------ in a real browser

def _driver_or_skip():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not binary or not Path(driver).exists():
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium "
                    "chromium-driver; .ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    profile = tempfile.mkdtemp(prefix="portal-chromium-")
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", "--window-size=1280,1000",
              f"--user-data-dir={profile}"]:
        opts.add_argument(a)
    try:
        d = webdriver.Chrome(service=Service(driver), options=opts)
    except Exception as e:  # the browser would not start here
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless chromium did not start: {str(e).splitlines()[0]}")
    d.set_page_load_timeout(60)
    return d, profile


@pytest.fixture(scope="module")
def browser():
    d, profile = _driver_or_skip()
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("portal-screenshots")
    print(f"\nportal screenshots in {folder}")
    return folder


def _wait(d, test, what: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = test(d)
        except Exception:  # the element is not there yet
            got = None
        if got:
            return got
        time.sleep(0.1)
    msg = d.execute_script("return document.getElementById('message').textContent")
    pointer = d.execute_script("const p = document.getElementById('pointer');"
                               "return p ? p.textContent : ''")
    raise AssertionError(f"timed out waiting for {what}; message on the page: {msg!r}; "
                         f"under the pointer: {pointer!r}")


def _shot(d, folder: Path, name: str) -> Path:
    h = d.execute_script("return document.documentElement.scrollHeight")
    w = d.execute_script("return window.innerWidth")
    d.set_window_size(max(w, 360), min(max(h, 600) + 120, 4000))
    path = folder / f"{name}.png"
    d.save_screenshot(str(path))
    return path


def _js(d, script: str):
    return d.execute_script(script)


def _tap_dids(server: str, ra: float, dec: float) -> set[str]:
    q = (f"SELECT obs_publisher_did FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', {ra}, "
         f"{dec}), s_region) = 1")
    r = requests.get(f"{server}/tap/sync", params={"LANG": "ADQL", "QUERY": q,
                                                   "FORMAT": "csv"}, timeout=60)
    return set(r.text.split()[1:])


@pytest.fixture(scope="module")
def source(synth_dir, server):
    """An injected source of the test archive that wide or deep images contain."""
    truth = pq.read_table(synth_dir / "truth.parquet").to_pylist()
    best = max(truth[:40], key=lambda t: len(_tap_dids(server, t["ra"], t["dec"])))
    return best


def test_browser_search_preview_cutout_and_spectrum(browser, server, source, shots) -> None:
    d = browser
    d.set_window_size(1280, 1000)
    d.get(server + "/")
    c = SkyCoord(source["ra"] * u.deg, source["dec"] * u.deg)
    typed = c.to_string("hmsdms", precision=3)
    box = d.find_element("id", "target")
    box.clear()
    box.send_keys(typed)
    d.find_element("id", "go").click()

    # 1. the position as astropy reads it, the coverage as /coverage answers
    resolved = _wait(d, lambda d: d.find_element("id", "resolved-target").text, "the target")
    ra_t = float(re.search(r"RA ([\d.]+)", resolved).group(1))
    dec_t = float(re.search(r"Dec (-?[\d.]+)", resolved).group(1))
    assert SkyCoord(ra_t * u.deg, dec_t * u.deg).separation(c).arcsec < 0.05
    _wait(d, lambda d: d.find_elements("css selector", "#results-table tbody tr"), "rows")
    cov = d.find_element("id", "coverage-summary").text
    vot = parse(io.BytesIO(requests.get(f"{server}/coverage", params={
        "POS": f"CIRCLE {ra_t} {dec_t} {1 / 3600}"}, timeout=30).content))
    expected_cov = sorted(str(x) for x in vot.get_first_table().to_table()["collection"])
    assert expected_cov and all(x in cov for x in expected_cov)

    # 2. the rows: every image TAP says contains the point, and only those
    dids = _js(d, "return [...document.querySelectorAll('#results-table tbody tr')]"
                  ".map(r => r.dataset.did)")
    n_total = _js(d, "return document.getElementById('results-summary').textContent")
    expected = _tap_dids(server, ra_t, dec_t)
    assert len(expected) <= 20 and set(dids) == expected, (n_total, dids, expected)
    assert len(_js(d, "return document.querySelectorAll('#footprints polygon')")) == len(
        expected)
    csv = requests.get(d.find_element("id", "dl-csv").get_attribute("href"), timeout=30).text
    assert {line.split(",")[4] for line in csv.splitlines()[1:]} == expected
    _shot(d, shots, "1-search")

    # sorting by a column header, keyboard style (Enter on the focused button)
    from selenium.webdriver.common.keys import Keys

    d.find_element("css selector", "th button[data-key=det]").send_keys(Keys.ENTER)
    dets = _js(d, "return [...document.querySelectorAll('#results-table tbody tr td:nth-child(2)')]"
                  ".map(td => td.textContent)")
    assert dets == sorted(dets)

    # 3. the preview of the first image, the target marked on it
    d.find_element("css selector", "#results-table tbody tr button.view").click()
    _wait(d, lambda d: _js(d, "const i = document.getElementById('preview');"
                              "return i.complete && i.naturalWidth > 0"), "the preview")
    mark = d.find_elements("id", "target-mark")
    assert mark, "the target is not marked on the preview"
    assert "img=" in d.current_url
    _shot(d, shots, "2-preview")

    # 4. a cutout: drawn on the page, its FITS equal to the parent's pixels
    d.find_element("id", "cutsize").send_keys("30")  # 30 arcmin
    d.find_element("id", "cut").click()
    link = _wait(d, lambda d: d.find_element("id", "cutout-fits"), "the cutout")
    body = requests.get(link.get_attribute("href"), timeout=60).content
    this = _js(d, "return document.querySelector('#image-links a').href")
    parent = fits.open(io.BytesIO(requests.get(this, timeout=60).content))
    _, _, nx, ny = same_pixels_as_parent(body, parent)
    size = _js(d, "const c = document.getElementById('cutout-canvas');"
                  "return [c.width, c.height]")
    assert size == [nx, ny]
    assert _js(d, "return document.getElementById('cutout-png').href").startswith(
        "data:image/png")
    _shot(d, shots, "3-cutout")

    # 5. spectrophotometry: phase shown, the plotted points are the job's measurements
    d.find_element("id", "phot").click()
    _wait(d, lambda d: _js(d, "return document.getElementById('phot-phase').dataset.phase")
          in ("COMPLETED", "ERROR"), "the job", timeout=150)
    assert _js(d, "return document.getElementById('phot-phase').dataset.phase") == "COMPLETED"
    job = parse_qs(urlparse(d.current_url).query)["job"][0]
    cookies = {c["name"]: c["value"] for c in d.get_cookies()}
    long = requests.get(f"{job}/results/long", cookies=cookies, timeout=60)
    assert long.status_code == 200
    table = parse(io.BytesIO(long.content)).get_first_table().to_table()
    table = table[np.isfinite(np.asarray(table["flux"], float))
                  & np.isfinite(np.asarray(table["lambda"], float))]
    pts = _js(d, "return [...document.querySelectorAll('#spec-points circle')].map(c => "
                 "[+c.dataset.lambda, +c.dataset.flux, +c.dataset.err])")
    assert len(pts) == len(table) > 0
    got = sorted(pts)
    want = sorted(zip(np.asarray(table["lambda"], float), np.asarray(table["flux"], float),
                      np.nan_to_num(np.asarray(table["flux_err"], float))))
    assert np.allclose(got, want, rtol=1e-9, atol=1e-12)
    # coloured by detector (the DID's /Dn), one colour per detector; a legend entry each
    marks = _js(d, "return [...document.querySelectorAll('#spec-points circle')].map(c => "
                   "[c.dataset.did, c.dataset.det, c.getAttribute('fill')])")
    assert {(did, det) for did, det, _ in marks} == {
        (str(x), "D" + str(x).rsplit("/D", 1)[1]) for x in table["obs_publisher_did"]}
    colour = {det: fill for _, det, fill in marks}
    assert len(set(colour.values())) == len(colour) == len(
        _js(d, "return document.querySelectorAll('#spec-legend circle')"))
    _shot(d, shots, "4-spectrum")
    # a point links back to its image: Enter on it opens that image in the image view
    did = marks[-1][0]
    d.find_elements("css selector", "#spec-points circle")[-1].send_keys(Keys.ENTER)
    _wait(d, lambda d: parse_qs(urlparse(d.current_url).query).get("img") == [did],
          "the point's image")
    _wait(d, lambda d: _js(d, "return window.portal.view.selected") == did, "the image view")

    # 6. the page asked nothing of any other host
    hosts = _js(d, "return performance.getEntriesByType('resource').map(e => e.name)")
    assert hosts and all(h.startswith(server) or h.startswith("data:") for h in hosts), hosts


def test_browser_errors_back_button_and_narrow_screen(browser, server, shots) -> None:
    d = browser
    d.set_window_size(1280, 1000)
    d.get(server + "/?target=Nowhere+Special")
    msg = _wait(d, lambda d: d.find_element("id", "message").text, "an error message")
    assert "unknown object name" in msg
    assert not d.find_element("id", "results").is_displayed()
    _shot(d, shots, "5-unknown-name")

    d.get(server + "/?target=10+95")  # declination out of range
    msg = _wait(d, lambda d: d.find_element("id", "message").text, "an error message")
    assert "-90" in msg

    # a position no collection covers: said in words, not an empty table
    d.get(server + "/?target=M31")
    _wait(d, lambda d: d.find_element("id", "coverage-summary").text, "coverage")
    msg = _wait(d, lambda d: d.find_element("id", "message").text, "a message")
    assert "No SPHEREx collection covers" in msg or d.find_element("id", "results").is_displayed()

    # the back button returns to the previous search
    d.get(server + "/?target=NEP&shape=circle&r=1")
    _wait(d, lambda d: d.find_elements("css selector", "#results-table tbody tr"), "rows")
    box = d.find_element("id", "target")
    box.clear()
    box.send_keys("SEP")
    d.find_element("id", "go").click()
    _wait(d, lambda d: "SEP" in d.find_element("id", "resolved-target").text, "SEP")
    d.back()
    _wait(d, lambda d: "NEP" in d.find_element("id", "resolved-target").text, "NEP again")
    assert d.find_element("id", "target").get_attribute("value") == "NEP"
    _wait(d, lambda d: d.find_elements("css selector", "#results-table tbody tr"), "rows")

    # narrow screen: nothing wider than the window
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 900, "deviceScaleFactor": 1, "mobile": True})
    try:
        time.sleep(0.3)
        wide = _js(d, "return [...document.querySelectorAll('body *')].filter(e => "
                      "e.getBoundingClientRect().right > 391 && !e.closest('.table-wrap, pre'))"
                      ".map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + "
                      "Math.round(e.getBoundingClientRect().right))")
        assert _js(d, "return window.innerWidth") == 390, wide
        over = _js(d, "return document.documentElement.scrollWidth - "
                      "document.documentElement.clientWidth")
        assert over <= 1, (over, wide)
        d.save_screenshot(str(shots / "6-narrow.png"))
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _open_image_page(d, server, source) -> tuple[str, str]:
    """The page opened on one image covering the source: (its DataLink did, parent URL)."""
    did = sorted(_tap_dids(server, source["ra"], source["dec"]))[0]
    d.get(f"{server}/?target={source['ra']}+{source['dec']}&img={did}")
    _wait(d, lambda d: _js(d, "const v = window.portal && window.portal.view.pv;"
                              "return v && v.wcs && v.did === arguments[0]".replace(
                                  "arguments[0]", repr(did))), "the image's WCS")
    this = _wait(d, lambda d: _js(d, "const a = document.querySelector('#image-links a');"
                                     "return a && a.href"), "the image's file link")
    return did, this


def _point_at(d, fx: float, fy: float) -> None:
    """Move the pointer to the fraction (fx, fy) of the preview (from its top left)."""
    from selenium.webdriver.common.action_chains import ActionChains

    img = d.find_element("id", "preview")
    # the whole image in view: WebDriver offsets count from the centre of the visible part
    _js(d, "document.getElementById('preview').scrollIntoView({block: 'center'})")
    w, h = _js(d, "const r = document.getElementById('preview').getBoundingClientRect();"
                  "return [r.width, r.height]")
    ActionChains(d, duration=0).move_to_element_with_offset(
        img, int(round((fx - 0.5) * w)), int(round((fy - 0.5) * h))).perform()


def test_browser_image_hdus_wcs_and_pixel_under_the_pointer(browser, server, source,
                                                            shots) -> None:
    """The preview's extensions are selectable; the page's own TAN-SIP evaluation agrees with
    astropy; the pixel value under the pointer is the parent file's, per extension."""
    from astropy.wcs import WCS

    d = browser
    d.set_window_size(1280, 1000)
    did, this = _open_image_page(d, server, source)
    parent = fits.open(io.BytesIO(requests.get(this, timeout=60).content))
    wcs = WCS(parent["IMAGE"].header)
    ny, nx = parent["IMAGE"].data.shape
    _wait(d, lambda d: _js(d, "const i = document.getElementById('preview');"
                              "return i.complete && i.naturalWidth > 0"), "the preview")
    names = _js(d, "return [...document.querySelectorAll('#hdu-choice input')].map(i => i.value)")
    assert names == ["IMAGE", "FLAGS", "VARIANCE", "ZODI"]

    # the page's WCS against astropy, at corners, the middle and fractional pixels
    worst = 0.0
    for x, y in [(0, 0), (nx - 1, 0), (0, ny - 1), (nx - 1, ny - 1), (nx / 2, ny / 3),
                 (10.25, 40.75), (-5, nx + 3)]:
        ra, dec = _js(d, f"return window.portal.view.pv.wcs.pix2sky({x}, {y})")
        want = wcs.pixel_to_world_values(x, y)
        sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(*want, unit="deg"))
        assert sep.arcsec < 1e-3, (x, y, ra, dec, want)
        worst = max(worst, sep.arcsec)
        back = _js(d, f"return window.portal.view.pv.wcs.sky2pix({want[0]}, {want[1]})")
        assert np.allclose(back, [x, y], atol=1e-4), (x, y, back)
    # the target mark sits where astropy puts the target
    tx, ty = wcs.world_to_pixel_values(source["ra"], source["dec"])
    mark = d.find_element("id", "target-mark")
    assert abs(float(mark.get_attribute("data-x")) - tx) < 0.01
    assert abs(float(mark.get_attribute("data-y")) - ty) < 0.01

    # the pixel under the pointer: position and values, for each extension
    def read(fx, fy, hdu):
        _point_at(d, fx, fy)
        ex, ey = fx * nx, (1 - fy) * ny
        box = _wait(d, lambda d: _js(d, "const b = document.getElementById('pointer').dataset;"
                                        f"return b.value !== '' && b.hdu === '{hdu}' && "
                                        f"Math.abs(b.x - {ex}) <= 1 && Math.abs(b.y - {ey}) <= 1"
                                        " && b"), f"the {hdu} pixel value at {fx}, {fy}")
        x, y = int(box["x"]), int(box["y"])
        want = wcs.pixel_to_world_values(x, y)
        assert SkyCoord(float(box["ra"]) * u.deg, float(box["dec"]) * u.deg).separation(
            SkyCoord(*want, unit="deg")).arcsec < 1e-3
        assert float(box["value"]) == float(parent[hdu].data[y, x]), (hdu, x, y)
        return x, y

    x0, y0 = read(0.3, 0.6, "IMAGE")
    # keyboard: the arrows move the pixel read from the focused image
    from selenium.webdriver.common.keys import Keys

    stack = d.find_element("css selector", "#image .stack")
    stack.send_keys(Keys.ARROW_RIGHT)
    stack.send_keys(Keys.ARROW_UP)
    box = _wait(d, lambda d: _js(d, "const b = document.getElementById('pointer').dataset;"
                                    f"return b.x == {x0 + 1} && b.y == {y0 + 1} && "
                                    "b.value !== '' && b"), "the pixel moved by the arrows")
    assert float(box["value"]) == float(parent["IMAGE"].data[y0 + 1, x0 + 1])
    assert d.find_elements("id", "pointer-mark")
    read(0.85, 0.1, "IMAGE")  # another tile (a second cutout request)
    for hdu in ["VARIANCE", "FLAGS", "ZODI"]:
        d.find_element("id", f"hdu-{hdu}").click()
        loaded = ("const i = document.getElementById('preview');"
                  f"return i.src.endsWith('HDU={hdu}') && i.complete && i.naturalWidth > 0")
        _wait(d, lambda d, loaded=loaded: _js(d, loaded), f"the {hdu} preview")
        read(0.52, 0.47, hdu)
    assert "hdu=ZODI" in d.current_url
    _shot(d, shots, "7-image-hdus-pointer")
    tiles = _js(d, "return performance.getEntriesByType('resource').filter(e => "
                   "e.name.includes('psf=none')).map(e => [e.encodedBodySize, e.duration])")
    assert 2 <= len(tiles) <= 4  # two tiles asked for, each once (the HDU switch re-used them)
    print(f"\npage TAN-SIP vs astropy: worst {worst:.1e} arcsec; pixel reads: {len(tiles)} "
          f"cutouts of {[b for b, _ in tiles]} bytes, {[round(t) for _, t in tiles]} ms")

    # the preview service: one PNG per extension, its header as JSON, a bad HDU refused
    key = this.split("/data/", 1)[1]
    info = requests.get(f"{server}/preview/{key}", params={"FORMAT": "json"}, timeout=30).json()
    assert (info["nx"], info["ny"]) == (nx, ny)
    assert info["wcs"]["CTYPE1"] == "RA---TAN-SIP" and info["wcs"]["A_ORDER"] == 3
    pngs = {h: requests.get(f"{server}/preview/{key}", params={"HDU": h}, timeout=30)
            for h in ["IMAGE", "FLAGS", "VARIANCE", "ZODI"]}
    assert all(r.status_code == 200 and r.content[:4] == b"\x89PNG" for r in pngs.values())
    assert len({r.content for r in pngs.values()}) == 4
    bad = requests.get(f"{server}/preview/{key}", params={"HDU": "PSF"}, timeout=30)
    assert bad.status_code == 400 and "HDU must be one of" in bad.text


def test_browser_target_list_upload_combined_table_and_batch_cutouts(
        browser, server, synth_dir, source, shots, tmp_path) -> None:
    """An uploaded CSV target list gives one table with a target column, equal to TAP per
    target; "cutouts of all these images" runs async SODA (phase shown) and delivers links
    and a zip whose cutouts hold the parents' pixels."""
    import base64
    import zipfile
    from urllib.parse import unquote

    from selenium.webdriver.support.ui import Select

    d = browser
    d.set_window_size(1280, 1000)
    truth = pq.read_table(synth_dir / "truth.parquet").to_pylist()
    other = next(t for t in truth[:80] if (t["ra"], t["dec"]) != (source["ra"], source["dec"])
                 and 0 < len(_tap_dids(server, t["ra"], t["dec"])) <= 8)
    targets = [source, other]
    csv_file = tmp_path / "targets.csv"
    csv_file.write_text("name,ra,dec\n" + "".join(
        f"src{i},{t['ra']},{t['dec']}\n" for i, t in enumerate(targets)))
    d.get(server + "/")
    d.find_element("id", "target-file").send_keys(str(csv_file))
    _wait(d, lambda d: d.find_elements("css selector", "#results-table tbody tr"), "rows")
    assert len(d.find_elements("css selector", "#targets-body li")) == 2
    # the combined table as downloaded, against TAP target by target
    href = d.find_element("id", "dl-combined-csv").get_attribute("href")
    lines = unquote(href.split(",", 1)[1]).splitlines()
    assert lines[0].startswith("target,target_input,target_ra,target_dec,obs_id,"
                               "obs_publisher_did")
    got = {(int(c[0]), c[5]) for c in (line.split(",") for line in lines[1:])}
    want = {(k + 1, did) for k, t in enumerate(targets)
            for did in _tap_dids(server, t["ra"], t["dec"])}
    assert got == want and len(lines) - 1 == len(want)
    # the page's table names the target of every row
    shown = _js(d, "return [...document.querySelectorAll('#results-table tbody tr')].map(r =>"
                   " [r.dataset.target, r.dataset.did, r.cells[0].textContent])")
    for tgt, did, name in shown:
        assert (int(tgt) + 1, did) in want and name.startswith(f"{int(tgt) + 1}: ")
    assert "target" == d.find_element("css selector", "#results-table thead th").text

    # cutouts of all these images: async SODA, one job per target
    d.find_element("id", "batch-size").send_keys("3")
    d.find_element("id", "batch-go").click()
    seen = set()
    end = time.monotonic() + 150
    while time.monotonic() < end:
        ph = _js(d, "return document.getElementById('batch-phase').dataset.phase || ''")
        seen.add(ph)
        if ph in ("COMPLETED", "ERROR"):
            break
        time.sleep(0.05)
    assert ph == "COMPLETED", (seen, d.find_element("id", "message").text)
    assert seen & {"PENDING", "QUEUED", "EXECUTING"}, seen  # the phase was shown while it ran
    links = _js(d, "return [...document.querySelectorAll('#batch-list a.batch-file')].map(a =>"
                   " [a.href, a.dataset.did, +a.dataset.target, a.download])")
    assert {(t + 1, did) for _, did, t, _ in links} == want
    cookies = {c["name"]: c["value"] for c in d.get_cookies()}
    first = requests.get(links[0][0], cookies=cookies, timeout=60)
    assert first.status_code == 200
    dl = requests.get(f"{server}/datalink/links", params={"ID": links[0][1]}, timeout=30)
    row = next(r for r in parse(io.BytesIO(dl.content)).get_first_table().to_table(
               use_names_over_ids=True)
               if r["semantics"] == "#this")
    parent = fits.open(io.BytesIO(requests.get(row["access_url"], timeout=60).content))
    same_pixels_as_parent(first.content, parent)
    _shot(d, shots, "8-target-list-batch")

    # the same cutouts as one zip, made in the page
    d.find_element("id", "batch-zip").click()
    _wait(d, lambda d: d.find_elements("id", "batch-zip-file"), "the zip")
    b64 = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('batch-zip-file').href).then(r => r.arrayBuffer())"
        ".then(b => { let s = ''; const u = new Uint8Array(b);"
        "for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]); done(btoa(s)); })")
    z = zipfile.ZipFile(io.BytesIO(base64.b64decode(b64)))
    assert z.testzip() is None
    assert z.namelist() == [name for *_, name in links]
    assert z.read(links[0][3]) == first.content

    # spectrophotometry of the whole list: one job, a POINT per target (numbered as listed),
    # each target's spectrum plotted from its own rows of the job's result
    d.find_element("id", "phot").click()
    _wait(d, lambda d: _js(d, "return document.getElementById('phot-phase').dataset.phase")
          in ("COMPLETED", "ERROR"), "the list's job", timeout=240)
    assert _js(d, "return document.getElementById('phot-phase').dataset.phase") == "COMPLETED"
    job = parse_qs(urlparse(d.current_url).query)["job"][0]
    info = requests.get(job, cookies=cookies, timeout=30).text
    points = re.findall(r'<uws:parameter id="POINT"[^>]*>([^<]+)<', info, flags=re.I)
    assert np.allclose([tuple(map(float, p.split(","))) for p in points], [
        (t["ra"], t["dec"]) for t in targets], atol=1e-6), info  # as the page read them
    long = parse(io.BytesIO(requests.get(f"{job}/results/long", cookies=cookies,
                                         timeout=60).content)).get_first_table().to_table()
    long = long[np.isfinite(np.asarray(long["flux"], float))
                & np.isfinite(np.asarray(long["lambda"], float))]
    assert set(np.asarray(long["source_id"])) == {1, 2}
    assert len(d.find_elements("css selector", "#spec-source option")) == 2
    for k in (2, 1):
        Select(d.find_element("id", "spec-source")).select_by_value(str(k))
        pts = _js(d, "return [...document.querySelectorAll('#spec-points circle')].map(c => "
                     "[+c.dataset.source, +c.dataset.lambda, +c.dataset.flux])")
        mine = long[np.asarray(long["source_id"]) == k]
        assert {p[0] for p in pts} == {k} and len(pts) == len(mine) > 0
        assert np.allclose(sorted(p[1:] for p in pts), sorted(zip(
            np.asarray(mine["lambda"], float), np.asarray(mine["flux"], float))), rtol=1e-9)
    _shot(d, shots, "10-target-list-spectra")

    # a look at the first image of the list, the pointer on it (the README's picture)
    d.find_element("css selector", "#results-table tbody tr button.view").click()
    _wait(d, lambda d: _js(d, "const v = window.portal.view.pv; return v && v.wcs"), "the WCS")
    d.find_element("id", "hdu-VARIANCE").click()
    _wait(d, lambda d: _js(d, "const i = document.getElementById('preview');"
                              "return i.src.endsWith('HDU=VARIANCE') && i.complete && "
                              "i.naturalWidth > 0"), "the VARIANCE preview")
    _point_at(d, 0.4, 0.4)
    _wait(d, lambda d: d.find_element("id", "pointer").get_attribute("data-value"),
          "a pixel value")
    _js(d, "document.querySelector('.table-wrap').scrollLeft = 0")
    _shot(d, shots, "9-list-batch-image")

    # a VOTable target list: positions from the FIELDs with pos.eq UCDs
    vot = tmp_path / "targets.xml"
    vot.write_text(
        '<?xml version="1.0"?><VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        '<RESOURCE><TABLE><FIELD name="id" datatype="char" arraysize="*" ucd="meta.id"/>'
        '<FIELD name="RAJ2000" datatype="double" ucd="pos.eq.ra;meta.main"/>'
        '<FIELD name="DEJ2000" datatype="double" ucd="pos.eq.dec;meta.main"/><DATA><TABLEDATA>'
        + "".join(f"<TR><TD>s{i}</TD><TD>{t['ra']}</TD><TD>{t['dec']}</TD></TR>"
                  for i, t in enumerate(reversed(targets)))
        + "</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>")
    d.find_element("id", "target-file").send_keys(str(vot))
    _wait(d, lambda d: d.find_element("id", "target").get_attribute("value").startswith(
        str(other["ra"])), "the VOTable's targets in the box")
    first_ra = other["ra"]
    _wait(d, lambda d: _js(d, "const v = window.portal.view; return v.multi && "
                              f"Math.abs(v.targets[0].ra - {first_ra}) < 1e-6 && "
                              "document.getElementById('dl-combined-csv')"), "the new table")
    got = _js(d, "return window.portal.view.targets.map(t => [t.ra, t.dec])")
    assert np.allclose(got, [[t["ra"], t["dec"]] for t in reversed(targets)], atol=1e-6)
    # a BINARY2 VOTable, as TAP services return them: read on the server by astropy
    from astropy.io.votable import from_table
    from astropy.table import Table

    vot = from_table(Table({"ra": [t["ra"] for t in targets],
                            "dec": [t["dec"] for t in targets]}))
    binary = tmp_path / "targets-binary2.xml"
    vot.to_xml(str(binary), tabledata_format="binary2")
    d.find_element("id", "target-file").send_keys(str(binary))
    first_ra = source["ra"]
    _wait(d, lambda d: _js(d, "const v = window.portal.view; return v.multi && "
                              f"Math.abs(v.targets[0].ra - {first_ra}) < 1e-6 && "
                              "v.targets.length === 2"), "the BINARY2 file's targets")
    got = _js(d, "return window.portal.view.targets.map(t => [t.ra, t.dec])")
    assert np.allclose(got, [[t["ra"], t["dec"]] for t in targets], atol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("colour,size\nred,3\n")
    d.find_element("id", "target-file").send_keys(str(bad))
    msg = _wait(d, lambda d: d.find_element("id", "message").text, "an error message")
    assert "no ra and dec columns" in msg and "colour, size" in msg
