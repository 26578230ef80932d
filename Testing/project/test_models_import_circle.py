"""No import circle inside ``XAIExplainLib.models`` (issue 23 §3): the forms import the loader's pieces
(search paths, weight readers, network checks, the card form), never the dispatcher ``models.loading``.

The imports are read the way ``test_import_direction`` reads them (lazy, function-level imports count).
"""
from __future__ import annotations

from Testing.project.test_import_direction import FILES, _imports, _module_name


def _graph(prefix: str) -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in FILES}
    graph = {}
    for name, path in modules.items():
        if not name.startswith(prefix):
            continue
        targets = set()
        for module, _ in _imports(path):
            while module and module not in modules:  # "from .x import name": the module x
                module = module.rpartition(".")[0]
            if module and module != name and module.startswith(prefix):
                targets.add(module)
        graph[name] = targets
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_inside_models():
    circles = _circles(_graph("XAIExplainLib.models"))
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_sees_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
