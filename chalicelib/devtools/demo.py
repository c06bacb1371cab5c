"""`make run`: a small synthetic archive (a few weeks, small images), ingested and served."""

from __future__ import annotations

from pathlib import Path

from ..lake import releases
from ..lake.storage import Archive


def build(folder: str | Path, weeks: int = 3, image_size: int = 256,
          images_per_week: int = 36) -> Archive:
    """Synthesise and ingest `weeks` deliveries under folder/ (skipped when present)."""
    from ..ingest.delivery import ingest
    from .synth import synthesize

    folder = Path(folder)
    archive = Archive.from_env(str(folder / "archive"))
    done = set(releases.load(archive).runs)
    deliveries = sorted(p for p in (folder / "deliveries").glob("*W*") if p.is_dir())
    if len(deliveries) < weeks:
        deliveries = synthesize(folder / "deliveries", weeks, image_size=image_size,
                                images_per_week=images_per_week, progress=True)
    for d in deliveries:
        if d.name not in done:
            print(ingest(d, archive, progress=True).text(), flush=True)
    return archive


def demo(folder: str, host: str, port: int, weeks: int) -> None:
    from ..services.landing import pyvo_snippet
    from .localserver import serve

    archive = build(folder, weeks)
    base = f"http://{host}:{port}"
    print(f"\nTry:\n  {base}/\n  {base}/tap/tables\n  {base}/tap/capabilities\n\n"
          f"{pyvo_snippet(base)}", flush=True)
    serve(archive.url, host, port)
