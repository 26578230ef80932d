"""pyliverlesionseg's crop of an MR to the abdomen, from the lungs to below the liver.

Tang et al. (Eur J Nucl Med Mol Imaging 47, 2020) train their liver network on CT and MR; their
``crop_mr_image`` cuts an MR to the body's box in x, its front-to-back extent in y and the top
430 mm in z, at most 489 x 408 x 408 mm. MR intensities have no fixed scale, so where the CT crop
(:mod:`models.liver_crop`) thresholds Hounsfield units this one reads the shape of intensity
profiles and thresholds at a fraction of the maximum. Their main function calls it with the
sizes, tissue ratio, liver height and z margin of :class:`MrCropSpec`; their signature's
``air_abd_ratio`` is not used by their code and has no field here.

1. Front and back (y): the image summed over x and z, smoothed over 7 rows; its rise is the sum
   of the 30 rows behind each row minus the 30 in front (largest at the front edge of the body,
   most negative, the fall, at the back edge).
2. The front edge is a local maximum of the rise (order 70, lowered to 60, ..., 10, 2 until at
   least two exist; a single one is the edge). Among those above half the second highest, the
   ones more than 100 rows in front of the fall (the margin lowered in steps of 10 until one
   is) and in the front 40 % of the rows: the last, or the one before it when the rise stays
   above half the last's value between them or the last is below half the one before; none:
   the highest rise when it lies in the front 40 %, else row 0.
3. The abdomen starts at the last row in front of that edge where the rise is below 45 % of
   the edge's (raised by 5 % steps below 100 % until one exists; else row 0) and ends at the
   first row of the last run behind the fall where the rise is above 60 % of the fall (raised
   by 5 % steps to 100 %; else the last row). Their run split is a difference filter that
   counts the first such row as a run start only when it is not row 1; that is kept.
4. z: the top ``liver_height_max_mm + zstart_margin_mm`` (each whole voxels) of the image, the
   lungs down (z runs from the feet to the head).
5. Body: in those slices, voxels above ``tissue_ratio`` times their maximum, eroded with a 5^3
   cube; the x extent of the largest connected component, its y extent cut to step 3's range.
6. A box larger than the maximum size is trimmed: in x and y by the same number of voxels at each
   end, in z from the bottom.

Where their code stops (no local maximum of the rise: an index error; no maximum above half the
second highest: a search that never ends; no tissue left after the erosion) or would return an
empty box, :class:`CropError` says which landmark is missing and the card decides (``required``)
whether the whole image is used instead. Arrays are their ``(x, y, z)`` LPS arrays (our numpy
``(z, y, x)`` transposed), so that profile directions and component numbering are theirs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
from scipy import ndimage, signal

from .liver_crop import CropError, largest_box

#: Rows on each side of the rise filter and the smoothing width of the y profile (their values).
RISE_HALF_WIDTH = 30
SMOOTHING = 7


@dataclass(frozen=True)
class MrCropSpec:
    """The sizes and ratios of the MR crop (their defaults as their liver pipeline calls it)."""

    #: the card's ``input.resampling.crop.method``, and what the messages of a failed crop say it is for
    method: ClassVar[str] = "mr"
    modality: ClassVar[str] = "MR"
    extent: ClassVar[str] = "lungs to below the liver"
    needs: ClassVar[str] = "an MR of the abdomen from the lungs down, the body's front and back in view"

    size_mm_max: tuple[float, float, float] = (489.0, 408.0, 408.0)  # x, y, z
    tissue_ratio: float = 0.01
    liver_height_max_mm: float = 400.0
    zstart_margin_mm: float = 30.0
    #: False: an image without the landmarks is used whole, with a warning; True: it is refused
    required: bool = False

    def to_dict(self) -> dict:
        return {"method": self.method, "size_mm_max": list(self.size_mm_max), "tissue_ratio": self.tissue_ratio,
                "liver_height_max_mm": self.liver_height_max_mm, "zstart_margin_mm": self.zstart_margin_mm,
                "required": self.required}

    def box(self, mr_xyz: np.ndarray, voxel_xyz: Sequence[float]) -> tuple[slice, slice, slice]:
        return mr_abdomen_box(mr_xyz, voxel_xyz, self)


def mr_abdomen_box(mr_xyz: np.ndarray, voxel_xyz: Sequence[float],
                   spec: MrCropSpec = MrCropSpec()) -> tuple[slice, slice, slice]:
    """The ``(x, y, z)`` slices of the abdomen in the MR ``mr_xyz`` (see the module notes)."""
    mr = np.asarray(mr_xyz)
    voxel = np.asarray(voxel_xyz, dtype=float)
    rise = _rise(mr)
    front = _front(rise, _front_edge(rise, mr.shape[1]))
    back = _back(rise, mr.shape[1])
    keep = int(spec.liver_height_max_mm / voxel[2]) + int(spec.zstart_margin_mm / voxel[2])
    if keep < 1:
        raise CropError(f"the liver height and z margin ({spec.liver_height_max_mm:g} + {spec.zstart_margin_mm:g} mm) "
                        f"are each under one {voxel[2]:g} mm slice: no slices to crop to")
    z = slice(max(0, mr.shape[2] - keep), mr.shape[2])
    top = mr[:, :, z]
    body = largest_box(ndimage.binary_erosion(top > spec.tissue_ratio * np.max(top), np.ones((5, 5, 5))))
    if body is None:
        raise CropError(f"no voxel above {spec.tissue_ratio:g} x the maximum of the top {z.stop - z.start} slices "
                        "survives an erosion with a 5^3 cube: no body to crop to")
    y = slice(max(body[1].start, front), min(body[1].stop, back))
    if y.stop <= y.start:
        raise CropError(f"the body (rows {body[1].start}-{body[1].stop} front to back) lies outside the abdomen's "
                        f"front and back edges (rows {front}-{back}) found from the intensity profile")
    return _trimmed((body[0], y, z), voxel, spec.size_mm_max)


def _rise(mr: np.ndarray) -> np.ndarray:
    """The smoothed y profile's rise: the 30 rows behind each row minus the 30 in front."""
    profile = signal.convolve(np.sum(mr, (0, 2)), np.ones(SMOOTHING), "same")
    kernel = np.concatenate((np.ones(RISE_HALF_WIDTH), np.zeros(1), -np.ones(RISE_HALF_WIDTH)))
    return signal.convolve(profile, kernel, "same")


