"""Support modules for the tests (no tests here): paths, fault proxies, moto tweaks."""

from pathlib import Path

# the repository: tests find chalicelib/, infra/ and their data from here, wherever
# the test file itself sits under tests/
REPO_ROOT = Path(__file__).resolve().parents[2]
