"""pyliverlesionseg's crop of a CT to the abdomen, from the hip to above the liver dome.

Tang et al. (Eur J Nucl Med Mol Imaging 47, 2020) feed their liver network the part of the CT
between the hip and 7 cm above the liver dome, inside the body's bounding box, at most
489 x 408 x 408 mm (their ``crop_ct_image``). The box is found from intensity profiles along z,
with their thresholds (HU): soft tissue -150, air -600, bone 500.

1. Body: voxels above the tissue threshold, eroded once; the largest connected component's box.
2. Liver dome: inside that box (the top slice counted as tissue), air below -600, opened with a
   5^3 cube; the largest air component is the air around the body, the others are air inside it
   (lungs, bowel gas). Along z, the smoothed (7 slices) area of the inner air exceeds half its
   range over the lungs; the dome is the start of that run (of its second run when the profile
   drops below 20 % of its range between the two, i.e. bowel gas below the lungs), or the first
   slice of the lower of the two next largest air components, whichever is higher.
3. Hip: the smoothed bone area below the dome; its deepest local minimum (order 15) sits
   between the hips and the spine (moved above the second highest local maximum when that lies
   higher); the hip is the highest local maximum (order 5) below that minimum whose bone area
   exceeds 70 % of the profile's range (lowered in steps of 0.1 until one exists), the first
   slice when fewer than two qualify, and never more than 400 mm below the dome.
4. The z range is the hip minus the hip margin to the dome plus the dome margin; the x, y box
   is the body's, tightened to the largest component of the tissue eroded with a 5^3 cube.
5. A box larger than the maximum size is trimmed: in x and y in proportion to the distance of
   each side from the centre of the inner air, in z from the bottom.

Where the image lacks a landmark (no lungs, no bone profile below the dome) their code stops; here
:class:`CropError` says which, and the card decides (``required``) whether the whole image is used
instead. Arrays are their ``(x, y, z)`` LPS arrays (our numpy ``(z, y, x)`` transposed), so that
connected-component numbering and profile directions are theirs. Their MR crop is
:mod:`models.liver_crop_mr` (card ``"method": "mr"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from scipy import ndimage, signal


@dataclass(frozen=True)
class CropSpec:
    """The thresholds and sizes of the crop (their defaults as their liver pipeline calls it)."""

    #: the card's ``input.resampling.crop.method``, and what the messages of a failed crop say it is for
    method: ClassVar[str] = "ct"
    modality: ClassVar[str] = "CT"
    extent: ClassVar[str] = "hip to liver dome"
    needs: ClassVar[str] = "a CT from the lung bases to the pelvis"

    size_mm_max: tuple[float, float, float] = (489.0, 408.0, 408.0)  # x, y, z
    tissue_hu: float = -150.0
    air_hu: float = -600.0
    bone_hu: float = 500.0
    hip_ratio: float = 0.7
    liver_height_max_mm: float = 400.0
    dome_margin_mm: float = 70.0
    hip_margin_mm: float = 20.0
    #: False: an image without the landmarks (a chest CT that stops above the pelvis) is used whole,
    #: with a warning; True: it is refused (their code stops there)
    required: bool = False

    def to_dict(self) -> dict:
        return {"method": self.method, "size_mm_max": list(self.size_mm_max), "tissue_hu": self.tissue_hu,
                "air_hu": self.air_hu, "bone_hu": self.bone_hu, "hip_ratio": self.hip_ratio,
                "liver_height_max_mm": self.liver_height_max_mm, "dome_margin_mm": self.dome_margin_mm,
                "hip_margin_mm": self.hip_margin_mm, "required": self.required}

    def box(self, hu_xyz: np.ndarray, voxel_xyz: Sequence[float]) -> tuple[slice, ...]:
        return abdomen_box(hu_xyz, voxel_xyz, self)


class CropError(ValueError):
    """The image lacks what the crop looks for (body, lungs, bone profile)."""


def abdomen_box(hu_xyz: np.ndarray, voxel_xyz: Sequence[float], spec: CropSpec = CropSpec()) -> tuple[slice, ...]:
    """The ``(x, y, z)`` slices of the abdomen in ``hu_xyz`` (see the module notes)."""
    hu = np.asarray(hu_xyz)
    voxel = np.asarray(voxel_xyz, dtype=float)
    body = largest_box(ndimage.binary_erosion(hu > spec.tissue_hu))
    if body is None:
        raise CropError(f"no voxel above {spec.tissue_hu:g} HU survives an erosion: this is not a CT of a body")
    inner_air, centre_xy, lung_start = _inner_air(hu, body, voxel, spec)
    dome = max(_dome_from_profile(inner_air), lung_start)
    hip = _hip(hu, dome, spec)
    if (dome - hip) * voxel[2] > spec.liver_height_max_mm:
        hip = dome - int(spec.liver_height_max_mm / voxel[2])
    z = slice(max(0, hip - int(spec.hip_margin_mm / voxel[2])),
              min(hu.shape[2], dome + int(spec.dome_margin_mm / voxel[2])))
    box = (body[0], body[1], z)
    tight = largest_box(ndimage.binary_erosion(hu[box] > spec.tissue_hu, np.ones((5, 5, 5))))
    if tight is not None:
        box = tuple(slice(b.start + t.start, b.start + t.stop) for b, t in zip(box[:2], tight[:2])) + (z,)
    return _trimmed(box, centre_xy, voxel, spec.size_mm_max)


def largest_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of the largest connected component (the first of equal ones), None if empty."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return _box(labels == int(np.argmax(counts)) + 1)


def _box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of a non-empty boolean mask."""
    return ndimage.find_objects(mask.astype(np.int8))[0]


