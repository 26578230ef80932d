"""Analytic shapes and branching tubes, evaluated on canvas regions.

All functions take broadcastable coordinate arrays in millimetres and return
boolean (or float) arrays; parameters may themselves be arrays that vary with
z, which is how organs change their cross-section from slice to slice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ._canvas import Bounds, Canvas, Region


def rotate(x, y, cx, cy, angle_deg):
    """Coordinates relative to (cx, cy), rotated by -angle (into the shape's frame)."""
    a = math.radians(angle_deg)
    dx, dy = x - cx, y - cy
    return dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)


def superellipse(x, y, cx, cy, a, b, power=2.0, angle=0.0):
    """Normalised superellipse radius: <= 1 inside."""
    u, v = rotate(x, y, cx, cy, angle)
    a = np.maximum(a, 1e-3)
    b = np.maximum(b, 1e-3)
    if power == 2.0:
        u, v = u / a, v / b
        return u * u + v * v
    return np.abs(u / a) ** power + np.abs(v / b) ** power


def ellipsoid(x, y, z, center, radii, angle=0.0):
    """Normalised ellipsoid radius (squared): <= 1 inside; rotation about z."""
    u, v = rotate(x, y, center[0], center[1], angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + ((z - center[2]) / radii[2]) ** 2


def taper(z, z_center, half_height):
    """Cross-section scale of a rounded solid: 1 at its middle, 0 beyond its ends."""
    t = np.clip(1.0 - ((z - z_center) / half_height) ** 2, 0.0, 1.0)
    return np.sqrt(t)


def box(center, half):
    """Bounds of an axis-aligned box around ``center`` with half-sizes ``half``."""
    return tuple((c - h, c + h) for c, h in zip(center, half))


@dataclass(frozen=True)
class Segment:
    """A tapered capsule from ``a`` to ``b`` (mm), radius ``ra`` at a and ``rb`` at b."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    ra: float
    rb: float

    def bounds(self, margin: float = 0.0) -> Bounds:
        r = max(self.ra, self.rb) + margin
        return tuple((min(p, q) - r, max(p, q) + r) for p, q in zip(self.a, self.b))

    def distance(self, region: Region):
        """(distance to the axis, local radius) at every point of the region."""
        a = np.asarray(self.a)
        d = np.asarray(self.b) - a
        length2 = float(d @ d) or 1e-9
        px, py, pz = region.x - a[0], region.y - a[1], region.z - a[2]
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / length2, 0.0, 1.0)
        dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
        return dist, self.ra + t * (self.rb - self.ra)


def segment_bounds(segments: Sequence[Segment], margin: float = 0.0) -> np.ndarray:
    """``(N, 3, 2)`` array of the capsules' (x, y, z) ranges, for fast culling."""
    if not segments:
        return np.zeros((0, 3, 2))
    a = np.array([s.a for s in segments])
    b = np.array([s.b for s in segments])
    r = np.array([max(s.ra, s.rb) for s in segments])[:, None] + margin
    return np.stack([np.minimum(a, b) - r, np.maximum(a, b) + r], axis=2)


def paint_segments(canvas: Canvas, name: str, segments: Sequence[Segment], value,
                   within=None, wall: tuple[str, float, float] | None = None,
                   bounds: np.ndarray | None = None) -> None:
    """Paint capsules; with ``wall=(name, thickness, hu)`` a wall is painted first.

    The wall makes airways: a soft-tissue tube whose lumen is then painted with
    ``value`` (air).  Capsules outside the canvas are culled in one vectorised
    test (pass ``bounds`` from :func:`segment_bounds` to reuse it).
    """
    margin = wall[1] if wall else 0.0
    if bounds is None:
        bounds = segment_bounds(segments, margin)
    box = np.asarray(canvas.bounds())
    visible = np.all((bounds[:, :, 1] >= box[:, 0]) & (bounds[:, :, 0] <= box[:, 1]), axis=1)
    for index in np.flatnonzero(visible):
        seg = segments[index]
        if wall is not None:
            thickness = wall[1]
            canvas.paint(wall[0], seg.bounds(thickness),
                         lambda r, s=seg: _inside(s, r, thickness), wall[2], within)
            canvas.paint(name, seg.bounds(), lambda r, s=seg: _inside(s, r, 0.0), value,
                         within + (wall[0],) if isinstance(within, tuple) else within)
        else:
            canvas.paint(name, seg.bounds(), lambda r, s=seg: _inside(s, r, 0.0), value, within)


def _inside(seg: Segment, region: Region, extra: float):
    dist, radius = seg.distance(region)
    return dist <= radius + extra


def grow_tree(rng: np.random.Generator, start, direction, radius: float, length: float,
              inside: Callable[[np.ndarray], bool], min_radius: float = 0.6,
              ratio: float = 0.72, max_segments: int = 600, spread: float = 28.0) -> list[Segment]:
    """A bifurcating tube tree (vessels, airways) confined to ``inside``.

    Each segment splits into two children about ``spread`` degrees off its
    axis with radii ``ratio`` times the parent's (Murray's law gives ~0.79; a
    little less keeps the trees sparse) and lengths proportional to radius,
    until the radius falls below ``min_radius`` or the tip leaves the organ.
    """
    segments: list[Segment] = []
    stack = [(np.asarray(start, float), _unit(np.asarray(direction, float)), radius, length)]
    while stack and len(segments) < max_segments:
        p, d, r, length_ = stack.pop()
        end = p + d * length_
        if not inside(end):
            continue
        child_r = r * ratio
        segments.append(Segment(tuple(p), tuple(end), r, max(child_r, min_radius * 0.8)))
        if child_r < min_radius:
            continue
        for sign in (-1.0, 1.0):
            # A few tries per child: a branch that would leave the organ bends back in.
            for attempt in range(4):
                new_d = _deviate(rng, d, sign * spread * rng.uniform(0.6, 1.4) * (1 + 0.4 * attempt))
                new_len = max(3.0, child_r * rng.uniform(5.0, 9.0) + 2.0) * (0.8 ** attempt)
                if inside(end + new_d * new_len):
                    stack.append((end, new_d, child_r, new_len))
                    break
    return segments


def _unit(v: np.ndarray) -> np.ndarray:
    n = math.sqrt(float(v[0]) ** 2 + float(v[1]) ** 2 + float(v[2]) ** 2)
    return v / n if n > 0 else np.array([1.0, 0.0, 0.0])


def _cross(a, b) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _deviate(rng: np.random.Generator, d: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate ``d`` by ``angle_deg`` about a random axis perpendicular to it."""
    helper = (0.0, 0.0, 1.0) if abs(d[2]) < 0.9 else (1.0, 0.0, 0.0)
    u = _unit(_cross(d, helper))
    w = _cross(d, u)
    phi = rng.uniform(0, 2 * math.pi)
    axis = math.cos(phi) * u + math.sin(phi) * w
    a = math.radians(angle_deg)
    return _unit(d * math.cos(a) + axis * math.sin(a))
