"""TAP async routing prices a job from the statistics the catalogue already holds for
its release: no Delta log is replayed a second time, and the estimate is the one a
fresh replay gives (files and bytes after the same pruning)."""

from __future__ import annotations

import pytest

from chalicelib.lake import deltalog
from chalicelib.query import adql
from chalicelib.query.catalogue import Catalogue
from chalicelib.query.spark.files import ReleaseFiles
from chalicelib.services.tap import engines
from chalicelib.services.tap import meta as tapmeta
from chalicelib.web.params import Params


def _fresh_estimate(cat: Catalogue, query: str) -> dict:
    plan = ReleaseFiles(cat.archive, cat.release)  # replays the logs itself
    adql.translate(query, tapmeta.all_tables(), box_sql=plan.box_sql, dialect="spark",
                   relation=plan.relation)
    return plan.estimate()


@pytest.mark.parametrize("where", [
    "CONTAINS(POINT('ICRS', {ra}, {dec}), s_region) = 1",
    "1 = 1",
])
def test_the_estimate_reuses_the_catalogue_and_agrees_with_a_replay(archive, monkeypatch,
                                                                    where):
    cat = Catalogue(archive)
    row = cat.query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_region IS NOT NULL "
                    "ORDER BY obs_publisher_did LIMIT 1").to_pylist()[0]
    query = ("SELECT o.obs_publisher_did, p.planeid FROM ivoa.obscore AS o JOIN "
             "spherex.plane AS p ON p.obs_publisher_did = o.obs_publisher_did WHERE "
             + where.format(ra=row["s_ra"], dec=row["s_dec"]))
    # the job's run opens its tables anyway; pricing it first must not open them twice
    cat.query(adql.translate(query, tapmeta.all_tables(), box_sql=cat.box_sql).sql)
    want = _fresh_estimate(cat, query)
    replays = []

    def no_replay(*args, **kw):
        replays.append(args)
        raise AssertionError("the router replayed a Delta log the catalogue holds")

    monkeypatch.setattr(deltalog.TableLog, "open", no_replay)
    got = engines.estimate(Params([("QUERY", query), ("LANG", "ADQL")], {}), cat)
    assert got == want and replays == []
    assert got["files"] >= 2 and got["bytes"] > 0
