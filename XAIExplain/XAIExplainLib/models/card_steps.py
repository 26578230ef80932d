"""The optional steps of a card's pipeline beyond spacing and intensity: how to resample, how to
finish a label map.

Both fields exist so that a published model's own prediction code can be followed where it
differs from the default pipeline (one linear resampling; labels by argmax or threshold):
pyliverlesionseg's liver network (Tang et al., Eur J Nucl Med Mol Imaging 47, 2020) sees a CT
zoomed to 1.5 mm, median filtered, zoomed to 3 mm, and keeps the largest connected component
of its prediction.

``input.resampling``::

    {"method": "zoom",                     # "linear" (default): one antialiased linear resampling
     "median": {"spacing": [1.5, 1.5, 1.5], "size": 3},   # optional: zoom there, median filter, zoom on
     "intensity": "after",                 # the intensity transform after the zoom (default) or "before"
     "segment_pad": 0.0,                   # the segment's value beyond the zoomed image (model units)
     "mask": {"model": "liver-seg-3d", "class": "liver", "dilation": 2, "outside": -0.5},   # optional
     "crop": {"method": "ct", "size_mm_max": [489, 408, 408], "hip_margin_mm": 20}}   # optional: their crop

``"zoom"`` is pymirc's ``zoom3d`` (:mod:`imaging.zoom`); the intensity transform runs on the
whole volume (before or after the zoom, as their code does it for this network) and the card's
``size`` (or ``patch_size``) segment is cut from it around its centre voxel, as their
``ExtractSegment3D2`` does. With a ``crop`` the CT is first cut to the abdomen, from the hip to
above the liver dome, as their ``crop_ct_image`` finds it (:mod:`models.liver_crop`; the keys
override its thresholds and sizes); with ``"method": "mr"`` the MR is cut from the lungs to below
the liver as their ``crop_mr_image`` does (:mod:`models.liver_crop_mr`: ``size_mm_max``,
``tissue_ratio``, ``liver_height_max_mm``, ``zstart_margin_mm``, ``required``). With a ``mask``
the named model segments the image first (its own pipeline, post-processing included); its class
mask is zoomed alike (kept above 0.5), dilated once with the 18-neighbourhood structure grown
``dilation - 1`` times, the input set to ``outside`` beyond it (and clipped to the intensity
range), and the model grid becomes the mask's bounding box (grown, centred, to the patch unless ``input.windows`` is ``"tiles"``):
the liver-masked input of their lesion network.

``input.windows`` (3D models with a ``patch_size``)::

    {"rule": "tiles", "output_segment": [42, 84, 92], "source_axes": [2, 1, 0], "reversed_axes": [1, 2]}

How volume windows are placed. Absent (or ``"rule": "sliding"``): the engine's sliding windows of
the patch, overlapping by a quarter and blended with Gaussian weights. ``"tiles"``: the windows of
pyliverlesionseg's ``DeepVoxNet.predict`` (``center_sampling=False``): their ``output_segment``
(numpy order; each at most the patch) tiles the volume without overlap, a later window's output
written over an earlier one's and voxels none wrote given the nearest written value
(``engine.windows.tile_placements``); ``source_axes`` (which numpy axis each axis of their array
holds; default the same order) and ``reversed_axes`` (numpy axes their arrays hold reversed: x and
y of their RAS arrays) say how their arrays lie, since tiles are counted from their array's start.
With tiles a ``mask`` card's model grid is the mask's bounding box itself, not grown to the
patch: their windows reach beyond it and see ``segment_pad`` there.

``output.postprocessing``::

    {"largest_component": true, "erosion": 1}

Labels are decided on the model grid. With ``largest_component`` each foreground label is eroded
``erosion`` times (3 x 3 x 3 structure without its corners), only its largest face-connected
component kept and dilated back the same number of times. Each label's mask goes to the input
grid by linear interpolation, every voxel above 0 kept (their order-1 zoom, then ``> 0``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .liver_crop import CropSpec
from .liver_crop_mr import MrCropSpec

RESAMPLING_METHODS = ("linear", "zoom")

#: ``input.resampling.crop.method``: their CT crop (the default) or their MR crop
CROP_SPECS = {spec.method: spec for spec in (CropSpec, MrCropSpec)}
#: crop keys that may be negative (thresholds in HU) or zero (a margin); every other number must be > 0
_SIGNED_CROP_KEYS = frozenset({"tissue_hu", "air_hu", "bone_hu"})
_NONNEGATIVE_CROP_KEYS = frozenset({"zstart_margin_mm"})


@dataclass(frozen=True)
class ResamplingSpec:
    """How an image reaches the model's spacing (see the module notes)."""

    method: str = "linear"
    median_spacing: tuple[float, ...] | None = None
    median_size: int | None = None
    segment_pad: float = 0.0
    intensity_first: bool = False
    mask: "MaskSpec | None" = None
    crop: CropSpec | MrCropSpec | None = None

    @property
    def is_default(self) -> bool:
        return self == ResamplingSpec()

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"method": self.method}
        if self.median_spacing is not None:
            out["median"] = {"spacing": list(self.median_spacing), "size": self.median_size}
        if self.method == "zoom":
            out["segment_pad"] = self.segment_pad
            out["intensity"] = "before" if self.intensity_first else "after"
        if self.mask is not None:
            out["mask"] = self.mask.to_dict()
        if self.crop is not None:
            out["crop"] = self.crop.to_dict()
        return out


