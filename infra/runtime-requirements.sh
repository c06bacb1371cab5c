#!/bin/sh
# Print requirements.txt without the test-only packages: what the Lambda image installs.
# Usage: infra/runtime-requirements.sh [requirements.txt] > runtime.txt
set -eu
grep -v -i -E '^[[:space:]]*(moto|pytest[A-Za-z0-9_-]*|hypothesis|cfn-lint|ruff|pyvo|lsdb)([^A-Za-z0-9_.-]|$)' \
  "${1:-requirements.txt}" | grep -v -E '^[[:space:]]*(#|$)'
