"""Peers: the same ObsCore rows and ADQL queries on PostgreSQL + pgsphere, side by side.

python -m chalicelib bench peers [--rows 1000000] [--weeks 10] [--archive DIR]
    [--repeat 15] [--clients 8] [--dachs] [--no-pgsphere]

Builds (or reuses, with --archive) a metadata-only archive like `bench tap` and compacts
it into a HEALPix-sorted tier, then starts a PRIVATE PostgreSQL cluster (initdb in a temp
dir, 127.0.0.1 on a free port, stopped at the end; PostgreSQL 15 and pgsphere are
installed with apt-get when missing), loads the archive's released ObsCore rows into it
(footprints as spoly and centres as spoint, GiST on both: what a DaCHS ObsCore table
has) and runs the same queries at the same positions, wide-survey and deep-field:
CONTAINS(POINT), INTERSECTS(CIRCLE 0.1 and 1 deg), INTERSECTS(POLYGON) and a DISTANCE
cone on s_ra/s_dec. Ours is ADQL in, Arrow rows out (translation + catalogue);
theirs is the pgsphere SQL a TAP server emits for it, sent over a loopback socket
(psycopg). Every row set must be identical (a mismatch is printed and fails the run).

Reported: warm medians; a cold first query (ours: a new process opening the catalogue,
its numba kernels cached; theirs: right after a PostgreSQL restart, OS page cache warm
for both); throughput with --clients concurrent clients (ours: one process per client,
as Lambda containers; theirs: one connection per client). The ratio is pgsphere/ours:
above 1 we are faster.

With --dachs, GAVO DaCHS (Debian gavodachs2-server, installed when missing; bench only)
serves the same rows as bench.obscore (COPY, then `dachs imp -I` for the GiST indexes)
on 127.0.0.1, and the same ADQL goes over HTTP TAP sync to it and to our local server
(its own process), kept-alive sessions on both sides: row sets checked identical, warm
medians, the first query after a restart of each server, and throughput with --clients
threads. The ratio there is DaCHS/ours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..loopback import free_port, listening, wait_port

PG_VERSION = "15"
PACKAGES = [f"postgresql-{PG_VERSION}", f"postgresql-{PG_VERSION}-pgsphere"]


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m chalicelib bench peers")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--weeks", type=int, default=10)
    p.add_argument("--archive", help="reuse or build the archive here (default: temp)")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--positions", type=int, default=2, help="wide-survey positions")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--per-client", type=int, default=30, help="queries per client")
    p.add_argument("--dachs", action="store_true",
                   help="also GAVO DaCHS over HTTP TAP against our local server")
    p.add_argument("--no-pgsphere", action="store_true",
                   help="skip the private pgsphere cluster (with --dachs: DaCHS only)")
    return p.parse_args(argv)


# ---- PostgreSQL + pgsphere --------------------------------------------------------------


def _bindir() -> Path:
    return Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")


def _sharedir() -> Path:
    return Path(f"/usr/share/postgresql/{PG_VERSION}")


def ensure_pgsphere() -> None:
    """PostgreSQL 15 and pgsphere from Debian's packages when they are missing."""
    if (_bindir() / "postgres").exists() and \
            (_sharedir() / "extension" / "pg_sphere.control").exists():
        return
    print(f"installing {' '.join(PACKAGES)} (apt-get) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True)
        subprocess.run(cmd, env=env, check=True, capture_output=True)


class Postgres:
    """A private cluster in a temp dir, on 127.0.0.1 only; stop() removes it."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as = []
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as postgres
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "bench", "--auth=trust",
                  "-E", "UTF8", "--no-locale")
        conf = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                "unix_socket_directories": f"'{self.dir}'", "shared_buffers": "1GB",
                "work_mem": "64MB", "maintenance_work_mem": "1GB", "max_connections": "40",
                "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                "jit": "off", "max_parallel_workers_per_gather": "0"}
        with open(self.data / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(_bindir() / tool), *args], check=True,
                       capture_output=True)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def connect(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="bench",
                               dbname="postgres", autocommit=True)

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _deg(x: float) -> str:
    return f"{x!r}d"


def _spoly(coords) -> str:
    return "{" + ",".join(f"({_deg(coords[i])},{_deg(coords[i + 1])})"
                          for i in range(0, len(coords), 2)) + "}"


def copy_chunks(cat, point: bool = True):
    """The released ObsCore rows of the catalogue as COPY text, 100,000 rows a chunk:
    did, collection, ra, dec, footprint (spoly) [, centre (spoint)]."""
    import pyarrow.compute as pc

    cat.stats("ivoa.obscore")  # open the table (the catalogue opens them lazily)
    opened = cat.current()
    with opened.lock:
        reader = opened.con.execute(
            "SELECT obs_publisher_did, obs_collection, s_ra, s_dec, s_region "
            "FROM ivoa.obscore").fetch_record_batch(100_000)
        for b in reader:
            did, coll = b["obs_publisher_did"].to_pylist(), b["obs_collection"].to_pylist()
            ra, dec = b["s_ra"].to_pylist(), b["s_dec"].to_pylist()
            has = pc.is_valid(b["s_region"]).to_pylist()
            offs = b["s_region"].offsets.to_pylist()
            flat = b["s_region"].values.to_pylist()
            lines = []
            for i in range(b.num_rows):
                poly = _spoly(flat[offs[i]:offs[i + 1]]) if has[i] else "\\N"
                line = f"{did[i]}\t{coll[i]}\t{ra[i]!r}\t{dec[i]!r}\t{poly}"
                if point:
                    pt = f"({_deg(ra[i])},{_deg(dec[i])})" if ra[i] is not None else "\\N"
                    line += f"\t{pt}"
                lines.append(line.replace("None", "\\N") + "\n")
            yield b.num_rows, "".join(lines)


def load(pg: Postgres, cat) -> tuple[int, float]:
    """The released ObsCore rows of the catalogue into table obscore, GiST-indexed."""
    t0 = time.perf_counter()
    with pg.connect() as con:
        con.execute("CREATE EXTENSION pg_sphere")
        con.execute("CREATE TABLE obscore (obs_publisher_did text, obs_collection text, "
                    "s_ra double precision, s_dec double precision, s_region spoly, "
                    "s_point spoint)")
        n = 0
        with con.cursor() as cur, cur.copy("COPY obscore FROM STDIN") as copy:
            for k, text in copy_chunks(cat):
                copy.write(text)
                n += k
        t1 = time.perf_counter()
        con.execute("CREATE INDEX obscore_region ON obscore USING gist (s_region)")
        con.execute("CREATE INDEX obscore_point ON obscore USING gist (s_point)")
        con.execute("VACUUM ANALYZE obscore")
    print(f"pgsphere: {n:,} rows loaded in {t1 - t0:.0f} s, GiST indexes "
          f"{time.perf_counter() - t1:.0f} s", flush=True)
    return n, time.perf_counter() - t0


# ---- the queries ------------------------------------------------------------------------


@dataclass
class Case:
    query: str
    field: str  # wide / deep
    adql: str
    pg: str


def _box(ra: float, dec: float, w: float = 0.3, h: float = 0.2) -> list[float]:
    import math

    dw = w / max(math.cos(math.radians(dec)), 0.05)
    return [(ra - dw) % 360, dec - h, (ra + dw) % 360, dec - h, (ra + dw) % 360, dec + h,
            (ra - dw) % 360, dec + h]


def cases(ra: float, dec: float, field: str) -> list[Case]:
    pt = f"spoint '({_deg(ra)},{_deg(dec)})'"
    poly = _box(ra, dec)
    adql_poly = ", ".join(repr(v) for v in poly)
    sel = "SELECT obs_publisher_did FROM ivoa.obscore WHERE "
    psel = "SELECT obs_publisher_did FROM obscore WHERE "
    out = [
        ("CONTAINS(point)", f"CONTAINS(POINT('ICRS', {ra!r}, {dec!r}), s_region) = 1",
         f"s_region @> {pt}"),
        ("INTERSECTS(circle 0.1)",
         f"INTERSECTS(CIRCLE('ICRS', {ra!r}, {dec!r}, 0.1), s_region) = 1",
         f"s_region && scircle '<({_deg(ra)},{_deg(dec)}),0.1d>'"),
        ("INTERSECTS(circle 1)",
         f"INTERSECTS(CIRCLE('ICRS', {ra!r}, {dec!r}, 1.0), s_region) = 1",
         f"s_region && scircle '<({_deg(ra)},{_deg(dec)}),1.0d>'"),
        ("INTERSECTS(polygon)", f"INTERSECTS(POLYGON('ICRS', {adql_poly}), s_region) = 1",
         f"s_region && spoly '{_spoly(poly)}'"),
        ("DISTANCE(s_ra,s_dec) < 1",
         f"DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', {ra!r}, {dec!r})) < 1.0",
         f"s_point <@ scircle '<({_deg(ra)},{_deg(dec)}),1.0d>'"),
    ]
    return [Case(q, field, sel + a, psel + p) for q, a, p in out]


def positions(cat, k: int) -> list[tuple[float, float, str]]:
    """k wide-survey positions and one deep-field position, the same every run."""
    wide = cat.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE obs_collection = "
                     "'spherex_qr2' AND abs(s_dec) < 70 ORDER BY hash(obs_publisher_did) "
                     f"LIMIT {k}", timeout=3600).to_pylist()
    deep = cat.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE obs_collection = "
                     "'spherex_qr2_deep' ORDER BY hash(obs_publisher_did) LIMIT 1",
                     timeout=3600).to_pylist()
    out = [((r["s_ra"] + 0.3) % 360, r["s_dec"] - 0.2, "wide") for r in wide]
    return out + [(r["s_ra"], r["s_dec"], "deep") for r in deep]


def ours(cat, adql: str):
    from ...query.adql import translate
    from ...services.tap.meta import all_tables

    sql = translate(adql, all_tables(), box_sql=cat.box_sql).sql
    return cat.query(sql, timeout=3600)


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _candidates(cat, adql: str) -> int | None:
    """Rows the exact test was handed: the footprint kernels count theirs; a DISTANCE
    cone (a SQL macro) counts the rows the cone lane ran it on."""
    from ...geometry import sqlfunctions
    from ...query import catalogue

    before, lane = sqlfunctions.EXACT_ROWS[0], catalogue.LANE_ROWS[0]
    ours(cat, adql)
    n = sqlfunctions.EXACT_ROWS[0] - before
    return n or (catalogue.LANE_ROWS[0] - lane) or None


# ---- cold and concurrent ------------------------------------------------------------------

COLD = """
import json, sys, time
t0 = time.perf_counter()
from chalicelib.query.catalogue import Catalogue
from chalicelib.lake.storage import Archive
from chalicelib.devtools.benchmarks.bench_peers import ours
import chalicelib.query.adql, chalicelib.services.tap.meta  # as a server imports them
t1 = time.perf_counter()
cat = Catalogue(Archive.from_env(sys.argv[1]))
cat.current()
t2 = time.perf_counter()
n = ours(cat, sys.argv[2]).num_rows
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "first": t3 - t2, "rows": n}))
"""

CLIENT = """
import json, sys, time
from chalicelib.query.catalogue import Catalogue
from chalicelib.lake.storage import Archive
from chalicelib.devtools.benchmarks.bench_peers import ours
cat = Catalogue(Archive.from_env(sys.argv[1]))
queries = json.loads(sys.argv[2])
for q in queries:
    ours(cat, q)
