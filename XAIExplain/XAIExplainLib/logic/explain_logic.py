"""XAIExplainLogic: scene in, heatmaps out.

The Slicer module's widget and the Slicer Python console use the same logic
object; its docstrings are the console user's manual::

    logic = slicer.util.getModuleLogic("XAIExplain")   # in Slicer
    # or, anywhere:  from XAIExplainLib.logic import XAIExplainLogic; logic = XAIExplainLogic()
    nodes = logic.explainVolume(volumeNode, "ct-phase-2d", methods=["gradcam", "hirescam"])
    nodes.heatmaps["gradcam"]          # the Grad-CAM volume node, shown over the input
    nodes.probabilities                # what the model predicted

A run has two phases. *Compute*: the input is copied out of the scene and the
model + engine run (``explain_image`` does the model card's preprocessing,
resampling back and normalisation); nothing in the scene changes. *Publish*:
output nodes are created or updated inside a scene transaction. A cancel
(``logic.cancel()`` or an exception from the progress callback) or any error
in either phase leaves the scene exactly as it was before the run.

:meth:`XAIExplainLogic.startExplainVolume` runs the compute phase on a worker
thread and returns an :class:`~.explain_job.ExplainJob` at once (the panel polls
it); :meth:`XAIExplainLogic.explainVolume` is start + wait + finish.

Importing this module needs neither torch nor Slicer; they are imported when
a run needs them, so the Slicer module can offer to install torch first.
"""
from __future__ import annotations

import time

import numpy as np

from .. import mrml
from . import point_target
from .explain_job import ExplainJob
from .model_catalogue import ModelCatalogue
from ..imaging.orientation import slice_axis_for_orientation
from ..mrml import naming, outputs, plots


class InputRemovedError(RuntimeError):
    """Raised when the input volume left the scene during the run: heatmaps tagged with a removed
    node would point at nothing, so none is published."""


MODES = ("slices", "volume", "axial", "coronal", "sagittal")
LABEL_OUTPUTS = ("labelmap", "segmentation")


class OutputNodes(list):
    """The nodes a run created or updated (a list), with named access.

    ``heatmaps``      method name -> heatmap volume node
    ``masks``         method name -> thresholded label map / segmentation node
    ``prediction``    the model's prediction as a segmentation node (segmenters) or None
    ``probabilities`` classifier probabilities, (K,) or (n_slices, K), or None
    ``classNames``    the model's class names
    ``probabilityTable``, ``probabilityChart``  per-slice classifier runs: the class
                      probabilities per slice as a table node and a plot chart node (also
                      created or updated by the run; not in the list, which holds the volumes
                      and segmentations shown over the input)
    ``summary``       one line for the status text (per-slice runs: the top-scoring slices)
    ``timings``       seconds per phase
    """

    def __init__(self):
        super().__init__()
        self.heatmaps: dict = {}
        self.masks: dict = {}
        self.prediction = None
        self.probabilities = None
        self.classNames: list = []
        self.probabilityTable = None
        self.probabilityChart = None
        self.summary = ""
        self.timings: dict = {}


