// SPHEREx archive portal: plain modern JavaScript, no library, no build step.
// Everything it shows comes from the archive's public services (same origin only):
//   /portal/resolve  names and typed positions -> ICRS (astropy on the server)
//   /coverage        which collections cover the target
//   /tap/sync        the image search (ADQL on ivoa.obscore), also the VOTable/CSV downloads;
//   /sia/query       its SIA twin for circles
//   /datalink/links  an image's file, preview and cutout descriptor
//   /cutout          the cutout (FITS, drawn here as a PNG quick-look)
//   /spectrophotometry/async  a UWS job (owned through the uws_owner cookie)
// The state of the page lives in the URL query, so a URL can be shared and Back works.

const BASE = document.documentElement.dataset.base || location.origin;
const $ = (id) => document.getElementById(id);
const DETECTORS = [  // SPHEREx detector bands (um)
  ["D1", 0.75, 1.09], ["D2", 1.10, 1.62], ["D3", 1.63, 2.41],
  ["D4", 2.42, 3.82], ["D5", 3.83, 4.41], ["D6", 4.42, 5.00]];
const PAGE = 20;
const MAXREC = 2000;
const STATE_KEYS = ["target", "frame", "shape", "r", "tmin", "tmax", "det", "wmin", "wmax",
  "coll", "sel", "img", "hdu", "size", "job"];

const view = { targets: [], target: null, rows: [], fields: {}, sort: { key: "t", dir: 1 },
  page: 0, selected: null, queryURL: null, runId: 0 };

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const ns = ["svg", "path", "polygon", "circle", "line", "text", "g", "rect", "title"]
    .includes(tag) ? "http://www.w3.org/2000/svg" : null;
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) e.append(c);
  return e;
}

function url(path, params = []) {
  const q = new URLSearchParams();
  for (const [k, v] of params) if (v !== undefined && v !== null && v !== "") q.append(k, v);
  const s = q.toString();
  return BASE + path + (s ? "?" + s : "");
}

class Problem extends Error {}

function say(text, kind = "error") {
  const m = $("message");
  m.textContent = text;
  m.className = "message" + (kind === "info" ? " info" : "");
  m.hidden = !text;
}

// What went wrong, in words: the service's own message when it gave one.
function explain(status, body, what) {
  let detail = "";
  const t = (body || "").trim();
  if (t.startsWith("{")) {
    try {
      const j = JSON.parse(t);
      detail = (j.errors || []).map((e) => e.message).join("\n") || j.error || "";
    } catch { /* not JSON after all */ }
  } else if (t.startsWith("<")) {
    const doc = new DOMParser().parseFromString(t, "application/xml");
    const info = [...doc.getElementsByTagName("INFO")]
      .find((i) => i.getAttribute("name") === "QUERY_STATUS");
    detail = info ? info.textContent.trim() : "";
  } else {
    detail = t.split("\n")[0].slice(0, 400);
  }
  const head = status === 0 ? `${what}: the archive did not answer (network error)`
    : status >= 500 ? `${what}: the archive had a problem (HTTP ${status}); try again shortly`
      : status === 429 ? `${what}: too many requests; wait a moment and try again`
        : `${what} was refused (HTTP ${status})`;
  return detail ? `${head}: ${detail}` : head;
}

async function get(u, what, opts = {}) {
  let r;
  try {
    r = await fetch(u, { credentials: "same-origin", ...opts });
  } catch {
    throw new Problem(explain(0, "", what));
  }
  if (!r.ok) throw new Problem(explain(r.status, await r.text(), what));
  return r;
}

function parseXML(text, what) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  if (doc.getElementsByTagName("parsererror").length) {
    throw new Problem(`${what}: the answer was not readable XML`);
  }
  return doc;
}

// A VOTable (TABLEDATA) as {names, rows (arrays of strings), status, statusText, doc}.
function votable(text, what) {
  const doc = parseXML(text, what);
  const info = [...doc.getElementsByTagName("INFO")]
    .find((i) => i.getAttribute("name") === "QUERY_STATUS");
  const status = info ? info.getAttribute("value") : "OK";
  const statusText = info ? info.textContent.trim() : "";
  if (status === "ERROR") throw new Problem(`${what}: ${statusText || "error"}`);
  const table = doc.getElementsByTagName("TABLE")[0];
  if (!table) return { names: [], rows: [], status, statusText, doc };
  const names = [...table.getElementsByTagName("FIELD")].map((f) => f.getAttribute("name"));
  const rows = [...table.getElementsByTagName("TR")].map(
    (tr) => [...tr.getElementsByTagName("TD")].map((td) => td.textContent));
  return { names, rows, status, statusText, doc };
}

function records(vt) {
  return vt.rows.map((r) => Object.fromEntries(vt.names.map((n, i) => [n, r[i]])));
}

const fmt = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : "");

function mjdToISO(mjd) {
  if (!Number.isFinite(mjd)) return "";
  return new Date((mjd - 40587) * 86400000).toISOString().replace("T", " ").slice(0, 19);
}

// A time as typed: an MJD (number) or a calendar date/time (UTC unless a zone is given).
function parseTime(text, what) {
  const t = (text || "").trim();
  if (!t) return null;
  if (/^[+-]?\d+(\.\d*)?$/.test(t)) {
    const v = Number(t);
    if (v < 30000 || v > 100000) {
      throw new Problem(`${what}: ${t} does not look like an MJD (e.g. 60919.5) or a date ` +
        "(e.g. 2025-09-08 or 2025-09-08T12:00)");
    }
    return v;
  }
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(t) || /^\d{4}-\d\d-\d\d$/.test(t) ? t
    : t.replace(" ", "T") + "Z";
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) {
    throw new Problem(`${what}: could not read "${t}" as a date (2025-09-08, ` +
      "2025-09-08T12:00) or an MJD (60919.5)");
  }
  return ms / 86400000 + 40587;
}

// ------------------------------------------------------------------ URL state

function readState() {
  const q = new URLSearchParams(location.search);
  const s = {};
  for (const k of STATE_KEYS) if (q.has(k)) s[k] = q.get(k);
  return s;
}

function formState() {
  const det = [...document.querySelectorAll("#detectors input:checked")].map((i) => i.value);
  return {
    target: $("target").value.trim(), frame: $("frame").value,
    shape: document.querySelector("input[name=shape]:checked").value,
    r: $("radius").value, tmin: $("tmin").value.trim(), tmax: $("tmax").value.trim(),
    det: det.join(","), wmin: $("wmin").value, wmax: $("wmax").value,
    coll: $("collection").value,
  };
}

function fillForm(s) {
  $("target").value = s.target || "";
  $("frame").value = s.frame === "galactic" ? "galactic" : "icrs";
  const shape = s.shape === "circle" ? "circle" : "point";
  document.querySelector(`input[name=shape][value=${shape}]`).checked = true;
  $("radius").value = s.r || "0.1";
  $("tmin").value = s.tmin || "";
  $("tmax").value = s.tmax || "";
  const det = (s.det || "").split(",");
  for (const i of document.querySelectorAll("#detectors input")) i.checked = det.includes(i.value);
  $("wmin").value = s.wmin || "";
  $("wmax").value = s.wmax || "";
  ensureCollectionOption(s.coll);
  $("collection").value = s.coll || "";
  if (s.size) $("cutsize").value = s.size;
}

function stateURL(s) {
  const q = new URLSearchParams();
  for (const k of STATE_KEYS) {
    const v = s[k];
    if (v === undefined || v === null || v === "") continue;
    if (k === "shape" && v === "point") continue;
    if (k === "frame" && v === "icrs") continue;
    if (k === "r" && s.shape !== "circle") continue;
    q.set(k, v);
  }
  return location.pathname + (q.toString() ? "?" + q : "");
}

function pushState(changes, replace = false) {
  const s = { ...readState(), ...changes };
  for (const [k, v] of Object.entries(changes)) if (v === null) delete s[k];
  const u = stateURL(s);
  if (u !== location.pathname + location.search) {
    history[replace ? "replaceState" : "pushState"](null, "", u);
  }
  return s;
}

// ------------------------------------------------------------------ the search

function setBusy(on) {
  $("busy").hidden = !on;
  $("go").disabled = on;
}

function hideResults() {
  for (const id of ["targets", "coverage", "results", "image", "spectrum"]) $(id).hidden = true;
  $("batch-links").textContent = "";
  $("batch-phase").textContent = "";
  delete $("batch-phase").dataset.phase;
}

async function run(s) {
  const runId = ++view.runId;
  const stale = () => runId !== view.runId;
  say("");
  hideResults();
  $("resolved").textContent = "";
  if (!s.target) return;
  setBusy(true);
  try {
    const targets = await resolve(s);
    if (stale()) return;
    const sel = Math.min(Math.max(parseInt(s.sel || "0", 10) || 0, 0), targets.length - 1);
    showTargets(targets, sel);
    view.target = targets[sel];
    view.sel = sel;
    const filters = searchFilters(s);
    const covering = await coverage(view.target, s);
    if (stale()) return;
    if (targets.length > 1) {  // one table for the whole list, a column naming the target
      await imageSearchMany(targets, s, filters, stale);
      if (stale()) return;
      showSpectrumPanel(s);
      if (s.img) await openImage(s.img, s);
      return;
    }
    const colls = s.coll ? [s.coll] : covering;
    if (s.coll && !covering.includes(s.coll)) {
      say(`The collection ${s.coll} does not cover ${label(view.target)} in this release, so ` +
        "it has no images there. Choose another collection, or every collection.", "info");
      return;
    }
    if (!colls.length) {
      say(`No SPHEREx collection covers ${label(view.target)} in this release: there are no ` +
        "images there yet.", "info");
      return;
    }
    await imageSearch(view.target, s, colls, filters);
    if (stale()) return;
    showSpectrumPanel(s);
    if (s.img) await openImage(s.img, s);
  } catch (e) {
    if (stale()) return;
    if (e instanceof Problem) say(e.message);
    else { say(`Something went wrong in the page: ${e.message}`); console.error(e); }
  } finally {
    if (!stale()) setBusy(false);
  }
}

