"""Size on disk of each installed distribution (its RECORD files), largest first.

Standard library only; run inside the image: python3 sizes.py [/var/task] [--json]
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata


def sizes(path: str) -> list[tuple[str, str, int]]:
    out = []
    for dist in metadata.distributions(path=[path]):
        total = 0
        for f in dist.files or []:
            p = os.path.join(path, str(f))
            if os.path.isfile(p):
                total += os.path.getsize(p)
        # byte-compiled files are written after install and are not in RECORD
        for f in dist.files or []:
            if str(f).endswith(".py"):
                d, base = os.path.split(os.path.join(path, str(f)))
                cache = os.path.join(d, "__pycache__")
                if os.path.isdir(cache):
                    stem = base[:-3] + "."
                    total += sum(os.path.getsize(os.path.join(cache, c))
                                 for c in os.listdir(cache) if c.startswith(stem))
        out.append((dist.metadata["Name"], dist.version, total))
    return sorted(out, key=lambda t: -t[2])


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rows = sizes(args[0] if args else "/var/task")
    if "--json" in sys.argv:
        json.dump([{"name": n, "version": v, "bytes": b} for n, v, b in rows], sys.stdout)
        return
    total = sum(b for *_, b in rows)
    for n, v, b in rows:
        print(f"{b / 1e6:9.1f} MB  {n}=={v}")
    print(f"{total / 1e6:9.1f} MB  total of {len(rows)} distributions")


if __name__ == "__main__":
    main()
