"""nnU-Net's preprocessing and export around the engine, so geometry and intensities are nnU-Net's own.

``prepare`` hands the image array (numpy order, spacing reversed, as nnU-Net's
SimpleITK reader does) to the configuration's preprocessor (``DefaultPreprocessor``:
transpose, crop to the non-zero region, the plans' normalisation, e.g. CTNormalization
with the foreground intensity properties, resampling to the configuration's spacing).
The prepared input maps results back with nnU-Net's export: logits resampled with the
configuration's probability resampling, the crop re-inserted, the transpose undone, and
the result placed on the input image's exact grid (origin, spacing, direction).

The ``2d`` configuration preprocesses the same way but keeps the spacing between slices
(its plans give an in-plane spacing only), and runs its 2D network on sliding windows of
every slice along the first axis of the transposed grid, as ``nnUNetPredictor`` does
(``_internal_get_sliding_window_slicers``: a 2D patch is tiled over each slice ``d``).

A cascade stage runs its first stage on the image inside ``prepare`` and preprocesses that
segmentation with the image, as nnU-Net does (:mod:`.cascade`).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ...engine.windows import Tiling
from .library import nnunetv2

#: nnU-Net's sliding windows: tile step 0.5 of the patch, evenly spread starts, the Gaussian
#: (sigma 1/8 of the patch) centred on voxel patch // 2, zero padding split around the volume.
NNUNET_TILE_STEP = 0.5
NNUNET_TILING = Tiling(steps="even", sigma_scale=1.0 / 8, gaussian_centre="floor", pad="centred", pad_value=0.0)
_EPS = 1e-7


class NnUNetPipeline:
    """``prepare(image) -> NnUNetPrepared`` and the engine options of nnU-Net's sliding windows."""

    #: Channel images are stacked voxel by voxel, as nnU-Net's reader does (:mod:`models.channel_inputs`).
    resample_channels = False

    def __init__(self, plans_manager, configuration_manager, dataset_json: dict, label_manager,
                 mirror_axes: tuple[int, ...] = (), previous_stage=None):
        self.plans_manager = plans_manager
        self.configuration_manager = configuration_manager
        self.dataset_json = dataset_json
        self.label_manager = label_manager
        self.mirror_axes = tuple(mirror_axes)
        self.channels = len(dataset_json["channel_names"])
        self.previous_stage = previous_stage  # a cascade's first stage (a LoadedModel), else None

    @property
    def network_channels(self) -> int:
        """Channels the network takes: the image's, plus one per foreground label after a first stage."""
        extra = len(self.label_manager.foreground_labels) if self.previous_stage is not None else 0
        return self.channels + extra

    @property
    def is_2d(self) -> bool:
        """The ``2d`` configuration (a 2D patch): a 2D network over slices along nnU-Net's first axis."""
        return len(self.configuration_manager.patch_size) == 2

    def model_spacing(self, spacing_transposed) -> list[float]:
        """The spacing of nnU-Net's grid: the configuration's, with the slice spacing kept for ``2d``
        (nnU-Net's rule in ``DefaultPreprocessor.run_case_npy`` and ``export_prediction``)."""
        target = [float(s) for s in self.configuration_manager.spacing]
        return [float(spacing_transposed[0])] + target if len(target) < len(spacing_transposed) else target

    def slice_options(self) -> dict:
        """explain_volume / predict_volume keyword arguments in slices mode: nnU-Net's 2D windows over every
        slice (``{}`` for a 3D configuration, which does not run per slice)."""
        if not self.is_2d:
            return {}
        return {"patch_size": [int(p) for p in self.configuration_manager.patch_size],
                "overlap": 1.0 - NNUNET_TILE_STEP, "tiling": NNUNET_TILING, "mirror_axes": self.mirror_axes}

    def volume_options(self) -> dict:
        """explain_volume / predict_volume keyword arguments that reproduce nnU-Net's windows.

        ``mirror_axes`` is non-empty only when the model was loaded with ``mirroring=True``.
        One window per forward, as nnU-Net runs them: its patches are large, and a batch of
        them multiplies the activation memory for no gain on a CPU (a caller's batch_size wins).
        """
        return {"patch_size": [int(p) for p in self.configuration_manager.patch_size], "batch_size": 1,
                "overlap": 1.0 - NNUNET_TILE_STEP, "tiling": NNUNET_TILING, "mirror_axes": self.mirror_axes}

    def prepare(self, image: sitk.Image, slice_axis=None, spacing=None,
                memory_budget_mb: float | None = None, device=None) -> "NnUNetPrepared":
        """nnU-Net's preprocessing of ``image``.

        ``slice_axis`` does not apply: a 3D configuration runs on the volume, and the ``2d`` one slices
        along the first axis of nnU-Net's transposed grid (its plans' ``transpose_forward``), axis 0 of
        the prepared array.

        The grid nnU-Net will resample to is checked against ``memory_budget_mb`` (or the memory
        available) before its preprocessor runs (:func:`models.preprocessing.check_model_grid_bytes`).
        A cascade stage first predicts the image with its first stage on ``device`` (None: where that
        stage's networks are), within the same budget.
        """
        if spacing is not None:
            raise TypeError("an nnU-Net model takes a SimpleITK.Image, whose spacing it reads; spacing= does "
                            "not apply")
        if not isinstance(image, sitk.Image):
            raise TypeError(f"an nnU-Net model takes a SimpleITK.Image, got {type(image).__name__}")
        if slice_axis not in (None, 0) or (slice_axis is not None and not self.is_2d):
            raise ValueError(
                f"an nnU-Net {'2d' if self.is_2d else '3D'} model chooses its own slicing: "
                + ("the 2d configuration slices along the first axis of its transposed grid (plans.json "
                   f"transpose_forward {list(self.plans_manager.transpose_forward)}); leave axis unset"
                   if self.is_2d else "a 3D configuration runs on the whole volume; leave axis unset")
                + f", got axis {slice_axis!r}")
        if image.GetDimension() != 3:
            raise ValueError(f"this nnU-Net model needs a 3D image; got a {image.GetDimension()}D image")
        components = image.GetNumberOfComponentsPerPixel()
        if components != self.channels:
            names = ", ".join(self.dataset_json["channel_names"].values())
            raise ValueError(f"the model takes {self.channels} channel(s) ({names}, dataset.json channel_names) "
                             f"but the image has {components} component(s) per voxel")
        self._check_grid(image, memory_budget_mb)
        previous = self._previous_segmentation(image, memory_budget_mb, device)
        array = sitk.GetArrayFromImage(image)
        array = array[None] if components == 1 else np.moveaxis(array, -1, 0)
        properties = {"spacing": list(image.GetSpacing())[::-1]}
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        data, segmentation, properties = preprocessor.run_case_npy(array, previous, properties, self.plans_manager,
                                                                   self.configuration_manager, self.dataset_json)
        if previous is not None:
            from .cascade import with_previous_segmentation

            data = with_previous_segmentation(data, segmentation, self.label_manager)
        return NnUNetPrepared(np.ascontiguousarray(data, dtype=np.float32), properties, image, self)

    def _previous_segmentation(self, image: sitk.Image, memory_budget_mb: float | None, device):
        """A cascade's first-stage label map of ``image`` (``(1, Z, Y, X)``); None without a first stage."""
        if self.previous_stage is None:
            return None
        from .cascade import first_stage_segmentation

        return first_stage_segmentation(self.previous_stage, image, device, memory_budget_mb)


    def _check_grid(self, image: sitk.Image, memory_budget_mb: float | None) -> None:
        """The shape nnU-Net's preprocessor resamples to (its ``compute_new_shape`` before the crop, an upper
        bound) against the budget, before any copy of the image is made."""
        from ..preprocessing import check_model_grid_bytes

        forward = list(self.plans_manager.transpose_forward)
        shape = np.asarray(image.GetSize()[::-1], dtype=float)[forward]
        spacing = np.asarray(image.GetSpacing()[::-1], dtype=float)[forward]
        target = np.asarray(self.model_spacing(spacing), dtype=float)
        new_shape = np.round(spacing / target * shape).astype(np.int64)
        check_model_grid_bytes(f"nnU-Net model '{self.dataset_json.get('name', 'nnU-Net')}'", self.channels,
                               shape.astype(np.int64), spacing, new_shape, target, memory_budget_mb)