from chalicelib.geometry import sky
sky.kernels_ready(wait=True)
print("ready", flush=True)
sys.stdin.readline()
t0 = time.time()
for i in range(int(sys.argv[3])):
    ours(cat, queries[i % len(queries)])
print(json.dumps({"start": t0, "end": time.time()}), flush=True)
"""


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[3])  # the repository
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, text=True, **kw)


def cold_ours(url: str, adql: str) -> dict:
    p = _python(COLD, url, adql)
    out, _ = p.communicate()
    return json.loads(out.strip().splitlines()[-1])


def cold_theirs(pg: Postgres, sql: str) -> float:
    pg.stop()
    pg.start()
    t0 = time.perf_counter()
    with pg.connect() as con:
        con.execute(sql).fetchall()
    return time.perf_counter() - t0


def throughput_ours(url: str, adqls: list[str], clients: int, per: int) -> float:
    procs = [_python(CLIENT, url, json.dumps(adqls), str(per), stdin=subprocess.PIPE)
             for _ in range(clients)]
    for p in procs:
        line = "?"
        while line and line.strip() != "ready":  # skip anything else a client printed
            line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"a client exited early (status {p.wait()})")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    spans = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    return clients * per / wall


def _timed_clients(work: list[Callable[[], None]]) -> float:
    """Run each client's work in its own thread, all released at once: wall seconds."""
    barrier = threading.Barrier(len(work) + 1)

    def client(fn: Callable[[], None]) -> None:
        barrier.wait()
        fn()

    threads = [threading.Thread(target=client, args=(fn,)) for fn in work]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def throughput_theirs(pg: Postgres, sqls: list[str], clients: int, per: int) -> float:
    cons = [pg.connect() for _ in range(clients)]
    for con in cons:
        for s in sqls:
            con.execute(s).fetchall()

    def work(con) -> Callable[[], None]:
        def run() -> None:
            for i in range(per):
                con.execute(sqls[i % len(sqls)]).fetchall()
        return run

    wall = _timed_clients([work(c) for c in cons])
    for con in cons:
        con.close()
    return clients * per / wall