class XAIExplainLogic:
    """Explain what a model looks at in a volume of the scene; results become scene nodes.

    Main entry: :meth:`explainVolume`. Helpers for choosing its arguments:
    :meth:`availableModels`, :meth:`loadModel`, :meth:`describeModel`,
    :meth:`methodsForModel`, :meth:`layersForModel`, :meth:`deviceChoices`.
    """

    def __init__(self, scene=None, models: ModelCatalogue | None = None):
        """``scene``: the MRML scene to work on (default: ``slicer.mrmlScene`` at run time);
        ``models``: the model catalogue (loads each model once)."""
        self.scene = scene
        self.models = models or ModelCatalogue()
        self._job: ExplainJob | None = None

    # ----------------------------------------------------------------- models

    def availableModels(self) -> list:
        """Names of the bundled models (pass one as ``model`` to :meth:`explainVolume`)."""
        return self.models.available()

    def loadModel(self, model, trust: bool = False):
        """A loaded model from a bundled name or any model folder or file ``load_model`` accepts (cached).

        ``trust=True`` allows what can run code while loading (pickled modules, TorchScript,
        bundle configs): only for files from a source you trust. A loaded model is returned
        unchanged; a torch module becomes a model described by itself (voxels as they are).
        """
        return self.models.get(model, trust=trust)

    def trustNeeded(self, model) -> str:
        """Why ``model`` needs ``loadModel(model, trust=True)`` (the refusal's reason), or ""."""
        return self.models.trust_needed(model)

    def describeModel(self, model) -> dict:
        """Task, spatial dimensions, class names, expected input and layers of a model."""
        return self.models.describe(model)

    def methodsForModel(self, model) -> list:
        """``(name, label, enabled, reason)`` for every engine method, for this model."""
        return self.models.methods_for(model)

    def layersForModel(self, model) -> list:
        """Names of the model's layers with spatial output, suggested ones first."""
        return self.models.layers_for(model)

    # ----------------------------------------------------------------- device

    @staticmethod
    def resolveDevice(device="auto") -> str:
        """``"auto"`` -> ``"cuda"`` when a GPU is available, else ``"cpu"``.

        ``"cpu"``, ``"cuda"``/``"gpu"`` and ``"cuda:N"`` are accepted; asking
        for a GPU that is not there is a ValueError, never a silent CPU run.
        """
        from ..engine.devices import resolve_device

        return str(resolve_device(device))

    @staticmethod
    def deviceChoices() -> list:
        """``(value, text)`` pairs for a device menu; GPU entries name the GPU and its free memory."""
        from ..engine.devices import device_choices

        return device_choices()

    # ----------------------------------------------------------------- control

    def cancel(self) -> None:
        """Ask the running run to stop; its ``finish()`` (or :meth:`explainVolume`) raises ExplainCancelled."""
        job = self._job
        if job is not None:
            job.cancel()

    @property
    def isRunning(self) -> bool:
        """True from the start of a run until its outputs were published (or it raised)."""
        return self._job is not None

    @property
    def currentJob(self):
        """The :class:`ExplainJob` of the run in progress, or None."""
        return self._job

    def setHeatmapOpacity(self, opacity: float) -> None:
        """Foreground (heatmap) opacity in all slice views, 0..1."""
        mrml.set_heatmap_opacity(mrml.get_scene(self.scene), opacity)

    # ----------------------------------------------------------------- the run

    def evaluateHeatmap(self, heatmapNode, maskNode, segmentId=None, labelValue=None, metrics=None,
                        toleranceMm: float = 0.0, tableNode=None):
        """Metrics of a heatmap against a label map or one segment, shown in a table node.

        ``maskNode`` is a label map volume on the heatmap's grid (any non-zero voxel, or
        ``labelValue``) or a segmentation (``segmentId``; may be omitted when it has one
        segment). ``metrics`` defaults to the map-only metrics: best-threshold and Otsu
        Dice, pointing game (``toleranceMm``), energy pointing game, relative foreground
        attribution and image preserved. Returns the table node; the values are also in
        ``self.lastMetrics``.
        """
        from .heatmap_metrics import MAP_METRICS, evaluate_heatmap_node

        table, self.lastMetrics = evaluate_heatmap_node(
            mrml.get_scene(self.scene), heatmapNode, maskNode, segment_id=segmentId, label_value=labelValue,
            metrics=metrics or MAP_METRICS, tolerance_mm=toleranceMm, table_node=tableNode)
        return table

    def explainVolume(self, inputVolumeNode, model, methods=("gradcam",), target=None, layer=None, mode=None,
                      axis=None, device="auto", labelThreshold=None, progress=None, *, classNames=None,
                      labelOutput="labelmap", predictionSegmentation=True, opacity=mrml.DEFAULT_OPACITY,
                      displayThreshold=mrml.DEFAULT_DISPLAY_THRESHOLD, colorLegend=True, keepExisting=False,
                      engineOptions=None, pointVoxelOnly=False) -> OutputNodes:
        """Compute attribution heatmaps of ``model`` on ``inputVolumeNode``; return the output nodes.

        inputVolumeNode  a scalar volume node (any scalar type, spacing, orientation; never modified)
        model            a bundled model name, a model folder or card.json path, a loaded model
                         (``xai.load_model``), or a ``torch.nn.Module`` (see ``classNames``)
        methods          a method name or a list of names (see :meth:`methodsForModel`)
        target           None (the predicted class), a class index or class name, or for
                         segmentation models ``(segmentationNode, segmentId)``: that segment is
                         the region whose class score is explained; or a markups point node
                         (or ``(pointNode, index)``): a segmenter explains the connected region
                         of the class it predicts at the point, a 2D model per slice the slice
                         through the point for that slice's predicted class
        layer            layer name for layer-based methods (None: the card's default layer)
        mode             None (the model's own: per slice for 2D, volumetric for 3D models),
                         "axial" / "coronal" / "sagittal" (per slice along that anatomical
                         orientation, whatever the volume's voxel order), "slices" with ``axis``
                         (numpy axis 0, 1, 2 of the (z, y, x) voxels), or "volume"
        device           "auto" (CUDA when available, else CPU), "cpu", "cuda" / "gpu", "cuda:N"
        labelThreshold   None (no mask), a number or "otsu": also write each map thresholded
                         as a label map (``labelOutput="segmentation"``: a segmentation)
        progress         progress(fraction, message); raising from it cancels the run
        classNames       class names for a plain torch module (models with a card have theirs)
        predictionSegmentation  write a segmenter's prediction as a segmentation node
        opacity          heatmap opacity over the input in the slice views (0..1)
        displayThreshold heatmap values below this fraction of the window are transparent
        colorLegend      show a colour legend on each heatmap (titled method, class and layer)
        keepExisting     True: always add new nodes; False: re-running with the same choices
                         updates the nodes of the earlier run
        engineOptions    extra method options passed to the engine (e.g. SmoothGrad's samples)
        pointVoxelOnly   with a point target on a segmenter: that voxel alone, not its region

        Raises ValueError / TypeError (bad input, nothing created), ExplainCancelled (cancel,
        nothing changed), or the progress callback's own exception (nothing changed).
        """
        job = self.startExplainVolume(inputVolumeNode, model, methods, target, layer, mode, axis, device,
                                      labelThreshold, progress, classNames=classNames, labelOutput=labelOutput,
                                      predictionSegmentation=predictionSegmentation, opacity=opacity,
                                      displayThreshold=displayThreshold, colorLegend=colorLegend,
                                      keepExisting=keepExisting, engineOptions=engineOptions,
                                      pointVoxelOnly=pointVoxelOnly)
        seen = 0
        try:
            while True:
                computed = job.wait(0.02)
                updates = job.updates
                if progress is not None:
                    for _, fraction, message in updates[seen:]:
                        progress(fraction, message)
                seen = len(updates)
                if computed:
                    break
        except BaseException:
            # the callback raised (or Ctrl+C): stop the worker, free the slot, surface that exception
            job.cancel()
            job.wait()
            try:
                job.finish()
            except Exception:
                pass
            raise
        return job.finish(progress)

    def startExplainVolume(self, inputVolumeNode, model, methods=("gradcam",), target=None, layer=None, mode=None,
                           axis=None, device="auto", labelThreshold=None, progress=None, *, classNames=None,
                           labelOutput="labelmap", predictionSegmentation=True, opacity=mrml.DEFAULT_OPACITY,
                           displayThreshold=mrml.DEFAULT_DISPLAY_THRESHOLD, colorLegend=True, keepExisting=False,
                           engineOptions=None, pointVoxelOnly=False) -> ExplainJob:
        """Start :meth:`explainVolume` in the background and return its :class:`ExplainJob` at once.

        Same arguments as :meth:`explainVolume`. The arguments are checked and the input
        copied out of the scene here (a bad argument raises here, nothing starts); the
        model and engine then run on a worker thread that never touches the scene.
        ``job.progress`` / ``job.done`` / ``job.cancel()`` can be polled from a timer;
        ``job.finish()``, on the main thread, publishes the outputs inside a scene
        transaction. ``progress``, when given, is only ever called on the main thread:
        by ``job.finish()`` for the publish phase (the compute phase's updates are in
        ``job.updates``). One run at a time: starting a second one before the first was
        finished is refused.
        """
        if self._job is not None:
            raise RuntimeError("an explanation is already running; cancel it or wait for it to finish "
                               "before starting another")
        scene = mrml.get_scene(self.scene)
        request = self._validate(scene, inputVolumeNode, model, methods, target, layer, mode, axis, device,
                                 labelThreshold, labelOutput, opacity, displayThreshold, classNames,
                                 engineOptions, progress)
        request["pointVoxelOnly"] = bool(pointVoxelOnly)
        self._snapshot(request)
        options = dict(predictionSegmentation=predictionSegmentation, opacity=opacity,
                       displayThreshold=displayThreshold, colorLegend=colorLegend, keepExisting=keepExisting)
        timings = {}

        def compute(report):
            started = time.perf_counter()
            report(0.0, f"Explaining '{request['nodeName']}' with {request['modelName']}")
            result = self._compute(request, report)
            timings["compute"] = time.perf_counter() - started
            return result

        def publish(result, report):
            started = time.perf_counter()
            self._checkInputPresent(scene, inputVolumeNode)

            def checked(fraction, message):  # the progress callback runs the event loop: the user may delete the input
                report(fraction, message)
                self._checkInputPresent(scene, inputVolumeNode)

            self._onInputGrid(request, result)
            with mrml.SceneTransaction(scene) as transaction:
                nodes = self._publish(scene, transaction, request, result, checked, **options)
                checked(1.0, f"Done: {len(nodes)} output node(s)")
            nodes.timings = dict(result.get("timings") or {}, compute=timings["compute"],
                                 publish=time.perf_counter() - started)
            return nodes

        def release(job):
            if self._job is job:
                self._job = None

        self._job = ExplainJob(compute, publish, on_end=release, progress=progress,
                               description=f"Starting: '{inputVolumeNode.GetName()}' with {request['modelName']}")
        return self._job.start()

    # --------------------------------------------------------------- internals

    @staticmethod
    def _checkInputPresent(scene, node) -> None:
        """The input must still be in the scene when results are published."""
        node_id = node.GetID()
        if node_id is None or scene.GetNodeByID(node_id) is not node:
            raise InputRemovedError(f"The input volume '{node.GetName()}' was removed from the scene during "
                                    "the run; nothing was published. Load it again and re-run")

    @staticmethod
    def _snapshot(request) -> None:
        """Main thread: copy the input out of the scene, so the worker never reads MRML."""
        node = request["node"]
        request["nodeName"] = node.GetName()
        request["image"] = mrml.volume_to_sitk(node)

    @staticmethod
    def _onInputGrid(request, result) -> None:
        """Main thread: check the maps and the prediction against the input node's grid."""
        node = request["node"]
        result["maps"] = {name: mrml.array_on_node_grid(value, node, f"map '{name}'")
                          for name, value in result["maps"].items()}
        if result["labels"] is not None:
            result["labels"] = mrml.array_on_node_grid(result["labels"], node, "prediction")
        point, names = request["point"], request["classNames"]
        if not request["targetLabel"] and result.get("explainedClass") is not None and names:
            request["targetLabel"] = names[int(result["explainedClass"])]  # one class for the whole volume
        if point is not None and result.get("pointClass") is not None:  # a segmenter's region at the point
            request["targetLabel"] = names[result["pointClass"]] if names else f"class {result['pointClass']}"
        elif point is not None:  # a 2D classifier per slice: the slice through the point
            inside = point_target.slice_region(next(iter(result["maps"].values())).shape, point, request["axis"])
            result["maps"] = {name: np.where(inside, value, 0).astype(value.dtype)
                              for name, value in result["maps"].items()}
            probabilities = np.atleast_2d(result["probabilities"])
            if probabilities.shape[0] > point[request["axis"]]:
                winner = int(np.argmax(probabilities[point[request["axis"]]]))
                request["targetLabel"] = names[winner] if names else f"class {winner}"

    def _validate(self, scene, node, model, methods, target, layer, mode, axis, device, labelThreshold,
                  labelOutput, opacity, displayThreshold, classNames, engineOptions, progress) -> dict:
        """Check every argument before anything runs; return the normalised request."""
        mrml.check_scalar_volume(node)
        if scene.GetNodeByID(node.GetID()) is not node:
            raise ValueError(f"Volume '{node.GetName()}' is not in the scene being worked on")
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable as progress(fraction, message)")
        method_list = [methods] if isinstance(methods, str) else list(methods or [])
        if not method_list or not all(isinstance(m, str) for m in method_list):
            raise ValueError("methods must be a method name or a non-empty list of names")
        if len(set(method_list)) != len(method_list):
            raise ValueError(f"methods lists a method twice: {method_list}")
        for value, what in ((opacity, "opacity"), (displayThreshold, "displayThreshold")):
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{what} must be in [0, 1], got {value}")
        if labelThreshold is not None:
            mrml.labels.resolve_threshold(np.array([0.0, 1.0], np.float32), labelThreshold)
        if labelOutput not in LABEL_OUTPUTS:
            raise ValueError(f"labelOutput must be one of {LABEL_OUTPUTS}, got {labelOutput!r}")
        resolved_device = self.resolveDevice(device)
        if engineOptions is not None and not isinstance(engineOptions, dict):
            raise TypeError(f"engineOptions must be a dict of method options, got {type(engineOptions).__name__}")
        resolved = self.models.get(model, class_names=classNames)
        card = resolved.card
        class_names, task = list(card.class_names), card.task
        available = {row[0]: row for row in self.models.methods_for(resolved)}
        for name in method_list:
            if name not in available:
                raise ValueError(f"unknown method '{name}'; available: {', '.join(sorted(available))}")
            if not available[name][2]:
                raise ValueError(f"method '{name}' cannot explain this model: {available[name][3]}")
        engine_mode, engine_axis = self._resolveMode(node, mode, axis, resolved)
        point = None
        if point_target.is_point_target(target):
            point = point_target.point_voxel(target, node)
            if task != "segmentation" and engine_mode != "slices":
                raise ValueError("a point as target needs a segmentation model or a 2D model run per slice")
            target_value, target_label, roi = None, "", None
        else:
            target_value, target_label, roi = self._resolveTarget(node, target, card, task)
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name (str) or None, got {type(layer).__name__}")
        if layer is not None:
            self.models.check_layer(resolved, layer)
        from ..engine import METHODS

        if layer is None and any(METHODS[name].needs_layer for name in method_list):
            layer = self.models.default_layer(resolved)
        return {
            "node": node, "model": resolved, "methods": method_list, "target": target_value,
            "targetLabel": target_label, "roi": roi, "targetKey": self._targetKey(target), "point": point,
            "layer": layer, "layerLabel": layer or "", "mode": engine_mode, "axis": engine_axis,
            "modeKey": mode if mode is not None else "default", "device": resolved_device,
            "labelThreshold": labelThreshold, "labelOutput": labelOutput, "classNames": class_names,
            "task": task, "modelName": card.name, "engineOptions": dict(engineOptions or {}),
        }

    @staticmethod
    def _resolveMode(node, mode, axis, loaded):
        """Anatomical names become the voxel axis nearest to them; the rest is ``resolve_mode``'s."""
        from ..engine.modes import resolve_mode

        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be None or one of {MODES}, got {mode!r}")
        if mode in ("axial", "coronal", "sagittal"):
            mode, axis = "slices", slice_axis_for_orientation(mrml.node_ijk_to_ras(node), mode)
        card = loaded.card
        default_axis = card.slice_axis if card.slice_axis is not None else 0
        if loaded.kind == "module" and card.spatial_dims == 2:
            # no card to say along which axis: a plain 2D module runs on axial slices
            default_axis = slice_axis_for_orientation(mrml.node_ijk_to_ras(node), "axial")
        return resolve_mode(mode, axis, card.spatial_dims, default_axis, f"'{card.name}'")

    @staticmethod
    def _targetKey(target) -> str:
        if point_target.is_point_target(target):
            node, index = target if isinstance(target, tuple) else (target, 0)
            return f"point:{node.GetID()}:{index}"
        if isinstance(target, tuple) and len(target) == 2 and hasattr(target[0], "GetID"):
            return f"roi:{target[0].GetID()}:{target[1]}"
        return "predicted" if target is None else str(target)

    @staticmethod
    def _resolveTarget(node, target, card, task):
        """``(engine target, label for node names, ROI mask or None)``."""
        if target is None:
            return None, "", None
        if isinstance(target, tuple) and len(target) == 2 and hasattr(target[0], "IsA"):
            segmentation, segment_id = target
            if not segmentation.IsA("vtkMRMLSegmentationNode"):
                raise TypeError(f"an ROI target is (segmentationNode, segmentId); got a {segmentation.GetClassName()}")
            if task == "classification":
                raise ValueError("a segment as target (ROI) applies to segmentation models only")
            mask = mrml.segment_mask(segmentation, segment_id, node)
            if not mask.any():
                raise ValueError(f"segment '{segment_id}' does not overlap the input volume")
            name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
            return None, f"ROI {name}", mask
        if isinstance(target, bool):
            raise TypeError("target must be None, a class index, a class name or (segmentationNode, segmentId)")
        if isinstance(target, (int, np.integer, str)):
            index = card.class_index(target)
            return index, card.class_names[index], None
        raise TypeError("target must be None, a class index, a class name or (segmentationNode, segmentId); "
                        f"got {type(target).__name__}")

    def _compute(self, request, report) -> dict:
        """Run the model and the engine; returns maps (input grid) and the prediction. No scene changes."""
        def engine_progress(*args):
            # the engine reports (done, total); other callers (fraction) or (fraction, message)
            numbers = [float(a) for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            if len(numbers) >= 2 and numbers[1] > 0:
                fraction = numbers[0] / numbers[1]
            else:
                fraction = numbers[0] if numbers else 0.0
            fraction = min(max(fraction, 0.0), 1.0)
            report(0.05 + 0.85 * fraction, f"Explaining: {int(round(100 * fraction))} %")

        from ..engine import SegmentationTarget
        from ..models import explain_image

        image = request["image"]
        target = request["target"]
        point_class = None
        if request["roi"] is not None:
            target = SegmentationTarget(target, region=request["roi"])
        elif request["point"] is not None and request["task"] == "segmentation":
            import SimpleITK as sitk

            from ..models import predict_image

            prediction = predict_image(request["model"], image, mode=request["mode"], axis=request["axis"],
                                       device=request["device"])
            point_class, region = point_target.region_at_point(sitk.GetArrayFromImage(prediction), request["point"],
                                                               request["pointVoxelOnly"])
            target = SegmentationTarget(point_class, region=region)
        elif request["point"] is not None:  # a 2D classifier: the slice through the point, its own class
            from ..models.explained_class import PER_SLICE

            target = PER_SLICE
        result = explain_image(request["model"], image, methods=request["methods"], target=target,
                               layer=request["layer"], mode=request["mode"], axis=request["axis"],
                               device=request["device"], progress=engine_progress, **request["engineOptions"])
        maps = {name: result.maps[name] for name in request["methods"]}  # grid-checked in _onInputGrid
        prediction = getattr(result, "prediction", None)
        labels, probabilities = None, None
        if prediction is not None and hasattr(prediction, "GetSize"):
            labels = prediction
        elif prediction is not None:
            probabilities = np.asarray(prediction)
        explained = result.target if isinstance(result.target, (int, np.integer)) else None  # explained_class rule
        return {"maps": maps, "labels": labels, "probabilities": probabilities, "pointClass": point_class,
                "explainedClass": explained, "timings": dict(getattr(result, "timings", None) or {})}

    def _classLabel(self, request, probabilities) -> str:
        if request["targetLabel"]:
            return request["targetLabel"]
        names = request["classNames"]
        if probabilities is None or not names:
            return "predicted"
        winners = np.unique(np.argmax(np.atleast_2d(probabilities), axis=-1))
        # one class predicted everywhere (the volume, or every slice): name it; else each slice its own
        return names[int(winners[0])] if len(winners) == 1 else "predicted"

    def _publish(self, scene, transaction, request, result, report, predictionSegmentation, opacity,
                 displayThreshold, colorLegend, keepExisting) -> OutputNodes:
        from ..engine import METHODS

        node = request["node"]
        nodes = OutputNodes()
        nodes.classNames = list(request["classNames"])
        nodes.probabilities = result["probabilities"]
        class_label = self._classLabel(request, result["probabilities"])
        choices = {"model": request["modelName"], "target": request["targetKey"], "mode": request["modeKey"],
                   "axis": request["axis"]}
        total = len(request["methods"])
        for index, method in enumerate(request["methods"]):
            report(0.9 + 0.08 * index / total, f"Writing {method}")
            info = METHODS[method]
            label = info.label
            layer_label = request["layerLabel"] if info.needs_layer else ""
            name = naming.output_name(node.GetName(), label, class_label, layer_label)
            key_choices = dict(choices, method=method, layer=layer_label)
            attributes = {"Model": request["modelName"], "Method": method, "Target": class_label,
                          "Layer": layer_label, "Mode": request["mode"], "Axis": request["axis"]}
            description = (f"{label} of model '{request['modelName']}' for {class_label or 'the prediction'}"
                           + (f" at layer {layer_label}" if layer_label else "") + f" on '{node.GetName()}'")
            heatmap = outputs.publish_heatmap(
                scene, transaction, node, result["maps"][method], name,
                naming.output_key(node, "heatmap", **key_choices), attributes, description,
                legend_title=" ".join(filter(None, (label, class_label, layer_label))) if colorLegend else None,
                display_threshold=displayThreshold, keep_existing=keepExisting)
            nodes.heatmaps[method] = heatmap
            nodes.append(heatmap)
            if request["labelThreshold"] is not None:
                mask, _ = outputs.publish_mask(
                    scene, transaction, node, result["maps"][method], request["labelThreshold"], name,
                    naming.output_key(node, "mask", **key_choices),
                    as_segmentation=request["labelOutput"] == "segmentation", attributes=attributes,
                    keep_existing=keepExisting)
                nodes.masks[method] = mask
                nodes.append(mask)
        if predictionSegmentation and result["labels"] is not None:
            report(0.98, "Writing the prediction")
            classes = request["model"].card.classes
            entries = mrml.class_entries(classes, label_values=np.unique(result["labels"]))
            nodes.prediction = outputs.publish_prediction(
                scene, transaction, node, result["labels"], entries,
                naming.output_name(node.GetName(), request["modelName"], "prediction"),
                naming.output_key(node, "prediction", **choices), {"Model": request["modelName"]},
                keep_existing=keepExisting)
            nodes.append(nodes.prediction)
        probabilities = result["probabilities"]
        if probabilities is not None and np.ndim(probabilities) == 2 and len(probabilities) > 1:
            report(0.99, "Writing the per-slice probabilities")
            base = naming.output_name(node.GetName(), request["modelName"], "probabilities")
            key = naming.output_key(node, "probabilities", **choices)
            table, chart = plots.publish_slice_probabilities(
                scene, transaction, probabilities, request["classNames"], base,
                table_node=None if keepExisting else naming.find_output(scene, key, "vtkMRMLTableNode"),
                chart_node=None if keepExisting else naming.find_output(scene, key, "vtkMRMLPlotChartNode"))
            for output in (table, chart):
                naming.tag_output(output, node, "probabilities", key, Model=request["modelName"])
            nodes.probabilityTable, nodes.probabilityChart = table, chart
            nodes.summary = "Highest scores: " + plots.top_slices(probabilities, request["classNames"])
        first = nodes.heatmaps[request["methods"][0]]
        first_mask = nodes.masks.get(request["methods"][0])
        label_layer = first_mask if first_mask is not None and first_mask.IsA("vtkMRMLLabelMapVolumeNode") else None
        mrml.show_in_slice_views(scene, background=node, foreground=first, opacity=opacity, label=label_layer)
        if label_layer is not None:
            mrml.display.configure_label_display(label_layer, scene=scene, outline=True)
        return nodes
