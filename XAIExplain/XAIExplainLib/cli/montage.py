"""The overlay PNG: axial, coronal and sagittal views through where the evidence is.

The views cross at a ``focus`` voxel the caller chooses and states in a caption
(the command line cuts a 2D classifier's volume through the slice with the highest
probability of the explained class, a segmenter's through the map's peak inside the
predicted region; :func:`focus_voxel`), else at the map's maximum. A per-slice
classifier's picture also shows the per-slice probabilities of the explained class
as a strip with the chosen slice marked, and an outline is named in a legend.

This is the picture a user opens first to judge an explanation without a
viewer, so it follows radiological habits: the volume is reoriented to the
nearest LPS axes, views are drawn in millimetres (a 5 mm CT is not squashed),
the patient's right is on the left of axial and coronal views, superior is up,
and the edges carry R/L, A/P, S/I letters.  The heatmap is drawn with a
perceptually uniform colour map whose opacity grows with the value, so faint
attribution does not hide the anatomy; a colour bar gives the scale.  Input
gradient maps (saliency and relatives) are spiky: a handful of voxels reach 1
and everything else is faint.  For them (``spiky=True``), when the map's
99.5th percentile is below half its range, the colours span 0 to that
percentile (never less than ``_MIN_TOP``) and the colour bar says so.  Maps
made from a layer's activations (the CAM family, CRM, KWC) are smooth; a
focal one (a nodule) may cover less than 0.5 % of the volume, so they always
keep the full 0..1 scale.  The files keep the values untouched.  Views cross
at the peak, marked by thin lines.

matplotlib is used through its object interface (no pyplot), so figures carry
no global state and drawing is safe beside the reader threads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .errors import UserError

#: Heatmap values below this are fully transparent; opacity reaches its maximum at ``_OPAQUE``.
_CLEAR = 0.2
_OPAQUE = 0.75
_MAX_ALPHA = 0.65
#: Colours span 0 .. the 99.5th percentile of the map, but at least this much of its range.
_TOP_PERCENTILE = 99.5
_MIN_TOP = 0.1
_COLORMAP = "inferno"


@dataclass(frozen=True)
class View:
    """One panel: a 2D slice of the image and map, its extent in mm and edge letters."""

    name: str
    image: np.ndarray
    heat: np.ndarray
    contour: np.ndarray | None
    extent: tuple[float, float, float, float]
    cross: tuple[float, float]
    letters: tuple[str, str, str, str]  # left, right, top, bottom


@dataclass(frozen=True)
class SliceStrip:
    """Per-slice probabilities of the explained class, drawn under the views."""

    values: Sequence[float]
    chosen: int
    label: str  # e.g. "p(nodule)"


def render_overlay(image: sitk.Image, heatmap: sitk.Image, path: str | Path, title: str,
                   subtitle: str = "", window: Sequence[float] | None = None,
                   contour: sitk.Image | None = None, spiky: bool = False,
                   focus: Sequence[int] | None = None, caption: str = "",
                   strip: SliceStrip | None = None, outline_label: str = "") -> None:
    """Draw ``heatmap`` (values in [0, 1]) over ``image`` and save a PNG at ``path``.

    ``window`` is the (low, high) display range of the image (default: its
    0.5 and 99.5 percentiles); ``contour`` an optional mask on the same grid
    drawn as an outline (a predicted or reference region) that ``outline_label``
    names; ``spiky`` allows the capped colour scale of input-gradient maps
    (module docstring); ``focus`` the voxel (numpy order of the image array)
    the views cross at, default the map's maximum, and ``caption`` says why;
    ``strip`` the per-slice probabilities of a per-slice classifier.
    """
    figure_class, canvas_class, colormaps, colors = _matplotlib()
    views = views_through_peak(image, heatmap, contour, focus)
    low, high = _window(image, window)
    top = display_top(sitk.GetArrayViewFromImage(heatmap)) if spiky else 1.0
    cmap = colormaps[_COLORMAP]
    n = len(views)
    height = 4.9 + (1.3 if strip is not None else 0.0) + (0.3 if caption or outline_label else 0.0)
    figure = figure_class(figsize=(4.0 * n + 1.0, height), dpi=100, facecolor="black")
    canvas_class(figure)
    bottom = (1.55 if strip is not None else 0.04 * 4.9) + (0.3 if caption or outline_label else 0.0)
    grid = figure.add_gridspec(1, n + 1, width_ratios=[1.0] * n + [0.05], left=0.02, right=0.94,
                               top=1.0 - 0.98 / height, bottom=bottom / height, wspace=0.12)
    for column, view in enumerate(views):
        axes = figure.add_subplot(grid[0, column])
        _draw_view(axes, view, low, high, cmap, top)
    if strip is not None:
        _draw_strip(figure.add_axes((0.08, 0.45 / height, 0.84, 0.8 / height)), strip)
    notes = " · ".join(text for text in (caption, f"outline: {outline_label}" if outline_label else "") if text)
    if notes:
        figure.text(0.48, (bottom - 0.22) / height, notes, color="#e0e0e0", fontsize=9, ha="center")
    bar_axes = figure.add_subplot(grid[0, n])
    bar = figure.colorbar(_mappable(colors, cmap, top), cax=bar_axes,
                          extend="max" if top < 1.0 else "neither")
    label = "attribution (normalised)"
    if top < 1.0:
        label = f"attribution (colours capped at p{_TOP_PERCENTILE:g})"
    bar.set_label(label, color="white", fontsize=9)
    bar.ax.tick_params(colors="white", labelsize=8)
    bar.outline.set_edgecolor("white")
    figure.suptitle(title, color="white", fontsize=13, y=1.0 - 0.12 / height)
    if subtitle:
        figure.text(0.48, 1.0 - 0.56 / height, subtitle, color="#c8c8c8", fontsize=9, ha="center")
    figure.savefig(str(path), format="png", facecolor="black")


def _draw_strip(axes, strip: SliceStrip) -> None:
    """The explained class's probability on every slice, the pictured slice marked."""
    values = np.asarray(strip.values, dtype=np.float64)
    index = np.arange(len(values))
    axes.set_facecolor("black")
    axes.bar(index, values, width=0.8, color="#8f8f8f")
    axes.bar([strip.chosen], [values[strip.chosen]], width=0.8, color="#ffb000")
    axes.set_xlim(-0.5, len(values) - 0.5)
    axes.set_ylim(0.0, 1.0)
    axes.set_yticks([0.0, 0.5, 1.0])
    axes.tick_params(colors="white", labelsize=7)
    axes.set_ylabel(strip.label, color="white", fontsize=8)
    axes.set_xlabel(f"slice (pictured: {strip.chosen}, highlighted)", color="white", fontsize=8)
    for spine in axes.spines.values():
        spine.set_color("#808080")


