"""The import graph of the rnnlab package: no cycles, and the torch backend (the torch networks and
rnnlab.backends.torch) never reaches the NumPy backend.

Every import counts: at module level, inside functions (the lazy imports that keep ``--help`` fast) and under
``if TYPE_CHECKING``. ``from a.b import c`` is an edge to ``a.b`` and, when ``a.b.c`` is a module, to it too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rnnlab

pytestmark = pytest.mark.unit

PACKAGE = Path(rnnlab.__file__).resolve().parent


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of the package at ``root`` (a package's own name for its __init__.py)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """{module: {imported module of the same package: line of the first such import}}."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a function or class: its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def reachable(graph: dict[str, dict[str, int]], start: str) -> set[str]:
    """Every module importing ``start`` executes: its imports, theirs, and each one's parent packages."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in graph:
            continue
        seen.add(name)
        todo += list(graph[name])
        todo += [name.rsplit(".", k)[0] for k in range(1, name.count("."))]  # a.b.c runs a/__init__, a/b/__init__
    return seen


def describe(graph: dict[str, dict[str, int]], component: list[str], files: dict[str, Path]) -> str:
    edges = [f"{a} -> {b} ({files[a].relative_to(PACKAGE.parent)}:{graph[a][b]})"
             for a in component for b in graph[a] if b in component]  # fmt: skip
    return "import cycle: " + "; ".join(edges)


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The check itself: a cycle closed by a lazy, relative import inside a function is found."""
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from demo.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import thing\n    return thing\n")
    (pkg / "c.py").write_text("import demo.a as a\nthing = 1\n")
    graph = import_graph(pkg)
    assert graph["demo.sub.b"] == {"demo.c": 2}
    assert cycles(graph) == [["demo.a", "demo.c", "demo.sub.b"]]
    (pkg / "c.py").write_text("thing = 1\n")
    assert cycles(import_graph(pkg)) == []


def test_no_import_cycles():
    graph = import_graph(PACKAGE)
    files = module_files(PACKAGE)
    assert len(graph) > 50  # the whole package was read
    found = [describe(graph, component, files) for component in cycles(graph)]
    assert found == [], "\n".join(found)


def test_the_torch_backend_never_imports_the_numpy_backend():
    graph = import_graph(PACKAGE)
    torch_modules = [
        name for name in graph if name.startswith("rnnlab.models.torch") or name == "rnnlab.backends.torch"
    ]
    assert "rnnlab.backends.torch" in torch_modules
    assert len(torch_modules) > 1
    for name in torch_modules:
        reached = sorted(
            m for m in reachable(graph, name) if m.startswith("rnnlab.models.numpy") or m == "rnnlab.backends.numpy"
        )
        assert reached == [], f"{name} imports (directly or not) the NumPy backend: {reached}"