# ---- the run ----------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    from ...geometry import sky
    from ...ingest.maintenance import compact, layout
    from ...query.catalogue import Catalogue
    from .bench_tap import build

    a = _args(argv)
    if not a.no_pgsphere:
        ensure_pgsphere()
    folder = Path(a.archive) if a.archive else Path(tempfile.mkdtemp(prefix="bench-peers-"))
    archive = build(folder, a.rows, a.weeks)
    if layout(archive) != (0, 1):
        print(compact(archive).splitlines()[0], flush=True)
    cat = Catalogue(archive)
    sky.kernels_ready(wait=True)  # warm: the kernels a container has after its first second
    try:
        failures = [] if a.no_pgsphere else run_pgsphere(cat, archive, a)
        if a.dachs:
            failures += run_dachs(archive, cat, a)
    finally:
        if not a.archive:
            shutil.rmtree(folder, ignore_errors=True)
    if failures:
        sys.exit(f"{len(failures)} row sets differ (see MISMATCH above)")


def run_pgsphere(cat, archive, a) -> list:
    """Ours in-process against pgsphere's SQL on a private cluster; prints the table."""
    pg = Postgres()
    failures = []
    rows = []  # (query, field, rows, ours ms, theirs ms, candidates)
    try:
        pg.start()
        n, _ = load(pg, cat)
        todo = [c for ra, dec, field in positions(cat, a.positions)
                for c in cases(ra, dec, field)]
        with pg.connect() as con:
            for c in todo:
                mine = set(ours(cat, c.adql)["obs_publisher_did"].to_pylist())
                theirs = {r[0] for r in con.execute(c.pg).fetchall()}
                if mine != theirs:
                    failures.append(c)
                    print(f"MISMATCH {c.query} ({c.field}): ours {len(mine)}, pgsphere "
                          f"{len(theirs)}; only ours {sorted(mine - theirs)[:5]}, only "
                          f"pgsphere {sorted(theirs - mine)[:5]}\n  ADQL: {c.adql}\n"
                          f"  SQL:  {c.pg}", flush=True)
                t_ours = _median_ms(lambda c=c: ours(cat, c.adql), a.repeat)
                t_theirs = _median_ms(lambda c=c: con.execute(c.pg).fetchall(), a.repeat)
                rows.append((c.query, c.field, len(mine), t_ours, t_theirs,
                             _candidates(cat, c.adql)))
                print(f"  {c.query} {c.field}: {len(mine)} rows, ours {t_ours:.1f} ms, "
                      f"pgsphere {t_theirs:.1f} ms", flush=True)
        first = next(c for c in todo if c.field == "wide")
        cold = cold_ours(archive.url, first.adql)
        cold_pg = cold_theirs(pg, first.pg)
        mix = [c for c in todo if c.field == "wide"]
        tp = throughput_ours(archive.url, [c.adql for c in mix], a.clients, a.per_client)
        tp_pg = throughput_theirs(pg, [c.pg for c in mix], a.clients, a.per_client)
    finally:
        pg.remove()
    print(f"\n== {n:,} ObsCore rows; ours (DuckDB over Delta) vs PostgreSQL {PG_VERSION} + "
          f"pgsphere (GiST); ms; ratio pgsphere/ours (> 1: ours faster) ==")
    print("| query | field | rows | candidates | ours ms | pgsphere ms | pgsphere/ours |\n"
          "|---|---|---|---|---|---|---|")
    for q, field, k, t1, t2, cand in rows:
        cand = f"{cand:,}" if cand else "-"
        print(f"| {q} | {field} | {k:,} | {cand} | {t1:.1f} | {t2:.1f} | {t2 / t1:.2f} |")
    c_ms, p_ms = cold["first"] * 1000, cold_pg * 1000
    print(f"| cold first CONTAINS(point) (ours: after open {cold['open'] * 1000:.0f} ms, "
          f"imports {cold['import'] * 1000:.0f} ms; theirs: after restart) | wide | "
          f"{cold['rows']:,} | - | {c_ms:.0f} | {p_ms:.0f} | {p_ms / c_ms:.2f} |")
    print(f"| {a.clients} clients, wide mix: ms per query (ours {tp:.0f} q/s, pgsphere "
          f"{tp_pg:.0f} q/s) | wide | - | - | {1000 / tp:.1f} | {1000 / tp_pg:.1f} | "
          f"{tp / tp_pg:.2f} |")
    return failures


