"""Lung nodules of varied size, density and margin, inserted into chest phantoms.

Kinds follow the Fleischner/Lung-RADS vocabulary: ``solid`` (soft tissue,
~0-60 HU), ``part_solid`` (a solid core inside a ground-glass halo) and
``ground_glass`` (~-650..-350 HU, vessels still visible through it).  Margins
are ``smooth``, ``lobulated`` (bumps in a few random directions) or
``spiculated`` (thin strands radiating into the lung; they are labelled
``nodule_spicules``, not ``nodule``, as radiologists' outlines usually leave
them out).  Diameters default to 6-30 mm: below 6 mm the Fleischner guidelines
ask for no follow-up, and such dots are not resolvable on 5 mm slices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._canvas import Canvas, Region
from ._shapes import Segment, paint_segments

NODULE_KINDS = ("solid", "part_solid", "ground_glass")
MARGINS = ("smooth", "lobulated", "spiculated")
#: Structures a nodule may replace: it grows in lung, around vessels and airways.
LUNG_TISSUE = ("lung", "pulmonary_vessels", "airway_wall", "airway")


@dataclass(frozen=True)
class Nodule:
    """One nodule: centre (x, y, z) mm, diameter mm, kind, margin and shape details."""

    center: tuple[float, float, float]
    diameter: float
    kind: str = "solid"
    margin: str = "smooth"
    hu: float = 35.0
    lobes: tuple[tuple[tuple[float, float, float], float], ...] = ()
    spicules: tuple[Segment, ...] = field(default=(), repr=False)

    @property
    def radius(self) -> float:
        return self.diameter / 2.0

    def to_dict(self) -> dict:
        return {"center": list(self.center), "diameter": self.diameter, "kind": self.kind,
                "margin": self.margin, "hu": self.hu}

    def bounds(self, margin: float = 0.0):
        extent = self.radius * 1.45 + margin
        return tuple((c - extent, c + extent) for c in self.center)

    def normalised_radius(self, region: Region):
        """|p - c| / r(direction): <= 1 inside (lobes enlarge r in their directions)."""
        dx, dy, dz = (region.x - self.center[0], region.y - self.center[1],
                      region.z - self.center[2])
        dist = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
        scale = np.ones_like(dist)
        for (ux, uy, uz), amplitude in self.lobes:
            cos = (dx * ux + dy * uy + dz * uz) / dist
            scale = scale + amplitude * np.exp((cos - 1.0) / 0.12)
        return dist / (self.radius * scale)


def random_nodule(rng: np.random.Generator, center, diameter_range=(6.0, 30.0),
                  kinds=NODULE_KINDS, margins=MARGINS) -> Nodule:
    """A nodule at ``center`` with random size (log-uniform), kind, margin and density."""
    low, high = diameter_range
    if not 0 < low <= high:
        raise ValueError(f"diameter_range must be 0 < low <= high mm, got {diameter_range}")
    diameter = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    kind = str(rng.choice(kinds, p=_weights(kinds, {"solid": 0.65, "part_solid": 0.15,
                                                     "ground_glass": 0.2})))
    margin = str(rng.choice(margins, p=_weights(margins, {"smooth": 0.4, "lobulated": 0.35,
                                                           "spiculated": 0.25})))
    hu = {"solid": rng.uniform(10, 60), "part_solid": rng.uniform(-500, -350),
          "ground_glass": rng.uniform(-650, -380)}[kind]
    lobes = ()
    if margin in ("lobulated", "spiculated"):
        count = int(rng.integers(3, 7))
        lobes = tuple((tuple(_unit(rng.normal(size=3))), float(rng.uniform(0.12, 0.35)))
                      for _ in range(count))
    spicules: tuple[Segment, ...] = ()
    if margin == "spiculated":
        r = diameter / 2
        segs = []
        for _ in range(int(rng.integers(5, 11))):
            u = _unit(rng.normal(size=3))
            start = np.asarray(center) + u * r * 0.7
            end = np.asarray(center) + u * r * rng.uniform(1.5, 2.6)
            segs.append(Segment(tuple(start), tuple(end), rng.uniform(0.6, 1.1), 0.35))
        spicules = tuple(segs)
    return Nodule(tuple(float(c) for c in center), diameter, kind, margin, float(hu), lobes, spicules)


def paint_nodule(canvas: Canvas, nodule: Nodule, texture: np.ndarray) -> None:
    """Paint a nodule into lung tissue (it never replaces chest wall or mediastinum)."""
    if nodule.spicules:
        paint_segments(canvas, "nodule_spicules", nodule.spicules, nodule.hu if nodule.kind ==
                       "solid" else -300.0, within=LUNG_TISSUE)
    core_hu = 40.0 if nodule.kind == "part_solid" else nodule.hu
    bounds = nodule.bounds()

    def value(region: Region):
        rho = nodule.normalised_radius(region)
        base = np.where(rho < 0.5, core_hu, nodule.hu) if nodule.kind == "part_solid" else nodule.hu
        amplitude = 25.0 if nodule.kind != "solid" else 12.0
        out = base + amplitude * texture[region.slices]
        if nodule.kind != "solid":
            # Vessels and airway walls stay visible through ground glass.
            out = np.maximum(out, canvas.hu[region.slices])
        return out

    canvas.paint("nodule", bounds, lambda r: nodule.normalised_radius(r) <= 1.0, value,
                 within=LUNG_TISSUE + ("nodule_spicules",))


def _unit(v):
    v = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.array([1.0, 0.0, 0.0])


def _weights(names, table):
    w = np.array([table[n] for n in names], dtype=float)
    return w / w.sum()
