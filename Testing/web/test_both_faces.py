"""The Slicer panel and the web page offer the same choices for a model (one description, two faces).

The Qt panel cannot run here (no Slicer), so its filling methods are taken from XAIExplain.py's
source and run against recording stand-ins for its Qt widgets; the web page's bridge runs for
real on a trame-slicer scene. Both must list the same methods (with the same enabled flags and
reasons), targets, layers, modes and devices, in the same words.
"""
from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from XAIExplainLib.logic import XAIExplainLogic, choices

from .browser import require_web

WIDGET = Path(__file__).resolve().parents[2] / "XAIExplain" / "XAIExplain.py"
FILLING = ("showModel", "fillChannelSelectors", "fillMethods", "fillTargets", "fillLayers", "fillModalities",
           "refreshDeviceChoices",
           "selectData", "onMethodsChanged", "onTargetChanged")


class Item:
    def __init__(self, text):
        self.text, self.values, self.flags, self.check, self.tip = text, {}, 0, 0, ""

    def setData(self, role, value):
        self.values[role] = value

    def data(self, role):
        return self.values.get(role)

    def setFlags(self, flags):
        self.flags = flags

    def setCheckState(self, state):
        self.check = state

    def checkState(self):
        return self.check

    def setToolTip(self, text):
        self.tip = text


class Widget:
    """Records what the panel puts into a combo box, a list or a label."""

    def __init__(self):
        self.items, self.text, self.visible, self.current = [], "", True, ""

    def clear(self):
        self.items = []

    def addItem(self, item, value=None):
        self.items.append(item if isinstance(item, Item) else (item, value))

    def addItems(self, texts):
        self.items.extend((t, None) for t in texts)

    def setCurrentText(self, text):
        self.current = text

    def findData(self, value):
        return -1

    def setVisible(self, visible):
        self.visible = visible

    @property
    def count(self):
        return len(self.items)

    @property
    def currentData(self):
        return ""


QT = types.SimpleNamespace(QListWidgetItem=Item, Qt=types.SimpleNamespace(
    ItemIsUserCheckable=16, ItemIsEnabled=32, NoItemFlags=0, Checked=2, Unchecked=0, UserRole=256))


def qt_panel(logic):
    """The panel's filling methods, compiled from XAIExplain.py, on recording widgets."""
    tree = ast.parse(WIDGET.read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "XAIExplainWidget")
    methods = [n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name in FILLING]
    assert {m.name for m in methods} == set(FILLING), "the panel's filling methods were renamed"
    panel_class = ast.ClassDef(name="Panel", bases=[], keywords=[], body=methods, decorator_list=[])
    module = ast.fix_missing_locations(ast.Module(body=[panel_class], type_ignores=[]))
    namespace = {"qt": QT, "missing_dependencies": lambda: []}
    exec(compile(module, str(WIDGET), "exec"), namespace)  # noqa: S102 - the project's own source
    panel = namespace["Panel"]()
    panel.logic, panel._parameterNode, panel._updatingGui, panel._job = logic, None, False, None
    panel._channelSelectors = []
    panel.ui = types.SimpleNamespace(**{name: Widget() for name in (
        "modelInfoLabel", "methodList", "targetSelector", "layerSelector", "deviceSelector", "roiSegmentSelector",
        "roiLabel", "pointWidget", "pointLabel", "inputVolumeLabel", "channelVolumesWidget", "modalitySelector",
        "modalityLabel")})
    return panel


def test_the_panel_fills_its_mode_menu_from_the_logics_modes():
    tree = ast.parse(WIDGET.read_text(encoding="utf-8"))
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For) and ast.unparse(n.iter) == "choices.MODES"]
    assert loops and "self.ui.modeSelector.addItem(text, value)" in ast.unparse(loops[0])
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    own = literals & ({text for text, _ in choices.MODES} | {choices.PREDICTED_ITEM, choices.ROI_ITEM,
                                                             choices.POINT_ITEM, choices.LOAD_ITEM})
    assert not own, f"XAIExplain.py keeps its own menu texts: {own}"


@pytest.fixture(scope="module")
def web_bridge(tmp_path_factory):
    require_web()
    from trame.app import get_server

    from XAIExplainLib.web.bridge import Bridge
    from XAIExplainLib.web.scene_app import SceneApp
    from XAIExplainLib.web.security import AllowedPaths

    server = get_server("both-faces-test", client_type="vue3")
    return Bridge(server, SceneApp(server), AllowedPaths())


@pytest.mark.parametrize("model", ["lung-nodule-2d", "lung-nodule-seg-3d", "ct-phase-2d", "liver-seg-3d"])
def test_both_faces_offer_the_same_choices(model, web_bridge):
    panel = qt_panel(XAIExplainLogic())
    panel.showModel(model)
    panel.refreshDeviceChoices()
    web_bridge.state.model = model
    web_bridge.on_model(model)
    state = web_bridge.state
    qt_methods = [(i.text, i.data(QT.Qt.UserRole), bool(i.flags & QT.Qt.ItemIsEnabled), i.tip)
                  for i in panel.ui.methodList.items]
    web_methods = [(m["title"], m["value"], not m["props"]["disabled"], m["props"]["subtitle"] or m["value"])
                   for m in state.method_items]
    assert qt_methods == web_methods and len(qt_methods) > 20
    assert any(not enabled for _, _, enabled, _ in qt_methods)  # some methods do not apply to this model
    assert panel.ui.targetSelector.items == [(t["title"], t["value"]) for t in state.target_items]
    assert [text for text, _ in panel.ui.layerSelector.items] == state.layer_items
    assert panel.ui.layerSelector.current == state.layer
    assert panel.ui.deviceSelector.items == [(d["title"], d["value"]) for d in state.device_items]
    assert [(m["title"], m["value"]) for m in state.mode_items] == list(choices.MODES)
    assert panel.ui.modelInfoLabel.text == state.model_description
    assert panel.ui.inputVolumeLabel.text == choices.INPUT_LABEL and not panel.ui.channelVolumesWidget.visible
    assert panel.ui.modalitySelector.items == [(m["title"], m["value"]) for m in state.modality_items]
    offers_modalities = model == "liver-seg-3d"  # CT and MR: Auto, CT, MR; the others have one pipeline
    assert panel.ui.modalitySelector.visible == offers_modalities == bool(state.modality_items)
    if offers_modalities:
        assert [m["value"] for m in state.modality_items] == ["", "CT", "MR"]
