"""A bundle-preprocessed image and the way back onto the input's grid, through MONAI's own inverse.

:class:`PreparedBundleVolume` holds one preprocessed volume (a 3D network); :class:`PreparedBundleSlices`
holds every slice along a slice axis, each preprocessed as its own 2D image (a 2D network), stacked so
that the engine's per-slice mode hands the network exactly the tensor the bundle would. Both implement
:class:`~.pipeline_protocol.PreparedImage`.

MONAI's tensors index an image as its reader does, ``(C, x, y[, z])``; numpy arrays of a SimpleITK image
are ``(z, y, x)``, so results are transposed on the way back.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch


def _numpy_order(channels_first) -> np.ndarray:
    """(C, x, y[, z]) as a MONAI reader indexes an image -> numpy (C, [z,] y, x) float32."""
    array = np.asarray(torch.as_tensor(channels_first).detach().cpu(), dtype=np.float32)
    return np.ascontiguousarray(np.transpose(array, (0,) + tuple(range(array.ndim - 1, 0, -1))))


def _checked(array: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
    if array.shape[1:] != expected:
        raise ValueError(f"the bundle's inverse gave shape {array.shape[1:]}, not the input's {expected}; its "
                         "preprocessing has a transform Invertd cannot undo (e.g. a crop without inverse)")
    return array


def _on_image(array: np.ndarray, image: sitk.Image, pixel) -> sitk.Image:
    out = sitk.GetImageFromArray(array.astype(pixel))
    out.CopyInformation(image)
    return out


def _affine(tensor, dims: int, original: bool = False) -> np.ndarray:
    """The (dims + 1) square affine (index -> RAS world) of a MONAI tensor, now or as read from the file."""
    matrix = tensor.meta["original_affine"] if original else tensor.affine
    matrix = np.asarray(matrix, dtype=np.float64)
    out = np.eye(dims + 1)
    out[:dims, :dims] = matrix[:dims, :dims]
    out[:dims, dims] = matrix[:dims, -1]
    return out


class PreparedBundleVolume:
    """The preprocessed volume (``array``: float32 (C, *model grid), the network's own axis order)
    and the way back onto the input image's grid."""

    def __init__(self, pipeline, data: dict, image: sitk.Image):
        self.pipeline, self.data, self.image = pipeline, data, image
        self.array = np.ascontiguousarray(np.asarray(data[pipeline.image_key].detach().cpu(), dtype=np.float32))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def _on_input_grid(self, channels_first) -> np.ndarray:
        return _checked(_numpy_order(channels_first), tuple(reversed(self.image.GetSize())))

    def _model_reference(self) -> sitk.Image:
        """An empty image on the model grid, from the preprocessed tensor's (RAS) affine.

        SimpleITK index (x, y, z) is the tensor's spatial index (axis 1, 2, 3), so
        ``GetArrayFromImage`` of an image on this grid is the tensor's layout reversed.
        """
        affine = np.asarray(self.data[self.pipeline.image_key].affine, dtype=np.float64)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        reference = sitk.Image([int(n) for n in self.spatial_shape], sitk.sitkUInt8)
        reference.SetSpacing(spacing.tolist())
        reference.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
        reference.SetOrigin(lps[:3, 3].tolist())
        return reference

    def region_to_model_grid(self, mask: np.ndarray) -> np.ndarray:
        """A boolean region (z, y, x) on the input image -> the same region on the model grid (nearest voxel;
        a region thinner than a model voxel keeps the model voxel nearest to its centre)."""
        mask = np.asarray(mask).astype(bool)
        expected = tuple(reversed(self.image.GetSize()))
        if mask.shape != expected:
            raise ValueError(f"the target region mask has shape {mask.shape} but the image is {expected} "
                             "(z, y, x); give the mask on the image's own grid")
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(self.image)
        moved = sitk.Resample(image, self._model_reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        out = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(moved), (2, 1, 0))).astype(bool)
        if not out.any() and mask.any():
            out[self.voxel_to_model_grid(tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0)))] = True
        return out

    def voxel_to_model_grid(self, voxel) -> tuple[int, ...]:
        """A voxel (z, y, x) of the input image -> the nearest voxel (tensor axis order) of the model grid."""
        point = self.image.TransformContinuousIndexToPhysicalPoint([float(v) for v in reversed(tuple(voxel))])
        index = self._model_reference().TransformPhysicalPointToIndex(point)
        return tuple(min(max(int(i), 0), n - 1) for i, n in zip(index, self.spatial_shape))

    def restore_map(self, array: np.ndarray, clamp: bool = True) -> sitk.Image:
        """A map on the model grid -> float32 image on the input grid (the image's own inverse)."""
        restored = self._on_input_grid(self.pipeline.invert(self.data, "xaiexplain_map", np.asarray(array)[None]))[0]
        if clamp:
            restored = np.clip(restored, 0.0, 1.0)
        return _on_image(restored, self.image, np.float32)

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """(K, *model grid) probabilities -> (K, Z, Y, X) on the input grid."""
        return self._on_input_grid(self.pipeline.invert(self.data, self.pipeline.pred_key, probabilities))

    def restore_labels(self, probabilities: np.ndarray, activation: str = "softmax") -> sitk.Image:
        """Label image on the input grid from the bundle's postprocessing of the probabilities."""
        labels = self._on_input_grid(self.pipeline.postprocess(self.data, probabilities))
        if labels.shape[0] != 1:  # postprocessing left channels: decide as the card pipeline does
            from .preprocessing import decide_labels
            labels = decide_labels(labels, activation)[None]
        return _on_image(np.rint(labels[0]), self.image, np.uint8)


