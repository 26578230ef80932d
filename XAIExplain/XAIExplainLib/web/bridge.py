"""The page's state <-> :class:`XAIExplainLogic`: the web face's copy of the Slicer panel's callbacks.

Every decision stays in the logic: the menus come from :mod:`XAIExplainLib.logic.choices`
(the same description the Slicer panel reads), Apply calls ``startExplainVolume`` and
publishes with ``job.finish()`` on the server's event-loop thread (the thread that owns
the scene, as Slicer's main thread does), Cancel calls ``job.cancel()``. The bridge only
moves values between trame's state and those calls, and turns every error into one line
for the page (``error``), never a traceback.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from ..cli.discovery import image_stem
from ..logic import choices
from ..logic.explain_job import ExplainCancelled
from ..logic.explain_logic import XAIExplainLogic
from ..mrml import naming
from .presentation import number_text, probability_rows, probability_svg, range_text
from .security import UPLOAD_LIMIT_BYTES, AccessError, AllowedPaths, check_upload_size

#: how often the page's progress is refreshed from the running job (the panel polls every 0.2 s too)
POLL_SECONDS = 0.2
MODEL_FILE_ENDINGS = (".pt", ".pth", ".ts", ".safetensors")
LOG = logging.getLogger(__name__)


def _items(pairs) -> list:
    return [{"title": text, "value": value} for text, value in pairs]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class Bridge:
    """Owns the logic, the loaded image, the running job and the page's state."""

    def __init__(self, server, scene_app, allowed: AllowedPaths, images=(), models=(), methods=(),
                 models_dir=None, output_dir=None, upload_limit=None):
        self.server, self.state, self.scene_app = server, server.state, scene_app
        self.scene = scene_app.scene
        self.allowed = allowed
        self.logic = XAIExplainLogic(scene=self.scene)
        self.output_dir = output_dir
        self.upload_limit = upload_limit or UPLOAD_LIMIT_BYTES
        self.volume = None
        self.volume_source = None  # the file the image came from (None: an upload)
        self.saving = False
        self.mask_node = None
        self.job = None
        self.point_node = None
        self._trusted: set = set()
        self._model_sources = self._model_menu(models, models_dir)
        state = self.state
        state.update({
            "images": [{"title": os.path.basename(str(p)), "value": str(p)} for p in images],
            "image": "", "image_path": "",
            "models": [{"title": title, "value": value} for title, value in self._model_sources],
            "model": "", "model_description": "",
            "method_items": [], "methods": list(methods),
            "target_items": [], "target": "",
            "layer_items": [], "layer": "",
            "mode_items": _items(choices.MODES), "mode": "",
            "modality_items": [], "modality": "",
            "device_items": [], "device": "auto",
            "label_items": _items(choices.LABEL_THRESHOLDS), "label_choice": "",
            "label_fixed": choices.DEFAULT_FIXED_THRESHOLD,
            "run_text": choices.APPLY_TEXT, "running": False, "progress": 0, "status": "", "error": "",
            "trust_question": "", "opacity": 0.4, "window": 400.0, "level": 40.0,
            "heatmaps": [], "color_range": "", "point_text": "", "probabilities": [],
            "scene_nodes": 0, "outputs": [], "image_loaded": False, "probability_plot": "",
            "review_items": [], "review_index": 0, "review_summary": "", "review_title": "", "timings": "",
            "mask": "", "metrics": [], "segment_items": [], "segment": "", "upload_limit": int(self.upload_limit), "can_save": bool(output_dir),
        })
        state.change("model")(self.on_model)
        state.change("image")(self.on_image)
        state.change("mask")(self.on_mask)
        state.change("opacity")(self.on_opacity)
        state.change("window", "level")(self.on_window_level)
        ctrl = server.controller
        ctrl.apply = self.on_apply
        ctrl.trust_yes = self.on_trust_yes
        ctrl.trust_no = self.on_trust_no
        ctrl.open_path = self.on_open_path
        ctrl.upload = self.on_upload
        ctrl.place_point = self.on_place_point
        ctrl.show_heatmap = self.on_show_heatmap
        ctrl.save = self.on_save

    # --------------------------------------------------------------- menus

    def _model_menu(self, models, models_dir) -> list:
        """Bundled models, the ones named at start, and model folders / cards under --models-dir."""
        entries = [(name, name) for name in self.logic.availableModels()]
        for source in models:
            if source not in dict(entries).values():
                entries.append((os.path.basename(str(source).rstrip("/\\")) or str(source), str(source)))
        if models_dir:
            for child in sorted(Path(models_dir).iterdir()):
                # folders (cards, nnU-Net results, bundles), weight files and cards; a sidecar .json
                # beside a weight file describes that file and is not a model of its own
                if child.is_dir() or child.suffix.lower() in MODEL_FILE_ENDINGS or child.name == "card.json":
                    entries.append((f"{child.name} ({Path(models_dir).name})", str(child)))
        return entries

    def fill_devices(self) -> None:
        self.state.device_items = [{"title": text, "value": value}
                                   for value, text in choices.device_choices(self.logic)]

    def _fail(self, message: str) -> None:
        self.state.error = message
        self.state.status = message

    def on_model(self, model, **_):
        """Check trust first (asked in the page as the panel asks), then describe the model."""
        if not model:
            return
        source = dict((v, v) for _, v in self._model_sources).get(model)
        if source is None:
            self._fail(f"'{model}' is not one of the offered models")
            return
        if self.job is not None:
            self.state.model_description = "The model's details are shown when the current run has ended."
            return
        if source not in self._trusted:
            reason = self.logic.trustNeeded(source)
            if reason:
                self.state.trust_question = f"{reason}\n\nTrust this model and load it?"
                return
        self.describe(source)

    def on_trust_yes(self):
        source = self.state.model
        self.state.trust_question = ""
        try:
            self.logic.loadModel(source, trust=True)
        except Exception as error:  # noqa: BLE001 - shown as one line
            self._fail(f"Cannot use this model: {_one_line(error)}")
            return
        self._trusted.add(source)
        self.describe(source)

    def on_trust_no(self):
        self.state.trust_question = ""
        self.state.model = ""
        self.state.model_description = "Not loaded: the model was not trusted."

    def describe(self, source) -> None:
        try:
            offered = choices.model_choices(self.logic, source)
        except Exception as error:  # noqa: BLE001 - shown as one line
            self._fail(f"Cannot use this model: {_one_line(error)}")
            return
        self.state.error = ""
        self.state.model_description = offered.description
        self.state.method_items = [{"title": m.text, "value": m.value, "props": {"disabled": not m.enabled,
                                    "subtitle": m.reason}} for m in offered.methods]
        enabled = offered.enabled_methods()
        self.state.methods = [m for m in self.state.methods if m in enabled]
        self.state.target_items = _items(offered.targets)
        if self.state.target not in [v for _, v in offered.targets]:
            self.state.target = ""
        self.state.layer_items = list(offered.layers)
        self.state.layer = offered.default_layer or (offered.layers[0] if offered.layers else "")
        self.state.modality_items = _items(offered.modalities)
        if self.state.modality not in [v for _, v in offered.modalities]:
            self.state.modality = ""
        if not self.state.device_items:
            self.fill_devices()

    # -------------------------------------------------------------- images

    def on_image(self, image, **_):
        if image:
            self.open_image(image)

    def on_open_path(self):
        self.open_image(self.state.image_path)

    def open_image(self, path) -> None:
        from ..cli.reading import check_image, read_image

        try:
            real = self.allowed.check(path)
            image = read_image(real, str(path))
            check_image(image, str(path))
        except (AccessError, Exception) as error:  # noqa: BLE001 - one line for the page
            self._fail(f"Cannot open the image: {_one_line(error)}")
            return
        self.load_sitk(image, image_stem(real))
        self.volume_source = str(real)

    def load_sitk(self, image, name: str):
        from ..mrml import sitk_to_volume

        if image.GetDimension() == 2:
            import SimpleITK as sitk

            image = sitk.JoinSeries(image)
        node = sitk_to_volume(self.scene, image, name)
        self.volume, self.volume_source = node, None
        self.scene_app.show_volume(node)
        display = node.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(float(self.state.window), float(self.state.level))
        self.state.error = ""
        self.state.image_loaded = True
        self.state.status = f"Loaded '{node.GetName()}'"
        self.state.scene_nodes = self.scene.GetNumberOfNodes()
        self.scene_app.render()
        return node

    def on_mask(self, mask, **_):
        """A reference mask (label map on the image's grid): outlined in the views; each run's first
        map is scored against it with the logic's metrics table (``evaluateHeatmap``)."""
        from ..cli.reading import read_image
        from ..mrml import display, sitk_to_volume

        if not mask:
            return
        try:
            real = self.allowed.check(mask)
            image = read_image(real, str(mask))
        except Exception as error:  # noqa: BLE001 - one line for the page
            self._fail(f"Cannot open the mask: {_one_line(error)}")
            return
        if self.mask_node is not None and self.scene.GetNodeByID(self.mask_node.GetID()) is self.mask_node:
            self.scene.RemoveNode(self.mask_node)
        self.mask_node = sitk_to_volume(self.scene, image, image_stem(real), class_name="vtkMRMLLabelMapVolumeNode")
        display.configure_label_display(self.mask_node, scene=self.scene, outline=True)
        display.show_in_slice_views(self.scene, label=self.mask_node)
        self.state.status = f"Reference mask '{self.mask_node.GetName()}' loaded: runs are scored against it"
        self.state.scene_nodes = self.scene.GetNumberOfNodes()
        self.scene_app.render()

    def evaluate(self, heatmap) -> None:
        """The metrics table of ``heatmap`` against the reference mask, as the Slicer panel's table."""
        if self.mask_node is None or heatmap is None:
            self.state.metrics = []
            return
        try:
            self.logic.evaluateHeatmap(heatmap, self.mask_node)
        except Exception as error:  # noqa: BLE001 - one line for the page
            self.state.metrics = []
            self._fail(f"Not scored against the mask: {_one_line(error)}")
            return
        self.state.metrics = [{"name": name, "value": number_text(value)}
                              for name, value in self.logic.lastMetrics.items()]

    def on_upload(self, files=None, **_):
        """An upload from the browser: NRRD, NIfTI, MHA or a zip of one DICOM series, size-limited.

        ``files`` is the browser's file list (dicts with ``name`` and ``content``), or, for a file
        over the limit, only its name and size: the page does not send what would be refused."""
        from .uploads import read_upload

        try:
            entries = files if isinstance(files, list) else [files]
            entry = next(e for e in entries if e)
            content = entry.get("content")
            if isinstance(content, list):
                content = b"".join(content)
            size = len(content) if content is not None else int(entry.get("size") or 0)
            check_upload_size(size, self.upload_limit)
            image, name = read_upload(str(entry.get("name") or "upload"), bytes(content or b""),
                                      self.upload_limit)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - one line for the page
            self._fail(f"Cannot open the upload: {_one_line(error)}")
            return
        self.load_sitk(image, name)

    # ------------------------------------------------------------- display

    def on_opacity(self, opacity, **_):
        try:
            self.logic.setHeatmapOpacity(float(opacity))
        except ValueError as error:
            self._fail(_one_line(error))
            return
        self.scene_app.render()

    def on_window_level(self, window, level, **_):
        if self.volume is None or self.volume.GetDisplayNode() is None:
            return
        display = self.volume.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(max(float(window), 1.0), float(level))
        self.scene_app.render()

    def on_show_heatmap(self, index, checked):
        """Per-map show / hide: the shown map is the slice views' foreground (one map over the image, as
        in the panel); showing one hides the others."""
        rows = [dict(row, visible=bool(checked) and i == int(index)) for i, row in enumerate(self.state.heatmaps)]
        self.state.heatmaps = rows
        shown = [row for row in rows if row["visible"]]
        node = self.scene.GetNodeByID(shown[0]["id"]) if shown else None
        self.scene_app.set_foreground(node, float(self.state.opacity))
        self.state.color_range = range_text(node)
        self.scene_app.render()

    def refresh_heatmaps(self, first=None) -> None:
        rows = []
        for node in naming.outputs_of(self.scene, self.volume):
            if node.GetAttribute(naming.KIND_ATTRIBUTE) == "heatmap":
                rows.append({"id": node.GetID(), "name": node.GetName(),
                             "visible": first is not None and node.GetID() == first.GetID(),
                             "download": f"/download/{node.GetID()}"})
        self.state.heatmaps = rows
        self.state.color_range = range_text(first)

    def clear_volumes(self) -> None:
        """Review mode: the scene's volumes and segmentations go before the next input comes in."""
        for class_name in ("vtkMRMLVolumeNode", "vtkMRMLSegmentationNode"):
            nodes = self.scene.GetNodesByClass(class_name)
            for i in range(nodes.GetNumberOfItems()):
                self.scene.RemoveNode(nodes.GetItemAsObject(i))
        self.volume = None

    # ------------------------------------------------------------- segments

    def refresh_segments(self) -> None:
        """The ROI menu: every segment of the scene's segmentations (a segmenter's prediction among them)."""
        items = []
        nodes = self.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            segmentation = node.GetSegmentation()
            for k in range(segmentation.GetNumberOfSegments()):
                segment_id = segmentation.GetNthSegmentID(k)
                items.append({"title": f"{node.GetName()}: {segmentation.GetSegment(segment_id).GetName()}",
                              "value": f"{node.GetID()}|{segment_id}"})
        self.state.segment_items = items
        if self.state.segment not in [item["value"] for item in items]:
            self.state.segment = items[0]["value"] if items else ""

    def segment_target(self, choice: str) -> tuple:
        """``(segmentationNode, segmentId)`` of the ROI menu's value, checked against the scene."""
        node_id, _, segment_id = (choice or "").partition("|")
        node = self.scene.GetNodeByID(node_id) if node_id else None
        if node is None or not node.IsA("vtkMRMLSegmentationNode") or \
                node.GetSegmentation().GetSegment(segment_id) is None:
            raise ValueError("choose a segment as region (a segmentation model's prediction: run it once with "
                             "'Predicted class', then pick one of its segments)")
        return node, segment_id

    # ----------------------------------------------------------------- save

    def on_save(self):
        """Write the current choices' outputs to --output-dir as the command line does (see saving)."""
        from . import saving

        if self.saving or self.job is not None:
            return
        try:
            if not self.output_dir:
                raise ValueError("start the server with --output-dir to save")
            if self.volume is None or not self.state.model or not self.state.methods:
                raise ValueError("open an image, choose a model and at least one method")
            arguments = saving.cohort_arguments(self.state)
            image = saving.input_file(self.volume, self.volume_source, Path(self.output_dir))
        except Exception as error:  # noqa: BLE001 - one line for the page
            self._fail(f"Not saved: {_one_line(error)}")
            return
        self.saving = True
        self.state.status = f"Saving to {self.output_dir} ..."
        asyncio.ensure_future(self._save(saving, image, arguments))

    async def _save(self, saving, image, arguments):
        model = self.state.model
        try:
            summary = await asyncio.to_thread(saving.save, model, list(self.state.methods), image,
                                              Path(self.output_dir), model in self._trusted, **arguments)
            failed = [record.error for record in summary.failed]
            with self.state:
                if failed:
                    self._fail(f"Not saved: {failed[0]}")
                else:
                    files = sum(len(record.outputs) for record in summary.records)
                    self.state.error = ""
                    self.state.status = f"Saved {files} file(s) and summary.json to {self.output_dir}"
        except Exception as error:  # noqa: BLE001 - one line for the page
            with self.state:
                self._fail(f"Not saved: {_one_line(error)}")
        finally:
            self.saving = False

    # ---------------------------------------------------------------- point

    def on_place_point(self):
        """Slicer's place mode: the next click in a slice view puts the target point there."""
        from slicer import vtkMRMLMarkupsFiducialNode

        if self.point_node is None or self.scene.GetNodeByID(self.point_node.GetID()) is not self.point_node:
            self.point_node = self.scene.AddNewNodeByClass(vtkMRMLMarkupsFiducialNode.__name__, "Target point")
            self.point_node.AddObserver(vtkMRMLMarkupsFiducialNode.PointPositionDefinedEvent, self._on_point)
            self.point_node.AddObserver(vtkMRMLMarkupsFiducialNode.PointModifiedEvent, self._on_point)
        self.point_node.RemoveAllControlPoints()
        self.state.point_text = "Click the target in a slice view"
        self.scene_app.place_point(self.point_node)

    def _on_point(self, node, *_):
        if node.GetNumberOfControlPoints() == 0:
            return
        ras = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(0, ras)
        with self.state:
            self.state.point_text = "Point: R {:.1f}, A {:.1f}, S {:.1f} mm".format(*ras)

    # ------------------------------------------------------------------ run

    def run_arguments(self) -> dict:
        state = self.state
        if self.volume is None:
            raise ValueError("open an image first")
        if not state.model:
            raise ValueError("choose a model")
        target = state.target or None
        if target == "point":
            if self.point_node is None or self.point_node.GetNumberOfControlPoints() == 0:
                raise ValueError("place a target point: press 'Place point', then click in a slice view")
            target = self.point_node
        elif target == "roi":
            target = self.segment_target(state.segment)
        return dict(inputVolumeNode=self.volume, model=self.logic.loadModel(state.model), methods=list(state.methods),
                    target=target, layer=state.layer or None, mode=state.mode or None,
                    device=state.device or "auto", modality=state.modality or None,
                    labelThreshold=choices.label_threshold_argument(state.label_choice, state.label_fixed),
                    opacity=float(state.opacity))

    def on_apply(self):
        """Apply starts the logic's background run; while it runs the same button cancels it."""
        if self.job is not None:
            self.job.cancel()
            self.state.status = "Cancelling..."
            return
        try:
            self.job = self.logic.startExplainVolume(**self.run_arguments())
        except Exception as error:  # noqa: BLE001 - bad choices: nothing started
            self._fail(f"Not started: {_one_line(error)}")
            return
        self.state.update({"error": "", "running": True, "run_text": choices.CANCEL_TEXT, "progress": 0,
                           "status": self.job.progress[1]})
        asyncio.ensure_future(self._poll(self.job))

    async def _poll(self, job):
        while not job.done:
            await asyncio.sleep(POLL_SECONDS)
            fraction, message = job.progress
            with self.state:
                self.state.progress = int(round(100 * fraction))
                self.state.status = f"{message} ({job.elapsed:.0f} s)"
        with self.state:
            self.finish(job)

    def finish(self, job) -> None:
        """On the event-loop thread (it owns the scene): publish, or report the cancel / error."""
        try:
            nodes = job.finish()
            first = nodes.heatmaps[next(iter(nodes.heatmaps))] if nodes.heatmaps else None
            self.refresh_heatmaps(first)
            self.refresh_segments()
            self.evaluate(first)
            text = "Created or updated: " + ", ".join(node.GetName() for node in nodes)
            if nodes.probabilityTable is not None:
                self.state.probabilities = probability_rows(nodes.probabilities, nodes.classNames)
                self.state.probability_plot = probability_svg(nodes.probabilities, nodes.classNames)
                text += ". " + nodes.summary
            self.state.status = text + f" ({job.elapsed:.0f} s)"
            self.state.outputs = [node.GetName() for node in nodes]
            self.state.timings = json.dumps({k: round(float(v), 4) for k, v in nodes.timings.items()})
        except ExplainCancelled as cancelled:
            self.state.status = str(cancelled)
        except Exception as error:  # noqa: BLE001 - one line for the page, the trace in the log
            LOG.exception("XAIExplain run failed")
            self._fail(f"Failed: {_one_line(error)}")
        finally:
            self.job = None
            self.state.update({"running": False, "run_text": choices.APPLY_TEXT, "progress": 0,
                               "scene_nodes": self.scene.GetNumberOfNodes()})
            self.scene_app.render()