const label = (t) => (t.name ? `${t.name} (${t.sexagesimal})` : t.sexagesimal);

async function resolve(s) {
  const u = url("/portal/resolve", [["q", s.target], ["frame", s.frame || "icrs"]]);
  let r;
  try {
    r = await fetch(u, { credentials: "same-origin" });
  } catch {
    throw new Problem(explain(0, "", "Reading the position"));
  }
  const text = await r.text();
  let doc;
  try { doc = JSON.parse(text); } catch {
    throw new Problem(explain(r.status, text, "Reading the position"));
  }
  const errs = doc.errors || [];
  const box = $("resolved");
  box.textContent = "";
  for (const e of errs) {
    box.append(el("div", { class: "err", text: (errs.length > 1 || (doc.targets || []).length
      ? `line ${e.line}: ` : "") + e.message }));
  }
  if (!(doc.targets || []).length) {
    throw new Problem(errs.length === 1 ? errs[0].message
      : "None of the lines is a position or a known name (see above).");
  }
  if (errs.length) {
    say(`${errs.length} of the lines could not be read and are left out (see under Where).`,
      "info");
  }
  view.targets = doc.targets;
  return doc.targets;
}

function showTargets(targets, sel) {
  const t = targets[sel];
  const one = (x) => `${x.name ? x.name + " = " : ""}RA ${fmt(x.ra, 5)} Dec ${fmt(x.dec, 5)}` +
    ` (${x.sexagesimal}; l ${fmt(x.l, 4)} b ${fmt(x.b, 4)}` +
    `${x.source ? "; name from the " + x.source : ""})`;
  if ($("resolved-target")) $("resolved-target").remove();
  $("resolved").prepend(el("div", { id: "resolved-target", text: "Target: " + one(t) }));
  if (targets.length < 2) return;
  const body = $("targets-body");
  body.textContent = "";
  const list = el("ol", { class: "target-list" });
  targets.forEach((x, i) => {
    const b = el("button", { type: "button", class: "link", "aria-current": i === sel ? "true"
      : null, text: i === sel ? `${one(x)} (shown)` : one(x),
    onclick: () => { const s = pushState({ sel: String(i), img: null, job: null }); run(s); } });
    list.append(el("li", {}, b));
  });
  body.append(el("p", { text: `${targets.length} targets: the table below lists the ` +
    "images of all of them (its target column says which); the coverage, the sky plot and " +
    "the spectrum are of the one chosen here." }), list);
  $("targets").hidden = false;
}

function searchFilters(s) {
  const out = [];
  const lo = parseTime(s.tmin, "From"), hi = parseTime(s.tmax, "To");
  if (lo !== null && hi !== null && lo > hi) {
    throw new Problem("The time range ends before it starts: swap from and to.");
  }
  if (lo !== null || hi !== null) {
    out.push(["TIME", `${lo === null ? "-Inf" : lo} ${hi === null ? "+Inf" : hi}`]);
  }
  const wmin = s.wmin ? Number(s.wmin) : null, wmax = s.wmax ? Number(s.wmax) : null;
  const dets = (s.det || "").split(",").filter(Boolean);
  if (dets.length && (wmin !== null || wmax !== null)) {
    throw new Problem("Choose detectors or a wavelength range, not both.");
  }
  for (const d of dets) {
    const band = DETECTORS.find((x) => x[0] === d);
    if (!band) throw new Problem(`Unknown detector ${d}: use D1 to D6.`);
    const mid = ((band[1] + band[2]) / 2) * 1e-6;
    out.push(["BAND", `${mid} ${mid}`]);
  }
  if (wmin !== null || wmax !== null) {
    if ((wmin !== null && !Number.isFinite(wmin)) || (wmax !== null && !Number.isFinite(wmax))) {
      throw new Problem("The wavelengths must be numbers in micrometres, e.g. 1.2 and 1.6.");
    }
    if (wmin !== null && wmax !== null && wmin > wmax) {
      throw new Problem("The wavelength range ends before it starts: swap the two values.");
    }
    out.push(["BAND", `${wmin === null ? "-Inf" : wmin * 1e-6} ${wmax === null ? "+Inf"
      : wmax * 1e-6}`]);
  }
  return out;
}

function radiusOf(s) {
  if (s.shape !== "circle") return 0;
  const r = Number(s.r);
  if (!Number.isFinite(r) || r < 0 || r > 10) {
    throw new Problem("The radius must be a number of degrees between 0 and 10.");
  }
  return r;
}

async function coverage(t, s) {
  const r = Math.max(radiusOf(s), 1 / 3600);
  const u = url("/coverage", [["POS", `CIRCLE ${t.ra} ${t.dec} ${r}`]]);
  const vt = votable(await (await get(u, "The coverage query")).text(), "The coverage query");
  const rows = records(vt);
  const body = $("coverage-body");
  body.textContent = "";
  const covering = rows.map((x) => x.collection);
  const p = el("p", { id: "coverage-summary", text: covering.length
    ? `${covering.length === 1 ? "One collection covers" : covering.length +
      " collections cover"} ${label(t)}: ${covering.join(", ")}.`
    : `No collection covers ${label(t)}.` });
  const table = el("table", { class: "cov-table" }, el("thead", {}, el("tr", {},
    el("th", { text: "collection" }), el("th", { text: "sky covered" }),
    el("th", { text: "coverage map (MOC)" }))));
  const tb = el("tbody");
  for (const x of rows) {
    tb.append(el("tr", {}, el("td", { text: x.collection }),
      el("td", { class: "num", text: (100 * Number(x.sky_fraction)).toFixed(3) + " %" }),
      el("td", {}, el("a", { href: `${BASE}/coverage/${encodeURIComponent(x.collection)}` +
        "?FORMAT=json", text: "JSON" }), " ", el("a", { href: `${BASE}/coverage/` +
        `${encodeURIComponent(x.collection)}`, text: "FITS" }))));
  }
  table.append(tb);
  body.append(p);
  if (rows.length) body.append(table);
  body.append(el("p", { class: "downloads" }, el("a", { href: u, text:
    "the coverage answer (VOTable)" })));
  $("coverage").hidden = false;
  return covering;
}

// ------------------------------------------------------------------ image search and table

function detectorOf(row) {
  const m = /\/D(\d)$/.exec(row.obs_publisher_did || "");
  if (m) return "D" + m[1];
  const mid = ((Number(row.em_min) + Number(row.em_max)) / 2) * 1e6;
  const d = DETECTORS.find((x) => mid >= x[1] && mid <= x[2]);
  return d ? d[0] : "";
}

// open a result row's image (of another target of the list: that target becomes the selected)
function viewImage(r) {
  if (view.multi && r.tgt !== view.sel) {
    view.sel = r.tgt;
    view.target = view.targets[r.tgt];
    showTargets(view.targets, r.tgt);
    skyplot();
    coverage(view.target, readState()).catch((e) => say(e.message));
  }
  const s = pushState(view.multi ? { img: r.did, sel: String(r.tgt) } : { img: r.did });
  openImage(r.did, s);
}

// "Polygon ICRS ra dec ra dec ..." (or a bare list of numbers) -> [[ra, dec], ...]
function polygonOf(text) {
  const nums = (text || "").split(/[\s,]+/).map(Number).filter((v) => Number.isFinite(v));
  if (/^\s*circle/i.test(text || "")) return null;
  const out = [];
  for (let i = 0; i + 1 < nums.length; i += 2) out.push([nums[i], nums[i + 1]]);
  return out.length >= 3 ? out : null;
}

async function imageSearch(t, s, colls, filters) {
  // TAP answers "contains the point" exactly (SIA's POS needs a circle of radius > 0);
  // the SIA twin of the search is linked for circles.
  const adql = adqlOf(t, s, colls, filters);
  const tap = (extra) => url("/tap/sync", [["LANG", "ADQL"], ["REQUEST", "doQuery"],
    ["QUERY", adql], ...extra]);
  const u = tap([["MAXREC", String(MAXREC)]]);
  view.queryURL = u;
  view.adql = adql;
  const vt = votable(await (await get(u, "The image search")).text(), "The image search");
  view.multi = false;
  view.rows = records(vt).map((row, i) => rowOf(row, i, 0));
  view.page = 0;
  view.selected = s.img || null;
  const n = view.rows.length;
  const what = s.shape === "circle" ? `intersecting a circle of ${radiusOf(s)} deg around`
    : "containing";
  $("results-summary").textContent = n
    ? `${n}${vt.status === "OVERFLOW" ? "+ (the first " + MAXREC + ")" : ""} image${n > 1
      ? "s" : ""} ${what} ${label(t)} in ${colls.join(", ")}. Choose one to look at it.`
    : `No image ${what} ${label(t)} matches the search in ${colls.join(", ")}` +
      (filters.length ? " with these time or wavelength limits: widen them." : ".");
  if (vt.status === "OVERFLOW") {
    say(`More than ${MAXREC} images match: the table shows the first ${MAXREC}. Narrow the ` +
      "search by time or wavelength to see them all.", "info");
  }
  const dl = $("downloads");
  dl.textContent = "";
  dl.append("Download this table: ",
    el("a", { id: "dl-votable", href: tap([]), download: "spherex-images.xml",
      text: "VOTable" }),
    el("a", { id: "dl-csv", href: tap([["FORMAT", "csv"]]), download: "spherex-images.csv",
      text: "CSV" }));
  if (s.shape === "circle") {
    const sia = [["POS", `CIRCLE ${t.ra} ${t.dec} ${radiusOf(s)}`],
      ...colls.map((c) => ["COLLECTION", c]), ...filters];
    dl.append(el("a", { id: "dl-sia", href: url("/sia/query", sia),
      text: "the same search in SIA" }));
  }
  dl.append(el("details", {}, el("summary", { text: "the ADQL query" }),
    el("pre", { text: adql })));
  renderTable();
  skyplot();
  $("batch").hidden = !view.rows.length;
  $("results").hidden = false;
}

