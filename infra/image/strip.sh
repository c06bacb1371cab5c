#!/bin/sh
# Remove from an installed site-packages folder what the archive never loads at run time:
# test suites inside packages, type stubs, C/Cython sources and headers, static libraries.
# Kept: astropy/tests (astropy's __init__ imports astropy.tests.runner), numpy/testing and
# everything importable by the services. The image test imports every handler and runs a
# query, a cutout and an ingest inside the stripped image.
# Usage: infra/image/strip.sh SITE_PACKAGES_DIR
set -eu
site=${1:?site-packages folder}
before=$(du -sm "$site" | cut -f1)
find "$site" -depth -type d \( -name tests -o -name test \) \
  ! -path "$site/astropy/tests" -exec rm -rf {} +
find "$site" -depth -type d -name __pycache__ -exec rm -rf {} +
find "$site" -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \
  -o -name '*.c' -o -name '*.cpp' -o -name '*.cc' -o -name '*.h' -o -name '*.hpp' \
  -o -name '*.a' \) -delete
# headers for building extensions against numpy/pyarrow
rm -rf "$site/pyarrow/include" "$site/pyarrow/src" "$site/numpy/_core/include" \
  "$site/numpy/_core/lib/pkgconfig"
# Arrow Flight (RPC; nothing here speaks it, pyarrow loads it only for pyarrow.flight) and
# pip (chalice lists it for `chalice package`, not used by the app)
rm -rf "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/libarrow_python_flight.so* \
  "$site"/pyarrow/_flight.cpython-*.so "$site/pyarrow/flight.py" "$site/pip" \
  "$site"/pip-*.dist-info
# symbols not needed for dynamic linking. Not the libraries auditwheel grafted in (*.libs/)
# nor the modules it patched to find them (RUNPATH .../<name>.libs): strip on a file that
# patchelf rewrote makes it unloadable ("ELF load command ... not page-aligned"). DuckDB
# extensions are left alone: they carry a signed footer. build.sh imports the stack after.
if command -v strip >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1; then
  find "$site" -type f \( -name '*.so' -o -name '*.so.*' \) ! -path '*.libs/*' \
    | while read -r f; do
        readelf -d "$f" 2>/dev/null | grep -q 'PATH.*\.libs' || strip --strip-unneeded "$f" \
          2>/dev/null || true
      done
fi
echo "strip: site-packages ${before} MB -> $(du -sm "$site" | cut -f1) MB"
