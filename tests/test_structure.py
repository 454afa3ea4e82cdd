"""The package's shape: no import circles, a pure graph layer, backend-blind methods, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "explainer"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _walk(node: ast.AST):
    """``ast.walk`` without ``if TYPE_CHECKING:`` blocks (annotations only, never run)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and getattr(child.test, "id", "") == "TYPE_CHECKING":
            continue
        yield from _walk(child)


def _imports(path: Path) -> set[str]:
    """Every explainer module ``path`` imports, at the top or inside a function."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = set()
    for node in _walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("explainer")}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
            if not target.startswith("explainer"):
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {t for t in _imports(p) if t in files and t != m} for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a list of modules), or None. Importing a package's submodule runs
    the package's ``__init__`` first; those edges are left out (they are not circles of ours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m], _ = 1, stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m], _ = 2, stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circles():
    graph = _graph()
    for m in graph:  # a package importing its own submodules (re-exports) is not a circle
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".") and not (t.startswith(m + ".")
                                                                             and m == "explainer")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_graph_imports_only_onnx_numpy_and_errors():
    for path in (PACKAGE / "graph").glob("*.py"):
        outside = {t for t in _imports(path) if not t.startswith("explainer.graph")} - {"explainer.errors",
                                                                                     "explainer.errors.InputError"}
        assert not outside, f"{path.name} imports {sorted(outside)}"
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert names <= {"onnx", "numpy", "__future__", "dataclasses", "typing", "json", "math", "itertools",
                         "collections", "functools", "hashlib", "re"}, f"{path.name}: {sorted(names)}"


def test_methods_never_import_a_backend():
    for path in (PACKAGE / "methods").glob("*.py"):
        assert "backends" not in path.read_text(), path.name
        assert "onnxruntime" not in {t.split(".")[0] for t in _imports(path)}


def test_triton_lives_in_one_package():
    for path in PACKAGE.rglob("*.py"):
        if "backends/triton" not in path.as_posix():
            assert "tritonclient" not in path.read_text(), path


def test_every_module_is_under_300_lines():
    # explainer/data/ holds the bundled model's export script: data shipped with the package, not a module
    long = {p.relative_to(PACKAGE).as_posix(): n for p in PACKAGE.rglob("*.py")
            if "data" not in p.relative_to(PACKAGE).parts and (n := len(p.read_text().splitlines())) >= 300}
    assert not long, long
