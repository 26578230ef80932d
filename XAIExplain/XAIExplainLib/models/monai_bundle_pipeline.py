"""A MONAI bundle's own preprocessing, inferer settings and inverse, as the engine's model pipeline.

The bundle's ``preprocessing`` starts with ``LoadImaged``, so the image is handed to it as the bundle's
own workflow hands it a case: as files (temporary NIfTI copies, so the reader, the orientation and the
spacing are the bundle's). Which file goes to which key follows the config (MONAI bundle specification,
https://docs.monai.io/en/stable/mb_specification.html, and the model zoo's configs):

* one ``LoadImaged`` key and one channel: one file;
* one key and C channels: a list of C files, which ``LoadImaged`` stacks as channels (the BraTS bundle's form);
* C keys (one per channel), usually joined by ``ConcatItemsd``: one file per key, in channel order.

Several channels arrive as one multi-component image (a vector volume) whose components are in the
model's channel order; the network's input is the ``ConcatItemsd`` result (else the metadata's input key).

A 3D network (``spatial_dims`` 3: the inferer's ``roi_size`` or the metadata's ``spatial_shape`` has three
sizes) sees the whole volume (:class:`~.monai_bundle_prepared.PreparedBundleVolume`). A 2D network (an X-ray
or pathology classifier, a 2D segmenter) sees each slice along the slice axis as its own 2D image, through
the same preprocessing, as every 2D model in this package does
(:class:`~.monai_bundle_prepared.PreparedBundleSlices`); the engine's per-slice mode feeds whole slices,
so a 2D bundle whose inferer slides a window smaller than its preprocessed slice is run on the whole slice
(the same result for a fully convolutional network only away from the window borders). Results go back with MONAI's ``Invertd`` and the
applied transforms of each item: the prediction through the bundle's postprocessing (minus its
activation, already applied, and minus any writer), maps as an extra key with the same spatial inverse.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .errors import ModelCardError

_WRITERS = ("SaveImage", "SaveImaged")
_ACTIVATIONS = ("Activations", "Activationsd")


def transforms_of(compose) -> list:
    """The transforms of a ``Compose`` (a single transform as a list of one; nothing for None)."""
    return list(getattr(compose, "transforms", [compose])) if compose is not None else []


def _named(compose, name: str) -> list:
    return [t for t in transforms_of(compose) if type(t).__name__ == name]


def _keys(transform) -> list[str]:
    return [str(k) for k in getattr(transform, "keys", ())]


class BundlePipeline:
    """The bundle's preprocessing, inferer settings and inverse (see the module docstring)."""

    def __init__(self, config: Path, metadata: dict, preprocessing, inferer=None, postprocessing=None):
        self.config, self.metadata = config, metadata
        self.preprocessing, self.inferer, self.postprocessing = preprocessing, inferer, postprocessing
        fmt = metadata.get("network_data_format", {}) if isinstance(metadata.get("network_data_format"), dict) \
            else {}
        self.inputs = fmt.get("inputs", {}) if isinstance(fmt.get("inputs"), dict) else {}
        self.outputs = fmt.get("outputs", {}) if isinstance(fmt.get("outputs"), dict) else {}
        self.pred_key = next(iter(self.outputs), "pred")
        self.load_keys = self._load_keys()
        self.image_key = self._network_key()
        self.invert_key = self._invert_key()
        self.channels = self._channels()
        self.activation = self._activation()
        self.window = self._window()
        self.spatial_dims = len(self.window)

    # -- what the config says -------------------------------------------------------------------
    def _load_keys(self) -> list[str]:
        loaders = _named(self.preprocessing, "LoadImaged")
        if not loaders or not _keys(loaders[0]):
            raise ModelCardError(f"{self.config}: the bundle's preprocessing does not start by reading files "
                                 "(no LoadImaged with keys); XAIExplain hands a bundle its image as a file, as "
                                 "the bundle's own workflow does, so add LoadImaged for the image key(s)")
        return _keys(loaders[0])

    def _network_key(self) -> str:
        """The key the network reads: a ``ConcatItemsd`` result, else the metadata's input key when the
        preprocessing loads it, else the one key it loads."""
        joined = [str(t.name) for t in _named(self.preprocessing, "ConcatItemsd") if getattr(t, "name", None)]
        if joined:
            return joined[-1]
        named = next(iter(self.inputs), None)
        if named in self.load_keys:
            return named
        if len(self.load_keys) == 1:
            return self.load_keys[0]
        raise ModelCardError(f"{self.config}: LoadImaged reads the keys {self.load_keys} but the preprocessing "
                             "does not join them (no ConcatItemsd) and metadata.json's network_data_format.inputs "
                             f"names {list(self.inputs)}; say which key the network reads")

    def _invert_key(self) -> str:
        """The key whose applied transforms the bundle's own ``Invertd`` undoes (its ``orig_keys``)."""
        for transform in _named(self.postprocessing, "Invertd"):
            orig = getattr(transform, "orig_keys", None)
            orig = [orig] if isinstance(orig, str) else list(orig or ())
            if orig:
                return str(orig[0])
        return self.image_key

    def _channels(self) -> int:
        described = self.inputs.get(self.image_key)
        if isinstance(described, dict) and "num_channels" in described:
            return int(described["num_channels"])
        if len(self.load_keys) > 1:
            return sum(int((self.inputs.get(k) or {}).get("num_channels", 1)) for k in self.load_keys)
        return 1

    def _activation(self) -> str:
        for transform in transforms_of(self.postprocessing):
            if type(transform).__name__ in _ACTIVATIONS:  # Activationsd keeps one flag per key
                if any(np.atleast_1d(getattr(transform, "softmax", False))):
                    return "softmax"
                if any(np.atleast_1d(getattr(transform, "sigmoid", False))):
                    return "sigmoid"
        return "softmax" if self.postprocessing is None else "none"

    def _window(self) -> tuple[int, ...]:
        """The inferer's ``roi_size``, else the metadata's ``spatial_shape``: 2 or 3 sizes (the network's dims)."""
        roi = getattr(self.inferer, "roi_size", None)
        if roi is not None:
            return tuple(int(r) for r in roi)
        described = self.inputs.get(self.image_key) or self.inputs.get(self.load_keys[0]) or {}
        shape = tuple(int(s) for s in described.get("spatial_shape", ()) if isinstance(s, (int, float)))
        if len(shape) not in (2, 3):
            raise ModelCardError(
                f"{self.config.parent / 'metadata.json'}: network_data_format.inputs.{self.image_key}.spatial_shape "
                f"must give 2 or 3 sizes when the config's inferer has no roi_size, got "
                f"{described.get('spatial_shape')!r}")
        return shape

    @property
    def roi_size(self) -> tuple[int, ...] | None:
        roi = getattr(self.inferer, "roi_size", None)
        return tuple(int(r) for r in roi) if roi is not None else None

    # -- what the engine needs ------------------------------------------------------------
    def volume_options(self) -> dict:
        """The inferer's window, overlap and blending weights (MONAI's own importance map for its
        mode and sigma) for explain_volume; the whole volume without a sliding-window inferer."""
        if self.roi_size is None or self.spatial_dims != 3:
            return {}
        from monai.data.utils import compute_importance_map
        weights = compute_importance_map(self.roi_size, mode=getattr(self.inferer, "mode", "constant"),
                                         sigma_scale=getattr(self.inferer, "sigma_scale", 0.125))
        return {"patch_size": self.roi_size, "overlap": float(getattr(self.inferer, "overlap", 0.25)),
                "window_weights": weights.float()}

    def prepare(self, image, slice_axis=None, spacing=None, memory_budget_mb: float | None = None):
        """Run the bundle's preprocessing on ``image`` (a ``SimpleITK.Image``, whose geometry and spacing
        the bundle's transforms read): the whole volume for a 3D network, each slice along ``slice_axis``
        (numpy order of the volume, default 0) for a 2D one.

        ``memory_budget_mb`` (or the memory available) bounds the model grid, checked before the
        bundle's preprocessing runs."""
        from .monai_bundle_prepared import PreparedBundleSlices, PreparedBundleVolume

        if not isinstance(image, sitk.Image):
            raise TypeError(f"a MONAI bundle reads its input with its own LoadImaged, which needs the image's "
                            f"geometry: pass a SimpleITK.Image, got {type(image).__name__}")
        if spacing is not None:
            raise TypeError("a MONAI bundle takes a SimpleITK.Image, whose spacing it reads; spacing= does not apply")
        components = int(image.GetNumberOfComponentsPerPixel())
        if components != self.channels:
            raise ValueError(f"the MONAI bundle '{self.name}' takes {self.channels} channel(s) (keys "
                             f"{self.load_keys}) but the image has {components} component(s) per voxel; give "
                             "one image whose components are the channels in the bundle's order")
        if self.spatial_dims == 3:
            if slice_axis is not None:
                raise TypeError(f"the MONAI bundle '{self.name}' has a 3D network, which takes no slice axis")
            if image.GetDimension() != 3:
                raise ValueError(f"the MONAI bundle '{self.name}' has a 3D network and needs a volume; got a "
                                 f"{image.GetDimension()}D image")
            self._check_grid(image, None, memory_budget_mb)
            return PreparedBundleVolume(self, self.run(image), image)
        axis = 0 if slice_axis is None else slice_axis
        if axis not in (0, 1, 2) or isinstance(axis, bool):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (numpy order z, y, x), got {slice_axis!r}")
        if image.GetDimension() == 2 and axis != 0:
            raise ValueError(f"the MONAI bundle '{self.name}' would run along slice axis {axis}; a 2D image only "
                             "has one slice (axis 0)")
        self._check_grid(image, axis, memory_budget_mb)
        return PreparedBundleSlices(self, image, axis)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.config.parent.parent.name))

    def run(self, image: sitk.Image) -> dict:
        """The bundle's preprocessing on ``image`` (2D or 3D): its output dict, the network's input cloned."""
        with tempfile.TemporaryDirectory(prefix="xaiexplain-bundle-") as folder:
            data = self.preprocessing(self._files(image, Path(folder)))
            tensor = data[self.image_key]
            tensor = tensor.clone() if isinstance(tensor, torch.Tensor) else torch.as_tensor(np.asarray(tensor))
        data[self.image_key] = tensor
        return data

    def _files(self, image: sitk.Image, folder: Path) -> dict:
        """The bundle's input dict: a NIfTI file per channel, keyed as the module docstring says."""
        channels = [image] if self.channels == 1 else \
            [sitk.VectorIndexSelectionCast(image, c) for c in range(self.channels)]
        paths = []
        for index, channel in enumerate(channels):
            path = str(folder / f"channel_{index:04d}.nii")
            sitk.WriteImage(channel, path)
            paths.append(path)
        if len(self.load_keys) == 1:
            return {self.load_keys[0]: paths[0] if len(paths) == 1 else paths}
        if len(self.load_keys) == len(paths):
            return dict(zip(self.load_keys, paths))
        raise ModelCardError(f"{self.config}: LoadImaged reads {len(self.load_keys)} keys {self.load_keys} but the "
                             f"network takes {len(paths)} channel(s); XAIExplain gives one file per key (one "
                             "channel each) or, for one key, one file per channel")

    def _check_grid(self, image: sitk.Image, axis: int | None, memory_budget_mb: float | None) -> None:
        """The model grid (the image's extent at the bundle's ``Spacingd`` pixdim, or a ``Resized`` size;
        per slice for a 2D network) against the budget, before the preprocessing allocates it."""
        from .preprocessing import check_model_grid_bytes

        dims = image.GetDimension()
        size = np.asarray(image.GetSize(), dtype=float)  # SimpleITK (x, y, z) order from here on
        spacing = np.asarray(image.GetSpacing(), dtype=float)
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(dims, dims)
        plane = [d for d in range(dims) if axis is None or dims == 2 or d != 2 - axis]
        new_size, target = size.copy(), spacing.copy()
        in_plane = direction[np.ix_(plane, plane)] if len(plane) < dims else direction
        for transform in transforms_of(self.preprocessing):
            pixdim = np.asarray(getattr(getattr(transform, "spacing_transform", None), "pixdim", ()), dtype=float)
            if pixdim.size == len(plane) and np.all(pixdim > 0):
                # pixdim is per world axis of the RAS-oriented tensor: each image axis takes the pixdim of
                # the world axis its direction is closest to
                world = np.abs(in_plane).argmax(axis=0)
                target[plane] = pixdim.ravel()[world]
                new_size[plane] = np.ceil(size[plane] * spacing[plane] / target[plane] - 1e-6)
            resized = getattr(getattr(transform, "resizer", None), "spatial_size", None)
            if isinstance(resized, (list, tuple)) and len(resized) == len(plane) and all(int(s) > 0 for s in resized):
                extent = new_size[plane] * target[plane]
                new_size[plane] = np.asarray(resized, dtype=float)
                target[plane] = extent / new_size[plane]
        check_model_grid_bytes(f"MONAI bundle '{self.name}'", self.channels, size[::-1].astype(np.int64),
                               spacing[::-1], new_size[::-1].astype(np.int64), target[::-1], memory_budget_mb)

    # -- inverse ----------------------------------------------------------------------------
    def invert(self, data: dict, key: str, value: np.ndarray):
        """``value`` (C, *model grid) back through the item's applied transforms (MONAI Invertd)."""
        from monai.data import MetaTensor
        from monai.transforms import Invertd
        item = dict(data)
        item[key] = MetaTensor(torch.as_tensor(np.asarray(value, dtype=np.float32)))
        inverted = Invertd(keys=key, transform=self.preprocessing, orig_keys=self.invert_key,
                           nearest_interp=False, to_tensor=True)(item)
        return inverted[key]

    def postprocess(self, data: dict, probabilities: np.ndarray):
        """The bundle's postprocessing on activated outputs, without its activation and writers."""
        from monai.transforms import AsDiscreted, Compose, Invertd
        from monai.data import MetaTensor
        kept = [t for t in transforms_of(self.postprocessing) if type(t).__name__ not in _WRITERS + _ACTIVATIONS]
        if not kept:
            kept = [Invertd(keys=self.pred_key, transform=self.preprocessing, orig_keys=self.invert_key,
                            nearest_interp=False, to_tensor=True), AsDiscreted(keys=self.pred_key, argmax=True)]
        item = dict(data)
        item[self.pred_key] = MetaTensor(torch.as_tensor(np.asarray(probabilities, dtype=np.float32)))
        return Compose(kept)(item)[self.pred_key]
