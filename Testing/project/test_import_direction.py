"""Every import inside XAIExplainLib follows the dependency direction of DESIGN.md section 1.

engine <- evaluation <- models <- logic, cli; imaging and mrml are leaves; nothing in the
library imports logic or cli; no module imports the package's own top level; no two modules
import each other in a circle, however long. Function-level (lazy) imports count too: they are
dependencies all the same.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "XAIExplain" / "XAIExplainLib"

# which top-level parts of the package each part may import (besides itself)
ALLOWED = {
    "engine": set(),
    "evaluation": {"engine", "imaging"},  # imaging.thresholds: the one Otsu
    "imaging": set(),
    "mrml": {"resources", "imaging"},  # the two leaves: mrml reuses imaging's SimpleITK helpers
    "models": {"engine", "evaluation", "imaging", "resources"},
    "logic": {"engine", "evaluation", "models", "imaging", "mrml", "resources"},
    "cli": {"engine", "evaluation", "models", "imaging", "resources"},
    "resources": set(),
}
# third-party libraries the torch-only engine never imports
NOT_IN_ENGINE = {"SimpleITK", "vtk", "slicer", "monai", "nnunetv2", "dask", "distributed", "mrml"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(absolute module name, line) of every import in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if node.module is None or (module == "XAIExplainLib" and node.level):
                for alias in node.names:  # "from . import x": x may be a submodule
                    yield f"{module}.{alias.name}", node.lineno
            else:
                yield module, node.lineno


def _part(module: str) -> str | None:
    parts = module.split(".")
    if module == "XAIExplainLib.__version__":  # a constant of the top level, not its API
        return None
    return parts[1] if parts[0] == "XAIExplainLib" and len(parts) > 1 else None


FILES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_there_are_files_to_check():
    assert len(FILES) > 50 and all(_part(_module_name(p)) for p in FILES if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_dependency_direction(path):
    own = _part(_module_name(path))
    if own is None:  # the package's own __init__ re-exports the public API
        return
    wrong = []
    for module, line in _imports(path):
        if module == "XAIExplainLib":
            wrong.append(f"line {line}: imports the package's top level; import from where it lives")
            continue
        part = _part(module)
        if part is not None and part != own and part not in ALLOWED[own]:
            wrong.append(f"line {line}: {own} imports {module}")
        if own == "engine" and module.split(".")[0] in NOT_IN_ENGINE:
            wrong.append(f"line {line}: the torch-only engine imports {module}")
    assert not wrong, f"{path.relative_to(PACKAGE)}: " + "; ".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The test is able to fail: an engine module importing models, and one importing the top level."""
    fake = PACKAGE / "engine" / "_probe_for_test.py"
    assert not fake.exists()
    try:
        fake.write_text("from ..models import load_model\nimport XAIExplainLib as xai\nimport SimpleITK\n", encoding="utf-8")
        found = [m for m, _ in _imports(fake)]
        assert found == ["XAIExplainLib.models", "XAIExplainLib", "SimpleITK"]
        with pytest.raises(AssertionError, match="engine imports XAIExplainLib.models.*package's top level.*"
                                                 "torch-only engine imports SimpleITK"):
            test_imports_follow_the_dependency_direction(fake)
    finally:
        fake.unlink()


def _import_graph(files) -> dict[str, set[str]]:
    """module -> the package's modules it imports (lazy imports included).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``
    (its ``__init__``). Parent packages that Python initialises on the way are not edges:
    they are what "importing a module" costs, not a dependency the file chose.
    """
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        graph[name] = set()
        for module, _ in _imports(path):
            if module in modules and module != name:
                graph[name].add(module)
            elif module.rsplit(".", 1)[0] in modules and module.rsplit(".", 1)[0] != name:
                graph[name].add(module.rsplit(".", 1)[0])  # "from pkg import function"
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, circles = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
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
                        circles.append(sorted(component))
    return sorted(circles)


def _one_cycle(graph, component) -> list[str]:
    """A shortest path round the circle from its first module, to show in the message."""
    members = set(component)
    start = component[0]
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [start] + path[::-1][1:] + [start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def _describe(graph, circles) -> str:
    short = lambda m: m.removeprefix("XAIExplainLib.")  # noqa: E731
    return "\n".join(f"{len(c)} modules import each other: {', '.join(map(short, c))}\n"
                     f"  e.g. {' -> '.join(map(short, _one_cycle(graph, c)))}" for c in circles)


def test_no_two_modules_import_each_other_in_a_circle():
    graph = _import_graph(FILES)
    circles = import_circles(graph)
    assert not circles, "import circles (lazy imports count):\n" + _describe(graph, circles)


def test_the_circle_checker_sees_a_circle():
    """The check is able to fail: a circle of three lazy imports, a self-import and a tail that is no circle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "a"}}
    assert import_circles(graph) == [["a", "b", "c"]]
    assert _one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    fake = PACKAGE / "engine" / "_probe_circle_a.py"
    other = PACKAGE / "engine" / "_probe_circle_b.py"
    assert not fake.exists() and not other.exists()
    try:
        fake.write_text("def f():\n    from . import _probe_circle_b\n", encoding="utf-8")
        other.write_text("from ._probe_circle_a import f\n", encoding="utf-8")
        graph = _import_graph([fake, other])
        assert import_circles(graph) == [["XAIExplainLib.engine._probe_circle_a", "XAIExplainLib.engine._probe_circle_b"]]
    finally:
        fake.unlink()
        other.unlink()