function rowOf(row, i, tgt) {
  return { i, row, obs_id: row.obs_id, det: detectorOf(row), did: row.obs_publisher_did,
    lmin: Number(row.em_min) * 1e6, lmax: Number(row.em_max) * 1e6, t: Number(row.t_min),
    ra: Number(row.s_ra), dec: Number(row.s_dec), coll: row.obs_collection,
    poly: polygonOf(row.s_region), tgt, tname: targetName(view.targets[tgt], tgt) };
}

const targetName = (t, k) => `${k + 1}: ${t ? t.name || `${fmt(t.ra, 4)} ${fmt(t.dec, 4)}`
  : ""}`;

// Every target of a list searched (the same query, one target at a time, three at once),
// the answers in one table with the target each row matched.
async function imageSearchMany(targets, s, filters, stale) {
  const colls = s.coll ? [s.coll] : [];
  const per = new Array(targets.length);
  const overflow = [];
  let next = 0;
  async function worker() {
    while (next < targets.length && !stale()) {
      const k = next++;
      const u = url("/tap/sync", [["LANG", "ADQL"], ["REQUEST", "doQuery"],
        ["QUERY", adqlOf(targets[k], s, colls, filters)], ["MAXREC", String(MAXREC)]]);
      const what = `The image search for target ${targetName(targets[k], k)}`;
      const vt = votable(await (await get(u, what)).text(), what);
      if (vt.status === "OVERFLOW") overflow.push(k + 1);
      per[k] = records(vt);
    }
  }
  await Promise.all([worker(), worker(), worker()]);
  if (stale()) return;
  view.multi = true;
  view.rows = [];
  per.forEach((rows, k) => rows.forEach((row) => view.rows.push(rowOf(row, view.rows.length,
    k))));
  view.page = 0;
  view.selected = s.img || null;
  const hit = per.filter((r) => r.length).length;
  const what = s.shape === "circle" ? `intersecting a circle of ${radiusOf(s)} deg around`
    : "containing";
  $("results-summary").textContent = `${view.rows.length} image${view.rows.length === 1 ? ""
    : "s"} ${what} ${hit} of the ${targets.length} targets${s.coll ? " in " + s.coll : ""}` +
    (hit < targets.length ? ` (none for target ${per.map((r, k) => (r.length ? null : k + 1))
      .filter(Boolean).join(", ")})` : "") + ". Choose one to look at it.";
  if (overflow.length) {
    say(`More than ${MAXREC} images match target ${overflow.join(", ")}: the table shows ` +
      `the first ${MAXREC} of each. Narrow the search by time or wavelength.`, "info");
  }
  const dl = $("downloads");
  dl.textContent = "";
  dl.append("Download this table: ", el("a", { id: "dl-combined-csv", href: combinedCSV(),
    download: "spherex-images-targets.csv", text: "CSV (all targets)" }),
  el("details", {}, el("summary", { text: "the ADQL query (run once per target)" }),
    el("pre", { text: adqlOf(targets[0], s, colls, filters) })));
  renderTable();
  skyplot();
  $("batch").hidden = !view.rows.length;
  $("results").hidden = false;
}

function csvCell(v) {
  const t = String(v ?? "");
  return /[",\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
}

function combinedCSV() {
  const cols = ["target", "target_input", "target_ra", "target_dec", "obs_id",
    "obs_publisher_did", "obs_collection", "em_min", "em_max", "t_min", "t_max", "s_ra",
    "s_dec", "access_url"];
  const lines = [cols.join(",")];
  for (const r of view.rows) {
    const t = view.targets[r.tgt];
    lines.push([r.tgt + 1, t.input, t.ra, t.dec, ...cols.slice(4).map((c) => r.row[c])]
      .map(csvCell).join(","));
  }
  return "data:text/csv;charset=utf-8," + encodeURIComponent(lines.join("\n") + "\n");
}

// The search as ADQL on ivoa.obscore; TIME and BAND intervals overlap as in SIA.
function adqlOf(t, s, colls, filters) {
  const r = radiusOf(s);
  const where = [r > 0 ? `INTERSECTS(CIRCLE('ICRS', ${t.ra}, ${t.dec}, ${r}), s_region) = 1`
    : `CONTAINS(POINT('ICRS', ${t.ra}, ${t.dec}), s_region) = 1`];
  if (colls.length) {
    where.push("(" + colls.map((c) => `obs_collection = '${c.replace(/'/g, "''")}'`)
      .join(" OR ") + ")");
  }
  const ors = { TIME: [], BAND: [] };
  for (const [k, v] of filters) {
    const [lo, hi] = v.split(" ");
    const [a, b] = k === "TIME" ? ["t_min", "t_max"] : ["em_min", "em_max"];
    const terms = [];
    if (hi !== "+Inf") terms.push(`${a} <= ${hi}`);
    if (lo !== "-Inf") terms.push(`${b} >= ${lo}`);
    ors[k].push(terms.length ? "(" + terms.join(" AND ") + ")" : "1 = 1");
  }
  for (const k of ["TIME", "BAND"]) if (ors[k].length) where.push("(" + ors[k].join(" OR ") + ")");
  return "SELECT * FROM ivoa.obscore WHERE " + where.join(" AND ") + " ORDER BY t_min, obs_id";
}

const COLUMNS = [
  ["obs_id", "obs_id", (r) => r.obs_id],
  ["det", "detector", (r) => r.det],
  ["lmin", "wavelength (\u00b5m)", (r) => `${fmt(r.lmin, 2)}\u2013${fmt(r.lmax, 2)}`, true],
  ["t", "start (UTC)", (r) => mjdToISO(r.t)],
  ["ra", "RA (deg)", (r) => fmt(r.ra, 4), true],
  ["dec", "Dec (deg)", (r) => fmt(r.dec, 4), true],
  ["coll", "collection", (r) => r.coll],
];

function sortedRows() {
  const { key, dir } = view.sort;
  return [...view.rows].sort((a, b) => {
    const x = a[key], y = b[key];
    const c = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return dir * (c || a.i - b.i);
  });
}

function renderTable() {
  const thead = $("results-table").tHead;
  thead.textContent = "";
  const tr = el("tr");
  const columns = view.multi ? [["tgt", "target", (r) => r.tname], ...COLUMNS] : COLUMNS;
  for (const [key, name] of columns) {
    const sorted = view.sort.key === key;
    tr.append(el("th", { scope: "col", "aria-sort": sorted ? (view.sort.dir > 0 ? "ascending"
      : "descending") : "none" }, el("button", { type: "button", "data-key": key, text: name,
      onclick: () => {
        view.sort = { key, dir: sorted ? -view.sort.dir : 1 };
        view.page = 0;
        renderTable();
        document.querySelector(`th button[data-key=${key}]`).focus();
      } })));
  }
  tr.append(el("th", { scope: "col", text: "image" }));
  thead.append(tr);
  const tbody = $("results-table").tBodies[0];
  tbody.textContent = "";
  const rows = sortedRows();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  view.page = Math.min(view.page, pages - 1);
  for (const r of rows.slice(view.page * PAGE, (view.page + 1) * PAGE)) {
    const row = el("tr", { "data-did": r.did, "data-target": view.multi ? r.tgt : null,
      class: r.did === view.selected && (!view.multi || r.tgt === view.sel) ? "selected" : null,
      onmouseenter: () => highlight(r.did), onmouseleave: () => highlight(null) });
    for (const [, , show, num] of columns) row.append(el("td", { class: num ? "num" : null,
      text: show(r) }));
    row.append(el("td", {}, el("button", { type: "button", class: "link view",
      "aria-label": `view ${r.obs_id} ${r.det}`, text: "view",
      onclick: () => viewImage(r) })));
    tbody.append(row);
  }
  const pager = $("pager");
  pager.textContent = "";
  if (pages > 1) {
    const go = (p) => { view.page = p; renderTable(); };
    pager.append(
      el("button", { type: "button", disabled: view.page === 0, text: "\u2190 previous",
        onclick: () => go(view.page - 1) }),
      el("span", { text: `page ${view.page + 1} of ${pages} (${rows.length} images)` }),
      el("button", { type: "button", disabled: view.page >= pages - 1, text: "next \u2192",
        onclick: () => go(view.page + 1) }));
  }
}

// ------------------------------------------------------------------ sky plot (gnomonic)

const D2R = Math.PI / 180;

function gnomonic(ra0, dec0, ra, dec) {
  const a0 = ra0 * D2R, d0 = dec0 * D2R, a = ra * D2R, d = dec * D2R;
  const cosc = Math.sin(d0) * Math.sin(d) + Math.cos(d0) * Math.cos(d) * Math.cos(a - a0);
  if (cosc <= 1e-6) return null;
  const xi = (Math.cos(d) * Math.sin(a - a0)) / cosc;
  const eta = (Math.cos(d0) * Math.sin(d) - Math.sin(d0) * Math.cos(d) * Math.cos(a - a0)) / cosc;
  return [xi / D2R, eta / D2R];  // degrees on the tangent plane
}

function skyplot() {
  const svg = $("skyplot");
  svg.textContent = "";
  const t = view.target;
  const polys = view.rows.filter((r) => r.poly && (!view.multi || r.tgt === view.sel))
    .slice(0, 600).map((r) => ({
    r, pts: r.poly.map(([a, d]) => gnomonic(t.ra, t.dec, a, d)) }))
    .filter((p) => p.pts.every(Boolean));
  let ext = 0.05;
  for (const p of polys) for (const [x, y] of p.pts) ext = Math.max(ext, Math.abs(x), Math.abs(y));
  ext = Math.min(ext * 1.08, 30);
  const S = 320, px = (x) => S / 2 - (x / ext) * (S / 2), py = (y) => S / 2 - (y / ext) * (S / 2);
  svg.append(el("title", { text: `${polys.length} footprints around ${label(t)}` }));
  // a grid: one line per "nice" step of degrees
  const step = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10].find((v) => ext / v <= 4) || 10;
  const grid = el("g", { stroke: "#2b4663", "stroke-width": "0.6" });
  for (let v = -Math.floor(ext / step) * step; v <= ext; v += step) {
    grid.append(el("line", { x1: px(v), x2: px(v), y1: 0, y2: S }),
      el("line", { y1: py(v), y2: py(v), x1: 0, x2: S }));
  }
  svg.append(grid);
  const g = el("g", { id: "footprints" });
  for (const p of polys) {
    g.append(el("polygon", { points: p.pts.map(([x, y]) => `${px(x).toFixed(1)},` +
      `${py(y).toFixed(1)}`).join(" "), "data-did": p.r.did, class: "fp",
    fill: "rgba(120,180,255,0.06)", stroke: "#78b4ff", "stroke-width": "0.8" },
    el("title", { text: `${p.r.obs_id} ${p.r.det}` })));
  }
  svg.append(g);
  svg.append(el("circle", { cx: S / 2, cy: S / 2, r: 5, fill: "none", stroke: "#f6b042",
    "stroke-width": 2 }), el("line", { x1: S / 2 - 10, x2: S / 2 - 6, y1: S / 2, y2: S / 2,
    stroke: "#f6b042", "stroke-width": 2 }), el("line", { x1: S / 2 + 6, x2: S / 2 + 10,
    y1: S / 2, y2: S / 2, stroke: "#f6b042", "stroke-width": 2 }));
  svg.append(el("text", { x: 8, y: S - 10, fill: "#cfe3ff", "font-size": 11,
    text: `grid ${step}\u00b0; N up, E left` }),
  el("text", { x: S / 2 + 8, y: 14, fill: "#cfe3ff", "font-size": 11, text: "N" }),
  el("text", { x: 6, y: S / 2 - 6, fill: "#cfe3ff", "font-size": 11, text: "E" }));
  highlight(null);
}

