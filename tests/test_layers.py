"""The package's layering, read from its import statements (no import runs): the verdict is pure, the store sits on
it, measuring never reaches up into the pytest face, and nothing imports in a circle. The README's
developing section draws the same layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest_rfdetr_latency

PACKAGE = Path(pytest_rfdetr_latency.__file__).parent
PREFIX = "pytest_rfdetr_latency."

# The parts, bottom up: one subpackage each, and the pytest face (the package's top-level modules) above them all.
# A module may import its own part's modules and those of the parts below it; each part's __init__ says the same.
ORDER = ["verdict", "store", "measure", "report", "trends", "face"]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_rfdetr_latency"):
            sub = node.module[len(PREFIX):] if node.module != "pytest_rfdetr_latency" else ""
            for alias in node.names:  # a module of a subpackage (from .verdict import judge), or a name in one
                inner = f"{sub}.{alias.name}" if sub else alias.name
                deps.add(inner if inner in modules else sub)
        elif isinstance(node, ast.Import):
            deps |= {alias.name[len(PREFIX):] for alias in node.names if alias.name.startswith(PREFIX)}
    return {d for d in deps if d in modules}


def _part(module: str) -> str:
    head = module.split(".")[0]
    return head if head in ORDER else "face"


def test_every_part_is_a_subpackage_that_says_its_job_and_what_it_may_import() -> None:
    for part in ORDER[:-1]:
        init = PACKAGE / part / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        below = ", ".join(ORDER[:ORDER.index(part)]) or "nothing else of this package"
        assert f"May import: {below}" in doc, f"{init}: its docstring should say 'May import: {below}'"
    face = {name for name in _modules() if name and _part(name) == "face"}
    assert face == {"collector", "fixtures", "hookspecs", "plugin", "runner", "sigterm", "stash", "suite"}, sorted(face)


def test_no_module_imports_a_part_above_its_own() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        if not name:
            continue
        for dep in _imports(path, modules) - {""}:
            if ORDER.index(_part(dep)) > ORDER.index(_part(name)):
                upward.append(f"{name} ({_part(name)}) imports {dep} ({_part(dep)})")
    assert not upward, "\n".join(sorted(upward))


def test_the_imports_form_no_circle() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name, ""} for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for dep in graph[name]:
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_the_verdict_imports_no_measuring_library_at_module_level() -> None:
    heavy = {"torch", "onnxruntime", "rfdetr", "numpy", "pytest"}
    for name in [m for m in _modules() if m.startswith("verdict.")]:
        tree = ast.parse(_modules()[name].read_text())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
        top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
        assert not top & heavy, f"{name} imports {sorted(top & heavy)}"


def test_functions_stay_short_and_a_long_module_says_why() -> None:
    long_functions, unexplained = [], []
    for name, path in _modules().items():
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            length = (node.end_lineno or 0) - node.lineno + 1 if isinstance(node, ast.FunctionDef) else 0
            if length > 60:
                long_functions.append(f"{name}.{getattr(node, 'name', '?')}: {length} lines")
        if len(text.splitlines()) > 350 and "# Over 350 lines on purpose:" not in text:
            unexplained.append(f"{name}: {len(text.splitlines())} lines")
    assert not long_functions, long_functions
    assert not unexplained, f"split these, or say why they are one module: {unexplained}"