def _peaks(rise: np.ndarray) -> np.ndarray:
    """Local maxima of the rise at order 70, the order lowered to 60, ..., 10, 2 until at least two exist."""
    order = 70
    peaks = signal.argrelextrema(rise, np.greater, order=order)[0]
    while len(peaks) <= 1 and order != 2:
        order = max(order - 10, 2)
        peaks = signal.argrelextrema(rise, np.greater, order=order)[0]
    return peaks


def _front_edge(rise: np.ndarray, rows: int) -> int:
    """The row of the front edge of the body (step 2 of the module notes)."""
    peaks = _peaks(rise)
    if len(peaks) == 0:
        raise CropError("the intensity profile from front to back has no local maximum of its rise: no front "
                        "edge of the body to find (an empty or flat image)")
    if len(peaks) == 1:
        return int(peaks[0])
    strong = peaks[rise[peaks] > 0.5 * np.sort(rise[peaks])[-2]]
    if len(strong) == 0:
        raise CropError("no local maximum of the front-to-back intensity rise exceeds half the second highest "
                        "(the profile does not rise at a front edge of the body)")
    fall = int(np.argmin(rise))
    margin = 100
    while not np.any(strong < fall - margin):  # ends: the margin drops below fall - strong[0]
        margin -= 10
    ahead = strong[strong < fall - margin]
    ahead = ahead[ahead < 0.4 * rows]
    if len(ahead) == 0:
        highest = int(np.argmax(rise))
        return highest if highest < 0.4 * rows else 0
    if len(ahead) > 1 and (np.all(rise[ahead[-2]:ahead[-1] + 1] > 0.5 * rise[ahead[-1]])
                           or rise[ahead[-1]] < 0.5 * rise[ahead[-2]]):
        return int(ahead[-2])
    return int(ahead[-1])


def _front(rise: np.ndarray, edge: int) -> int:
    """The first row of the abdomen: the last row in front of ``edge`` with a low rise (0 if none)."""
    ratio = 0.45
    while True:
        low = np.flatnonzero(rise[:edge] < ratio * rise[edge])
        if len(low) or not ratio < 1.0:
            return int(low[-1]) if len(low) else 0
        ratio = ratio + 0.05


def _back(rise: np.ndarray, rows: int) -> int:
    """The row after the abdomen: the start of the last run behind the fall that rises back (see step 3)."""
    fall = int(np.argmin(rise))
    ratio = 0.6
    while True:
        behind = fall + 1 + np.flatnonzero(rise[fall + 1:] > ratio * rise[fall])
        if len(behind):
            break
        ratio = ratio + 0.05
        if ratio > 1.0:
            return rows
    run_starts = np.flatnonzero(np.diff(behind, prepend=0) > 1)
    return int(behind[run_starts[-1]]) if len(run_starts) > 1 else int(behind[0])


def _trimmed(box, voxel: np.ndarray, size_mm_max) -> tuple[slice, slice, slice]:
    """``box`` cut to ``size_mm_max``: x and y alike at both ends, z from the bottom."""
    out = []
    for axis in range(3):
        s, limit = box[axis], size_mm_max[axis]
        size = s.stop - s.start
        if limit is not None and size * voxel[axis] > limit:
            extra = size * voxel[axis] - limit
            if axis < 2:
                cut = int(np.ceil(extra / (2 * voxel[axis])).astype("int16"))
                s = slice(s.start + cut, s.stop - cut)
            else:
                s = slice(s.start + int(np.ceil(extra / voxel[axis]).astype("int16")), s.stop)
        if s.stop <= s.start:
            raise CropError(f"the trim to {limit:g} mm along {'xyz'[axis]} (the same number of voxels, rounded up, at "
                            "each end) leaves no voxel of the abdomen's box; give a larger size_mm_max")
        out.append(slice(int(s.start), int(s.stop)))
    return tuple(out)