class PreparedBundleSlices:
    """Every slice along ``axis`` (numpy order of the volume) preprocessed by the bundle as a 2D image.

    ``array`` is float32 ``(C, *grid)`` where the slice axis keeps its place and the two in-plane axes are
    the bundle's tensor ``(H, W)``: slice ``k`` along ``axis`` is exactly the bundle's preprocessed slice.
    Each slice keeps its own MONAI item, so every result goes back through that slice's inverse. A 2D
    input image is one slice, and results come back as 2D images.
    """

    def __init__(self, pipeline, image: sitk.Image, axis: int):
        self.pipeline, self.image, self.axis = pipeline, image, axis
        self.was_2d = image.GetDimension() == 2
        self.items = [pipeline.run(part) for part in self._slices()]
        tensors = [np.asarray(item[pipeline.image_key].detach().cpu(), dtype=np.float32) for item in self.items]
        for index, tensor in enumerate(tensors):
            if tensor.ndim != 3 or tensor.shape != tensors[0].shape:
                raise ValueError(f"the MONAI bundle '{pipeline.name}' has a 2D network, but its preprocessing gave "
                                 f"slice {index} the shape {tensor.shape} (slice 0: {tensors[0].shape}); a 2D "
                                 "network needs every slice as (C, H, W) of one size (a content-dependent crop "
                                 "cannot be stacked)")
        self.array = np.ascontiguousarray(np.stack(tensors, axis=1 + axis))

    def _slices(self):
        """Each slice as a 2D SimpleITK image with its in-plane spacing, origin and direction."""
        if self.was_2d:
            yield self.image
            return
        size = list(self.image.GetSize())
        along = 2 - self.axis  # numpy axis -> SimpleITK dimension
        count, size[along] = size[along], 0
        for k in range(count):
            index = [0, 0, 0]
            index[along] = k
            yield sitk.Extract(self.image, size, index)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    @property
    def _input_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.image.GetSize()))

    def _slice(self, array: np.ndarray, k: int) -> np.ndarray:
        return np.take(array, k, axis=1 + self.axis)

    def _per_slice(self, restore) -> np.ndarray:
        """(C, *input grid) from ``restore(item, k)`` giving each slice as MONAI's (C, x, y)."""
        plane = tuple(n for i, n in enumerate(self._input_shape) if self.was_2d or i != self.axis)
        parts = [_checked(_numpy_order(restore(item, k)), plane) for k, item in enumerate(self.items)]
        return parts[0] if self.was_2d else np.stack(parts, axis=1 + self.axis)

    def restore_map(self, array: np.ndarray, clamp: bool = True) -> sitk.Image:
        """A map on the model grid -> float32 image on the input grid (each slice through its own inverse)."""
        array = np.asarray(array)[None]
        restored = self._per_slice(lambda item, k: self.pipeline.invert(item, "xaiexplain_map",
                                                                        self._slice(array, k)))[0]
        if clamp:
            restored = np.clip(restored, 0.0, 1.0)
        return _on_image(restored, self.image, np.float32)

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """(K, *model grid) probabilities -> (K, *input grid)."""
        probabilities = np.asarray(probabilities)
        return self._per_slice(lambda item, k: self.pipeline.invert(item, self.pipeline.pred_key,
                                                                    self._slice(probabilities, k)))

    def restore_labels(self, probabilities: np.ndarray, activation: str = "softmax") -> sitk.Image:
        """Label image on the input grid: each slice through the bundle's own postprocessing."""
        probabilities = np.asarray(probabilities)
        labels = self._per_slice(lambda item, k: self.pipeline.postprocess(item, self._slice(probabilities, k)))
        if labels.shape[0] != 1:  # postprocessing left channels: decide as the card pipeline does
            from .preprocessing import decide_labels
            labels = decide_labels(labels, activation)[None]
        return _on_image(np.rint(labels[0]), self.image, np.uint8)

    # -- input grid -> model grid, through each slice's affines ------------------------------------------
    def _plane_maps(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(model -> input, input -> model) homogeneous 2D index maps of slice ``k`` (MONAI (x, y) order):
        the tensor's affine now and as its file was read, both to the same world."""
        tensor = self.items[k][self.pipeline.image_key]
        model_to_input = np.linalg.solve(_affine(tensor, 2, original=True), _affine(tensor, 2))
        return model_to_input, np.linalg.inv(model_to_input)

    def region_to_model_grid(self, mask: np.ndarray) -> np.ndarray:
        """A boolean region on the input grid -> the model grid (nearest input voxel of each model voxel,
        per slice; a region thinner than a model voxel keeps the model voxel nearest to its centre).

        A model voxel centred within half an input voxel beyond the image's edge takes the edge voxel,
        where MONAI's own nearest resampling of a mask would pad it."""
        mask = np.asarray(mask).astype(bool)
        if mask.shape != self._input_shape:
            raise ValueError(f"the target region mask has shape {mask.shape} but the image is {self._input_shape} "
                             "(numpy order); give the mask on the image's own grid")
        out = np.zeros(self.spatial_shape, dtype=bool)
        plane_shape = self.array.shape[1:1 + self.axis] + self.array.shape[2 + self.axis:]
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in plane_shape], indexing="ij"), 0).reshape(2, -1)
        homogeneous = np.vstack([grid, np.ones((1, grid.shape[1]))])
        for k in range(len(self.items)):
            part = (mask if self.was_2d else np.take(mask, k, axis=self.axis)).T  # MONAI (x, y) order
            source = np.rint((self._plane_maps(k)[0] @ homogeneous)[:2]).astype(np.int64)
            inside = np.all((source >= 0) & (source < np.asarray(part.shape)[:, None]), axis=0)
            values = np.zeros(grid.shape[1], dtype=bool)
            values[inside] = part[source[0, inside], source[1, inside]]
            index = [slice(None)] * 3
            index[self.axis] = k
            out[tuple(index)] = values.reshape(plane_shape)
        if not out.any() and mask.any():
            out[self.voxel_to_model_grid(tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0)))] = True
        return out

    def voxel_to_model_grid(self, voxel) -> tuple[int, ...]:
        """A voxel of the input grid (numpy order) -> the nearest voxel of the model grid."""
        voxel = [int(v) for v in voxel]
        k = 0 if self.was_2d else voxel.pop(self.axis)
        xy = np.asarray(list(reversed(voxel)) + [1.0])  # the slice's numpy (rows, cols) -> MONAI (x, y)
        model = np.rint(self._plane_maps(k)[1] @ xy)[:2].astype(int)
        index = list(model)
        index.insert(self.axis, k)
        return tuple(min(max(int(i), 0), n - 1) for i, n in zip(index, self.spatial_shape))