class NnUNetPrepared:
    """An image preprocessed by nnU-Net, and the way back to the input's grid.

    ``array`` is float32 ``(C, Z, Y, X)`` on nnU-Net's grid (transposed, cropped, resampled).
    """

    def __init__(self, array: np.ndarray, properties: dict, image: sitk.Image, pipeline: NnUNetPipeline):
        self.array = array
        self.properties = properties
        self._reference = image
        self._pipeline = pipeline

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def _check(self, values: np.ndarray, what: str, channels: bool) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32)
        shape = values.shape[1:] if channels else values.shape
        if shape != self.spatial_shape or values.ndim != 3 + channels:
            expected = ("(K, " if channels else "(") + ", ".join(map(str, self.spatial_shape)) + ")"
            raise ValueError(f"expected {what} of shape {expected} on nnU-Net's grid, got {values.shape}")
        return values

    def _logits(self, probabilities: np.ndarray) -> torch.Tensor:
        """Logits up to a per-voxel constant: nnU-Net resamples logits, and softmax ignores the constant."""
        p = torch.from_numpy(self._check(probabilities, "probabilities", True))
        if self._pipeline.label_manager.has_regions:
            p = p.clamp(_EPS, 1 - _EPS)
            return torch.log(p) - torch.log1p(-p)
        return torch.log(p.clamp_min(1e-30))

    def _export(self, probabilities: np.ndarray, return_probabilities: bool):
        export = nnunetv2("inference.export_prediction")
        p = self._pipeline
        return export.convert_predicted_logits_to_segmentation_with_correct_shape(
            self._logits(probabilities), p.plans_manager, p.configuration_manager, p.label_manager,
            self.properties, return_probabilities=return_probabilities, num_threads_torch=torch.get_num_threads())

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """``(K, Z, Y, X)`` probabilities on nnU-Net's grid -> ``(K, *input array shape)`` (nnU-Net's export)."""
        return np.asarray(self._export(probabilities, True)[1], dtype=np.float32)

    def restore_labels(self, probabilities: np.ndarray, activation: str | None = None) -> sitk.Image:
        """The label map nnU-Net writes for these probabilities, on the input's grid (uint8, or uint16 for
        more than 254 labels). Label values are dataset.json's (regions: ``regions_class_order``).

        ``activation`` is accepted for the common interface; the label manager decides.
        """
        labels = np.asarray(self._export(probabilities, False))
        return self._on_input_grid(labels)

    def restore_map(self, array: np.ndarray, clamp: bool = True) -> sitk.Image:
        """A map on nnU-Net's grid -> float32 on the input's grid, resampled like nnU-Net's probabilities;
        zero outside the cropped region; clamped to [0, 1] unless ``clamp=False``."""
        values = torch.from_numpy(self._check(array, "a map", False))[None]
        p, props = self._pipeline, self.properties
        spacing = [props["spacing"][i] for i in p.plans_manager.transpose_forward]
        resampled = p.configuration_manager.resampling_fn_probabilities(
            values, props["shape_after_cropping_and_before_resampling"], p.model_spacing(spacing), spacing)
        resampled = np.asarray(resampled, dtype=np.float32)[0]
        from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

        full = insert_crop_into_image(np.zeros(props["shape_before_cropping"], dtype=np.float32), resampled,
                                      props["bbox_used_for_cropping"])
        full = np.ascontiguousarray(full.transpose(p.plans_manager.transpose_backward))
        if clamp:
            np.clip(full, 0.0, 1.0, out=full)
        return self._on_input_grid(full)

    def region_to_model_grid(self, mask: np.ndarray) -> np.ndarray:
        """A boolean region on the input image's array grid -> nnU-Net's grid, the way nnU-Net's
        preprocessor treats a segmentation (transpose, the image's crop, the segmentation resampling).

        A region thinner than a model voxel keeps the model voxel nearest to its centre.
        """
        mask = np.asarray(mask).astype(bool)
        p, props = self._pipeline, self.properties
        expected = tuple(np.asarray(props["shape_before_cropping"])[p.plans_manager.transpose_backward])
        if mask.shape != expected:
            raise ValueError(f"the target region mask has shape {mask.shape} but the image is {expected} "
                             "(z, y, x); give the mask on the image's own grid")
        transposed = mask.transpose(p.plans_manager.transpose_forward)
        box = tuple(slice(lo, hi) for lo, hi in props["bbox_used_for_cropping"])
        cropped = transposed[box][None].astype(np.int16)
        spacing = [props["spacing"][i] for i in p.plans_manager.transpose_forward]
        out = np.asarray(p.configuration_manager.resampling_fn_seg(
            cropped, self.spatial_shape, spacing, p.model_spacing(spacing)))[0] > 0
        if not out.any() and mask.any():
            out[self.voxel_to_model_grid(np.argwhere(mask).mean(axis=0))] = True
        return out

    def voxel_to_model_grid(self, voxel) -> tuple[int, ...]:
        """A voxel (z, y, x) of the input image's array -> the nearest voxel of nnU-Net's grid
        (transposed, shifted by the crop, scaled by the resampling), clamped to the grid."""
        p, props = self._pipeline, self.properties
        transposed = np.asarray([float(voxel[i]) for i in p.plans_manager.transpose_forward])
        start = np.asarray([lo for lo, _ in props["bbox_used_for_cropping"]], dtype=float)
        cropped = np.asarray(props["shape_after_cropping_and_before_resampling"], dtype=float)
        scaled = (transposed - start + 0.5) * np.asarray(self.spatial_shape) / cropped - 0.5
        return tuple(int(min(max(round(v), 0), n - 1)) for v, n in zip(scaled, self.spatial_shape))

    def _on_input_grid(self, array: np.ndarray) -> sitk.Image:
        if array.dtype.kind in "iub":
            array = array.astype(np.uint8 if array.max(initial=0) < 255 else np.uint16)
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(self._reference.GetOrigin())
        image.SetSpacing(self._reference.GetSpacing())
        image.SetDirection(self._reference.GetDirection())
        return image