function highlight(did) {
  for (const p of document.querySelectorAll("#footprints polygon")) {
    const on = p.dataset.did === did || p.dataset.did === view.selected;
    p.setAttribute("stroke", on ? "#f6b042" : "#78b4ff");
    p.setAttribute("stroke-width", on ? "2" : "0.8");
    if (on) p.parentNode.append(p);
  }
}

// ------------------------------------------------------------------ one image

async function datalink(did) {
  const u = url("/datalink/links", [["ID", did]]);
  const vt = votable(await (await get(u, "The image's links (DataLink)")).text(),
    "The image's links (DataLink)");
  const rows = records(vt);
  const err = rows.find((r) => r.error_message);
  if (err) throw new Problem(`The image's links (DataLink): ${err.error_message}`);
  const find = (sem) => rows.find((r) => r.semantics === sem && r.access_url);
  const cutRow = rows.find((r) => r.semantics === "#cutout" &&
    r.local_semantics === "archive-cutout");
  let cutout = null;
  if (cutRow) {
    const res = [...vt.doc.getElementsByTagName("RESOURCE")]
      .find((x) => x.getAttribute("ID") === cutRow.service_def);
    if (res) {
      const direct = [...res.children].filter((c) => c.tagName === "PARAM");
      const access = direct.find((p) => p.getAttribute("name") === "accessURL");
      const inputs = [...res.getElementsByTagName("GROUP")][0];
      const fixed = inputs ? [...inputs.getElementsByTagName("PARAM")]
        .filter((p) => p.getAttribute("value")).map((p) => [p.getAttribute("name"),
          p.getAttribute("value")]) : [];
      if (access) cutout = { url: access.getAttribute("value"), fixed };
    }
  }
  return { self: find("#this"), preview: find("#preview"), cutout, linksURL: u,
    calibration: rows.filter((r) => r.semantics === "#calibration") };
}

async function openImage(did, s) {
  const r = view.rows.find((x) => x.did === did && (!view.multi || x.tgt === view.sel)) ||
    view.rows.find((x) => x.did === did);
  view.selected = did;
  for (const tr of document.querySelectorAll("#results-table tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.did === did &&
      (!view.multi || Number(tr.dataset.target) === view.sel));
  }
  highlight(null);
  if (!r) {
    say(`The image ${did} is not among the results of this search.`, "info");
    return;
  }
  try {
    const links = await datalink(did);
    view.links = links;
    $("image-title").textContent = `${r.obs_id} ${r.det} (${fmt(r.lmin, 2)}\u2013` +
      `${fmt(r.lmax, 2)} \u00b5m), ${mjdToISO(r.t)} UTC, ${r.coll}`;
    const img = $("preview");
    view.pv = null;
    $("hdu-choice").textContent = "";
    $("pointer").textContent = "Point at the image to read a pixel.";
    if (links.preview) {
      img.src = previewURL(links.preview.access_url, (s && s.hdu) || "IMAGE");
      $("preview-link").href = img.src;
    }
    markTarget(r);
    if (links.preview) await previewInfo(r, links, (s && s.hdu) || "IMAGE");
    $("cutout-fig").hidden = true;
    $("cutout-links").textContent = "";
    const il = $("image-links");
    il.textContent = "";
    if (links.self) {
      il.append(el("a", { href: links.self.access_url, text: "the whole image (FITS, " +
        `${(Number(links.self.content_length) / 1e6).toFixed(1)} MB)` }));
    }
    il.append(el("a", { href: links.linksURL, text: "all its links (DataLink)" }));
    $("cut").disabled = !links.cutout;
    if (s && s.size) $("cutsize").value = s.size;
    $("image").hidden = false;
    $("image").scrollIntoView({ block: "nearest" });
  } catch (e) {
    say(e instanceof Problem ? e.message : `Opening the image failed: ${e.message}`);
  }
}

// ------------------------------------------------------------------ the preview: HDUs, WCS, pixels

function previewURL(base, hdu) {
  return hdu && hdu !== "IMAGE" ? `${base}?HDU=${encodeURIComponent(hdu)}` : base;
}

// The celestial WCS of a FITS header (TAN, with SIP distortion when CTYPE ends in -SIP),
// evaluated here. Pixels are 0-based (FITS pixel 1 is 0 here).
function makeWCS(c) {
  const n = (k, d = 0) => (c[k] === undefined || c[k] === "" ? d : Number(c[k]));
  if (!/^RA---TAN/.test(c.CTYPE1 || "") || !/^DEC--TAN/.test(c.CTYPE2 || "")) return null;
  if (n("LONPOLE", 180) !== 180) return null;  // only the default native pole is handled
  const crpix = [n("CRPIX1"), n("CRPIX2")], crval = [n("CRVAL1"), n("CRVAL2")];
  const cd = c.CD1_1 !== undefined ? [[n("CD1_1"), n("CD1_2")], [n("CD2_1"), n("CD2_2")]]
    : [[n("CDELT1", 1) * n("PC1_1", 1), n("CDELT1", 1) * n("PC1_2")],
      [n("CDELT2", 1) * n("PC2_1"), n("CDELT2", 1) * n("PC2_2", 1)]];
  const det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
  const inv = [[cd[1][1] / det, -cd[0][1] / det], [-cd[1][0] / det, cd[0][0] / det]];
  const sip = /-SIP$/.test(c.CTYPE1 || "");
  const terms = (p) => {
    const out = [], order = n(p + "_ORDER", -1);
    for (let i = 0; i <= order; i++) {
      for (let j = 0; j <= order - i; j++) {
        if (c[`${p}_${i}_${j}`] !== undefined) out.push([i, j, n(`${p}_${i}_${j}`)]);
      }
    }
    return out;
  };
  const A = sip ? terms("A") : [], B = sip ? terms("B") : [];
  const poly = (t, u, v) => t.reduce((acc, [i, j, k]) => acc + k * u ** i * v ** j, 0);
  const a0 = crval[0] * D2R, d0 = crval[1] * D2R;
  function pix2sky(x, y) {
    const u = x + 1 - crpix[0], v = y + 1 - crpix[1];
    const U = u + poly(A, u, v), V = v + poly(B, u, v);
    const X = (cd[0][0] * U + cd[0][1] * V) * D2R, Y = (cd[1][0] * U + cd[1][1] * V) * D2R;
    const rho = Math.hypot(X, Y);
    if (rho === 0) return [crval[0], crval[1]];
    const k = Math.atan(rho), sk = Math.sin(k), ck = Math.cos(k);
    const dec = Math.asin(ck * Math.sin(d0) + (Y * sk * Math.cos(d0)) / rho);
    const ra = a0 + Math.atan2(X * sk, rho * Math.cos(d0) * ck - Y * Math.sin(d0) * sk);
    return [(((ra / D2R) % 360) + 360) % 360, dec / D2R];
  }
  function sky2pix(ra, dec) {
    const g = gnomonic(crval[0], crval[1], ra, dec);
    if (!g) return [NaN, NaN];
    const [xi, eta] = g;
    const U = inv[0][0] * xi + inv[0][1] * eta, V = inv[1][0] * xi + inv[1][1] * eta;
    let u = U, v = V;  // undo SIP by fixed-point iteration (the distortion is small)
    for (let it = 0; it < 30 && (A.length || B.length); it++) {
      const nu = U - poly(A, u, v), nv = V - poly(B, u, v);
      const done = Math.abs(nu - u) + Math.abs(nv - v) < 1e-10;
      u = nu; v = nv;
      if (done) break;
    }
    return [u + crpix[0] - 1, v + crpix[1] - 1];
  }
  return { pix2sky, sky2pix, scale: Math.sqrt(Math.abs(det)) };
}

async function previewInfo(r, links, hdu) {
  const base = links.preview.access_url;
  let info;
  try {
    info = await (await get(base + "?FORMAT=json", "The image's header")).json();
  } catch (e) {
    $("pointer").textContent = e.message;
    return;
  }
  if (view.selected !== r.did) return;
  const wcs = makeWCS(info.wcs || {});
  view.pv = { did: r.did, key: info.key, nx: info.nx, ny: info.ny, step: info.step,
    width: info.width, height: info.height, wcs, hdus: info.hdus, hdu, tiles: new Map(),
    want: null, busy: false, cutURL: links.cutout ? links.cutout : null };
  const box = $("hdu-choice");
  box.textContent = "";
  box.append(el("span", { text: "Extension:" }));
  for (const h of info.hdus) {
    const id = `hdu-${h.name}`;
    box.append(el("label", { for: id }, el("input", { type: "radio", name: "hdu", id,
      value: h.name, checked: h.name === hdu,
      onchange: () => showHDU(h.name) }), ` ${h.name}`));
  }
  if (!info.hdus.some((h) => h.name === hdu)) showHDU("IMAGE");
  markTarget(r);
  if (!wcs) $("pointer").textContent = "This image's WCS is not TAN/TAN-SIP: no sky positions.";
  else if (view.hover) view.onPointer(view.hover);
}

