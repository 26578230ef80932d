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
from .explain_job import ExplainJob
from .model_catalogue import ModelCatalogue
from .publish import OutputNodes, on_input_grid, publish
from .request import (ARGUMENTS, ENGINE_MODES, LABEL_OUTPUTS, MODES,  # noqa: F401  (the logic's names)
                      build_request, method_signature)
from . import point_target


class InputRemovedError(RuntimeError):
    """Raised when the input volume left the scene during the run: heatmaps tagged with a removed
    node would point at nothing, so none is published."""


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
        segment). ``metrics`` defaults to the map-only metrics (``evaluation.MAP_ONLY_METRICS``):
        best-threshold and Otsu Dice, pointing game (``toleranceMm``), energy pointing game,
        specificity and sensitivity (the mask as the voxels used), relative foreground
        attribution, image preserved, relevance mass and rank. Returns the table node; the
        values are also in ``self.lastMetrics``.
        """
        from .heatmap_metrics import evaluate_heatmap_node

        table, self.lastMetrics = evaluate_heatmap_node(
            mrml.get_scene(self.scene), heatmapNode, maskNode, segment_id=segmentId, label_value=labelValue,
            metrics=metrics or None, tolerance_mm=toleranceMm, table_node=tableNode)
        return table

    def explainVolume(self, *args, **kwargs) -> OutputNodes:
        """Compute attribution heatmaps of ``model`` on ``inputVolumeNode``; return the output nodes.

        inputVolumeNode  a scalar volume node (any scalar type, spacing, orientation; never modified), or
                         for a model with several input channels a list of them in the model's
                         channel order (``describeModel(model)["channels"]``): they are put on
                         the first volume's grid, where the outputs land
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
        labelThreshold   None (no mask), a number in [0, 1) or "otsu": also write each map thresholded
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
        modality         for a model with an input pipeline per modality (liver-seg-3d: "CT" or
                         "MR"); None or "auto": the image's DICOM header, else its intensities

        Raises ValueError / TypeError (bad input, nothing created), ExplainCancelled (cancel,
        nothing changed), or the progress callback's own exception (nothing changed).
        """
        job = self.startExplainVolume(*args, **kwargs)
        progress = ARGUMENTS.bind(*args, **kwargs).arguments.get("progress")  # checked by startExplainVolume
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

    def startExplainVolume(self, *args, **kwargs) -> ExplainJob:
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
        request = build_request(scene, self.models, *args, **kwargs)
        timings = {}

        def compute(report):
            started = time.perf_counter()
            report(0.0, f"Explaining '{request.node_name}' with {request.model_name}")
            result = self._compute(request, report)
            timings["compute"] = time.perf_counter() - started
            return result

        def publish_outputs(result, report):
            started = time.perf_counter()
            self._checkInputPresent(scene, request.node)

            def checked(fraction, message):  # the progress callback runs the event loop: the user may delete the input
                report(fraction, message)
                self._checkInputPresent(scene, request.node)

            result = on_input_grid(request, result)
            with mrml.SceneTransaction(scene) as transaction:
                nodes = publish(scene, transaction, request, result, checked)
                checked(1.0, f"Done: {len(nodes)} output node(s)")
            nodes.timings = dict(result.get("timings") or {}, compute=timings["compute"],
                                 publish=time.perf_counter() - started)
            return nodes

        def release(job):
            if self._job is job:
                self._job = None

        self._job = ExplainJob(compute, publish_outputs, on_end=release, progress=request.progress,
                               description=f"Starting: '{request.node_name}' with {request.model_name}")
        return self._job.start()

    # --------------------------------------------------------------- internals

    @staticmethod
    def _checkInputPresent(scene, node) -> None:
        """The input must still be in the scene when results are published."""
        node_id = node.GetID()
        if node_id is None or scene.GetNodeByID(node_id) is not node:
            raise InputRemovedError(f"The input volume '{node.GetName()}' was removed from the scene during "
                                    "the run; nothing was published. Load it again and re-run")

    def _compute(self, request, report) -> dict:
        """Run the model and the engine; returns maps (input grid) and the prediction. No scene changes."""
        def engine_progress(*args):
            fraction = progress_fraction(*args)
            report(0.05 + 0.85 * fraction, f"Explaining: {int(round(100 * fraction))} %")

        from ..engine import SegmentationTarget
        from ..engine.progress import progress_fraction
        from ..models import explain_image

        image = request.image
        target = request.target
        point_class = None
        if request.roi is not None:
            target = SegmentationTarget(target, region=request.roi)
        elif request.point is not None and request.task == "segmentation":
            import SimpleITK as sitk

            from ..models import predict_image

            prediction = predict_image(request.model, image, mode=request.mode, axis=request.axis,
                                       device=request.device, modality=request.modality)
            point_class, region = point_target.region_at_point(sitk.GetArrayFromImage(prediction), request.point,
                                                               request.point_voxel_only)
            target = SegmentationTarget(point_class, region=region)
        elif request.point is not None:  # a 2D classifier: the slice through the point, its own class
            from ..models.explained_class import PER_SLICE

            target = PER_SLICE
        result = explain_image(request.model, image, methods=list(request.methods), target=target,
                               layer=request.layer, mode=request.mode, axis=request.axis,
                               device=request.device, progress=engine_progress, modality=request.modality,
                               **request.engine_options)
        maps = {name: result.maps[name] for name in request.methods}  # grid-checked by publish.on_input_grid
        prediction = getattr(result, "prediction", None)
        labels, probabilities = None, None
        if prediction is not None and hasattr(prediction, "GetSize"):
            labels = prediction
        elif prediction is not None:
            probabilities = np.asarray(prediction)
        explained = result.target if isinstance(result.target, (int, np.integer)) else None  # explained_class rule
        return {"maps": maps, "labels": labels, "probabilities": probabilities, "pointClass": point_class,
                "explainedClass": explained, "timings": dict(getattr(result, "timings", None) or {})}


# explainVolume and startExplainVolume take the arguments written once in request.explain_arguments
XAIExplainLogic.explainVolume.__signature__ = method_signature(OutputNodes)
XAIExplainLogic.startExplainVolume.__signature__ = method_signature(ExplainJob)
