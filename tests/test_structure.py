"""The shape of the package, as docs/architecture.md draws it: checked, so that it holds.

No module imports another that (directly or around a loop) imports it back; no module grows past
a size a reader takes in at once; an operation module imports no sibling (what they share lives
in ``operations/checks.py``); no private name is imported from another module (a name two
modules use is public in the module that owns it). Imports under ``if TYPE_CHECKING:`` are for
the type checker only and do not count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "persistence"
MAX_LINES = 450


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _runtime_imports(path: Path) -> Iterator[ast.Import | ast.ImportFrom]:
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only:
            yield node


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for each target of an import statement."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [(base, alias.name) for alias in node.names]


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, path in MODULES.items():
        for node in _runtime_imports(path):
            for target, name in _imported(module, node):
                for candidate in (f"{target}.{name}" if name else None, target):
                    if candidate in MODULES and candidate != module:
                        edges[module].add(candidate)
                        break
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_around_a_loop() -> None:
    assert _cycles(_edges()) == []


def test_the_cycle_check_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_longer_than_a_reader_takes_in(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it along a seam"


def test_no_operation_module_imports_a_sibling() -> None:
    shared = {"persistence.operations", "persistence.operations.checks"}
    siblings = {m for m in MODULES if m.startswith("persistence.operations.")} - shared
    for module in siblings:
        assert not (_edges()[module] & siblings), f"{module} imports {_edges()[module] & siblings}"


def test_no_private_name_crosses_a_module() -> None:
    crossing = [
        f"{module} imports {name} from {target}"
        for module, path in MODULES.items()
        for node in _runtime_imports(path)
        for target, name in _imported(module, node)
        if name
        and name.startswith("_")
        and not name.startswith("__")
        and target.startswith("persistence")
        and target != module
    ]
    assert crossing == []