function showHDU(name) {
  const pv = view.pv;
  if (!pv) return;
  pv.hdu = name;
  const img = $("preview");
  img.src = previewURL(view.links.preview.access_url, name);
  $("preview-link").href = img.src;
  pushState({ hdu: name === "IMAGE" ? null : name }, true);
  if (pv.last) readout(pv.last[0], pv.last[1]);
}

// The parent pixel under the pointer (0-based), from the preview's binning.
function pointerPixel(ev) {
  const pv = view.pv, img = $("preview");
  if (!pv || !img.naturalWidth) return null;
  const rect = img.getBoundingClientRect();
  const fx = (ev.clientX - rect.left) / rect.width, fy = (ev.clientY - rect.top) / rect.height;
  if (!(fx >= 0 && fx < 1 && fy >= 0 && fy < 1)) return null;
  const W = pv.width * pv.step, H = pv.height * pv.step;
  return [Math.min(W - 1, Math.floor(fx * W)), Math.min(H - 1, Math.floor((1 - fy) * H))];
}

const TILE = 32;  // pixels fetched per pointer request (a cutout), cached by tile
const MAX_TILES = 48;

function tileHolding(x, y) {
  for (const t of view.pv.tiles.values()) {
    if (t.planes && x >= t.x0 && x < t.x0 + t.nx && y >= t.y0 && y < t.y0 + t.ny) return t;
  }
  return null;
}

function readout(x, y) {
  const pv = view.pv;
  pv.last = [x, y];
  const svg = $("preview-mark");
  const W = pv.width * pv.step, H = pv.height * pv.step;
  $("pointer-mark")?.remove();
  svg.append(el("rect", { id: "pointer-mark", x: x / W, y: 1 - (y + 1) / H,
    width: Math.max(1 / W, 0.006), height: Math.max(1 / H, 0.006), fill: "none",
    stroke: "#4fd1ff", "stroke-width": 0.004 }));
  const box = $("pointer");
  const sky = pv.wcs ? pv.wcs.pix2sky(x, y) : null;
  const where = `pixel x ${x} y ${y} (0-based)` + (sky ? `; RA ${sky[0].toFixed(6)} Dec ` +
    `${sky[1].toFixed(6)} (${hms(sky[0])} ${dms(sky[1])})` : "");
  const t = tileHolding(x, y);
  let values = "reading the pixel\u2026", value = "";
  if (t) {
    const k = (y - t.y0) * t.nx + (x - t.x0);
    const parts = Object.entries(t.planes).map(([name, d]) => {
      const bunit = (pv.hdus.find((h) => h.name === name) || {}).bunit || "";
      const v = d[k];
      if (name === pv.hdu) value = v;
      const shown = name === "FLAGS" ? String(v) : Number.isFinite(v) ? v.toPrecision(5)
        : String(v);
      return `${name === pv.hdu ? "[" : ""}${name} ${shown}${bunit && name !== "FLAGS" ? " " +
        bunit : ""}${name === pv.hdu ? "]" : ""}`;
    });
    values = parts.join("; ");
  } else {
    wantTile(x, y);
  }
  box.textContent = where + "\n" + values;
  Object.assign(box.dataset, { x, y, ra: sky ? sky[0] : "", dec: sky ? sky[1] : "",
    hdu: pv.hdu, value: t ? String(value) : "" });
}

function hms(ra) {
  const h = ra / 15, hh = Math.floor(h), m = (h - hh) * 60, mm = Math.floor(m);
  return `${hh}h${String(mm).padStart(2, "0")}m${((m - mm) * 60).toFixed(2).padStart(5, "0")}s`;
}

function dms(dec) {
  const s = dec < 0 ? "-" : "+", a = Math.abs(dec), dd = Math.floor(a), m = (a - dd) * 60;
  const mm = Math.floor(m);
  return `${s}${dd}d${String(mm).padStart(2, "0")}m${((m - mm) * 60).toFixed(1).padStart(4, "0")}s`;
}

// One cutout request at a time; the latest wanted tile waits its turn.
function wantTile(x, y) {
  const pv = view.pv;
  if (!pv.wcs || !pv.cutURL) return;
  const tx = Math.floor(x / TILE), ty = Math.floor(y / TILE);
  let id = `${tx},${ty}`, cx = Math.min(tx * TILE + TILE / 2, pv.nx - 1),
    cy = Math.min(ty * TILE + TILE / 2, pv.ny - 1);
  const had = pv.tiles.get(id);
  if (had && !had.planes) return;  // on its way
  if (had) { id = `at${x},${y}`; cx = x; cy = y; }  // the tile came back short of (x, y)
  if (pv.tiles.has(id)) return;
  pv.want = { id, cx, cy };
  if (!pv.busy) fetchTile(pv);
}

async function fetchTile(pv) {
  while (pv.want && view.pv === pv) {
    const { id, cx, cy } = pv.want;
    pv.want = null;
    if (pv.tiles.has(id)) continue;
    pv.busy = true;
    pv.tiles.set(id, { planes: null });
    const [ra, dec] = pv.wcs.pix2sky(cx, cy);
    const size = (TILE + 2) * pv.wcs.scale;
    const params = [...pv.cutURL.fixed.filter(([k]) => !["ra", "dec", "size", "psf"]
      .includes(k)), ["ra", String(ra)], ["dec", String(dec)], ["size", String(size)],
    ["psf", "none"]];
    try {
      const res = await get(pv.cutURL.url + "?" + new URLSearchParams(params), "A pixel read");
      const buf = await res.arrayBuffer();
      const f = parseFITS(buf);
      const prim = f.hdus[0].cards;
      const planes = {};
      for (const h of f.hdus) {
        if (pv.hdus.some((x) => x.name === h.name) && h.axes.length === 2) {
          planes[h.name] = f.pixels(h);
        }
      }
      const im = f.hdus.find((h) => h.name === "IMAGE") || f.hdus.find((h) => h.axes.length === 2);
      pv.tiles.set(id, { planes, x0: Number(prim.CUTX1) - 1, y0: Number(prim.CUTY1) - 1,
        nx: im.axes[0], ny: im.axes[1] });
      while (pv.tiles.size > MAX_TILES) pv.tiles.delete(pv.tiles.keys().next().value);
    } catch (e) {
      pv.tiles.delete(id);
      $("pointer").textContent = e.message;
    } finally {
      pv.busy = false;
    }
    if (pv.last && view.pv === pv) readout(pv.last[0], pv.last[1]);
  }
}

// Sky -> image fraction (0..1 from the first corner) through the homography that maps the
// footprint's 4 corners (pixel-grid corners (0,0) (N,0) (N,N) (0,N)) on the tangent plane.
function homography(src, dst) {
  const A = [], b = [];
  for (let k = 0; k < 4; k++) {
    const [x, y] = src[k], [u, v] = dst[k];
    A.push([x, y, 1, 0, 0, 0, -u * x, -u * y]); b.push(u);
    A.push([0, 0, 0, x, y, 1, -v * x, -v * y]); b.push(v);
  }
  for (let c = 0; c < 8; c++) {  // Gaussian elimination with partial pivoting
    let p = c;
    for (let r = c + 1; r < 8; r++) if (Math.abs(A[r][c]) > Math.abs(A[p][c])) p = r;
    [A[c], A[p]] = [A[p], A[c]]; [b[c], b[p]] = [b[p], b[c]];
    for (let r = 0; r < 8; r++) {
      if (r === c || !A[c][c]) continue;
      const f = A[r][c] / A[c][c];
      for (let k = c; k < 8; k++) A[r][k] -= f * A[c][k];
      b[r] -= f * b[c];
    }
  }
  const h = b.map((v, i) => v / A[i][i]);
  return ([x, y]) => {
    const w = h[6] * x + h[7] * y + 1;
    return [(h[0] * x + h[1] * y + h[2]) / w, (h[3] * x + h[4] * y + h[5]) / w];
  };
}

function markTarget(r) {
  const svg = $("preview-mark");
  svg.textContent = "";
  const t = view.target;
  const pv = view.pv;
  if (pv && pv.did === r.did && pv.wcs) {  // through the image's own WCS
    const [x, y] = pv.wcs.sky2pix(t.ra, t.dec);
    const u = (x + 0.5) / (pv.width * pv.step), v = (y + 0.5) / (pv.height * pv.step);
    if (!(u >= 0 && u <= 1 && v >= 0 && v <= 1)) return;
    svg.append(el("circle", { cx: u, cy: 1 - v, r: 0.035, fill: "none", stroke: "#f6b042",
      "stroke-width": 0.008, id: "target-mark", "data-u": u.toFixed(4), "data-v": v.toFixed(4),
      "data-x": x.toFixed(2), "data-y": y.toFixed(2) }));
    return;
  }
  if (!r.poly || r.poly.length !== 4) return;
  const pts = r.poly.map(([a, d]) => gnomonic(r.ra, r.dec, a, d));
  const tp = gnomonic(r.ra, r.dec, t.ra, t.dec);
  if (pts.some((p) => !p) || !tp) return;
  const [u, v] = homography(pts, [[0, 0], [1, 0], [1, 1], [0, 1]])(tp);
  if (!(u >= 0 && u <= 1 && v >= 0 && v <= 1)) return;
  const y = 1 - v;  // the preview is drawn with FITS row 0 at the bottom
  svg.append(el("circle", { cx: u, cy: y, r: 0.035, fill: "none", stroke: "#f6b042",
    "stroke-width": 0.008, id: "target-mark", "data-u": u.toFixed(4), "data-v": v.toFixed(4) }));
}

// ------------------------------------------------------------------ cutout (FITS in, PNG out)

