"""XAI Explain: see what a deep learning model looks at in a CT or MRI volume.

This file is the Slicer-facing shell: module metadata and the Qt panel; the
in-Slicer self test is a module of its own (Testing/Python/XAIExplainSelfTest.py).
Every decision is made by ``XAIExplainLib`` (importable without Slicer), and
torch is imported only after the user agreed to install it, never when Slicer
loads the module.
"""
import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from XAIExplainLib.logic import XAIExplainLogic as CoreLogic
from XAIExplainLib.logic.dependencies import NO_PYTORCH_EXTENSION, install_dependencies, missing_dependencies

POLL_MS = 200  # how often the panel reads the running job's progress


class XAIExplain(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "XAI Explain"
        self.parent.categories = ["Explainability"]
        self.parent.dependencies = []
        self.parent.contributors = ["XAIExplain developers"]
        self.parent.helpText = (
            "Attribution heatmaps (Grad-CAM and relatives, saliency, SAM, CRM, Seg-Grad-CAM, KWC, ...) that show "
            "what a classification or segmentation model looks at in a volume. Heatmaps become colour-mapped "
            "volumes over the input; a thresholded map and the model's prediction can be added as label map / "
            "segmentation. The same logic is available in the Python console: "
            "slicer.util.getModuleLogic('XAIExplain').explainVolume(volumeNode, modelName)."
        )
        self.parent.acknowledgementText = (
            "Methods follow their original publications (see the project README). Real test images come from "
            "the pyradiomics test data."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)

    def runTest(self, msec=100, **kwargs):
        """Slicer's "Reload and Test": the self test, which is a module of its own (XAIExplainSelfTest)."""
        import importlib

        try:
            selfTest = importlib.import_module("XAIExplainSelfTest")
        except ImportError as error:  # built only with BUILD_TESTING (XAIExplain/Testing/Python/CMakeLists.txt)
            raise AssertionError("the self test module XAIExplainSelfTest is not installed: build the extension "
                                 "with BUILD_TESTING=ON") from error
        testCase = selfTest.XAIExplainSelfTestTest()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


def registerSampleData():
    """The bundled phantom CTs in the Sample Data module (category XAIExplain); generated on click."""
    try:
        from XAIExplainLib.logic.sample_data import register_sample_data

        icon = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "XAIExplain.png")
        register_sample_data(thumbnail=icon)
    except Exception:  # the Sample Data module is optional: never block loading this module
        logging.exception("XAIExplain: registering the sample data failed")


@parameterNodeWrapper
class XAIExplainParameterNode:
    """Everything the panel sets, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    #: the volumes of a model's second, third, ... input channel (the first is inputVolume)
    channelVolumes: list[vtkMRMLScalarVolumeNode]
    model: str = ""
    methods: str = "gradcam"
    target: str = ""
    roiSegmentation: vtkMRMLSegmentationNode
    roiSegmentId: str = ""
    targetPoint: vtkMRMLMarkupsFiducialNode
    pointVoxelOnly: bool = False
    layer: str = ""
    mode: str = ""
    modality: str = ""
    device: str = "auto"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    labelMapOutput: bool = False
    labelThreshold: Annotated[float, WithinRange(0.0, 0.95)] = 0.5  # imaging.thresholds: [0, 1), in 0.05 steps
    useOtsu: bool = False
    predictionSegmentation: bool = True
    keepExisting: bool = False


class XAIExplainLogic(ScriptedLoadableModuleLogic, CoreLogic):
    """Slicer's module logic: the parameter node plus the library's logic
    (``XAIExplainLib.logic.XAIExplainLogic``: ``explainVolume``, ``startExplainVolume``, ... see its help).
    Importing it loads no torch; a run does."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        CoreLogic.__init__(self)

    def getParameterNode(self):
        return XAIExplainParameterNode(super().getParameterNode())


def _torchInstaller():
    """The PyTorch extension's installer (the right CUDA build), or None to use pip."""
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return lambda: PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)


class XAIExplainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: selectors and options in, Apply / Cancel, progress and status out."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self._job = None
        self._timer = None
        self._channelSelectors = []

    # ------------------------------------------------------------------ setup

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/XAIExplain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = XAIExplainLogic()
        from XAIExplainLib.logic import choices

        for text, value in choices.MODES:
            self.ui.modeSelector.addItem(text, value)
        self.ui.progressBar.setVisible(False)
        self.ui.channelVolumesWidget.setVisible(False)
        self.ui.modalityLabel.setVisible(False)
        self.ui.modalitySelector.setVisible(False)
        self.ui.roiSegmentSelector.setVisible(False)
        self.ui.roiLabel.setVisible(False)
        self.ui.pointWidget.setVisible(False)
        self.ui.pointLabel.setVisible(False)
        self.ui.pointPlaceWidget.buttonsVisible = False
        self.ui.pointPlaceWidget.placeButton().show()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.connect("timeout()", self.onPollJob)
        loadMenu = qt.QMenu(self.ui.loadModelButton)
        loadFolderAction = loadMenu.addAction("Model folder (card, nnU-Net results, MONAI bundle)...")
        loadFileAction = loadMenu.addAction("Model file (card.json, TorchScript, ...)...")
        loadFolderAction.connect("triggered()", self.onLoadModelFolder)
        loadFileAction.connect("triggered()", self.onLoadModelFile)
        self.ui.loadModelButton.setMenu(loadMenu)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelSelector.connect("activated(int)", self.onModelActivated)
        self.ui.methodList.connect("itemChanged(QListWidgetItem*)", self.onMethodsChanged)
        self.ui.targetSelector.connect("currentIndexChanged(int)", self.onTargetChanged)
        self.ui.roiSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onRoiChanged)
        self.ui.roiSegmentSelector.connect("currentSegmentChanged(QString)", self.onRoiChanged)
        self.ui.pointSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onPointNodeChanged)
        self.ui.layerSelector.connect("currentTextChanged(QString)", self.onLayerChanged)
        self.ui.modeSelector.connect("currentIndexChanged(int)", self.onModeChanged)
        self.ui.modalitySelector.connect("currentIndexChanged(int)", self.onModalityChanged)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.initializeParameterNode()
        self.refreshModelChoices()

    def cleanup(self):
        """Closing the module (or Slicer) stops a running job: its results are dropped, the scene untouched."""
        if self._timer is not None:
            self._timer.stop()
        if self._job is not None:
            self._job.cancel()
            self._job.wait(5.0)
            self._job = None
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)

    def onSceneStartClose(self, caller, event):
        if self._job is not None:
            self._job.cancel()  # its outputs belong to the scene being closed
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # --------------------------------------------------------- parameter node

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateApplyButton)
            self.restoreChoicesFromParameterNode()
        self.updateApplyButton()

    def restoreChoicesFromParameterNode(self):
        """Selections that connectGui cannot bind (lists and combo boxes built at run time)."""
        p = self._parameterNode
        self._updatingGui = True
        try:
            self.selectModel(p.model)
            self.selectData(self.ui.modeSelector, p.mode)
            self.selectData(self.ui.modalitySelector, p.modality)
            self.selectData(self.ui.deviceSelector, p.device)
            self.ui.layerSelector.setCurrentText(p.layer)
            self.ui.roiSegmentSelector.setCurrentNode(p.roiSegmentation)
            if p.roiSegmentId:
                self.ui.roiSegmentSelector.setCurrentSegmentID(p.roiSegmentId)
        finally:
            self._updatingGui = False

    @staticmethod
    def selectData(comboBox, value):
        index = comboBox.findData(value)
        if index >= 0:
            comboBox.setCurrentIndex(index)

    def updateApplyButton(self, caller=None, event=None):
        if self._job is not None:
            return
        p = self._parameterNode
        ready = bool(p and p.inputVolume and p.model and p.methods
                     and all(selector.currentNode() for selector in self._channelSelectors))
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = ("Run the explanation; while running, this button cancels it." if ready
                                       else "Select an input volume (one per input channel), a model and at least "
                                            "one method.")

    # ---------------------------------------------------------------- choices

    def refreshModelChoices(self):
        """Bundled models (needs torch), recently used models (Slicer settings), and the 'Load' entry."""
        from XAIExplainLib.logic import choices, recent_models

        self.ui.modelSelector.clear()
        if missing_dependencies():
            self.ui.modelInfoLabel.text = "PyTorch is not installed: it will be offered on Apply."
        else:
            for name in self.logic.availableModels():
                self.ui.modelSelector.addItem(name, name)
            self.refreshDeviceChoices()
        recent = recent_models.read_recent(qt.QSettings().value(recent_models.SETTINGS_KEY))
        current = self._parameterNode.model if self._parameterNode else ""
        if current and os.path.exists(current) and current not in recent:
            recent.append(current)  # a scene saved with a model that is not in this machine's list
        for path in recent:
            self.ui.modelSelector.addItem(os.path.basename(path) + " (recent)", path)
            self.ui.modelSelector.setItemData(self.ui.modelSelector.count - 1, path, qt.Qt.ToolTipRole)
        self.ui.modelSelector.addItem(choices.LOAD_ITEM, "")
        if self._parameterNode:
            self.selectModel(current)  # loaded paths are stored normalised (useModelSource)

    def refreshDeviceChoices(self):
        from XAIExplainLib.logic import choices

        self.ui.deviceSelector.clear()
        for value, text in choices.device_choices(self.logic):
            self.ui.deviceSelector.addItem(text, value)

    def selectModel(self, model):
        index = self.ui.modelSelector.findData(model) if model else -1
        if index < 0:
            return
        self.ui.modelSelector.setCurrentIndex(index)
        self.showModel(model)

    def showModel(self, model):
        """Task, classes, expected input; methods valid for it; targets; layers."""
        if missing_dependencies():
            return
        if self._job is not None:
            # describing a model may run it (layer probe) while the worker uses the same module
            self.ui.modelInfoLabel.text = "The model's details are shown when the current run has ended."
            return
        from XAIExplainLib.logic import choices

        try:
            offered = choices.model_choices(self.logic, model)
        except Exception as error:
            self.ui.modelInfoLabel.text = f"Cannot use this model: {error}"
            return
        self.ui.modelInfoLabel.text = offered.description
        self.fillChannelSelectors(offered.inputs)
        self.fillMethods(offered.methods)
        self.fillTargets(offered.targets)
        self.fillLayers(offered.layers, offered.default_layer)
        self.fillModalities(offered.modalities)

    def fillMethods(self, methods):
        chosen = set(filter(None, self._parameterNode.methods.split(","))) if self._parameterNode else set()
        self._updatingGui = True
        try:
            self.ui.methodList.clear()
            for method in methods:
                item = qt.QListWidgetItem(method.text)
                item.setData(qt.Qt.UserRole, method.value)
                flags = qt.Qt.ItemIsUserCheckable | (qt.Qt.ItemIsEnabled if method.enabled else qt.Qt.NoItemFlags)
                item.setFlags(flags)
                item.setCheckState(qt.Qt.Checked if (method.enabled and method.value in chosen) else qt.Qt.Unchecked)
                item.setToolTip(method.reason or method.value)
                self.ui.methodList.addItem(item)
        finally:
            self._updatingGui = False
        self.onMethodsChanged()

    def fillChannelSelectors(self, labels):
        """One volume selector per input channel, labelled with the model's channel names; the first is the
        input volume selector, the others are made here (the model decides how many)."""
        self.ui.inputVolumeLabel.text = labels[0]
        for selector in self._channelSelectors:
            self.ui.channelVolumesWidget.layout().removeRow(selector)
        self._channelSelectors = []
        saved = list(self._parameterNode.channelVolumes) if self._parameterNode else []
        for index, text in enumerate(labels[1:]):
            selector = slicer.qMRMLNodeComboBox()
            selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
            selector.showChildNodeTypes = False
            selector.addEnabled = False
            selector.removeEnabled = False
            selector.noneEnabled = True
            selector.setMRMLScene(slicer.mrmlScene)
            selector.toolTip = f"The {text[:-len(' volume:')]} volume, co-registered with the first channel's"
            selector.setCurrentNode(saved[index] if index < len(saved) else None)
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.onChannelVolumesChanged)
            self.ui.channelVolumesWidget.layout().addRow(text, selector)
            self._channelSelectors.append(selector)
        self.ui.channelVolumesWidget.setVisible(len(labels) > 1)

    def onChannelVolumesChanged(self, node=None):
        if self._parameterNode:
            self._parameterNode.channelVolumes = [selector.currentNode() for selector in self._channelSelectors]
        self.updateApplyButton()

    def fillTargets(self, targets):
        self._updatingGui = True
        try:
            self.ui.targetSelector.clear()
            for text, value in targets:
                self.ui.targetSelector.addItem(text, value)
            if self._parameterNode:
                self.selectData(self.ui.targetSelector, self._parameterNode.target)
        finally:
            self._updatingGui = False
        self.onTargetChanged()

    def fillLayers(self, layers, defaultLayer):
        current = self._parameterNode.layer if self._parameterNode else ""
        self._updatingGui = True
        try:
            self.ui.layerSelector.clear()
            self.ui.layerSelector.addItems(layers)
            self.ui.layerSelector.setCurrentText(current or defaultLayer or "")
        finally:
            self._updatingGui = False

    def fillModalities(self, modalities):
        """The Modality menu, shown only for a model with an input pipeline per modality (CT, MR)."""
        self._updatingGui = True
        try:
            self.ui.modalitySelector.clear()
            for text, value in modalities:
                self.ui.modalitySelector.addItem(text, value)
            if self._parameterNode:
                self.selectData(self.ui.modalitySelector, self._parameterNode.modality)
        finally:
            self._updatingGui = False
        self.ui.modalityLabel.setVisible(bool(modalities))
        self.ui.modalitySelector.setVisible(bool(modalities))

    # ------------------------------------------------------------- callbacks

    def onModelActivated(self, index):
        if not self._parameterNode:
            return
        from XAIExplainLib.logic import choices

        value = self.ui.modelSelector.itemData(index)
        if self.ui.modelSelector.itemText(index) == choices.LOAD_ITEM:
            self.ui.loadModelButton.showMenu()
            return
        self._parameterNode.model = value or ""
        self.showModel(value)

    def onLoadModelFolder(self):
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Choose a model folder")
        if folder:
            self.useModelSource(folder)

    def onLoadModelFile(self):
        path = qt.QFileDialog.getOpenFileName(self.parent, "Choose a model file", "",
                                              "Model files (*.json *.pt *.pth *.ts *.zip *.onnx *.pt2);;All files (*)")
        if path:
            self.useModelSource(path)

    def useModelSource(self, source):
        """Any form the loader accepts: checked by loading it, then remembered in Slicer's settings."""
        if not self._parameterNode or not self.ensureDependencies():
            return
        from XAIExplainLib.logic import recent_models

        reason = self.logic.trustNeeded(source)
        if reason:
            if not slicer.util.confirmYesNoDisplay(f"{reason}\n\nTrust this model and load it?",
                                                   windowTitle="Untrusted model"):
                return
            try:
                self.logic.loadModel(source, trust=True)
            except Exception as error:
                slicer.util.errorDisplay(f"Cannot use this model: {error}")
                return
        try:
            info = self.logic.describeModel(source)
        except Exception as error:
            slicer.util.errorDisplay(f"Cannot use this model: {error}")
            return
        settings = qt.QSettings()
        settings.setValue(recent_models.SETTINGS_KEY,
                          recent_models.remember(recent_models.read_recent(settings.value(recent_models.SETTINGS_KEY)),
                                                 source))
        self._parameterNode.model = recent_models.normalise(source)
        self.refreshModelChoices()
        self.ui.modelInfoLabel.text = recent_models.describe(info)

    def onMethodsChanged(self, item=None):
        if self._updatingGui or not self._parameterNode:
            return
        checked = []
        for row in range(self.ui.methodList.count):
            entry = self.ui.methodList.item(row)
            if entry.checkState() == qt.Qt.Checked:
                checked.append(entry.data(qt.Qt.UserRole))
        self._parameterNode.methods = ",".join(checked)

    def onTargetChanged(self, index=None):
        isRoi = self.ui.targetSelector.currentData == "roi"
        self.ui.roiSegmentSelector.setVisible(isRoi)
        self.ui.roiLabel.setVisible(isRoi)
        isPoint = self.ui.targetSelector.currentData == "point"
        self.ui.pointWidget.setVisible(isPoint)
        self.ui.pointLabel.setVisible(isPoint)
        if not self._updatingGui and self._parameterNode:
            self._parameterNode.target = self.ui.targetSelector.currentData or ""

    def onRoiChanged(self, *args):
        if not self._updatingGui and self._parameterNode:
            self._parameterNode.roiSegmentation = self.ui.roiSegmentSelector.currentNode()
            self._parameterNode.roiSegmentId = self.ui.roiSegmentSelector.currentSegmentID() or ""

    def onPointNodeChanged(self, node):
        self.ui.pointPlaceWidget.setCurrentNode(node)

    def onLayerChanged(self, text):
        if not self._updatingGui and self._parameterNode:
            self._parameterNode.layer = text

    def onModeChanged(self, index):
        if not self._updatingGui and self._parameterNode:
            self._parameterNode.mode = self.ui.modeSelector.currentData or ""

    def onModalityChanged(self, index):
        if not self._updatingGui and self._parameterNode:
            self._parameterNode.modality = self.ui.modalitySelector.currentData or ""

    def onDeviceChanged(self, index):
        if not self._updatingGui and self._parameterNode:
            self._parameterNode.device = self.ui.deviceSelector.currentData or "auto"

    def onOpacityChanged(self, value):
        if self.logic is not None and not missing_dependencies():
            self.logic.setHeatmapOpacity(value)

    # ------------------------------------------------------------------ run

    def onApplyButton(self, checked=False):
        """Apply starts a background run; while it runs the same button cancels it."""
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        if not self.ensureDependencies():
            return
        try:
            self._job = self.logic.startExplainVolume(**self.runArguments())
        except Exception as error:  # bad choices or a run already going: nothing started
            self.ui.statusLabel.text = f"Not started: {error}"
            slicer.util.errorDisplay(f"Explanation not started: {error}")
            return
        self.setRunning(True)
        self._timer.start()

    def onPollJob(self):
        """Timer slot: show the job's progress and elapsed time; publish once its compute phase ended."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        fraction, message = job.progress
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = f"{message} ({job.elapsed:.0f} s)"
        if job.done:
            self._timer.stop()
            self.finishJob(job)

    def finishJob(self, job):
        """Main thread: publish the outputs (or report the cancel / error) and give the panel back."""
        from XAIExplainLib.logic import ExplainCancelled

        try:
            with slicer.util.WaitCursor():
                nodes = job.finish()
            text = "Created or updated: " + ", ".join(node.GetName() for node in nodes)
            if nodes.probabilityChart is not None:
                slicer.modules.plots.logic().ShowChartInLayout(nodes.probabilityChart)
                text += ". " + nodes.summary
            self.ui.statusLabel.text = text + f" ({job.elapsed:.0f} s)"
        except ExplainCancelled as cancelled:
            self.ui.statusLabel.text = str(cancelled)
        except Exception as error:
            logging.exception("XAIExplain run failed")
            self.ui.statusLabel.text = f"Failed: {error}"
            slicer.util.errorDisplay(f"Explanation failed: {error}")
        finally:
            self._job = None
            self.setRunning(False)
            if self._parameterNode and self._parameterNode.model:
                self.showModel(self._parameterNode.model)

    def runArguments(self):
        """The parameter node's choices as explainVolume's arguments."""
        p = self._parameterNode
        target = p.target or None
        if target == "roi":
            target = (p.roiSegmentation, p.roiSegmentId) if p.roiSegmentation and p.roiSegmentId else None
        elif target == "point":
            if not p.targetPoint:
                raise ValueError("choose or place a markups point as target")
            target = p.targetPoint
        labelThreshold = None
        if p.labelMapOutput:
            labelThreshold = "otsu" if p.useOtsu else p.labelThreshold
        volumes = [p.inputVolume] + [selector.currentNode() for selector in self._channelSelectors]
        return dict(inputVolumeNode=volumes if len(volumes) > 1 else p.inputVolume,
                    model=self.logic.loadModel(p.model),
                    methods=[m for m in p.methods.split(",") if m], target=target, layer=p.layer or None,
                    mode=p.mode or None, device=p.device or "auto", labelThreshold=labelThreshold,
                    modality=p.modality if p.modality and self.ui.modalitySelector.count else None,
                    predictionSegmentation=p.predictionSegmentation, opacity=p.opacity,
                    keepExisting=p.keepExisting, pointVoxelOnly=p.pointVoxelOnly)

    def setRunning(self, running):
        """Apply becomes Cancel; the rest of the panel stays usable (the run works on its own copy)."""
        from XAIExplainLib.logic import choices

        self.ui.applyButton.text = choices.CANCEL_TEXT if running else choices.APPLY_TEXT
        self.ui.applyButton.enabled = True
        self.ui.progressBar.value = 0
        self.ui.progressBar.setVisible(running)
        self.ui.loadModelButton.enabled = not running
        if not running:
            self.updateApplyButton()

    def ensureDependencies(self):
        """Offer to install what is missing (first Apply only); True when everything is there."""
        missing = missing_dependencies()
        if not missing:
            return True
        torchInstaller = _torchInstaller()
        if "torch" in missing and torchInstaller is None:  # torch comes only from the PyTorch extension
            slicer.util.errorDisplay(NO_PYTORCH_EXTENSION)
            return False
        if not slicer.util.confirmOkCancelDisplay(
                f"XAI Explain needs {', '.join(missing)}, which is not installed in Slicer's Python. Install it now? "
                "This downloads several hundred MB and may take a few minutes."):
            return False
        with slicer.util.tryWithErrorDisplay("Installing the dependencies failed.", waitCursor=True):
            install_dependencies(self.resourcePath("requirements.txt"), slicer.util.pip_install, torchInstaller)
        if missing_dependencies():
            return False
        self.refreshModelChoices()
        return True
