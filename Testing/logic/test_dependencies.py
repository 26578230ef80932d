"""First-Apply installation: torch only through the PyTorch extension, then the requirements."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from XAIExplainLib.logic import dependencies

ROOT = Path(__file__).resolve().parents[2]


def test_installs_torch_through_the_given_installer_then_the_requirements(monkeypatch, tmp_path):
    calls = []
    state = {"torch": False}
    monkeypatch.setattr(dependencies, "missing_dependencies",
                        lambda required=("torch",): [] if state["torch"] else ["torch"])

    def extension_installs_torch():
        calls.append("extension installs torch")
        state["torch"] = True

    dependencies.install_dependencies(tmp_path / "requirements.txt", pip_install=calls.append,
                                      torch_installer=extension_installs_torch)
    assert calls == ["extension installs torch", ["-r", str(tmp_path / "requirements.txt")]]


def test_without_the_pytorch_extension_nothing_is_installed_and_the_error_says_what_to_do(monkeypatch):
    """The Extensions Index refuses pip-installing torch: without PyTorchUtils the user is told to add it."""
    calls = []
    monkeypatch.setattr(dependencies, "missing_dependencies", lambda required=("torch",): ["torch"])
    with pytest.raises(RuntimeError, match="install 'PyTorch' from the Extensions Manager"):
        dependencies.install_dependencies("req.txt", pip_install=calls.append)
    assert calls == []
    # the extension's installer ran but torch is still missing (declined, failed): no pip either
    with pytest.raises(RuntimeError, match="did not install PyTorch"):
        dependencies.install_dependencies("req.txt", pip_install=calls.append,
                                          torch_installer=lambda: calls.append("declined"))
    assert calls == ["declined"]


def test_with_torch_present_only_the_requirements_are_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(dependencies, "missing_dependencies", lambda required=("torch",): [])
    dependencies.install_dependencies("req.txt", pip_install=calls.append, torch_installer=lambda: calls.append("x"))
    assert calls == [["-r", "req.txt"]]


def test_the_requirements_pip_installs_do_not_name_torch():
    """`pip_install(["-r", requirements.txt])` must not pull torch in behind the extension's back."""
    lines = (ROOT / "XAIExplain" / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    names = [line.split("#")[0].strip() for line in lines]
    assert [n for n in names if n] and not [n for n in names if n.lower().startswith("torch")]


def test_no_code_calls_pip_install_with_torch():
    """The Extensions Index's review asks 'Does it directly use pip_install to install pytorch?'"""
    offenders = []
    for path in (ROOT / "XAIExplain").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "pip_install":
                text = ast.unparse(node)
                if "torch" in text.lower():
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text}")
    assert not offenders, offenders


def test_missing_dependencies_asks_python():
    assert dependencies.missing_dependencies(("torch",)) == []
    assert dependencies.missing_dependencies(("no_such_package_here",)) == ["no_such_package_here"]
