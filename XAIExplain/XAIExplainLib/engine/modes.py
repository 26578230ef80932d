"""How a model runs over a volume: per slice along a numpy axis (2D models) or volumetric (3D).

The one check of ``mode`` and ``axis`` that the engine, the pipeline, the command line and
the Slicer logic share; anatomical names ("axial", ...) become an axis before this, from
the volume's orientation (``imaging.orientation``).
"""
from __future__ import annotations

from numbers import Integral

MODES = ("slices", "volume")


def resolve_mode(mode: str | None = None, axis=None, spatial_dims: int | None = None,
                 default_axis: int = 0, model_name: str = "this model") -> tuple[str, int | None]:
    """``(mode, axis)`` checked; ``axis`` is None in volume mode.

    mode          "slices", "volume" or None (the model's own: slices for 2D, volume for 3D)
    axis          numpy axis 0, 1 or 2 of the (z, y, x) volume (slices mode); None: ``default_axis``
    spatial_dims  the model's (2 or 3), when known: a 2D model runs per slice, a 3D model volumetrically
    """
    expected = {2: "slices", 3: "volume"}.get(spatial_dims)
    if mode is None:
        if expected is None:
            raise ValueError("mode must be given ('slices' or 'volume') when the model's dimensionality is unknown")
        mode = expected
    if mode not in MODES:
        raise ValueError(f"mode must be 'slices' (a 2D model, per slice) or 'volume' (a 3D model), got {mode!r}")
    if expected is not None and mode != expected:
        raise ValueError(f"{model_name} is a {spatial_dims}D model, so it runs in mode '{expected}', not '{mode}'")
    if mode == "volume":
        return mode, None
    axis = default_axis if axis is None else axis
    if isinstance(axis, bool) or not isinstance(axis, Integral) or int(axis) not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (numpy axis of the (z, y, x) volume), got {axis!r}")
    return mode, int(axis)
