"""One settings object (chalicelib.config): every setting comes from Settings.from_env,
no module reads the environment at import, and only config reads it for a setting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from chalicelib import config

PACKAGE = Path(__file__).resolve().parents[1] / "chalicelib"
# AWS credentials are the SDKs' own chain, not settings: passed on where a client is built
CREDENTIALS_OK = {"lake/storage.py"}
# developer tooling sets up environments for the servers it starts
TOOLING = ("devtools/",)


def _environ_reads(tree: ast.AST, top_level_only: bool) -> list[int]:
    """Lines reading os.environ / os.getenv (or calling settings()), optionally only
    those that run at import (outside any function body)."""
    found: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                              | ast.Lambda)
            hit = (isinstance(child, ast.Attribute) and child.attr in ("environ", "getenv")
                   and isinstance(child.value, ast.Name) and child.value.id == "os")
            hit = hit or (isinstance(child, ast.Call) and isinstance(child.func, ast.Name)
                          and child.func.id == "settings")
            if hit and not (top_level_only and inner):
                found.append(child.lineno)
            visit(child, inner)

    visit(tree, False)
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_no_module_reads_the_environment_at_import() -> None:
    bad = [f"{_rel(p)}:{line}" for p in FILES
           for line in _environ_reads(ast.parse(p.read_text()), top_level_only=True)]
    assert bad == []


def test_only_config_reads_settings_from_the_environment() -> None:
    bad = []
    for p in FILES:
        rel = _rel(p)
        if rel == "config.py" or rel in CREDENTIALS_OK or rel.startswith(TOOLING):
            continue
        tree = ast.parse(p.read_text())
        bad += [f"{rel}:{n.lineno}" for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv")
                and isinstance(n.value, ast.Name) and n.value.id == "os"]
    assert bad == []


def test_the_check_sees_an_import_time_read() -> None:
    tree = ast.parse("import os\nX = os.environ.get('A')\n\ndef f():\n    return os.environ\n")
    assert _environ_reads(tree, top_level_only=True) == [2]


def test_defaults_without_any_environment() -> None:
    s = config.Settings.from_env({})
    assert s == config.Settings(sync_slots=s.sync_slots)
    assert (s.archive_url, s.public_url, s.rate_limit, s.tap_sync_timeout) == \
        ("./archive", None, 50.0, 25.0)
    assert s.state_machine_arn("tap") is None


def test_values_from_the_environment() -> None:
    s = config.Settings.from_env({
        "PUBLIC_URL": "https://archive.example.org/", "TRUSTED_PROXY": "1",
        "SIA_HARD_MAXREC": "7", "ARCHIVE_RELEASE": "3", "MERGE_EVERY": "4",
        "SODA_STATE_MACHINE_ARN": "arn:aws:states:x:1:stateMachine:soda",
        "AWS_ENDPOINT_URL": "http://moto:5000", "AWS_DEFAULT_REGION": "eu-west-1",
        "OUTBOUND_ALLOW": "Host.Test:80, [::1]:8080, junk", "AWS_LAMBDA_FUNCTION_NAME": "f"})
    assert s.public_url == "https://archive.example.org" and s.trusted_proxy
    assert (s.sia_hard_maxrec, s.archive_release, s.merge_every) == (7, 3, 4)
    assert s.state_machine_arn("SODA") == "arn:aws:states:x:1:stateMachine:soda"
    assert (s.s3_endpoint_url, s.aws_region, s.in_lambda) == ("http://moto:5000",
                                                              "eu-west-1", True)
    assert s.outbound_allow == (("::1", 8080), ("host.test", 80))


def test_settings_are_kept_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "one")
    first = config.settings()
    monkeypatch.setenv("STAGE", "two")
    assert config.settings() is first and first.stage == "one"
    config.reset()
    assert config.settings().stage == "two"