def focus_voxel(heat: np.ndarray, slice_axis: int | None = None, slice_index: int | None = None,
                region: np.ndarray | None = None) -> tuple[int, ...]:
    """Where the views cross (numpy index of ``heat``): the map's peak within ``slice_index``
    along ``slice_axis`` when given (the slice of strongest evidence), else within ``region``
    when it holds any voxel (a segmenter's predicted region), else over the whole map."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    if slice_axis is not None and slice_index is not None and heat.ndim == 3:
        plane = np.take(heat, slice_index, axis=slice_axis)
        inside = list(peak_index(plane))
        inside.insert(slice_axis, int(slice_index))
        return tuple(inside)
    if region is not None and np.any(region):
        masked = np.where(region, heat, -np.inf)
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(masked)), heat.shape))
    return peak_index(heat)


def views_through_peak(image: sitk.Image, heatmap: sitk.Image,
                       contour: sitk.Image | None = None,
                       focus: Sequence[int] | None = None) -> list[View]:
    """Axial, coronal and sagittal views (one view for a 2D image) through ``focus`` (a numpy
    index of the image array), by default the map's maximum."""
    if image.GetDimension() == 2:
        return [_view_2d(image, heatmap, contour, focus)]
    original = heatmap
    image, heatmap = _lps(_first_component(image)), _lps(heatmap)
    contour = _lps(contour) if contour is not None else None
    img = sitk.GetArrayFromImage(image).astype(np.float32)
    heat = np.nan_to_num(sitk.GetArrayFromImage(heatmap).astype(np.float32))
    mask = sitk.GetArrayFromImage(contour) > 0 if contour is not None else None
    sx, sy, sz = heatmap.GetSpacing()
    nz, ny, nx = heat.shape
    if focus is None:
        z, y, x = peak_index(heat)
    else:  # the same voxel in the reoriented arrays: through its physical point
        point = original.TransformIndexToPhysicalPoint([int(v) for v in reversed(tuple(focus))])
        z, y, x = reversed(heatmap.TransformPhysicalPointToIndex(point))

    def cut(array, index):
        return None if array is None else array[index]

    axial = View("axial", img[z], heat[z], cut(mask, z), (0.0, nx * sx, ny * sy, 0.0),
                 ((x + 0.5) * sx, (y + 0.5) * sy), ("R", "L", "A", "P"))
    coronal = View("coronal", img[:, y, :], heat[:, y, :], cut(mask, (slice(None), y)),
                   (0.0, nx * sx, 0.0, nz * sz), ((x + 0.5) * sx, (z + 0.5) * sz),
                   ("R", "L", "S", "I"))
    sagittal = View("sagittal", img[:, :, x], heat[:, :, x],
                    cut(mask, (slice(None), slice(None), x)),
                    (0.0, ny * sy, 0.0, nz * sz), ((y + 0.5) * sy, (z + 0.5) * sz),
                    ("A", "P", "S", "I"))
    return [axial, coronal, sagittal]


