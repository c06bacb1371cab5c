"""The numba kernels compiled when the image is built, found by a cold start.

numba uses a cache folder only if it can write there (it probes with a temporary file),
and on Lambda everything but /tmp is read-only. So the image compiles the kernels into
NUMBA_CACHE_SEED (/var/task/.numba-cache) and sets NUMBA_CACHE_DIR to a folder under
/tmp; the first import of the kernels in a container copies the seed there (a few files,
~1 ms), and numba then loads them instead of compiling (~2 s). The cache entries are
keyed by the source files' paths and stamps, which the image keeps, and by the CPU, which
the image fixes with NUMBA_CPU_NAME=generic; a miss compiles, as without a cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config import settings

MARKER = ".seeded"


def seed_numba_cache() -> bool:
    """Copy the build-time kernels into numba's cache folder, once; True if copied."""
    conf = settings()
    if not conf.numba_cache_seed or not conf.numba_cache_dir:
        return False
    seed, target = Path(conf.numba_cache_seed), Path(conf.numba_cache_dir)
    if not seed.is_dir() or seed.resolve() == target.resolve() or (target / MARKER).exists():
        return False
    try:
        shutil.copytree(seed, target, dirs_exist_ok=True)
        (target / MARKER).touch()
    except OSError:
        return False  # numba compiles instead: slower, still correct
    return True
