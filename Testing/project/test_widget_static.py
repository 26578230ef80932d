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
import sys
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
    # Testing/ is built by its own CMake lists (the self test module, test_self_test_module.py checks them)
    return {f for f in files if not f.startswith("Testing/")} - {"CMakeLists.txt"}


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


#: The class each widget that XAIExplain.py touches must have in the .ui: what the code does with it
#: (items and data of a combo box, check states of list items, a node selector, ...) needs that class.
EXPECTED_CLASSES = {
    "applyButton": "QPushButton", "loadModelButton": "QPushButton", "modelSelector": "QComboBox",
    "modeSelector": "QComboBox", "deviceSelector": "QComboBox", "layerSelector": "QComboBox",
    "modalitySelector": "QComboBox", "modalityLabel": "QLabel",
    "targetSelector": "QComboBox", "methodList": "QListWidget", "modelInfoLabel": "QLabel",
    "statusLabel": "QLabel", "roiLabel": "QLabel", "pointLabel": "QLabel", "pointWidget": "QWidget",
    "progressBar": "QProgressBar", "inputVolumeLabel": "QLabel", "channelVolumesWidget": "QWidget",
    "opacitySlider": "ctkSliderWidget", "pointSelector": "qMRMLNodeComboBox",
    "pointPlaceWidget": "qSlicerMarkupsPlaceWidget", "roiSegmentSelector": "qMRMLSegmentSelectorWidget",
}
#: widget classes that parameterNodeWrapper's connectGui binds to a field of each type
BINDABLE = {"bool": {"QCheckBox", "ctkCheckBox"}, "float": {"ctkSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox",
                                                             "qMRMLSliderWidget"},
            "int": {"QSpinBox", "ctkSliderWidget"}, "str": {"QLineEdit", "QComboBox"},
            "node": {"qMRMLNodeComboBox"}}


def used_widget_names(tree) -> set:
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def test_every_widget_the_code_uses_has_the_class_the_code_expects(tree, ui):
    used = used_widget_names(tree)
    unknown = sorted(used - EXPECTED_CLASSES.keys())
    assert not unknown, f"XAIExplain.py uses widgets with no expected class (add them to EXPECTED_CLASSES): {unknown}"
    classes = ui_classes(ui)
    wrong = {name: (classes.get(name), EXPECTED_CLASSES[name]) for name in sorted(used)
             if classes.get(name) != EXPECTED_CLASSES[name]}
    assert not wrong, "widgets whose class in the .ui is not the expected one (found, expected): " + str(wrong)


def parameter_fields(tree) -> dict:
    """Field name -> 'bool' / 'float' / 'int' / 'str' or the MRML node class it holds."""
    fields = {}
    for stmt in class_node(tree, "XAIExplainParameterNode").body:
        if isinstance(stmt, ast.AnnAssign):
            annotation = stmt.annotation
            if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
                # Annotated[float, WithinRange(...)]; list[vtkMRML...Node] stays as written
                annotation = annotation.slice.elts[0]
            fields[stmt.target.id] = ast.unparse(annotation)
    return fields


def test_each_bound_widget_holds_its_parameter_type(tree, ui):
    """connectGui binds a checkbox to a bool, a slider to a float, a node selector to a node of its class."""
    fields = parameter_fields(tree)
    problems = []
    for widget in ui.iter("widget"):
        properties = {p.get("name"): p for p in widget.findall("property")}
        if "SlicerParameterName" not in properties:
            continue
        field = properties["SlicerParameterName"].find("string").text
        kind = fields.get(field)
        if kind is None:
            continue  # test_ui_parameter_bindings_exist_in_the_parameter_node reports it
        node = kind.startswith("vtkMRML")
        if widget.get("class") not in BINDABLE["node" if node else kind]:
            problems.append(f"{widget.get('name')} ({widget.get('class')}) cannot hold {field}: {kind}")
        elif node:
            types = [s.text for s in properties["nodeTypes"].iter("string")] if "nodeTypes" in properties else []
            if types != [kind]:
                problems.append(f"{widget.get('name')} offers {types}, {field} holds a {kind}")
    assert not problems, "\n".join(problems)