function parseFITS(buffer) {
  const bytes = new Uint8Array(buffer);
  const dv = new DataView(buffer);
  const hdus = [];
  let pos = 0;
  while (pos + 2880 <= bytes.length) {
    const cards = {};
    let end = false;
    while (!end && pos + 2880 <= bytes.length) {
      for (let i = 0; i < 36; i++) {
        const card = String.fromCharCode(...bytes.subarray(pos + i * 80, pos + i * 80 + 80));
        const key = card.slice(0, 8).trim();
        if (key === "END") { end = true; break; }
        if (card[8] === "=") {
          let v = card.slice(10).split(" /")[0].trim();
          if (v.startsWith("'")) v = v.slice(1, v.lastIndexOf("'")).trim();
          if (!(key in cards)) cards[key] = v;
        }
      }
      pos += 2880;
    }
    const naxis = Number(cards.NAXIS || 0);
    const axes = [];
    for (let i = 1; i <= naxis; i++) axes.push(Number(cards["NAXIS" + i]));
    const bitpix = Number(cards.BITPIX);
    const n = naxis ? axes.reduce((a, x) => a * x, 1) : 0;
    const size = (Math.abs(bitpix) / 8) * (Number(cards.GCOUNT || 1) * n +
      Number(cards.PCOUNT || 0));
    hdus.push({ cards, axes, bitpix, start: pos, name: cards.EXTNAME || (hdus.length ? ""
      : "PRIMARY") });
    pos += Math.ceil(size / 2880) * 2880;
  }
  const image = hdus.find((h) => h.name === "IMAGE") ||
    hdus.find((h) => h.axes.length === 2 && h.axes[0] > 0);
  if (!image) throw new Problem("The cutout has no image extension.");
  const [nx, ny] = image.axes;
  return { nx, ny, data: hduPixels(dv, image), cards: image.cards, hdus,
    pixels: (h) => hduPixels(dv, h) };
}

// The pixels of one 2-D HDU (FITS order: x fastest, row 0 at the bottom), BSCALE/BZERO applied.
function hduPixels(dv, h) {
  const [nx, ny] = h.axes;
  const data = new Float64Array(nx * ny);
  const w = Math.abs(h.bitpix) / 8;
  const scale = Number(h.cards.BSCALE || 1), zero = Number(h.cards.BZERO || 0);
  for (let k = 0; k < nx * ny; k++) {
    const o = h.start + k * w;
    const v = h.bitpix === -32 ? dv.getFloat32(o) : h.bitpix === -64 ? dv.getFloat64(o)
      : h.bitpix === 16 ? dv.getInt16(o) : h.bitpix === 32 ? dv.getInt32(o)
        : h.bitpix === 64 ? Number(dv.getBigInt64(o)) : dv.getUint8(o);
    data[k] = v * scale + zero;
  }
  return data;
}

function drawImage(canvas, { nx, ny, data }) {
  const finite = [...data].filter(Number.isFinite).sort((a, b) => a - b);
  const q = (f) => finite[Math.min(finite.length - 1, Math.floor(f * finite.length))] ?? 0;
  const lo = q(0.01), hi = q(0.995);
  canvas.width = nx;
  canvas.height = ny;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(nx, ny);
  const k = Math.asinh(10);
  for (let y = 0; y < ny; y++) {
    for (let x = 0; x < nx; x++) {
      const v = data[y * nx + x];
      const f = Number.isFinite(v) ? Math.min(1, Math.max(0, (v - lo) / Math.max(hi - lo,
        1e-12))) : 0;
      const g = Math.round((255 * Math.asinh(f * 10)) / k);
      const o = ((ny - 1 - y) * nx + x) * 4;  // FITS row 0 at the bottom
      out.data[o] = out.data[o + 1] = out.data[o + 2] = g;
      out.data[o + 3] = 255;
    }
  }
  ctx.putImageData(out, 0, 0);
}

async function makeCutout() {
  const links = view.links, t = view.target;
  const r = view.rows.find((x) => x.did === view.selected && (!view.multi ||
    x.tgt === view.sel));
  if (!links || !links.cutout || !r) return;
  const size = $("cutsize").value;
  pushState({ size }, true);
  const params = [...links.cutout.fixed.filter(([k]) => !["ra", "dec", "size"].includes(k)),
    ["ra", String(t.ra)], ["dec", String(t.dec)], ["size", size]];
  const q = new URLSearchParams(params);
  const u = links.cutout.url + "?" + q;
  const btn = $("cut");
  btn.disabled = true;
  $("cutout-links").textContent = "making the cutout\u2026";
  try {
    const res = await get(u, "The cutout");
    const buf = await res.arrayBuffer();
    const img = parseFITS(buf);
    const canvas = $("cutout-canvas");
    drawImage(canvas, img);
    const arcmin = Number(size) * 60;
    $("cutout-cap").textContent = `${img.nx} \u00d7 ${img.ny} pixels of ${r.obs_id} ${r.det}` +
      ` around the target, ${arcmin} arcmin asked (clipped at the image edge)`;
    $("cutout-fig").hidden = false;
    const name = `cutout_${r.obs_id}_${r.det}_${fmt(t.ra, 4)}_${fmt(t.dec, 4)}`;
    const cl = $("cutout-links");
    cl.textContent = "";
    cl.append(el("a", { id: "cutout-fits", href: u, download: name + ".fits",
      text: `Download the cutout (FITS, ${(buf.byteLength / 1024).toFixed(0)} kB)` }),
    el("a", { id: "cutout-png", href: canvas.toDataURL("image/png"), download: name + ".png",
      text: "as PNG" }));
  } catch (e) {
    $("cutout-links").textContent = "";
    say(e instanceof Problem ? e.message : `The cutout could not be shown: ${e.message}`);
  } finally {
    btn.disabled = false;
  }
}

// ------------------------------------------------------------------ cutouts of all the images

// One async SODA job (UWS) per target: every image of that target x a circle around it;
// the phase shown while they run, then the cutouts as links (and as one zip, made here).
async function batchCutouts() {
  const size = Number($("batch-size").value);
  const groups = new Map();
  for (const r of view.rows) {
    const k = view.multi ? r.tgt : 0;
    if (!groups.has(k)) groups.set(k, []);
    if (!groups.get(k).some((x) => x.did === r.did)) groups.get(k).push(r);
  }
  const btn = $("batch-go"), phase = $("batch-phase"), out = $("batch-links");
  btn.disabled = true;
  out.textContent = "";
  phase.dataset.phase = "PENDING";
  phase.textContent = "submitting\u2026";
  const runId = view.runId;
  try {
    const jobs = [];
    for (const [k, rows] of groups) {
      const t = view.multi ? view.targets[k] : view.target;
      const body = new URLSearchParams([["CIRCLE", `${t.ra} ${t.dec} ${size / 2}`],
        ["PHASE", "RUN"]]);
      for (const r of rows) body.append("ID", r.did);
      const res = await get(url("/soda/async"), "Starting the cutout job (SODA)",
        { method: "POST", body });
      jobs.push({ url: res.url, rows, t, k, phase: "QUEUED" });
    }
    const t0 = Date.now();
    for (;;) {
      if (runId !== view.runId) return;
      for (const j of jobs) {
        if (["COMPLETED", "ERROR", "ABORTED"].includes(j.phase)) continue;
        j.doc = parseXML(await (await get(j.url, "The cutout job")).text(), "The cutout job");
        j.phase = (j.doc.getElementsByTagNameNS("*", "phase")[0]?.textContent || "").trim();
      }
      const phases = jobs.map((j) => j.phase);
      const all = phases.every((p) => p === "COMPLETED") ? "COMPLETED"
        : phases.some((p) => p === "ERROR" || p === "ABORTED") &&
          phases.every((p) => ["COMPLETED", "ERROR", "ABORTED"].includes(p)) ? "ERROR"
          : phases.includes("EXECUTING") ? "EXECUTING" : "QUEUED";
      const secs = Math.round((Date.now() - t0) / 1000);
      phase.textContent = (jobs.length > 1 ? `${jobs.length} jobs: ${phases.join(", ")}`
        : `job ${all}`) + (all === "EXECUTING" || all === "QUEUED" ? ` (${secs} s)` : "");
      phase.dataset.phase = all;
      if (all === "COMPLETED" || all === "ERROR") break;
      if (Date.now() - t0 > 15 * 60 * 1000) {
        say("The cutout job is still running after 15 minutes; its links are under " +
          "the job's page.", "info");
        break;
      }
      await new Promise((ok) => setTimeout(ok, 600));
    }
    showBatch(jobs, size);
  } catch (e) {
    phase.textContent = "";
    phase.dataset.phase = "ERROR";
    say(e instanceof Problem ? e.message : `The cutouts could not be made: ${e.message}`);
  } finally {
    btn.disabled = false;
  }
}

function showBatch(jobs, size) {
  const out = $("batch-links");
  out.textContent = "";
  const files = [];
  const list = el("ol", { id: "batch-list" });
  for (const j of jobs) {
    const ids = j.rows.map((r) => r.did);
    for (const r of [...j.doc.getElementsByTagNameNS("*", "result")]) {
      const id = r.getAttribute("id") || "";
      const href = r.getAttributeNS("http://www.w3.org/1999/xlink", "href") ||
        r.getAttribute("xlink:href");
      const m = /^cutout-(\d+)-\d+$/.exec(id);
      const row = m ? j.rows.find((x) => x.did === ids[Number(m[1])]) : null;
      const name = (row ? `cutout_${row.obs_id}_${row.det}` : id) +
        (view.multi ? `_target${j.k + 1}` : "") + ".fits";
      files.push({ name, href });
      list.append(el("li", {}, el("a", { href, download: name, class: "batch-file",
        "data-did": row ? row.did : "", "data-target": j.k, text: name })));
    }
    if (j.phase !== "COMPLETED") {
      const msg = j.doc.getElementsByTagNameNS("*", "message")[0]?.textContent?.trim();
      out.append(el("p", { class: "err", text: `The job for ${label(j.t)} ended in ${j.phase}` +
        (msg ? `: ${msg}` : "") }));
    }
  }
  const asked = jobs.reduce((n, j) => n + j.rows.length, 0);
  out.append(el("p", { id: "batch-summary", text: `${files.length} cutouts of ${size * 60} ` +
    `arcmin (of ${asked} images asked; an image the circle misses gives none). The jobs: ` }),
  ...jobs.map((j, i) => el("a", { href: j.url, text: `job ${i + 1} (UWS)${i < jobs.length - 1
    ? "," : ""}` })));
  if (files.length) {
    out.append(list, el("button", { type: "button", id: "batch-zip", text:
      "Download them all as one zip", onclick: () => zipDownload(files) }));
  }
}

