"""First-Apply installation: torch through the PyTorch extension when present, else pip; then requirements."""
from __future__ import annotations

from XAIExplainLib.logic import dependencies


def test_installs_torch_through_the_given_installer_then_the_requirements(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(dependencies, "missing_dependencies", lambda required=("torch",): ["torch"])
    dependencies.install_dependencies(tmp_path / "requirements.txt", pip_install=calls.append,
                                      torch_installer=lambda: calls.append("extension installs torch"))
    assert calls == ["extension installs torch", ["-r", str(tmp_path / "requirements.txt")]]


def test_without_the_extension_torch_comes_from_pip_and_nothing_twice(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(dependencies, "missing_dependencies", lambda required=("torch",): ["torch"])
    dependencies.install_dependencies("req.txt", pip_install=calls.append)
    assert calls == ["torch", ["-r", "req.txt"]]
    calls.clear()
    monkeypatch.setattr(dependencies, "missing_dependencies", lambda required=("torch",): [])
    dependencies.install_dependencies("req.txt", pip_install=calls.append, torch_installer=lambda: calls.append("x"))
    assert calls == [["-r", "req.txt"]]


def test_missing_dependencies_asks_python():
    assert dependencies.missing_dependencies(("torch",)) == []
    assert dependencies.missing_dependencies(("no_such_package_here",)) == ["no_such_package_here"]