def peak_index(heat: np.ndarray) -> tuple[int, ...]:
    """Index of the map's maximum (the centre for an all-zero map)."""
    if not np.any(heat > 0):
        return tuple(s // 2 for s in heat.shape)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(heat)), heat.shape))


def _view_2d(image: sitk.Image, heatmap: sitk.Image, contour: sitk.Image | None,
             focus: Sequence[int] | None = None) -> View:
    img = sitk.GetArrayFromImage(_first_component(image)).astype(np.float32)
    heat = np.nan_to_num(sitk.GetArrayFromImage(heatmap).astype(np.float32))
    mask = sitk.GetArrayFromImage(contour) > 0 if contour is not None else None
    sx, sy = heatmap.GetSpacing()
    y, x = peak_index(heat) if focus is None else (int(focus[-2]), int(focus[-1]))
    ny, nx = heat.shape
    return View("image", img, heat, mask, (0.0, nx * sx, ny * sy, 0.0),
                ((x + 0.5) * sx, (y + 0.5) * sy), ("", "", "", ""))


def _lps(image: sitk.Image) -> sitk.Image:
    """Permute and flip axes to the nearest LPS orientation (no resampling)."""
    return sitk.DICOMOrient(image, "LPS")


def _first_component(image: sitk.Image) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() > 1:
        return sitk.VectorIndexSelectionCast(image, 0)
    return image


def _window(image: sitk.Image, window: Sequence[float] | None) -> tuple[float, float]:
    if window is not None:
        low, high = (float(v) for v in window)
        if high > low:
            return low, high
    values = sitk.GetArrayViewFromImage(_first_component(image))
    low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    return low, high if high > low else low + 1.0


def display_top(heat: np.ndarray) -> float:
    """The map value shown with the brightest colour (see the module docstring)."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    if not np.any(heat > 0):
        return 1.0
    top = float(np.percentile(heat, _TOP_PERCENTILE))
    if top >= 0.5 * float(heat.max()):
        return 1.0
    return float(max(top, _MIN_TOP * float(heat.max())))


def heat_rgba(heat: np.ndarray, cmap, top: float = 1.0) -> np.ndarray:
    """Colour-mapped heatmap (``top`` gets the brightest colour) whose opacity rises from
    0 at ``_CLEAR`` to its maximum at ``_OPAQUE`` of that scale."""
    heat = np.clip(heat / top, 0.0, 1.0)
    rgba = cmap(heat)
    ramp = np.clip((heat - _CLEAR) / (_OPAQUE - _CLEAR), 0.0, 1.0)
    rgba[..., 3] = _MAX_ALPHA * ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no hard edge
    return rgba


def _draw_view(axes, view: View, low: float, high: float, cmap, top: float) -> None:
    axes.set_facecolor("black")
    axes.imshow(view.image, cmap="gray", vmin=low, vmax=high, extent=view.extent,
                origin="upper" if view.extent[2] > view.extent[3] else "lower",
                interpolation="bilinear")
    axes.imshow(heat_rgba(view.heat, cmap, top), extent=view.extent,
                origin="upper" if view.extent[2] > view.extent[3] else "lower",
                interpolation="bilinear")
    if view.contour is not None and np.any(view.contour):
        axes.contour(_centres(view.extent, view.contour.shape[1], 0),
                     _centres(view.extent, view.contour.shape[0], 1),
                     view.contour.astype(np.float32), levels=[0.5], colors=["#00e5ff"],
                     linewidths=1.0)
    cx, cy = view.cross
    for line in (axes.axvline(cx), axes.axhline(cy)):
        line.set(color="#7fdfff", linewidth=0.6, linestyle=(0, (4, 4)), alpha=0.7)
    axes.set_xlim(view.extent[0], view.extent[1])
    axes.set_ylim(view.extent[2], view.extent[3])
    axes.set_aspect("equal")
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title(view.name, color="white", fontsize=10)
    left, right, top, bottom = view.letters
    style = dict(color="#f0e68c", fontsize=9, transform=axes.transAxes, fontweight="bold",
                 bbox=dict(facecolor="black", alpha=0.6, edgecolor="none", pad=1.5))
    axes.text(0.01, 0.5, left, ha="left", va="center", **style)
    axes.text(0.99, 0.5, right, ha="right", va="center", **style)
    axes.text(0.5, 0.99, top, ha="center", va="top", **style)
    axes.text(0.5, 0.01, bottom, ha="center", va="bottom", **style)


def _centres(extent, count: int, axis: int) -> np.ndarray:
    """Pixel-centre coordinates along a view axis (0: columns, 1: rows) in mm.

    Row 0 sits at the smaller coordinate in both layouts used here (axial:
    origin upper with the axis inverted; coronal/sagittal: origin lower).
    """
    a, b = (extent[0], extent[1]) if axis == 0 else (extent[2], extent[3])
    start, step = min(a, b), abs(b - a) / count
    return start + step * (np.arange(count) + 0.5)


def _mappable(colors, cmap, top: float):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=colors.Normalize(0.0, top), cmap=cmap)


def _matplotlib():
    try:
        import matplotlib
        from matplotlib import colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UserError("--overlay", "drawing the overlay PNG needs matplotlib "
                                     "(pip install matplotlib)") from exc
    return Figure, FigureCanvasAgg, matplotlib.colormaps, colors