async function zipDownload(files) {
  const btn = $("batch-zip");
  btn.disabled = true;
  btn.textContent = "fetching the cutouts\u2026";
  try {
    const parts = [];
    for (const f of files) {
      parts.push({ name: f.name, data: new Uint8Array(await (await get(f.href,
        "A cutout")).arrayBuffer()) });
    }
    const blob = new Blob([zipStore(parts)], { type: "application/zip" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "spherex-cutouts.zip",
      id: "batch-zip-file", text: `spherex-cutouts.zip (${(blob.size / 1024).toFixed(0)} kB)` });
    btn.replaceWith(a);
    a.click();
  } catch (e) {
    btn.disabled = false;
    btn.textContent = "Download them all as one zip";
    say(e instanceof Problem ? e.message : `The zip could not be made: ${e.message}`);
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(data) {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// A zip of the files as they are (method 0, "stored": FITS barely compresses anyway).
function zipStore(parts) {
  const enc = new TextEncoder(), chunks = [], central = [];
  let offset = 0;
  for (const p of parts) {
    const name = enc.encode(p.name), crc = crc32(p.data), n = p.data.length;
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true); local.setUint16(4, 20, true);
    local.setUint32(14, crc, true); local.setUint32(18, n, true);
    local.setUint32(22, n, true); local.setUint16(26, name.length, true);
    const cd = new DataView(new ArrayBuffer(46));
    cd.setUint32(0, 0x02014b50, true); cd.setUint16(4, 20, true); cd.setUint16(6, 20, true);
    cd.setUint32(16, crc, true); cd.setUint32(20, n, true); cd.setUint32(24, n, true);
    cd.setUint16(28, name.length, true); cd.setUint32(42, offset, true);
    chunks.push(new Uint8Array(local.buffer), name, p.data);
    central.push(new Uint8Array(cd.buffer), name);
    offset += 30 + name.length + n;
  }
  const size = central.reduce((a, c) => a + c.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, parts.length, true);
  end.setUint16(10, parts.length, true); end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...chunks, ...central, new Uint8Array(end.buffer)]);
}

// ------------------------------------------------------------------ a target list from a file

function splitCSV(line, sep) {
  const out = [];
  let cur = "", q = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (q) {
      if (ch === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (ch === '"') q = false;
      else cur += ch;
    } else if (ch === '"') q = true;
    else if (ch === sep) { out.push(cur.trim()); cur = ""; } else cur += ch;
  }
  out.push(cur.trim());
  return out;
}

const RA_NAMES = /^(ra|ra_?deg|raj2000|_raj2000|ra_?icrs|ra2000|s_ra|alpha|ra_?j2000)$/i;
const DEC_NAMES = /^(dec|de|dec_?deg|dej2000|_dej2000|decj2000|dec_?icrs|dec2000|s_dec|delta|dec_?j2000)$/i;
const NAME_NAMES = /^(name|target|target_?name|object|object_?name|id|main_id|source)$/i;

// A VOTable in BINARY or BINARY2 (what many TAP services return), read on the server by
// astropy: {names, ucds, rows}
async function binaryVOTable(text, file) {
  const r = await fetch(url("/portal/table"), { method: "POST", credentials: "same-origin",
    body: new URLSearchParams([["votable", text]]) });
  let doc;
  try { doc = await r.json(); } catch { doc = {}; }
  if (!r.ok) throw new Problem(`The file ${file}: ${doc.error || explain(r.status, "", "")}`);
  return doc;
}

// The lines a target list holds ("ra dec" or a name each), from CSV or VOTable text.
async function targetLines(text, file) {
  const t = text.replace(/^\ufeff/, "").trim();
  let names, rows, ucds = [];
  if (t.startsWith("<")) {
    const vt = votable(t, `The file ${file}`);
    if (!vt.names.length) {
      throw new Problem(`The file ${file} holds no table this page can read (a VOTable, or ` +
        "a CSV file).");
    }
    names = vt.names;
    rows = vt.rows;
    ucds = [...vt.doc.getElementsByTagName("FIELD")].map((f) => f.getAttribute("ucd") || "");
    if (!rows.length && vt.doc.querySelector("BINARY, BINARY2")) {
      ({ names, ucds, rows } = await binaryVOTable(t, file));
    }
  } else {
    const lines = t.split(/\r?\n/).filter((l) => l.trim() && !l.trim().startsWith("#"));
    if (!lines.length) throw new Problem(`The file ${file} is empty.`);
    const sep = [",", ";", "\t", "|"].find((c) => lines[0].includes(c)) || ",";
    names = splitCSV(lines[0], sep);
    rows = lines.slice(1).map((l) => splitCSV(l, sep));
  }
  const find = (re, ucd) => {
    let i = ucds.findIndex((u) => u.split(";")[0] === ucd && u.includes("meta.main"));
    if (i < 0) i = ucds.findIndex((u) => u.split(";")[0] === ucd);
    if (i < 0) i = names.findIndex((n) => re.test((n || "").trim()));
    return i;
  };
  const ra = find(RA_NAMES, "pos.eq.ra"), dec = find(DEC_NAMES, "pos.eq.dec");
  const nm = find(NAME_NAMES, "meta.id");
  let out;
  if (ra >= 0 && dec >= 0) {
    out = rows.filter((r) => (r[ra] || "").trim() && (r[dec] || "").trim())
      .map((r) => `${r[ra].trim()} ${r[dec].trim()}`);
  } else if (nm >= 0) {
    out = rows.map((r) => (r[nm] || "").trim()).filter(Boolean);
  } else {
    throw new Problem(`The file ${file} has no ra and dec columns (or a name column): its ` +
      `columns are ${names.join(", ")}. Name them ra, dec (ICRS degrees or sexagesimal) or ` +
      "name.");
  }
  if (!out.length) throw new Problem(`The file ${file} has no rows.`);
  return out;
}

async function loadTargetFile(input) {
  const file = input.files && input.files[0];
  if (!file) return;
  try {
    if (file.size > 1e6) throw new Problem(`The file ${file.name} is larger than 1 MB.`);
    const lines = await targetLines(await file.text(), file.name);
    $("target").value = lines.join("\n");
    say(`${lines.length} target${lines.length > 1 ? "s" : ""} read from ${file.name}.`,
      "info");
    $("search").requestSubmit();
  } catch (e) {
    say(e instanceof Problem ? e.message : `The file could not be read: ${e.message}`);
  } finally {
    input.value = "";
  }
}

// ------------------------------------------------------------------ spectrophotometry

// the sources of a job: every target of a list (POINTs numbered 1, 2, ... as the service
// does), else the one target
const jobTargets = () => (view.multi ? view.targets : [view.target]);

function showSpectrumPanel(s) {
  $("spectrum").hidden = false;
  $("phot").textContent = view.multi
    ? `Measure the spectra of the ${view.targets.length} targets of the list`
    : `Measure the spectrum of ${view.target.name || "the target"}`;
  $("spec-fig").hidden = true;
  $("spec-source").hidden = true;
  $("phot-links").textContent = "";
  $("phot-phase").textContent = "";
  if (s.job) followJob(s.job);
}

async function startJob() {
  const body = new URLSearchParams();
  for (const t of jobTargets()) body.append("POINT", `${t.ra},${t.dec}`);
  body.append("PHASE", "RUN");
  const s = readState();
  if (s.coll) body.append("COLLECTION", s.coll);
  $("phot").disabled = true;
  $("phot-phase").textContent = "submitting\u2026";
  try {
    const r = await get(url("/spectrophotometry/async"), "Starting the spectrophotometry job",
      { method: "POST", body });
    const job = r.url;
    pushState({ job });
    await followJob(job);
  } catch (e) {
    $("phot-phase").textContent = "";
    say(e instanceof Problem ? e.message : `The job could not be started: ${e.message}`);
  } finally {
    $("phot").disabled = false;
  }
}

async function followJob(job) {
  const runId = view.runId;
  const phaseBox = $("phot-phase");
  const t0 = Date.now();
  for (;;) {
    if (runId !== view.runId) return;
    let doc;
    try {
      doc = parseXML(await (await get(job, "The spectrophotometry job")).text(), "The job");
    } catch (e) {
      phaseBox.textContent = "";
      say(e.message + " (jobs are kept for a limited time, and only for the browser that " +
        "started them)");
      return;
    }
    const tag = (n) => doc.getElementsByTagNameNS("*", n)[0];
    const phase = (tag("phase")?.textContent || "").trim();
    const secs = Math.round((Date.now() - t0) / 1000);
    phaseBox.textContent = `job ${phase}${phase === "EXECUTING" || phase === "QUEUED"
      ? ` (${secs} s)` : ""}`;
    phaseBox.dataset.phase = phase;
    if (phase === "COMPLETED") return showSpectrum(doc, job);
    if (phase === "ERROR" || phase === "ABORTED") {
      const msg = tag("message")?.textContent?.trim();
      say(`The spectrophotometry job ended in ${phase}${msg ? ": " + msg : ""}.`);
      return;
    }
    if (Date.now() - t0 > 15 * 60 * 1000) {
      say("The job is still running after 15 minutes; reload this page later to see it.",
        "info");
      return;
    }
    await new Promise((ok) => setTimeout(ok, 700));
  }
}