# ---- GAVO DaCHS over HTTP (--dachs) --------------------------------------------------------
#
# Bench only (not in .ci/run): Debian's gavodachs2-server uses the system cluster
# (15/main), which has no systemd here to start it, so its install runs between
# `pg_ctlcluster 15 main start` and `dpkg --configure -a`. /etc/gavo.rc binds the server
# to 127.0.0.1 on a port picked at run time; the table is resource bench/q.

DACHS_PACKAGE = "gavodachs2-server"
DACHS_RD = """<resource schema="bench">
  <meta name="title">bench peers: the ObsCore rows of the bench archive</meta>
  <meta name="description">The released rows of the archive's ivoa.obscore, for timing.
  </meta>
  <meta name="creationDate">2026-01-01T00:00:00Z</meta>
  <meta name="subject">benchmark</meta>
  <meta name="creator.name">bench peers</meta>
  <table id="obscore" onDisk="True" adql="True">
    <meta name="description">ObsCore rows of the bench archive</meta>
    <index columns="s_region" method="GIST"/>
    <index columns="s_ra,s_dec" name="obscore_pos" method="GIST"
      >spoint(RADIANS(s_ra), RADIANS(s_dec))</index>
    <column name="obs_publisher_did" type="text" ucd="meta.ref.ivoid" description="DID"/>
    <column name="obs_collection" type="text" description="collection"/>
    <column name="s_ra" type="double precision" unit="deg" ucd="pos.eq.ra;meta.main"
      description="centre RA"/>
    <column name="s_dec" type="double precision" unit="deg" ucd="pos.eq.dec;meta.main"
      description="centre Dec"/>
    <column name="s_region" type="spoly" unit="deg" ucd="pos.outline;obs.field"
      description="footprint"/>
  </table>
  <data id="import"><make table="obscore"/></data>
</resource>
"""
GAVO_RC = """[web]
bindAddress: 127.0.0.1
serverPort: {port}
serverURL: http://127.0.0.1:{port}

[async]
defaultMAXREC: 20000000
hardMAXREC: 20000000

[ivoa]
dalDefaultLimit: 20000000
dalHardLimit: 20000000
"""
MAXREC = "20000000"  # every row, on both sides: no answer may be truncated


