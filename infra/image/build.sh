#!/usr/bin/env bash
# make image: the one Lambda container image, built with Debian's buildah (no Docker daemon,
# no container registry). Steps, each cached by a hash of its inputs:
#   1. base: Debian bookworm minbase + python3 (3.11, the interpreter the cp311 wheels are
#      built for) + ca-certificates, from debootstrap; docs, man pages, locales, apt lists
#      and downloaded .debs removed.  -> rootfs tarball in $IMAGE_CACHE
#   2. deps: the runtime lines of requirements.txt (infra/runtime-requirements.sh: above
#      the "# tests and checks" marker) as binary wheels into /var/task, stripped by
#      infra/image/strip.sh, byte-compiled by the image's python.  -> image spherex-deps:<hash>
#   3. app: app.py + chalicelib/ (no devtools), byte-compiled; the numba kernels compiled
#      into /var/task/.numba-cache (seeded into /tmp on a cold start, see
#      chalicelib/geometry/kernelcache.py), and the catalogue's bind files into
#      /var/task/.catalogue-bind (CATALOGUE_BIND_SEED).  -> image spherex-archive:<hash>, also :latest
# Entry point as AWS documents for non-AWS base images:
#   ENTRYPOINT ["python3", "-m", "awslambdaric"], CMD ["chalicelib.lambdas.handlers.api"].
# Prints the image name (spherex-archive:<hash>) on the last line of stdout.
# Usage: infra/image/build.sh [--force]      (IMAGE_CACHE, DEBIAN_MIRROR, BUILDAH override)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
FORCE=0; [ "${1:-}" = "--force" ] && FORCE=1
read -r -a BUILDAH <<< "${BUILDAH:-buildah --storage-driver vfs}"
CACHE=${IMAGE_CACHE:-$HOME/.cache/spherex-image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=python3,ca-certificates
TASK=/var/task
mkdir -p "$CACHE"
log() { echo "image: $*" >&2; }
c=""
cleanup() { [ -n "$c" ] && "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1; true; }
trap cleanup EXIT  # a failed step leaves no working container behind
exists() { "${BUILDAH[@]}" images --quiet "localhost/$1" >/dev/null 2>&1; }
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "image: needs buildah and debootstrap (apt-get install -y buildah debootstrap)" >&2
  exit 2
fi

# ---- 1. base ------------------------------------------------------------------------------
base_key=$( { printf '%s\n' "$SUITE" "$PACKAGES" "$MIRROR";
             sed -n '/^# ---- 1/,/^# ---- 2/p' infra/image/build.sh; } | sha256sum | cut -c1-12)
BASE_TAR="$CACHE/base-$SUITE-$base_key.tar"
if [ ! -s "$BASE_TAR" ] || [ $FORCE = 1 ]; then
  log "debootstrap $SUITE minbase + $PACKAGES"
  tmp=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$MIRROR" >&2
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* \
    "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* \
    "$tmp"/usr/share/locale/* "$tmp"/var/log/* "$tmp"/usr/lib/python3.11/test
  # the package versions in the base, for the record (a label of the image)
  chroot "$tmp" dpkg-query -W -f '${Package}=${Version}\n' > "$CACHE/base-$SUITE-$base_key.packages" \
    2>/dev/null || true
  tar --numeric-owner -C "$tmp" -cf "$BASE_TAR.part" . && mv "$BASE_TAR.part" "$BASE_TAR"
  rm -rf "$tmp"
fi

# ---- 2. deps ------------------------------------------------------------------------------
runtime=$(sh infra/runtime-requirements.sh requirements.txt)
deps_key=$( { echo "$base_key"; echo "$runtime"; cat infra/image/strip.sh;
              sed -n '/^# ---- 2/,/^# ---- 3/p' infra/image/build.sh; } | sha256sum | cut -c1-12)
DEPS=spherex-deps:$deps_key
if ! exists "$DEPS" || [ $FORCE = 1 ]; then
  log "deps: $(echo "$runtime" | wc -l) requirements -> $TASK"
  wheels="$CACHE/target-$deps_key"
  rm -rf "$wheels"
  echo "$runtime" > "$CACHE/runtime-$deps_key.txt"
  # the image has no pip: the wheels are resolved and unpacked by this machine's pip for
  # CPython 3.11 on x86_64 manylinux (the image's python3 and glibc 2.36)
  "${PYTHON:-python3}" -m pip install -q --no-compile --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform linux_x86_64 --target "$wheels" -r "$CACHE/runtime-$deps_key.txt" >&2
  rm -rf "$wheels/bin"
  sh infra/image/strip.sh "$wheels" >&2
  c=$("${BUILDAH[@]}" from scratch)
  mnt=$("${BUILDAH[@]}" mount "$c")
  tar --numeric-owner -C "$mnt" -xf "$BASE_TAR"
  mkdir -p "$mnt$TASK"
  cp -a "$wheels"/. "$mnt$TASK"/
  "${BUILDAH[@]}" run --isolation chroot "$c" -- python3 -m compileall -q -j 0 \
    -x '/(tests?|testing)/' "$TASK" >/dev/null || true
  "${BUILDAH[@]}" run --isolation chroot "$c" -- python3 -m compileall -q -j 0 \
    /usr/lib/python3.11 >/dev/null || true
  # the stripped stack still loads (every compiled library the services use)
  "${BUILDAH[@]}" run --isolation chroot --env PYTHONPATH=$TASK --env HOME=/tmp "$c" -- \
    python3 -c "import numpy, numpy.linalg, pyarrow, pyarrow.dataset, pyarrow.parquet, \
pyarrow.compute, duckdb, deltalake, astropy.io.fits, astropy.wcs, astropy.coordinates, \
numba, llvmlite.binding, matplotlib.pyplot, PIL.Image, mocpy, cdshealpix, sqlglot, s3fs, \
boto3, chalice, awslambdaric"
  "${BUILDAH[@]}" umount "$c" >/dev/null
  "${BUILDAH[@]}" commit --quiet --rm "$c" "$DEPS" >/dev/null
  c=""
  rm -rf "$wheels"
fi

# ---- 3. app -------------------------------------------------------------------------------
app_key=$( { echo "$deps_key"; sed -n '/^# ---- 3/,$p' infra/image/build.sh;
             cat app.py; find chalicelib -path chalicelib/devtools -prune -o -type f \
               \( -name '*.py' -o -name '*.csv' -o -name '*.toml' -o -name '*.json' \
               -o -name '*.html' -o -name '*.js' -o -name '*.css' -o -name '*.xml' \) \
               -print | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-12)
IMAGE=spherex-archive:$app_key
if ! exists "$IMAGE" || [ $FORCE = 1 ]; then
  log "app: app.py + chalicelib -> $IMAGE"
  c=$("${BUILDAH[@]}" from --pull-never "localhost/$DEPS")
  mnt=$("${BUILDAH[@]}" mount "$c")
  cp -p app.py "$mnt$TASK/"
  tar -C "$ROOT" --exclude=chalicelib/devtools --exclude='__pycache__' --exclude='*.pyc' \
    -cf - chalicelib | tar -C "$mnt$TASK" -xf -
  "${BUILDAH[@]}" run --isolation chroot "$c" -- python3 -m compileall -q \
    "$TASK/app.py" "$TASK/chalicelib" >/dev/null
  # numba kernels compiled now, for a generic x86-64 CPU so that the cache is valid on
  # whatever CPU Lambda gives (the CPU name is part of numba's cache key)
  "${BUILDAH[@]}" run --isolation chroot --workingdir "$TASK" \
    --env NUMBA_CACHE_DIR=$TASK/.numba-cache --env NUMBA_CPU_NAME=generic \
    --env PYTHONPATH=$TASK --env HOME=/tmp "$c" -- \
    python3 -c "import chalicelib.geometry.sky as s; s.warm_up()"
  # the catalogue's empty bind files (one per table schema): a cold start writes none
  "${BUILDAH[@]}" run --isolation chroot --workingdir "$TASK" --env PYTHONPATH=$TASK \
    --env HOME=/tmp "$c" -- python3 -c \
    "from chalicelib.query.catalogue import seed_bind_files as s; s('$TASK/.catalogue-bind')"
  "${BUILDAH[@]}" umount "$c" >/dev/null
  # Only /tmp is writable on Lambda: HOME, matplotlib's and numba's caches go there.
  "${BUILDAH[@]}" config \
    --env LAMBDA_TASK_ROOT=$TASK --env PYTHONPATH=$TASK --env HOME=/tmp \
    --env MPLCONFIGDIR=/tmp/matplotlib --env NUMBA_CACHE_DIR=/tmp/numba-cache \
    --env NUMBA_CACHE_SEED=$TASK/.numba-cache --env NUMBA_CPU_NAME=generic \
    --env CATALOGUE_BIND_SEED=$TASK/.catalogue-bind --env LANG=C.UTF-8 --workingdir $TASK \
    --entrypoint '["/usr/bin/python3", "-m", "awslambdaric"]' \
    --cmd chalicelib.lambdas.handlers.api \
    --label org.opencontainers.image.title=spherex-archive \
    --label spherex.inputs="$app_key" "$c"
  "${BUILDAH[@]}" commit --quiet --rm "$c" "$IMAGE" >/dev/null
  c=""
fi
"${BUILDAH[@]}" tag "localhost/$IMAGE" localhost/spherex-archive:latest
log "$IMAGE ready ($("${BUILDAH[@]}" images --format '{{.Size}}' "localhost/$IMAGE" | head -1))"
echo "$IMAGE"
