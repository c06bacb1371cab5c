"""The layer rule (CONTRIBUTING.md): each folder of chalicelib is one layer and imports
only point downward; no import cycle anywhere; an import inside a function is allowed
only when deferred on purpose and says why with a trailing `# deferred: <why>`.

An AST check of every module: module-level imports and imports inside functions alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "chalicelib"

# Top to bottom. A module may import its own layer and the layers below it, never above.
LAYERS: list[tuple[str, ...]] = [
    ("devtools",),  # developer tooling: CLI, demo, local server, synth, benchmarks
    ("lambdas",),  # Lambda entry points
    ("services",),  # one module or package per protocol
    ("web",),  # HTTP plumbing, no protocol knowledge
    ("photometry",),  # engines, in their own linear order ...
    ("cutout",),
    ("query",),
    ("render",),
    ("jobs",),  # ... down to the job runtime
    ("ingest",),  # the write path
    ("lake",),  # storage, schema, Delta tables, releases, MOCs
    ("geometry",),  # spherical kernels and their SQL forms
    ("config", "dali", "outbound"),  # base modules, importable by all
]
ENTRY_SHIMS = {"chalicelib.__main__", "chalicelib"}  # not part of any layer
MARKER = "# deferred:"


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if module in ENTRY_SHIMS or parts[0] != "chalicelib" or len(parts) < 2:
        return None
    for rank, names in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    raise AssertionError(f"{module} is in no layer; add its folder to LAYERS in {__file__}")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The chalicelib modules a `from ... import ...` names (a submodule if it is one)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("chalicelib"):
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def imports(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported chalicelib module, line, inside a function?, source line) of a file."""
    module, is_package = module_name(path), path.name == "__init__.py"
    source = path.read_text()
    lines = source.splitlines()
    found: list[tuple[str, int, bool, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                targets = resolve(module, is_package, child) or [child.module or "."]
            else:
                visit(child, inner)
                continue
            for target in targets:
                found.append((target, child.lineno, in_function, lines[child.lineno - 1]))

    visit(ast.parse(source), False)
    return found


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports(p) for p in FILES}


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def upward(graph: dict[str, list[tuple[str, int, bool, str]]]) -> list[str]:
    bad = []
    for module, found in graph.items():
        here = layer_of(module)
        for target, line, _, _ in found:
            there = layer_of(target) if target.startswith("chalicelib") else None
            if here is not None and there is not None and there < here:
                bad.append(f"{module}:{line} imports {target} "
                           f"({LAYERS[here][0]} may not import {LAYERS[there][0]})")
    return bad


def test_imports_only_point_downward() -> None:
    assert upward(GRAPH) == []


def cycles(graph: dict[str, list[tuple[str, int, bool, str]]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), plus self-imports.
    A package's __init__ importing its own submodules is not a cycle by itself, but any
    loop through other modules is."""
    edges = {m: sorted({t for t, *_ in found if t in graph and t != m})
             for m, found in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 and not _package_and_its_parts(group):
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def _package_and_its_parts(group: list[str]) -> bool:
    """`pkg/__init__.py` re-exporting `pkg.a`, which imports a sibling `from . import b`,
    resolves through the package: a loop of names, not of work. Accepted only when every
    member is the package or one of its own submodules and only the package imports
    upward into itself."""
    top = min(group, key=len)
    return all(m == top or m.startswith(top + ".") for m in group) and all(
        t != top for m in group if m != top for t, *_ in GRAPH[m])


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


# Not in the Lambda image, so no cold start to protect: each command and benchmark
# imports what it runs when it runs (the layer and cycle rules still hold there).
UNMARKED_OK = ("chalicelib.devtools.",)


def unmarked(graph: dict[str, list[tuple[str, int, bool, str]]]) -> list[str]:
    return [f"{m}:{line}: {text.strip()}" for m, found in graph.items()
            if not m.startswith(UNMARKED_OK)
            for _, line, in_function, text in found if in_function and MARKER not in text]


def test_imports_inside_functions_say_why() -> None:
    assert unmarked(GRAPH) == []


@pytest.mark.parametrize("bad", [
    ("chalicelib.lake.storage", "chalicelib.query.catalogue", False, "from x import y"),
    ("chalicelib.jobs.runtime", "chalicelib.web.params", True,
     "    from ..web import params  # deferred: cold start"),
])
def test_the_check_catches_an_upward_import(bad) -> None:
    module, target, in_function, text = bad
    graph = {**GRAPH, module: [*GRAPH[module], (target, 1, in_function, text)]}
    assert any(f"{module}:1 imports {target}" in b for b in upward(graph))


def test_the_check_catches_a_cycle_and_an_unmarked_deferral() -> None:
    graph = {**GRAPH,
             "chalicelib.query.catalogue": [*GRAPH["chalicelib.query.catalogue"],
                                            ("chalicelib.query.products", 1, True,
                                             "    from . import products")]}
    assert ["chalicelib.query.catalogue", "chalicelib.query.products"] in cycles(graph)
    assert any("chalicelib.query.catalogue:1" in u for u in unmarked(graph))