def _sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def _system_cluster() -> bool:
    """Start the system cluster DaCHS uses; True if this call started it."""
    r = _sh("pg_ctlcluster", PG_VERSION, "main", "start", check=False)
    if r.returncode != 0 and "already running" not in (r.stderr + r.stdout):
        raise RuntimeError(f"pg_ctlcluster {PG_VERSION} main start: {r.stderr.strip()}")
    return r.returncode == 0


def ensure_dachs() -> bool:
    """gavodachs2-server from Debian when `dachs` is missing (see the note above); True
    if the system cluster was started here (the run stops it again)."""
    if shutil.which("dachs"):
        return _system_cluster()
    print(f"installing {DACHS_PACKAGE} (apt-get; PostgreSQL {PG_VERSION}/main started "
          "first) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _system_cluster()
    r = _sh("apt-get", "install", "-y", DACHS_PACKAGE, check=False, env=env)
    if r.returncode != 0:
        _sh("apt-get", "update", env=env)
        _sh("apt-get", "install", "-y", DACHS_PACKAGE, check=False, env=env)
    _system_cluster()  # the postinst may have stopped it; it needs it to create gavo
    _sh("dpkg", "--configure", "-a", env=env)
    if not shutil.which("dachs"):
        raise RuntimeError(f"{DACHS_PACKAGE} did not install")
    return True


class Dachs:
    """DaCHS serving bench/q on 127.0.0.1:<free port>; stop() stops its server."""

    def __init__(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        rc = Path("/etc/gavo.rc")
        self._old_rc = rc.read_text() if rc.exists() else None
        rc.write_text(GAVO_RC.format(port=self.port))
        inputs = Path(_sh("dachs", "config", "inputsDir").stdout.strip() or "/var/gavo/inputs")
        (inputs / "bench").mkdir(parents=True, exist_ok=True)
        (inputs / "bench" / "q.rd").write_text(DACHS_RD)

    def _psql(self, sql: str, stdin=None, **kw):
        cmd = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-t", "-A", "-v",
               "ON_ERROR_STOP=1", "-d", "gavo", "-c", sql]
        return subprocess.Popen(cmd, stdin=stdin, text=True, **kw) if stdin else \
            _sh(*cmd)

    def load(self, cat) -> int:
        """Create bench.obscore (dachs imp), COPY the rows without its indexes, then let
        `dachs imp -I` build the indexes and the metadata (what the brief's 2.5 min is)."""
        t0 = time.perf_counter()
        # `imp -I` updates the ObsCore registry table of DaCHS; a fresh install has none
        if "_obscoresources" not in self._psql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'ivoa'").stdout:
            _sh("dachs", "imp", "//obscore")
        _sh("dachs", "imp", "bench/q")
        self._psql("DO $$ DECLARE r record; BEGIN FOR r IN SELECT indexname FROM pg_indexes "
                   "WHERE schemaname = 'bench' AND tablename = 'obscore' LOOP EXECUTE "
                   "'DROP INDEX bench.' || quote_ident(r.indexname); END LOOP; END $$")
        p = self._psql("COPY bench.obscore FROM STDIN", stdin=subprocess.PIPE)
        n = 0
        for k, text in copy_chunks(cat, point=False):
            p.stdin.write(text)
            n += k
        p.stdin.close()
        if p.wait() != 0:
            raise RuntimeError("COPY into bench.obscore failed")
        t1 = time.perf_counter()
        _sh("dachs", "imp", "-I", "bench/q")
        self._psql("VACUUM ANALYZE bench.obscore")
        print(f"DaCHS: {n:,} rows by COPY in {t1 - t0:.0f} s, `dachs imp -I` (GiST "
              f"indexes, metadata) {time.perf_counter() - t1:.0f} s", flush=True)
        return n

    def start(self) -> None:
        _sh("dachs", "serve", "start")
        wait_port(self.port, 120.0)

    def stop(self) -> None:
        _sh("dachs", "serve", "stop", check=False)
        end = time.monotonic() + 30
        while time.monotonic() < end and listening(self.port):
            time.sleep(0.05)

    def remove(self) -> None:
        self.stop()
        rc = Path("/etc/gavo.rc")
        if self._old_rc is None:
            rc.unlink(missing_ok=True)
        else:
            rc.write_text(self._old_rc)


class OurServer:
    """Our local server (python -m chalicelib serve) in its own process on a free port,
    the per-caller rate limit off (DaCHS has none)."""

    def __init__(self, url: str):
        self.url, self.port = url, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> None:
        root = str(Path(__file__).resolve().parents[3])
        env = {**os.environ, "RATE_LIMIT": "0", "QUIET_HTTP": "1",
               "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chalicelib", "serve", "--archive", self.url,
             "--port", str(self.port)], cwd=root, env=env, stdout=subprocess.DEVNULL)
        wait_port(self.port, 120.0)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


