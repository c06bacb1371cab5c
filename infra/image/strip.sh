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
echo "strip: site-packages ${before} MB -> $(du -sm "$site" | cut -f1) MB"