def test_the_class_checks_can_fail(tree, ui):
    broken = ET.fromstring(ET.tostring(ui))
    for widget in broken.iter("widget"):
        if widget.get("name") == "applyButton":
            widget.set("class", "QToolButton")
        if widget.get("name") == "opacitySlider":
            widget.set("class", "QCheckBox")
        if widget.get("name") == "inputVolumeSelector":
            next(p for p in widget.findall("property") if p.get("name") == "nodeTypes").find(
                "stringlist/string").text = "vtkMRMLLabelMapVolumeNode"
    with pytest.raises(AssertionError, match=r"'applyButton': \('QToolButton', 'QPushButton'\)"):
        test_every_widget_the_code_uses_has_the_class_the_code_expects(tree, broken)
    with pytest.raises(AssertionError, match=r"opacitySlider \(QCheckBox\) cannot hold opacity[\s\S]*"
                                             r"inputVolumeSelector offers \['vtkMRMLLabelMapVolumeNode'\]"):
        test_each_bound_widget_holds_its_parameter_type(tree, broken)


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
    assert "WITH_GENERIC_TESTS" in text and "add_subdirectory(Testing)" in text  # the self test's ctest


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
    """Slicer loads the module before PyTorch may be installed: at load time the module file imports
    only the library's logic (which itself imports no torch, see test_layout)."""
    top_level = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.append(node.module)
    assert not [name for name in top_level if name.split(".")[0] == "torch"], top_level
    library = [name for name in top_level if name.split(".")[0] == "XAIExplainLib"]
    assert library and all(name.startswith("XAIExplainLib.logic") for name in library), library


#: What the Extensions Index's review accepts at file scope besides the standard library ("Are any Python
#: packages imported at the file scope that are not from the Python Standard Library and not from Slicer,
#: vtk, SimpleITK, numpy, and scipy?"), plus this extension's own modules.
FILE_SCOPE_ALLOWED = {"qt", "ctk", "slicer", "vtk", "SimpleITK", "numpy", "scipy", "XAIExplain", "XAIExplainLib"}
SLICER_FILES = (WIDGET, MODULE / "Testing" / "Python" / "XAIExplainSelfTest.py")