@dataclass(frozen=True)
class MaskSpec:
    """The region another model segments, fed alone (see the module notes)."""

    model: str
    label: str
    dilation: int = 0
    outside: float = 0.0

    def to_dict(self) -> dict:
        return {"model": self.model, "class": self.label, "dilation": self.dilation, "outside": self.outside}


WINDOW_RULES = ("sliding", "tiles")


@dataclass(frozen=True)
class WindowsSpec:
    """How volume windows are placed (see the module notes)."""

    rule: str = "sliding"
    output_segment: tuple[int, ...] | None = None
    source_axes: tuple[int, ...] | None = None
    reversed_axes: tuple[int, ...] = ()

    @property
    def is_default(self) -> bool:
        return self == WindowsSpec()

    @property
    def tiles(self) -> bool:
        return self.rule == "tiles"

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"rule": self.rule}
        if self.tiles:
            out["output_segment"] = list(self.output_segment)
            if self.source_axes is not None:
                out["source_axes"] = list(self.source_axes)
            out["reversed_axes"] = list(self.reversed_axes)
        return out


@dataclass(frozen=True)
class PostprocessingSpec:
    """What is done to a label map before it goes back to the input grid (see the module notes)."""

    largest_component: bool = False
    erosion: int = 0

    def to_dict(self) -> dict:
        return {"largest_component": self.largest_component, "erosion": self.erosion}


def parse_resampling(r, data: Any, dims: int, spacing) -> ResamplingSpec:
    """``input.resampling`` read with the card reader ``r`` (its messages name the field)."""
    if data is None:
        return ResamplingSpec()
    data = r.mapping(data, "input.resampling")
    unknown = sorted(set(data) - {"method", "median", "segment_pad", "intensity", "mask", "crop"})
    if unknown:
        raise r.fail("input.resampling", f"has unknown key(s) {unknown}; it takes method, median, intensity, "
                                         "segment_pad, mask and crop")
    method = r.string(data.get("method", "linear"), "input.resampling.method", RESAMPLING_METHODS)
    if method == "linear":
        if len(data) > 1:
            raise r.fail("input.resampling", "takes median, intensity, segment_pad, mask and crop only with method "
                                             "'zoom'")
        return ResamplingSpec()
    if dims != 3 or spacing is None:
        raise r.fail("input.resampling.method", "'zoom' needs a 3D model with input.spacing (the voxel size "
                                                "it zooms to)")
    median_spacing = median_size = None
    if data.get("median") is not None:
        median = r.mapping(data["median"], "input.resampling.median")
        median_spacing = r.vector(r.require(median, "spacing", "input.resampling.median."),
                                  "input.resampling.median.spacing", dims, "float")
        median_size = r.integer(r.require(median, "size", "input.resampling.median."),
                                "input.resampling.median.size", minimum=1)
    pad = r.number(data.get("segment_pad", 0.0), "input.resampling.segment_pad")
    order = r.string(data.get("intensity", "after"), "input.resampling.intensity", ("before", "after"))
    mask = _parse_mask(r, data.get("mask"))
    if mask is not None and data.get("crop") is not None:
        raise r.fail("input.resampling", "takes mask or crop, not both: the mask model's region is given on the "
                                         "whole image (their lesion network is fed the liver, uncropped)")
    return ResamplingSpec("zoom", median_spacing, median_size, pad, order == "before", mask,
                          _parse_crop(r, data.get("crop")))