def tap_sync(session, base: str, adql: str) -> bytes:
    r = session.post(base + "/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL",
                                               "QUERY": adql, "MAXREC": MAXREC}, timeout=600)
    r.raise_for_status()
    if b'value="OVERFLOW"' in r.content or b"value='OVERFLOW'" in r.content:
        raise RuntimeError(f"{base}: the answer was truncated (OVERFLOW)")
    return r.content


def dids(body: bytes) -> set[str]:
    import io

    from astropy.io.votable import parse_single_table

    col = parse_single_table(io.BytesIO(body)).to_table()["obs_publisher_did"]
    return {v.decode() if isinstance(v, bytes) else str(v) for v in col}


def _dachs_adql(adql: str) -> str:
    return adql.replace("FROM ivoa.obscore", "FROM bench.obscore")


def _cold_http(server, adql: str) -> tuple[float, float]:
    """The first query after a restart, on a new connection: seconds from the start
    command to the answer, and from the port accepting connections to the answer."""
    import requests

    server.stop()
    t0 = time.perf_counter()
    server.start()
    t1 = time.perf_counter()
    with requests.Session() as s:
        tap_sync(s, server.base, adql)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def _throughput_http(base: str, adqls: list[str], clients: int, per: int):
    """Queries a second and p95 latency with `clients` threads, a session each."""
    import requests

    sessions = [requests.Session() for _ in range(clients)]
    for s in sessions:
        tap_sync(s, base, adqls[0])
    lat: list[float] = []

    def work(s, k) -> Callable[[], None]:
        def run() -> None:
            for i in range(per):
                t = time.perf_counter()
                tap_sync(s, base, adqls[(i + k) % len(adqls)])
                lat.append(time.perf_counter() - t)
        return run

    wall = _timed_clients([work(s, k) for k, s in enumerate(sessions)])
    for s in sessions:
        s.close()
    lat.sort()
    return clients * per / wall, lat[int(0.95 * (len(lat) - 1))] * 1000