def file_scope_imports(tree) -> list:
    """Top-level names imported outside any function (module body, class bodies, if / try blocks)."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.Import):
            found += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module.split(".")[0])
        pending += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    return found


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: p.name)
def test_third_party_packages_are_imported_only_inside_functions(path):
    imported = file_scope_imports(ast.parse(path.read_text(encoding="utf-8")))
    assert imported
    third_party = sorted({name for name in imported
                          if name not in sys.stdlib_module_names and name not in FILE_SCOPE_ALLOWED})
    assert not third_party, f"{path.name} imports {third_party} at file scope: import them inside the functions"
    broken = ast.parse(path.read_text(encoding="utf-8") + "\nclass Late:\n    import torch\n")
    assert "torch" in file_scope_imports(broken)  # a class body runs at import: it counts


def test_the_library_the_module_imports_at_load_brings_no_other_third_party_package():
    """XAIExplain.py imports XAIExplainLib.logic at file scope; that import may load only what the index's
    review accepts (numpy here), never torch or another optional package."""
    code = ("import sys; before = set(sys.modules); import XAIExplainLib.logic, XAIExplainLib.logic.dependencies; "
            "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                            check=True).stdout.split()
    third_party = sorted(name for name in loaded if name not in sys.stdlib_module_names
                         and not name.startswith("_") and name not in FILE_SCOPE_ALLOWED)
    assert "XAIExplainLib" in loaded and not third_party, third_party


def test_module_has_metadata_widget_logic_and_self_test(tree):
    for name in ("XAIExplain", "XAIExplainWidget", "XAIExplainLogic", "XAIExplainParameterNode"):
        class_node(tree, name)
    module = {f.name for f in class_node(tree, "XAIExplain").body if isinstance(f, ast.FunctionDef)}
    assert "runTest" in module  # runs the self test module (test_self_test_module.py)
    source = WIDGET.read_text(encoding="utf-8")
    assert 'self.parent.categories = ["Explainability"]' in source
    for resource in re.findall(r'resourcePath\("([^"]+)"\)', source):
        assert (MODULE / "Resources" / resource).is_file(), resource
    assert (MODULE / "Resources" / "Icons" / "XAIExplain.png").is_file()


def test_requirements_leave_torch_to_the_pytorch_extension():
    """torch comes from PyTorchUtils (a declared dependency), never from the module's pip requirements."""
    lines = [line.split("#")[0].strip() for line in
             (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    assert [line for line in lines if line] and not [line for line in lines if line.lower().startswith("torch")]


def test_top_level_cmake_is_a_slicer_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for needed in ("EXTENSION_HOMEPAGE", 'EXTENSION_CATEGORY "Analysis"', "EXTENSION_CONTRIBUTORS",
                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                   'EXTENSION_DEPENDS "PyTorch"', "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "add_subdirectory(XAIExplain)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                   "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in text, needed
    for url in re.findall(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(\S+?)\"", text):
        assert (ROOT / url).is_file(), f"extension metadata points at {url}, which is not in the repository"


# ---------------------------------------------------------------------------------------------
# Signals, slots and members the widget uses, against the API of the Qt / CTK / MRML classes.
# The tables list the documented API of each class (own members only; BASES adds the inherited
# ones). They are the part of each API this module may use: using something else means first
# checking it in the class's documentation and adding it here.

BASES = {
    "QWidget": None, "QLabel": "QWidget", "QAbstractButton": "QWidget", "QPushButton": "QAbstractButton",
    "QCheckBox": "QAbstractButton", "QComboBox": "QWidget", "QListWidget": "QWidget", "QProgressBar": "QWidget",
    "QTimer": None, "QAction": None, "QMenu": "QWidget", "qSlicerApplication": None,
    "ctkCollapsibleButton": "QAbstractButton", "ctkSliderWidget": "QWidget", "qMRMLWidget": "QWidget",
    "qSlicerWidget": "QWidget", "qMRMLNodeComboBox": "QWidget", "qMRMLSegmentSelectorWidget": "qMRMLWidget",
    "qSlicerMarkupsPlaceWidget": "qSlicerWidget",
}
SIGNALS = {
    "QWidget": set(),
    "QAbstractButton": {"clicked()", "clicked(bool)", "toggled(bool)", "pressed()", "released()"},
    "QComboBox": {"activated(int)", "currentIndexChanged(int)", "currentTextChanged(QString)",
                  "editTextChanged(QString)", "highlighted(int)"},
    "QListWidget": {"itemChanged(QListWidgetItem*)", "itemClicked(QListWidgetItem*)", "currentRowChanged(int)",
                    "itemSelectionChanged()"},
    "QTimer": {"timeout()"},
    "QAction": {"triggered()", "triggered(bool)", "toggled(bool)", "hovered()"},
    "qSlicerApplication": {"startupCompleted()"},
    "ctkSliderWidget": {"valueChanged(double)", "valueIsChanging(double)"},
    "qMRMLWidget": {"mrmlSceneChanged(vtkMRMLScene*)"},
    "qSlicerWidget": {"mrmlSceneChanged(vtkMRMLScene*)"},
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                          "currentNodeIDChanged(QString)", "nodeAdded(vtkMRMLNode*)", "nodeActivated(vtkMRMLNode*)"},
    "qMRMLSegmentSelectorWidget": {"currentNodeChanged(vtkMRMLNode*)", "currentSegmentChanged(QString)",
                                   "segmentSelectionChanged(QStringList)"},
    "qSlicerMarkupsPlaceWidget": {"activeMarkupsFiducialPlaceModeChanged(bool)"},
}
SLOTS = {
    "qMRMLWidget": {"setMRMLScene(vtkMRMLScene*)"}, "qSlicerWidget": {"setMRMLScene(vtkMRMLScene*)"},
    "qMRMLNodeComboBox": {"setMRMLScene(vtkMRMLScene*)", "setCurrentNode(vtkMRMLNode*)"},
}
MEMBERS = {
    "QWidget": {"setVisible", "enabled", "toolTip", "visible", "show", "hide", "connect", "layout"},
    "QLabel": {"text"},
    "QAbstractButton": {"text", "checked"},
    "QPushButton": {"setMenu", "showMenu"},
    "QComboBox": {"addItem", "addItems", "clear", "count", "currentData", "currentText", "findData", "itemData",
                  "itemText", "insertItem", "setCurrentIndex", "setCurrentText", "setItemData"},
    "QListWidget": {"addItem", "clear", "count", "item"},
    "QProgressBar": {"value"},
    "ctkSliderWidget": {"value"},
    "qMRMLWidget": {"setMRMLScene", "mrmlScene"}, "qSlicerWidget": {"setMRMLScene", "mrmlScene"},
    "qMRMLNodeComboBox": {"currentNode", "setCurrentNode", "setMRMLScene"},
    "qMRMLSegmentSelectorWidget": {"currentNode", "currentSegmentID", "setCurrentNode", "setCurrentSegmentID"},
    "qSlicerMarkupsPlaceWidget": {"buttonsVisible", "placeButton", "setCurrentNode", "currentNode",
                                  "setPlaceModeEnabled"},
}
#: what constructors / factory calls in the widget code return
FACTORIES = {"QTimer": "QTimer", "QMenu": "QMenu", "addAction": "QAction", "qMRMLNodeComboBox": "qMRMLNodeComboBox"}


def inherited(table: dict, class_name: str) -> set:
    found = set()
    while class_name is not None:
        assert class_name in BASES, f"{class_name}: not in the API tables of {Path(__file__).name}"
        found |= table.get(class_name, set())
        class_name = BASES[class_name]
    return found


def ui_classes(root) -> dict:
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def _sender_class(expr, function, classes) -> str | None:
    """Class of the object whose ``connect`` is called: a .ui widget, ``self._x = qt.QX()``, a local, slicer.app."""
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Attribute) and expr.value.attr == "ui":
        return classes.get(expr.attr)
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "slicer" \
            and expr.attr == "app":
        return "qSlicerApplication"
    target = ast.unparse(expr)
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(ast.unparse(t) == target for t in node.targets) \
                and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            return FACTORIES.get(name)
    return None


def connections(tree, root):
    """``(where, sender class, signal, slot expression)`` for every ``x.connect("signal", slot)`` call."""
    classes = ui_classes(root)
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.ClassDef)):
            continue
        for call in ast.walk(function):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "connect" \
                    and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
                sender = _sender_class(call.func.value, function, classes)
                found.append((f"{ast.unparse(call.func.value)} (line {call.lineno})", sender, call.args[0].value,
                              call.args[1] if len(call.args) > 1 else None))
    return found


