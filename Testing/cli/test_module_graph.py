"""The command line's modules import each other in one direction, and each rule has one home.

Issue 23 section 3: ``explain_run -> cohort -> explain_one -> explain_run`` (and
``cluster``) was a circle.  The settings, the plan and the model loaded per
process now live in ``run_plan``, which imports none of the modules that run
inputs; the test reads every import (lazy ones too) and fails on any circle.
"""
from __future__ import annotations

import dataclasses

import pytest

from Testing.project.test_import_direction import FILES, PACKAGE, _imports, _module_name

CLI = "XAIExplainLib.cli"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in FILES:
        name = _module_name(path)
        if not name.startswith(CLI + "."):
            continue
        graph[name] = {m for m, _ in _imports(path) if m.startswith(CLI + ".") and m != name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str]:
    """A list of modules that import each other in a circle (first one repeated), or []."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        trail.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_circle_between_the_cli_modules():
    graph = _graph()
    assert {f"{CLI}.run_plan", f"{CLI}.cohort", f"{CLI}.explain_one"} <= set(graph)
    assert find_circle(graph) == [], " -> ".join(find_circle(graph))


def test_run_plan_imports_none_of_the_modules_that_run_inputs():
    runs = {f"{CLI}.{m}" for m in ("cohort", "explain_one", "explain_run", "explain_command")}
    assert not (_graph()[f"{CLI}.run_plan"] & runs)


def test_the_circle_finder_sees_the_old_circle():
    old = {"explain_run": {"cohort", "explain_one"}, "cohort": {"explain_one", "explain_run"},
           "explain_one": {"explain_run"}, "cluster": {"explain_one"}}
    circle = find_circle(old)
    assert circle[0] == circle[-1] and set(circle) == {"cohort", "explain_one", "explain_run"}
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_one_settings_class_travels_and_the_cli_has_no_explain_job():
    """The CLI's settings are one frozen dataclass; ``ExplainJob`` is only the logic's worker job."""
    from XAIExplainLib.cli import explain_one, explain_run, run_plan

    settings = run_plan.explain_settings("ct-phase-2d", ["gradcam"],
                                         label_threshold="0.5")
    assert settings.methods == ("gradcam",) and settings.label_threshold == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.methods = ("saliency",)  # type: ignore[misc]
    for module in (run_plan, explain_one, explain_run):
        assert not hasattr(module, "ExplainJob") and not hasattr(module, "CohortSpec")
    cli_text = "\n".join(p.read_text(encoding="utf-8") for p in (PACKAGE / "cli").glob("*.py"))
    assert "argparse.Namespace(" not in (PACKAGE / "cli" / "cohort.py").read_text(encoding="utf-8")
    assert "ExplainJob" not in cli_text
