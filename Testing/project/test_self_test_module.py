"""The in-Slicer self test (XAIExplain/Testing/Python/XAIExplainSelfTest.py) is a module of its own with a
ctest entry, and its test case passes: it is run here against a real MRML scene from slicer-core, with
the two Slicer-application pieces it imports (the ScriptedLoadableModule base classes and the XAIExplain
module's logic class) stood in by their plain-Python equivalents."""
from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
import unittest
from pathlib import Path

import pytest

from Testing.support.slicer_scene import scene  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "XAIExplain"
SELF_TEST = MODULE / "Testing" / "Python" / "XAIExplainSelfTest.py"


def test_the_self_test_is_its_own_module_with_a_ctest_entry():
    tree = ast.parse(SELF_TEST.read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"XAIExplainSelfTest", "XAIExplainSelfTestTest"} <= set(classes)
    source = SELF_TEST.read_text(encoding="utf-8")
    assert 'self.parent.categories = ["Testing.TestCases"]' in source
    assert 'self.parent.dependencies = ["XAIExplain"]' in source
    test_methods = [f.name for f in classes["XAIExplainSelfTestTest"].body
                    if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")]
    run_test = next(f for f in classes["XAIExplainSelfTestTest"].body
                    if isinstance(f, ast.FunctionDef) and f.name == "runTest")
    called = {node.func.attr for node in ast.walk(run_test) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute)}
    assert test_methods and set(test_methods) <= called, f"runTest skips {set(test_methods) - called}"
    # no test left in the module file; its "Reload and Test" runs the self test module
    module_tree = ast.parse((MODULE / "XAIExplain.py").read_text(encoding="utf-8"))
    assert "XAIExplainTest" not in {n.name for n in module_tree.body if isinstance(n, ast.ClassDef)}
    assert "ScriptedLoadableModuleTest" not in (MODULE / "XAIExplain.py").read_text(encoding="utf-8")
    module_source = (MODULE / "XAIExplain.py").read_text(encoding="utf-8")
    assert 'importlib.import_module("XAIExplainSelfTest")' in module_source
    assert "selfTest.XAIExplainSelfTestTest()" in module_source
    # CMake: the module's testing folder is added under BUILD_TESTING; it builds the self test module and
    # registers it as a ctest (Slicer's slicer_add_python_unittest convention)
    module_cmake = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    testing = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", module_cmake, re.S).group(1)
    assert "add_subdirectory(Testing)" in testing
    assert "add_subdirectory(Python)" in (MODULE / "Testing" / "CMakeLists.txt").read_text(encoding="utf-8")
    python_cmake = (MODULE / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "set(SELF_TEST_NAME ${MODULE_NAME}SelfTest)" in python_cmake
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{SELF_TEST_NAME\}\s*SCRIPTS \$\{SELF_TEST_NAME\}\.py",
                     python_cmake)
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT \$\{SELF_TEST_NAME\}\.py", python_cmake)


@pytest.fixture
def self_test_module(scene, monkeypatch):  # noqa: F811
    import slicer

    from XAIExplainLib.logic import XAIExplainLogic

    shown = []

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            shown.append(message)

    base = types.ModuleType("slicer.ScriptedLoadableModule")
    base.ScriptedLoadableModule, base.ScriptedLoadableModuleTest = ScriptedLoadableModule, ScriptedLoadableModuleTest
    module = types.ModuleType("XAIExplain")
    module.XAIExplainLogic = XAIExplainLogic
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", base)
    monkeypatch.setitem(sys.modules, "XAIExplain", module)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None), raising=False)
    spec = importlib.util.spec_from_file_location("XAIExplainSelfTest", SELF_TEST)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded, shown


def test_the_self_test_case_passes_on_a_real_scene(self_test_module):
    loaded, shown = self_test_module
    loaded.XAIExplainSelfTestTest().runTest()
    assert shown == ["Heatmap lies on the bright object", "Cancel left the scene unchanged",
                     "Background run published on finish", "Cancel stopped the background run"]


def test_the_self_test_fails_when_the_heatmap_is_wrong(self_test_module, monkeypatch):
    """It can fail: a model whose evidence is the dark background puts the heatmap off the object."""
    import torch

    loaded, _ = self_test_module
    test_case = loaded.XAIExplainSelfTestTest()
    dark = loaded.XAIExplainSelfTestTest.brightObjectModel()
    with torch.no_grad():
        dark[0].weight.fill_(-1.0)
        dark[0].bias.fill_(-100.0)  # ReLU(-x - 100): only the -1000 HU air is positive
    monkeypatch.setattr(loaded.XAIExplainSelfTestTest, "brightObjectModel", staticmethod(lambda: dark))
    test_case.setUp()
    with pytest.raises(AssertionError):
        test_case.test_HeatmapLandsOnTheBrightObject()
