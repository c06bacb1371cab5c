#!/bin/sh
# Print the runtime lines of requirements.txt: everything above the "# tests and checks"
# marker (one place for pins; the test-only packages sit below it), without comments.
# Usage: infra/runtime-requirements.sh [requirements.txt] > runtime.txt
set -eu
sed -n '/^#[[:space:]]*tests and checks/q;p' "${1:-requirements.txt}" \
  | sed -e 's/[[:space:]]*#.*$//' | grep -v -E '^[[:space:]]*$'
