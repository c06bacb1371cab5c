"""Command line: python -m chalicelib <synth|ingest|compact|retention|hats|serve|demo|bench> ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _synth(a) -> None:
    from .synth import synthesize

    folders = synthesize(a.out, a.weeks, start_week=a.start_week, image_size=a.image_size,
                         images_per_week=a.images_per_week, metadata_only=a.metadata_only,
                         seed=a.seed, progress=True)
    print(f"wrote {len(folders)} deliveries under {a.out}")


def _ingest(a) -> None:
    from ..ingest.delivery import DeliveryError, ingest
    from ..ingest.maintenance import after_ingest
    from ..lake.storage import Archive

    archive = Archive.from_env(a.archive)
    for folder in a.delivery:
        try:
            if folder.startswith("s3://"):  # where it lies: checked and copied in place
                from ..cutout.fitsrange import hdu_names
                from ..ingest.streaming import ingest_in_place

                summary, moved = ingest_in_place(Archive(folder.rstrip("/")), archive,
                                                 hdu_names)
                print(summary.text(), f"(read {moved.bytes_read / 1e6:.1f} MB)")
            else:
                print(ingest(Path(folder), archive, progress=True).text())
        except DeliveryError as e:
            sys.exit(f"rejected {folder}: {e} (nothing was committed)")
        if (done := after_ingest(archive, a.merge_every)) is not None:
            print(done)


def _compact(a) -> None:
    from ..ingest.maintenance import compact, merge
    from ..lake.storage import Archive

    archive = Archive.from_env(a.archive)
    print(merge(archive) if a.new else compact(archive))


def _retention(a) -> None:
    from dataclasses import replace

    from ..ingest import retention
    from ..lake.storage import Archive

    archive = Archive.from_env(a.archive)
    for item in a.pin or []:
        name, _, number = item.partition("=")
        retention.pin(archive, name, int(number))
        print(f"pinned release {number} as {name}")
    for name in a.unpin or []:
        retention.unpin(archive, name)
        print(f"unpinned {name}")
    policy = retention.Policy.from_settings()
    if a.keep_last is not None:
        policy = replace(policy, keep_last=a.keep_last)
    if a.grace is not None:
        policy = replace(policy, grace=a.grace)
    if a.vacuum or a.dry_run:
        print(retention.vacuum(archive, policy, dry_run=a.dry_run).text())
    else:
        for n, why in retention.kept(archive, policy).items():
            print(f"release {n}: kept, {why}")


def _hats(a) -> None:
    from ..ingest.hatscat import publish
    from ..lake.storage import Archive

    print(publish(Archive.from_env(a.archive), a.release))


def _serve(a) -> None:
    from .localserver import serve

    serve(a.archive, a.host, a.port)


def _demo(a) -> None:
    from .demo import demo

    demo(a.dir, a.host, a.port, a.weeks)


def _bench(a) -> None:
    import importlib

    mod = importlib.import_module(f".bench_{a.what}", "chalicelib.devtools.benchmarks")
    mod.main(a.args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chalicelib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write synthetic SPHEREx weekly deliveries")
    s.add_argument("--out", required=True)
    s.add_argument("--weeks", type=int, default=1)
    s.add_argument("--start-week", default="2025W35")
    s.add_argument("--image-size", type=int, default=2040)
    s.add_argument("--images-per-week", type=int)
    s.add_argument("--metadata-only", action="store_true")
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(fn=_synth)
    s = sub.add_parser("ingest", help="validate and append deliveries to the archive")
    s.add_argument("delivery", nargs="+", help="a delivery folder, or s3://bucket/prefix "
                   "(ingested in place)")
    s.add_argument("--archive", help="folder or s3://bucket/prefix (default $ARCHIVE_URL "
                   "or ./archive)")
    s.add_argument("--merge-every", type=int, help="merge the new weeks into a "
                   "HEALPix-sorted tier once this many wait (default: maintenance.MERGE_EVERY, "
                   "4; 0: never)")
    s.set_defaults(fn=_ingest)
    s = sub.add_parser("compact", help="merge small files, re-cluster by HEALPix")
    s.add_argument("--archive")
    s.add_argument("--new", action="store_true", help="only the weeks delivered since the "
                   "last merge, as a new tier")
    s.set_defaults(fn=_compact)
    s = sub.add_parser("retention", help="pin releases; list the kept ones; vacuum the "
                       "files no kept release can read")
    s.add_argument("--archive")
    s.add_argument("--pin", action="append", metavar="NAME=RELEASE",
                   help="keep a release under a name, e.g. DR1=12 (repeatable)")
    s.add_argument("--unpin", action="append", metavar="NAME")
    s.add_argument("--keep-last", type=int, help="keep the last N releases (default "
                   "$RETENTION_KEEP_LAST; 0: all)")
    s.add_argument("--grace", type=float, help="seconds a superseded release stays "
                   "readable (default $RETENTION_GRACE_SECONDS, 3600)")
    s.add_argument("--vacuum", action="store_true", help="remove what no kept release "
                   "reads")
    s.add_argument("--dry-run", action="store_true", help="say what --vacuum would remove")
    s.set_defaults(fn=_retention)
    s = sub.add_parser("hats", help="publish a release's ObsCore rows as a HATS catalogue "
                       "(merges do it after each rewrite)")
    s.add_argument("--archive")
    s.add_argument("--release", type=int, help="default: the latest")
    s.set_defaults(fn=_hats)
    s = sub.add_parser("serve", help="serve the archive over HTTP (local Chalice app)")
    s.add_argument("--archive")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(fn=_serve)
    s = sub.add_parser("demo", help="build a small synthetic archive and serve it")
    s.add_argument("--dir", default="demo")
    s.add_argument("--weeks", type=int, default=3)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(fn=_demo)
    s = sub.add_parser("bench", help="benchmarks: ingest, tap, peers, cutout, photometry, "
                                     "fuzz, load, billion, engines")
    s.add_argument("what")
    s.add_argument("args", nargs=argparse.REMAINDER)
    s.set_defaults(fn=_bench)
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