def parse_windows(r, data: Any, dims: int, patch) -> WindowsSpec:
    """``input.windows`` read with the card reader ``r``; the default sliding windows when absent."""
    if data is None:
        return WindowsSpec()
    data = r.mapping(data, "input.windows")
    unknown = sorted(set(data) - {"rule", "output_segment", "source_axes", "reversed_axes"})
    if unknown:
        raise r.fail("input.windows", f"has unknown key(s) {unknown}; it takes rule, output_segment, source_axes "
                                      "and reversed_axes")
    rule = r.string(data.get("rule", "sliding"), "input.windows.rule", WINDOW_RULES)
    if rule == "sliding":
        if len(data) > 1:
            raise r.fail("input.windows", "takes output_segment, source_axes and reversed_axes only with rule "
                                          "'tiles'")
        return WindowsSpec()
    if dims != 3 or patch is None:
        raise r.fail("input.windows.rule", "'tiles' needs a 3D model with input.patch_size (the window the "
                                           "tiles' output segments sit in)")
    segment = r.vector(r.require(data, "output_segment", "input.windows."), "input.windows.output_segment", dims,
                       "int")
    if any(s > p for s, p in zip(segment, patch)):
        raise r.fail("input.windows.output_segment", f"must fit in input.patch_size {list(patch)} along every "
                                                     f"axis (it is the part of a window's output that is kept), "
                                                     f"got {list(segment)}")
    axes = data.get("source_axes")
    if axes is not None:
        if not isinstance(axes, (list, tuple)) or any(isinstance(a, bool) for a in axes) \
                or sorted(axes) != list(range(dims)):
            raise r.fail("input.windows.source_axes", f"must order the numpy axes 0..{dims - 1} (their array's "
                                                      f"axes as ours), got {axes!r}")
    flipped = data.get("reversed_axes", [])
    if not isinstance(flipped, (list, tuple)) or any(isinstance(a, bool) or a not in range(dims) for a in flipped) \
            or len(set(flipped)) != len(flipped):
        raise r.fail("input.windows.reversed_axes", f"must be a list of distinct numpy axes out of 0..{dims - 1}, "
                                                    f"got {flipped!r}")
    return WindowsSpec("tiles", tuple(segment), None if axes is None else tuple(axes), tuple(flipped))


def _parse_crop(r, data: Any) -> CropSpec | MrCropSpec | None:
    if data is None:
        return None
    data = r.mapping(data, "input.resampling.crop")
    method = r.string(data.get("method", "ct"), "input.resampling.crop.method", tuple(CROP_SPECS))
    spec = CROP_SPECS[method]
    known = spec().to_dict()
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise r.fail("input.resampling.crop", f"has unknown key(s) {unknown}; with method '{method}' it takes "
                                              f"{', '.join(known)}")
    values = {}
    for key, value in data.items():
        name = f"input.resampling.crop.{key}"
        if key == "method":
            continue
        if key == "required":
            if not isinstance(value, bool):
                raise r.fail(name, f"must be true or false, got {value!r}")
            values[key] = value
        elif key == "size_mm_max":
            values[key] = r.vector(value, name, 3, "float")
        else:
            values[key] = r.number(value, name, positive=key not in _SIGNED_CROP_KEYS | _NONNEGATIVE_CROP_KEYS)
            if key in _NONNEGATIVE_CROP_KEYS and values[key] < 0:
                raise r.fail(name, f"must be >= 0, got {value}")
    return spec(**values)


def _parse_mask(r, data: Any) -> MaskSpec | None:
    if data is None:
        return None
    data = r.mapping(data, "input.resampling.mask")
    unknown = sorted(set(data) - {"model", "class", "dilation", "outside"})
    if unknown:
        raise r.fail("input.resampling.mask", f"has unknown key(s) {unknown}; it takes model, class, dilation and "
                                              "outside")
    model = r.string(r.require(data, "model", "input.resampling.mask."), "input.resampling.mask.model")
    label = r.string(r.require(data, "class", "input.resampling.mask."), "input.resampling.mask.class")
    dilation = r.integer(data.get("dilation", 0), "input.resampling.mask.dilation", minimum=0)
    outside = r.number(data.get("outside", 0.0), "input.resampling.mask.outside")
    return MaskSpec(model, label, dilation, outside)


def parse_postprocessing(r, data: Any, task: str) -> PostprocessingSpec | None:
    """``output.postprocessing`` read with the card reader ``r``; None when absent."""
    if data is None:
        return None
    data: Mapping = r.mapping(data, "output.postprocessing")
    if task != "segmentation":
        raise r.fail("output.postprocessing", f"applies to label maps (task 'segmentation'), not to a {task} model")
    unknown = sorted(set(data) - {"largest_component", "erosion"})
    if unknown:
        raise r.fail("output.postprocessing", f"has unknown key(s) {unknown}; it takes largest_component and "
                                              "erosion")
    keep = data.get("largest_component", False)
    if not isinstance(keep, bool):
        raise r.fail("output.postprocessing.largest_component", f"must be true or false, got {keep!r}")
    erosion = r.integer(data.get("erosion", 0), "output.postprocessing.erosion", minimum=0)
    if erosion and not keep:
        raise r.fail("output.postprocessing.erosion", "only applies with largest_component true (erode, keep "
                                                      "the largest component, dilate back)")
    return PostprocessingSpec(keep, erosion)
