"""Static checks of the Slicer module (no Qt here): the widget code, its .ui file and the CMake lists agree.

XAIExplain.py imports qt/ctk and cannot run outside Slicer, so it is read as
text / AST: every widget it touches must exist in the .ui, every parameter
bound in the .ui must exist in the parameter node, and CMake must package
every file of the module folder.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "XAIExplain"
WIDGET = MODULE / "XAIExplain.py"
UI = MODULE / "Resources" / "UI" / "XAIExplain.ui"
MODULE_CMAKE = MODULE / "CMakeLists.txt"


@pytest.fixture(scope="module")
def tree():
    return ast.parse(WIDGET.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ui():
    return ET.parse(UI).getroot()


def ui_widget_names(root) -> set:
    return {w.get("name") for w in root.iter("widget")} | {s.get("name") for s in root.iter("spacer")}


def ui_parameter_names(root) -> dict:
    found = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                found[widget.get("name")] = prop.find("string").text
    return found


def class_node(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"class {name} not found in {WIDGET.name}")


def module_files() -> set:
    """Files of the module folder as the repository sees them (ignored build output excluded)."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "XAIExplain"],
                                cwd=ROOT, capture_output=True, text=True, encoding="utf-8", check=True).stdout.split()
        files = {p[len("XAIExplain/"):] for p in listed if (ROOT / p).is_file()}
    else:
        files = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    return files - {"CMakeLists.txt"}


def cmake_list(name: str) -> list:
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert match, f"{name} is not set in {MODULE_CMAKE}"
    return [item.replace("${MODULE_NAME}", "XAIExplain") for item in match.group(1).split()]


def test_every_widget_the_code_uses_exists_in_the_ui_file(tree, ui):
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert used, "the widget code does not use self.ui at all"
    missing = used - ui_widget_names(ui)
    assert not missing, f"widgets used in XAIExplain.py but absent from {UI.name}: {sorted(missing)}"


def test_ui_parameter_bindings_exist_in_the_parameter_node(tree, ui):
    wrapper = class_node(tree, "XAIExplainParameterNode")
    fields = {stmt.target.id for stmt in wrapper.body if isinstance(stmt, ast.AnnAssign)}
    bound = ui_parameter_names(ui)
    assert {"inputVolume", "opacity"} <= set(bound.values())
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f"SlicerParameterName values with no parameter node field: {unknown}"


def test_custom_widgets_of_the_ui_are_declared(ui):
    declared = {c.find("class").text for c in ui.iter("customwidget")}
    used = {w.get("class") for w in ui.iter("widget")}
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widget classes not declared: {sorted(custom - declared)}"


def test_cmake_lists_every_python_and_resource_file_of_the_module():
    scripts, resources = cmake_list("MODULE_PYTHON_SCRIPTS"), cmake_list("MODULE_PYTHON_RESOURCES")
    files = module_files()
    python = {f for f in files if f.endswith(".py")}
    others = files - python
    missing = sorted(python - set(scripts))
    assert not missing, f"Python files missing from MODULE_PYTHON_SCRIPTS: {missing}"
    assert not others - set(resources), f"files missing from MODULE_PYTHON_RESOURCES: {sorted(others - set(resources))}"
    listed_but_absent = [f for f in scripts + resources if not (MODULE / f).is_file()]
    assert not listed_but_absent, f"listed in CMake but not on disk: {listed_but_absent}"
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_only_the_module_file_imports_qt_ctk_or_scripted_module_classes():
    offenders = []
    for path in (MODULE / "XAIExplainLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("qt", "ctk") or name.startswith("slicer.ScriptedLoadableModule"):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_module_file_imports_no_torch_at_load_time(tree):
    top_level = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.append(node.module.split(".")[0])
    assert "torch" not in top_level and "XAIExplainLib" not in top_level, top_level


def test_module_has_metadata_widget_logic_and_self_test(tree):
    for name in ("XAIExplain", "XAIExplainWidget", "XAIExplainLogic", "XAIExplainTest", "XAIExplainParameterNode"):
        class_node(tree, name)
    test = class_node(tree, "XAIExplainTest")
    methods = {f.name for f in test.body if isinstance(f, ast.FunctionDef)}
    assert "runTest" in methods and any(m.startswith("test_") for m in methods)
    source = WIDGET.read_text(encoding="utf-8")
    assert 'self.parent.categories = ["Explainability"]' in source
    for resource in re.findall(r'resourcePath\("([^"]+)"\)', source):
        assert (MODULE / "Resources" / resource).is_file(), resource
    assert (MODULE / "Resources" / "Icons" / "XAIExplain.png").is_file()


def test_requirements_name_torch():
    lines = [line.strip() for line in (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    assert any(line.startswith("torch") for line in lines if not line.startswith("#"))


def test_top_level_cmake_is_a_slicer_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for needed in ("EXTENSION_HOMEPAGE", 'EXTENSION_CATEGORY "Explainability"', "EXTENSION_CONTRIBUTORS",
                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                   'EXTENSION_DEPENDS "PyTorch"', "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "add_subdirectory(XAIExplain)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                   "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in text, needed
    for url in re.findall(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(\S+?)\"", text):
        assert (ROOT / url).is_file(), f"extension metadata points at {url}, which is not in the repository"