def run_dachs(archive, cat, a) -> list[str]:
    """Ours (local server) against DaCHS over HTTP TAP sync: identical row sets, warm
    medians, a first query after a restart of each, throughput; returns mismatches."""
    import requests

    started = ensure_dachs()
    dachs, mine = Dachs(), OurServer(archive.url)
    failures, rows = [], []
    try:
        n = dachs.load(cat)
        dachs.start()
        mine.start()
        todo = [c for ra, dec, field in positions(cat, a.positions)
                for c in cases(ra, dec, field)]
        todo.append(Case("SELECT TOP 10000 *", "all",
                         "SELECT TOP 10000 obs_publisher_did, s_ra, s_dec, s_region "
                         "FROM ivoa.obscore ORDER BY obs_publisher_did", ""))
        with requests.Session() as ours_s, requests.Session() as theirs_s:
            for c in todo:
                adql_d = _dachs_adql(c.adql)
                got_o, got_d = dids(tap_sync(ours_s, mine.base, c.adql)), \
                    dids(tap_sync(theirs_s, dachs.base, adql_d))
                if got_o != got_d:
                    failures.append(c.query)
                    print(f"MISMATCH {c.query} ({c.field}): ours {len(got_o)}, DaCHS "
                          f"{len(got_d)}; only ours {sorted(got_o - got_d)[:5]}, only "
                          f"DaCHS {sorted(got_d - got_o)[:5]}\n  ADQL: {c.adql}", flush=True)
                t_o = _median_ms(lambda c=c: tap_sync(ours_s, mine.base, c.adql), a.repeat)
                t_d = _median_ms(lambda q=adql_d: tap_sync(theirs_s, dachs.base, q), a.repeat)
                rows.append((c.query, c.field, len(got_o), t_o, t_d))
                print(f"  {c.query} {c.field}: {len(got_o)} rows, ours {t_o:.1f} ms, "
                      f"DaCHS {t_d:.1f} ms", flush=True)
        first = next(c for c in todo if c.field == "wide")
        cold_o = _cold_http(mine, first.adql)
        cold_d = _cold_http(dachs, _dachs_adql(first.adql))
        mix = [c.adql for c in todo if c.field == "wide"]
        tp_o, p95_o = _throughput_http(mine.base, mix, a.clients, a.per_client)
        tp_d, p95_d = _throughput_http(dachs.base, [_dachs_adql(q) for q in mix],
                                       a.clients, a.per_client)
    finally:
        mine.stop()
        dachs.remove()
        if started:
            _sh("pg_ctlcluster", PG_VERSION, "main", "stop", check=False)
    load = os.getloadavg()
    print(f"\n== {n:,} ObsCore rows over HTTP TAP sync (VOTable, kept-alive session): ours "
          f"(local server) vs GAVO DaCHS 2.7 (bench.obscore, pgsphere GiST); ms; ratio "
          f"DaCHS/ours (> 1: ours faster); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f", load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ==")
    print("| query | field | rows | ours ms | DaCHS ms | DaCHS/ours |\n|---|---|---|---|---|---|")
    for q, field, k, t1, t2 in rows:
        print(f"| {q} | {field} | {k:,} | {t1:.1f} | {t2:.1f} | {t2 / t1:.1f} |")
    for k, what in enumerate(("start command", "port open")):
        print(f"| first CONTAINS(point) after a restart ({what} -> answer) | wide | - | "
              f"{cold_o[k] * 1000:.0f} | {cold_d[k] * 1000:.0f} | "
              f"{cold_d[k] / cold_o[k]:.1f} |")
    print(f"| {a.clients} clients, wide mix: q/s (p95 ms) | wide | - | {tp_o:.1f} "
          f"({p95_o:.0f}) | {tp_d:.1f} ({p95_d:.0f}) | {tp_o / tp_d:.1f} |", flush=True)
    return failures