async function showSpectrum(doc, job) {
  const results = [...doc.getElementsByTagNameNS("*", "result")].map((r) => ({
    id: r.getAttribute("id"),
    href: r.getAttributeNS("http://www.w3.org/1999/xlink", "href") || r.getAttribute("xlink:href"),
  }));
  const links = $("phot-links");
  links.textContent = "";
  links.append("Result files: ", ...results.map((r) => el("a", { href: r.href, text: r.id })),
    el("a", { href: job, text: "the job (UWS)" }));
  const long = results.find((r) => r.id === "long");
  if (!long) { say("The job finished without a measurement table."); return; }
  const vt = votable(await (await get(long.href, "The job's result")).text(), "The result");
  const pts = records(vt).map((m) => ({ lam: Number(m.lambda), flux: Number(m.flux),
    err: Number(m.flux_err), w: Number(m.lambda_width), did: m.obs_publisher_did,
    src: Number(m.source_id) }))
    .filter((p) => Number.isFinite(p.lam) && Number.isFinite(p.flux));
  view.spectra = pts;
  const ts = jobTargets();
  const pick = $("spec-source");
  pick.textContent = "";
  ts.forEach((t, k) => pick.append(el("option", { value: k + 1,
    text: `${k + 1}: ${label(t)} (${pts.filter((p) => p.src === k + 1).length} points)` })));
  pick.value = String(view.multi ? view.sel + 1 : 1);
  pick.hidden = ts.length < 2;
  pick.onchange = () => plotSpectrum(Number(pick.value));
  plotSpectrum(Number(pick.value));
}

const DET_COLOURS = { D1: "#1f77b4", D2: "#2ca02c", D3: "#bcbd22", D4: "#ff7f0e",
  D5: "#d62728", D6: "#9467bd", "": "#555" };

// the point's image in the image view (its row of the results, for that target of a list)
function openPointImage(p) {
  const tgt = view.multi ? p.src - 1 : 0;
  const r = view.rows.find((x) => x.did === p.did && (!view.multi || x.tgt === tgt));
  if (r) viewImage(r);
  else say(`The image ${p.did} is not among the results of this search.`, "info");
}

function plotSpectrum(src) {
  const pts = view.spectra.filter((p) => p.src === src);
  const t = jobTargets()[src - 1];
  const svg = $("spec-plot");
  svg.textContent = "";
  $("spec-fig").hidden = false;
  if (!pts.length) {
    $("spec-cap").textContent = "No image gave a measurement of the target.";
    return;
  }
  const W = 640, H = 320, L = 64, R = 16, T = 14, B = 44;
  const lmin = Math.min(...pts.map((p) => p.lam)), lmax = Math.max(...pts.map((p) => p.lam));
  const e = (p) => (Number.isFinite(p.err) ? p.err : 0);
  let ymin = Math.min(...pts.map((p) => p.flux - e(p))), ymax = Math.max(...pts.map((p) =>
    p.flux + e(p)));
  if (ymax === ymin) { ymax += 1; ymin -= 1; }
  const pad = 0.06 * (ymax - ymin);
  ymin -= pad; ymax += pad;
  const x0 = Math.max(0.6, lmin - 0.1), x1 = Math.min(5.2, lmax + 0.1);
  const X = (v) => L + ((v - x0) / Math.max(x1 - x0, 1e-9)) * (W - L - R);
  const Y = (v) => T + ((ymax - v) / (ymax - ymin)) * (H - T - B);
  const axes = el("g", { stroke: "#333", "stroke-width": 1, "font-size": 11, fill: "#333" });
  axes.append(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }),
    el("line", { x1: L, x2: L, y1: T, y2: H - B }));
  for (let v = Math.ceil(x0 * 2) / 2; v <= x1; v += 0.5) {
    axes.append(el("line", { x1: X(v), x2: X(v), y1: H - B, y2: H - B + 4 }),
      el("text", { x: X(v), y: H - B + 16, "text-anchor": "middle", stroke: "none",
        text: v.toFixed(1) }));
  }
  const ystep = niceStep((ymax - ymin) / 5);
  for (let v = Math.ceil(ymin / ystep) * ystep; v <= ymax; v += ystep) {
    axes.append(el("line", { x1: L - 4, x2: L, y1: Y(v), y2: Y(v) }),
      el("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", stroke: "none",
        text: Number(v.toPrecision(6)).toString() }));
  }
  axes.append(el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle",
    stroke: "none", text: "wavelength (\u00b5m)" }),
  el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", stroke: "none",
    transform: `rotate(-90 14 ${(T + H - B) / 2})`, text: "flux density (\u00b5Jy)" }));
  svg.append(axes);
  const g = el("g", { id: "spec-points" });
  const dets = new Set();
  for (const p of pts) {
    const err = e(p);
    const det = detectorOf({ obs_publisher_did: p.did, em_min: p.lam * 1e-6,
      em_max: p.lam * 1e-6 });
    const colour = DET_COLOURS[det] || DET_COLOURS[""];
    dets.add(det);
    // each point is a link to its image: keyboard-focusable, Enter opens it
    const open = (ev) => {
      if (ev.type === "keydown" && ev.key !== "Enter") return;
      ev.preventDefault();
      openPointImage(p);
    };
    g.append(el("line", { x1: X(p.lam), x2: X(p.lam), y1: Y(p.flux - err), y2: Y(p.flux + err),
      stroke: colour, "stroke-width": 1 }),
    el("circle", { cx: X(p.lam), cy: Y(p.flux), r: 3.5, fill: colour, class: "pt",
      tabindex: 0, role: "link", "aria-label": `${det} ${p.lam.toFixed(3)} \u00b5m: open ` +
      `the image ${p.did}`, "data-lambda": p.lam, "data-flux": p.flux, "data-err": err,
      "data-did": p.did, "data-det": det, "data-source": p.src, onclick: open, onkeydown: open },
    el("title", { text: `${det} ${p.lam.toFixed(3)} \u00b5m: ${p.flux.toPrecision(4)} ` +
      `\u00b1 ${err.toPrecision(3)} \u00b5Jy (${p.did}; click to view the image)` })));
  }
  svg.append(g);
  const legend = el("g", { id: "spec-legend", "font-size": 11 });
  [...dets].sort().forEach((d, k) => legend.append(
    el("circle", { cx: W - R - 150 + 50 * (k % 3), cy: T + 6 + 14 * Math.floor(k / 3), r: 3.5,
      fill: DET_COLOURS[d] || DET_COLOURS[""] }),
    el("text", { x: W - R - 144 + 50 * (k % 3), y: T + 10 + 14 * Math.floor(k / 3),
      text: d || "other" })));
  svg.append(legend);
  $("spec-cap").textContent = `${pts.length} measurements of ${label(t)}: flux density ` +
    "with 1-sigma error bars, coloured by detector; click a point to view its image.";
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw || 1));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw) || p * 10;
}

// ------------------------------------------------------------------ set-up

function ensureCollectionOption(name) {
  if (!name) return;
  const sel = $("collection");
  if (![...sel.options].some((o) => o.value === name)) sel.append(el("option", { value: name,
    text: name }));
}

async function loadCollections() {
  try {
    const vt = votable(await (await get(url("/coverage"), "The list of collections")).text(),
      "The list of collections");
    for (const r of records(vt)) ensureCollectionOption(r.collection);
    const s = readState();
    if (s.coll) $("collection").value = s.coll;
  } catch { /* the search still works with "every collection" */ }
}

function setUp() {
  const box = $("detectors");
  for (const [d, lo, hi] of DETECTORS) {
    box.append(el("label", {}, el("input", { type: "checkbox", value: d, name: "det" }),
      ` ${d} `, el("small", { text: `${lo.toFixed(2)}\u2013${hi.toFixed(2)} \u00b5m` })));
  }
  $("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const s = { ...formState(), sel: null, img: null, job: null };
    if (!s.target) {
      say("Type an object name (M31, NGC 6543, NEP) or a position (270.0 66.56, " +
        "17h18m51.62s -26d08m55.6s) first.");
      $("target").focus();
      return;
    }
    const next = pushState(s);
    run(next);
  });
  $("target").addEventListener("keydown", (ev) => {  // Enter searches; Shift+Enter: new line
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      $("search").requestSubmit();
    }
  });
  $("cut").addEventListener("click", makeCutout);
  $("batch-go").addEventListener("click", batchCutouts);
  $("target-file").addEventListener("change", (ev) => loadTargetFile(ev.target));
  $("phot").addEventListener("click", startJob);
  const stack = document.querySelector("#image .stack");
  // where the pointer is, for a preview (or its header) that arrives under it
  const onPointer = (ev) => {
    const p = pointerPixel(ev);
    if (p && (!view.pv.last || p[0] !== view.pv.last[0] || p[1] !== view.pv.last[1])) {
      readout(p[0], p[1]);
    }
  };
  stack.addEventListener("pointermove", (ev) => {
    view.hover = { clientX: ev.clientX, clientY: ev.clientY };
    onPointer(ev);
  });
  stack.addEventListener("pointerleave", () => { view.hover = null; });
  stack.addEventListener("keydown", (ev) => {  // arrows move the pixel read (Shift: 10)
    const pv = view.pv;
    const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] }
      [ev.key];
    if (!pv || !step) return;
    ev.preventDefault();
    const k = ev.shiftKey ? 10 : 1;
    const [x0, y0] = pv.last || [Math.floor(pv.nx / 2), Math.floor(pv.ny / 2)];
    const W = pv.width * pv.step, H = pv.height * pv.step;
    readout(Math.min(W - 1, Math.max(0, x0 + k * step[0])),
      Math.min(H - 1, Math.max(0, y0 + k * step[1])));
  });
  view.onPointer = onPointer;
  $("preview").addEventListener("load", () => {
    if (view.hover && view.pv) onPointer(view.hover);
  });
  $("preview").addEventListener("error", () => {
    if ($("preview").getAttribute("src")) say("The quick-look of this image could not be made.");
  });
  window.addEventListener("popstate", () => {
    const s = readState();
    fillForm(s);
    run(s);
  });
  const s = readState();
  fillForm(s);
  loadCollections();
  if (s.target) run(s);
}

// for tests and the curious: the page's own WCS evaluation of the open image
window.portal = { view, makeWCS };

setUp();