def _arity(signal: str) -> int:
    inside = signal[signal.index("(") + 1:-1].strip()
    return 0 if not inside else inside.count(",") + 1


def _accepts(function: ast.FunctionDef, count: int, method: bool) -> bool:
    args = function.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    if method:
        positional = positional[1:]
    required = len(positional) - len(args.defaults)
    return required <= count and (args.vararg is not None or count <= len(positional))


def test_every_signal_the_widget_connects_exists_and_its_slot_takes_the_signal_arguments(tree, ui):
    widget = {f.name: f for f in class_node(tree, "XAIExplainWidget").body if isinstance(f, ast.FunctionDef)}
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    found = connections(tree, ui)
    assert len(found) >= 15, found
    problems = []
    for where, sender, signal, slot in found:
        if sender is None:
            problems.append(f"{where}: cannot tell the class of the sender")
            continue
        if signal not in inherited(SIGNALS, sender):
            problems.append(f"{where}: {sender} has no signal {signal}")
        if isinstance(slot, ast.Attribute) and isinstance(slot.value, ast.Name) and slot.value.id == "self":
            function, method = widget.get(slot.attr), True
        elif isinstance(slot, ast.Name):
            function, method = functions.get(slot.id), False
        else:
            problems.append(f"{where}: slot {ast.unparse(slot) if slot else None} is not a widget method or function")
            continue
        if function is None:
            problems.append(f"{where}: slot {ast.unparse(slot)} does not exist")
        elif not _accepts(function, _arity(signal), method):
            problems.append(f"{where}: {ast.unparse(slot)} cannot be called with the {_arity(signal)} "
                            f"argument(s) of {signal}")
    assert not problems, "\n".join(problems)


def test_every_member_the_widget_uses_on_a_ui_widget_is_part_of_its_class(tree, ui):
    classes = ui_classes(ui)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "ui":
            name = node.value.attr
            if name in classes and node.attr not in inherited(MEMBERS, classes[name]):
                problems.append(f"line {node.lineno}: self.ui.{name}.{node.attr} - {classes[name]} has no "
                                f"'{node.attr}'")
    assert not problems, "\n".join(problems)


def test_ui_connections_name_existing_widgets_signals_and_slots(ui):
    classes = ui_classes(ui)
    items = list(ui.iter("connection"))
    assert items
    for item in items:
        sender, signal = item.find("sender").text, item.find("signal").text
        receiver, slot = item.find("receiver").text, item.find("slot").text
        assert sender in classes and receiver in classes, (sender, receiver)
        assert signal in inherited(SIGNALS, classes[sender]), f"{classes[sender]} has no signal {signal}"
        assert slot in inherited(SLOTS, classes[receiver]), f"{classes[receiver]} has no slot {slot}"
        assert _arity(signal) == _arity(slot)


def test_widgets_that_need_the_scene_get_it_from_the_ui(ui):
    classes = ui_classes(ui)
    needs_scene = {name for name, cls in classes.items()
                   if cls in ("qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "qSlicerMarkupsPlaceWidget")}
    given = {item.find("receiver").text for item in ui.iter("connection")
             if item.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    assert needs_scene <= given, f"MRML widgets without a scene: {sorted(needs_scene - given)}"


def test_the_static_check_catches_a_wrong_signal_and_a_wrong_slot(ui):
    """The checks above must be able to fail: a bad signal / slot / member in a copy of the code is reported."""
    bad = WIDGET.read_text(encoding="utf-8").replace(
        'self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)',
        'self.ui.applyButton.connect("clicked(QString)", self.onApplyButtonTypo)').replace(
        "self.ui.progressBar.value = int(round(100 * fraction))", "self.ui.progressBar.valu = 1")
    tree = ast.parse(bad)
    with pytest.raises(AssertionError, match=r"QPushButton has no signal clicked\(QString\)[\s\S]*does not exist"):
        test_every_signal_the_widget_connects_exists_and_its_slot_takes_the_signal_arguments(tree, ui)
    with pytest.raises(AssertionError, match="QProgressBar has no 'valu'"):
        test_every_member_the_widget_uses_on_a_ui_widget_is_part_of_its_class(tree, ui)
