"""Procedural CT phantoms: realistic-looking sample volumes with exact ground truth.

Deterministic for a given seed, generated in seconds, no download needed::

    from XAIExplainLib.imaging.phantoms import abdominal_phantom, chest_phantom
    ph = abdominal_phantom(seed=3, phase="arterial")
    ph.image()                 # SimpleITK.Image, int16 HU
    ph.masks["aorta"]          # boolean (z, y, x) mask of every structure
    ph = chest_phantom(seed=1, nodules=1)
    ph.mask("nodule")          # where the inserted nodules are

Both generators draw an anatomy from ``seed`` and render any grid of it:
``shape`` and ``spacing`` in numpy order (z, y, x), ``center`` the physical
(x, y, z) mm of the grid centre.  Rendering is supersampled (partial volume),
blurred like a scanner and given correlated noise of ``noise`` HU.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._canvas import Canvas
from ._result import Phantom, check_grid, supersampling
from .abdomen import PHASE_STRUCTURES, PHASES, AbdomenAnatomy
from .abdomen import STRUCTURES as ABDOMEN_STRUCTURES
from .abdomen import Z_RANGE as ABDOMEN_Z_RANGE
from .chest import Z_RANGE as CHEST_Z_RANGE
from .chest import STRUCTURES as CHEST_STRUCTURES
from .chest import ChestAnatomy, render_chest
from .nodules import MARGINS, NODULE_KINDS, Nodule

__all__ = ["ABDOMEN_STRUCTURES", "ABDOMEN_Z_RANGE", "CHEST_STRUCTURES", "CHEST_Z_RANGE", "MARGINS", "NODULE_KINDS", "PHASES",
           "PHASE_STRUCTURES", "ChestAnatomy", "Nodule", "Phantom", "abdominal_phantom",
           "chest_anatomy", "chest_phantom"]


def abdominal_phantom(seed: int = 0, phase: str = "portal_venous",
                      shape: Sequence[int] = (32, 192, 192),
                      spacing: Sequence[float] | float = (5.0, 2.0, 2.0),
                      center: Sequence[float] | None = None, noise: float = 12.0,
                      supersample: Sequence[int] | int | None = None) -> Phantom:
    """An abdominal CT in one contrast phase (``PHASES``) with masks of every structure.

    The default grid covers the upper abdomen (liver dome to kidneys, 160 mm)
    with 5 mm slices.  ``info["phase"]`` holds the phase and its class index.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    shape, spacing = check_grid(shape, spacing)
    if center is None:
        center = (0.0, 0.0, 45.0)
    rng = np.random.default_rng(_seed(seed, "abdomen"))
    anatomy = AbdomenAnatomy(rng)
    canvas = Canvas(shape, spacing, _center(center), supersampling(spacing, supersample))
    anatomy.paint(canvas, phase)
    hu, masks = canvas.render(_noise(noise), np.random.default_rng(_seed(seed, "noise")))
    info = {"seed": seed, "phase": phase, "phase_index": PHASES.index(phase),
            "structures": ABDOMEN_STRUCTURES, "kind": "abdomen"}
    return Phantom(hu, spacing, canvas.origin_xyz, masks, info)


def chest_phantom(seed: int = 0, nodules: int | Sequence[Nodule] = 1,
                  shape: Sequence[int] = (40, 224, 224),
                  spacing: Sequence[float] | float = (5.0, 1.6, 1.6),
                  center: Sequence[float] | None = None, noise: float = 15.0,
                  contrast: bool = False, nodule_diameter: tuple[float, float] = (6.0, 30.0),
                  supersample: Sequence[int] | int | None = None) -> Phantom:
    """A chest CT with ``nodules`` lung nodules (a count, or explicit :class:`Nodule` objects).

    The default grid covers the lungs from the bases to above the carina
    (200 mm, 5 mm slices).  ``info["nodules"]`` describes every nodule (centre
    mm, diameter, kind, margin, HU); ``masks["nodule"]`` is their union.
    """
    shape, spacing = check_grid(shape, spacing)
    anatomy = chest_anatomy(seed, contrast)
    if isinstance(nodules, (int, np.integer)) and not isinstance(nodules, bool):
        if nodules < 0:
            raise ValueError(f"nodules must be >= 0, got {nodules}")
        nodule_rng = np.random.default_rng(_seed(seed, "nodules"))
        for _ in range(int(nodules)):
            anatomy.add_random_nodule(nodule_rng, nodule_diameter)
    else:
        items = list(nodules)
        if not all(isinstance(n, Nodule) for n in items):
            raise TypeError("nodules must be a count or a sequence of Nodule objects, got "
                            f"{[type(n).__name__ for n in items]}")
        anatomy.nodules.extend(items)
    if center is None:
        center = (0.0, 0.0, -20.0)
    hu, masks, origin = render_chest(anatomy, shape, spacing, _center(center), _noise(noise),
                                     _seed(seed, "noise"), supersampling(spacing, supersample))
    info = {"seed": seed, "kind": "chest", "contrast": bool(contrast),
            "nodules": [n.to_dict() for n in anatomy.nodules], "structures": CHEST_STRUCTURES}
    return Phantom(hu, spacing, origin, masks, info)


def chest_anatomy(seed: int = 0, contrast: bool = False) -> ChestAnatomy:
    """The random chest :func:`chest_phantom` draws for ``seed`` (without nodules).

    Use it to place nodules of your own (``anatomy.add_random_nodule(rng)``)
    and pass them to ``chest_phantom(seed, nodules=anatomy.nodules)``.
    """
    return ChestAnatomy(np.random.default_rng(_seed(seed, "chest")), contrast=bool(contrast))


def _center(center) -> tuple[float, float, float]:
    center = tuple(float(c) for c in center)
    if len(center) != 3:
        raise ValueError(f"center must be 3 numbers (x, y, z) in mm, got {center}")
    return center


def _noise(noise: float) -> float:
    noise = float(noise)
    if noise < 0:
        raise ValueError(f"noise must be >= 0 HU, got {noise}")
    return noise


def _seed(seed: int, stream: str) -> list[int]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return [int(seed), sum(ord(c) * 31 ** i for i, c in enumerate(stream)) % (2**31)]