def _inner_air(hu: np.ndarray, body: tuple[slice, ...], voxel: np.ndarray, spec: CropSpec):
    """``(air inside the body, its x-y box centre, first slice of the lower lung)``."""
    work = np.full(hu.shape, hu.min(), dtype=float)
    work[body] = hu[body]
    work[:, :, -1] = 0.0
    air = work < spec.air_hu
    air[:, :, :-1] = ndimage.binary_opening(air[:, :, :-1], np.ones((5, 5, 5)))
    padded = np.pad(air, ((3, 3), (3, 3), (0, 0)), mode="constant", constant_values=1)
    labels = ndimage.label(padded)[0][3:-3, 3:-3, :]
    counts = np.bincount(labels.ravel(), minlength=labels.max() + 1)[1:]
    if counts.size < 3:
        raise CropError("the crop looks for the lungs as the two largest air spaces inside the body and found "
                        f"{counts.size - 1 if counts.size else 0}; the image must reach the lung bases")
    volumes = counts * float(np.prod(voxel))
    ranked = np.sort(volumes)
    first_with = [int(np.flatnonzero(volumes == v)[0]) + 1 for v in ranked[-3:][::-1]]  # label of each volume
    inner = np.logical_and(labels != first_with[0], air)
    box = _box(inner)
    centre_xy = tuple((s.start + s.stop + 1) // 2 for s in box[:2])
    starts = [_box(labels == label)[2].start for label in first_with[1:]]
    lung = first_with[1 + int(np.argmax(starts))]
    return inner, centre_xy, _box(labels == lung)[2].start


def _dome_from_profile(inner_air: np.ndarray) -> int:
    profile = signal.convolve(inner_air.sum(0).sum(0), np.ones(7), "same")
    low, high = profile.min(), profile.max()
    above = np.flatnonzero(profile > low + 0.5 * (high - low))
    if not len(above):
        raise CropError("the air inside the body has the same area on every slice: no lung base to find")
    steps = signal.convolve(above, np.array([1, -1]), "same")
    run_starts = np.flatnonzero(steps != 1)
    if len(run_starts) > 1:
        gap = profile[above[run_starts[1] - 1]:above[run_starts[1]]]
        if np.any(gap < low + 0.2 * (high - low)):
            return int(above[run_starts[1]])
    return int(above[0])


def _extrema(profile: np.ndarray, compare, order: int, step: int) -> np.ndarray:
    """Local extrema of ``profile`` at ``order``, the order lowered by ``step`` (not below 1) until some exist."""
    while True:
        found = signal.argrelextrema(profile, compare, order=order)[0]
        if len(found) or order == 1:
            return found
        order = max(1, order - step)


def _hip(hu: np.ndarray, dome: int, spec: CropSpec) -> int:
    bone = signal.convolve((hu > spec.bone_hu).astype("int16").sum(0).sum(0), np.ones(7), "same")[:dome]
    if bone.size < 3:
        raise CropError(f"the liver dome was found at slice {dome}, leaving no slices below it to find the hip in")
    top = int(np.argmax(bone))
    minima = _extrema(bone, np.less, 15, 3)
    maxima = _extrema(bone, np.greater, 15, 3)
    if not len(minima) or not len(maxima):
        raise CropError("the bone area along z has no local minimum or maximum below the liver dome (no spine and "
                        "hip profile); the image must reach the pelvis")
    bottom = int(minima[np.argsort(bone[minima])[0]])
    ranked = maxima[np.argsort(bone[maxima])]
    second = int(ranked[-2] if len(ranked) > 1 else ranked[-1])
    if bottom < top and bottom < second:
        bottom = second + int(np.argmin(bone[second:]))
    peaks = _extrema(bone, np.greater, 5, 1)
    ratio = spec.hip_ratio
    while True:
        tall = np.flatnonzero(bone > ratio * (bone[top] - bone[bottom]) + bone[bottom])
        candidates = np.intersect1d(peaks, tall)
        if len(tall) and len(candidates):
            break
        if ratio <= 0.05:
            raise CropError("no local maximum of the bone area along z stands out as the hip; the image must "
                            "reach the pelvis")
        ratio = max(ratio - 0.1, 0.05)
    below = candidates[candidates < bottom]
    return 0 if len(below) < 2 else int(below[-1])


def _trimmed(box, centre_xy, voxel: np.ndarray, size_mm_max) -> tuple[slice, slice, slice]:
    out = []
    for axis in range(2):
        s, limit = box[axis], size_mm_max[axis]
        size = s.stop - s.start
        if limit is not None and size * voxel[axis] > limit:
            extra = size * voxel[axis] - limit
            cut_start = int(np.ceil((centre_xy[axis] - s.start) / size * extra / voxel[axis]).astype("int16"))
            cut_stop = int(np.ceil((s.stop - centre_xy[axis]) / size * extra / voxel[axis]).astype("int16"))
            s = slice(s.start + cut_start, s.stop - cut_stop)
        out.append(s)
    z, limit = box[2], size_mm_max[2]
    if limit is not None and (z.stop - z.start) * voxel[2] > limit:
        z = slice(z.start + int(np.ceil(((z.stop - z.start) * voxel[2] - limit) / voxel[2]).astype("int16")), z.stop)
    out.append(z)
    return tuple(out)
