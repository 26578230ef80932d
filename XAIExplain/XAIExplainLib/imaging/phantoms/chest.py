"""Procedural chest CT: lungs with vessel and airway trees, mediastinum, heart, chest wall.

z = 0 is the carina; the lungs span about -120 mm (posterior recesses) to
+110 mm (apices).  Lung parenchyma is ~-860 HU, denser towards the back
(gravity-dependent perfusion), with pulmonary arteries and veins branching
from the hila down to sub-millimetre calibre and airways with soft-tissue
walls beside them.  Vessels in an axial slice look like the round dots and
short tubes that make nodule detection on single slices hard.  Nodules are
inserted by :mod:`.nodules`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ._canvas import Canvas, smooth_noise
from ._shapes import Segment, ellipsoid, grow_tree, paint_segments, segment_bounds, superellipse
from ._trunk import CORTICAL_HU, Trunk
from .nodules import Nodule, paint_nodule, random_nodule

#: z range (mm) in which the lungs lie.
Z_RANGE = (-170.0, 115.0)
LUNG_HU = -860.0
#: Every structure a chest phantom can contain (``Phantom.masks`` holds those present).
STRUCTURES = ("skin", "subcutaneous_fat", "muscle", "scapula", "sternum", "mediastinal_fat",
              "upper_abdomen", "lung", "airway", "airway_wall", "pulmonary_vessels",
              "pericardial_fat", "heart", "aorta", "svc", "pulmonary_artery", "esophagus",
              "nodule", "nodule_spicules", "paraspinal_muscle", "vertebra", "spinal_canal", "rib")


class ChestAnatomy:
    """One random chest (seeded).  ``nodules`` is a list of :class:`Nodule`."""

    def __init__(self, rng: np.random.Generator, contrast: bool = False):
        self.rng = rng
        t = self.trunk = Trunk.sample(rng, "chest")
        b = t.half_front
        j = lambda s: rng.uniform(-s, s)  # noqa: E731
        rx, ry = t.vertebra_radius
        self.cavity = t.cavity_shrink
        self.apex = 108 + j(8)
        self.domes = {-1: -100 + j(12), 1: -115 + j(12)}  # the right hemidiaphragm sits higher
        self.heart = (22 + j(6), -0.28 * b + j(5), -78 + j(8))
        self.heart_radii = (60 * rng.uniform(0.9, 1.1), 48 * rng.uniform(0.9, 1.1), 52)
        self.heart_angle = -30 + j(8)
        sy = t.spine_y
        self.trachea = (j(3), sy - ry - rng.uniform(18, 24), rng.uniform(8, 10.5))
        self.aorta_desc = (rx + rng.uniform(4, 9), sy - ry + rng.uniform(-2, 6), rng.uniform(10, 13))
        self.aorta_asc = (rng.uniform(0, 12), -0.3 * b + j(5), rng.uniform(13, 17))
        self.svc = (-rng.uniform(24, 32), -0.26 * b + j(4), rng.uniform(8, 11))
        self.esophagus = (rx * 0.4 + 3, sy - ry - 5, 7.0)
        self.blood_hu = rng.uniform(160, 320) if contrast else rng.uniform(35, 50)
        self.contrast = contrast
        self.lung_gradient = rng.uniform(0.15, 0.45)  # HU per mm towards the back
        self.vessels, self.airways = self._trees()
        self.vessel_bounds = segment_bounds(self.vessels)
        self.airway_bounds = segment_bounds(self.airways, 1.3)
        self.noise_seed = int(rng.integers(2**31))
        self.nodules: list[Nodule] = []

    # ---- implicit regions ----------------------------------------------------------------

    def mediastinum_half_width(self, z):
        return np.interp(z, [-200, -30, 0, 40, 80, 200], [34, 34, 38, 34, 26, 24])

    def _dome(self, x, y):
        """Height of the diaphragm: highest under the lung centres, lower in the recesses."""
        t = self.trunk
        lateral = np.abs(x) - 0.45 * t.half_width
        apex_z = np.where(x < 0, self.domes[-1], self.domes[1])
        bump = np.clip(1 - (lateral / (0.6 * t.half_width)) ** 2
                       - ((y + 10) / (0.95 * t.half_front)) ** 2, 0, 1)
        return apex_z - 55 * (1 - bump)

    def mediastinum(self, x, y, z):
        """An upright oval between sternum and spine, narrower towards the neck."""
        t = self.trunk
        front = -t.half_front + t.cavity_shrink
        back = t.spine_y
        cy, h = (front + back) / 2, (back - front) / 2 + 12
        return superellipse(x, y, 4.0, cy, self.mediastinum_half_width(z), h, 2.6) <= 1.0

    def lung_inside(self, x, y, z):
        t = self.trunk
        rx, ry = t.vertebra_radius
        cavity = t.inside(x, y, self.cavity)
        spine = (np.abs(x) < rx + 10) & (y > t.spine_y - ry - 12)
        heart = ellipsoid(x, y, z, self.heart, tuple(r + 6 for r in self.heart_radii),
                          self.heart_angle) <= 1.0
        lateral = np.abs(x) - 0.45 * t.half_width
        apex = self.apex - 0.012 * (lateral ** 2 + (y - 0.1 * t.half_front) ** 2)
        return (cavity & ~self.mediastinum(x, y, z) & ~spine & ~heart & (z < apex)
                & (z > self._dome(x, y)))

    def below_diaphragm(self, x, y, z):
        return self.trunk.inside(x, y, self.cavity) & (z <= self._dome(x, y))

    def point_in_lung(self, p) -> bool:
        """Scalar version of :meth:`lung_inside` (tree growth calls it thousands of times)."""
        x, y, z = (float(v) for v in p)
        t = self.trunk
        rx, ry = t.vertebra_radius

        def outline(shrink):
            a = t.half_width - shrink
            b, power = (t.half_front - shrink, 2.1) if y < 0 else (t.half_back - shrink, 3.2)
            return abs(x / a) ** power + abs(y / b) ** power

        if outline(self.cavity) > 1.0:
            return False
        if abs(x) < rx + 10 and y > t.spine_y - ry - 12:
            return False
        lateral = abs(x) - 0.45 * t.half_width
        if z >= self.apex - 0.012 * (lateral ** 2 + (y - 0.1 * t.half_front) ** 2):
            return False
        apex_z = self.domes[-1] if x < 0 else self.domes[1]
        bump = min(max(1 - (lateral / (0.6 * t.half_width)) ** 2
                       - ((y + 10) / (0.95 * t.half_front)) ** 2, 0.0), 1.0)
        if z <= apex_z - 55 * (1 - bump):
            return False
        front = -t.half_front + t.cavity_shrink
        cy, h = (front + t.spine_y) / 2, (t.spine_y - front) / 2 + 12
        w = float(self.mediastinum_half_width(z))
        if abs((x - 4.0) / w) ** 2.6 + abs((y - cy) / h) ** 2.6 <= 1.0:
            return False
        hx, hy, hz = self.heart
        a = math.radians(self.heart_angle)
        dx, dy = x - hx, y - hy
        u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
        rx_h, ry_h, rz_h = (r + 6 for r in self.heart_radii)
        return (u / rx_h) ** 2 + (v / ry_h) ** 2 + ((z - hz) / rz_h) ** 2 > 1.0

    # ---- trees ----------------------------------------------------------------------------

    def _trees(self):
        rng = self.rng
        vessels: list[Segment] = []
        airways: list[Segment] = []
        tx, ty, tr = self.trachea
        carina = (tx, ty, 0.0)
        for side in (-1, 1):
            w = 34 + 8
            hilum_a = (side * w, -2.0, 8.0)
            hilum_v = (side * (w - 4), -14.0, -22.0)
            bronchus = (side * (w - 2), ty + 8, -14.0)
            # Main pulmonary artery / vein / bronchus from the mediastinum to the hilum.
            vessels.append(Segment((side * 12, -0.2 * self.trunk.half_front, 12), hilum_a, 9, 8))
            vessels.append(Segment((self.heart[0] - 10, self.heart[1] + 30, -30), hilum_v, 7, 6.5))
            airways.append(Segment(carina, bronchus, 6.5, 5.5))
            for start, radius, count in ((hilum_a, 6.0, 7), (hilum_v, 5.5, 6)):
                for k in range(count):
                    direction = np.array([side * rng.uniform(0.3, 1.0), rng.uniform(-0.9, 0.9),
                                          [1.0, 0.3, -0.4, -1.0, 0.0, 0.6, -0.7][k % 7]
                                          + rng.uniform(-0.3, 0.3)])
                    vessels += grow_tree(rng, start, direction, radius * rng.uniform(0.75, 1.0),
                                         rng.uniform(20, 30), self.point_in_lung, min_radius=0.55,
                                         ratio=0.75, max_segments=500, spread=32)
            for k in range(3):
                direction = np.array([side * rng.uniform(0.3, 1.0), rng.uniform(-0.5, 0.8),
                                      [0.9, -0.2, -1.0][k] + rng.uniform(-0.2, 0.2)])
                airways += grow_tree(rng, bronchus, direction, 4.0, 22, self.point_in_lung,
                                     min_radius=1.1, ratio=0.72, max_segments=80, spread=28)
        return vessels, airways

    # ---- nodules ----------------------------------------------------------------------------

    def random_lung_point(self, rng: np.random.Generator, margin: float = 0.0,
                          z_range: Sequence[float] | None = None):
        """A point inside the lung at least ``margin`` mm from its border (rejection sampling)."""
        t = self.trunk
        z0, z1 = z_range if z_range is not None else (self.domes[1] - 20, self.apex - 15)
        offsets = [np.zeros(3)] + [margin * d for d in np.vstack([np.eye(3), -np.eye(3)])]
        for _ in range(5000):
            p = np.array([rng.uniform(-t.half_width, t.half_width),
                          rng.uniform(-t.half_front, t.half_back), rng.uniform(z0, z1)])
            if all(self.point_in_lung(p + o) for o in offsets):
                return tuple(float(v) for v in p)
        raise ValueError(f"no lung point found with margin {margin} mm in z range {z0}..{z1}")

    def add_random_nodule(self, rng: np.random.Generator, diameter_range=(6.0, 30.0),
                          z_range=None, kinds=None) -> Nodule:
        """Insert a random nodule; 20 % are moved against the pleura (juxtapleural)."""
        from .nodules import NODULE_KINDS

        probe = random_nodule(rng, (0.0, 0.0, 0.0), diameter_range, kinds or NODULE_KINDS)
        center = self.random_lung_point(rng, probe.radius * 0.9, z_range)
        if rng.uniform() < 0.2:
            center = self._towards_pleura(np.asarray(center), probe.radius)
        nodule = random_nodule(np.random.default_rng(rng.integers(2**31)), center,
                               (probe.diameter, probe.diameter), (probe.kind,))
        self.nodules.append(nodule)
        return nodule

    def _towards_pleura(self, center: np.ndarray, radius: float) -> tuple:
        """Slide a centre outwards until the nodule touches the chest wall."""
        direction = np.array([center[0], center[1] - 0.0, 0.0])
        direction /= max(np.linalg.norm(direction), 1e-6)
        p = center.copy()
        for _ in range(200):
            q = p + direction * 1.0
            if not self.point_in_lung(q + direction * radius * 0.6):
                break
            p = q
        return tuple(float(v) for v in p)

    # ---- painting ---------------------------------------------------------------------------

    def paint(self, canvas: Canvas) -> None:
        rng = np.random.default_rng(self.noise_seed)
        t = self.trunk
        z0, z1 = canvas.bounds()[2]
        zr = (z0 - 1, z1 + 1)
        texture = canvas.upsample(smooth_noise(canvas.shape, [2.0 / s for s in canvas.spacing], rng))
        coarse = canvas.upsample(smooth_noise(canvas.shape, [6.0 / s for s in canvas.spacing], rng))
        t.paint_wall(canvas, zr)
        self._paint_chest_wall_extras(canvas, zr)
        canvas.paint("mediastinal_fat", t.bounds(zr), lambda r: t.inside(r.x, r.y, self.cavity),
                     lambda r: -90 + 6 * texture[r.slices])
        canvas.paint("upper_abdomen", t.bounds(zr), lambda r: self.below_diaphragm(r.x, r.y, r.z),
                     lambda r: np.where(r.x < 0, 58.0, 48.0) + 4 * texture[r.slices])
        lung_hu = lambda r: (LUNG_HU + self.lung_gradient * (r.y + 40)  # noqa: E731
                             + 14 * coarse[r.slices] + 8 * texture[r.slices])
        canvas.paint("lung", t.bounds(zr), lambda r: self.lung_inside(r.x, r.y, r.z), lung_hu)
        paint_segments(canvas, "airway", self.airways, -990.0, within=("lung", "mediastinal_fat"),
                       wall=("airway_wall", 1.3, 20.0), bounds=self.airway_bounds)
        paint_segments(canvas, "pulmonary_vessels", self.vessels, self.blood_hu,
                       within=("lung", "mediastinal_fat", "airway_wall"), bounds=self.vessel_bounds)
        self._paint_mediastinum(canvas, zr)
        for nodule in self.nodules:
            paint_nodule(canvas, nodule, texture)
        t.paint_spine(canvas, zr, paraspinal_scale=0.9)
        t.paint_ribs(canvas, np.random.default_rng(self.noise_seed + 1), z_top=150.0,
                     z_bottom=-110.0, drop=95.0)

    def _paint_mediastinum(self, canvas: Canvas, zr) -> None:
        blood = self.blood_hu
        hc, hr, ha = self.heart, self.heart_radii, self.heart_angle
        hb = tuple((c - max(hr) - 8, c + max(hr) + 8) for c in hc)
        canvas.paint("pericardial_fat", hb,
                     lambda r: ellipsoid(r.x, r.y, r.z, hc, tuple(x + 5 for x in hr), ha) <= 1.0, -95.0)
        canvas.paint("heart", hb, lambda r: ellipsoid(r.x, r.y, r.z, hc, hr, ha) <= 1.0,
                     lambda r: np.where(ellipsoid(r.x, r.y, r.z, hc, tuple(x - 10 for x in hr), ha)
                                        <= 1.0, blood, 45.0) if self.contrast else 42.0)
        ax, ay, ar = self.aorta_asc
        dx, dy, dr = self.aorta_desc
        arch_z = 45.0
        aorta = [Segment((ax, ay, -45), (ax, ay, arch_z), ar, ar),
                 Segment((ax, ay, arch_z), (dx - 6, (ay + dy) / 2, arch_z + 14), ar, dr),
                 Segment((dx - 6, (ay + dy) / 2, arch_z + 14), (dx, dy, arch_z), dr, dr),
                 Segment((dx, dy, arch_z), (dx + 2, dy - 4, -200), dr, dr)]
        paint_segments(canvas, "aorta", aorta, blood)
        sx, sy, sr = self.svc
        paint_segments(canvas, "svc", [Segment((sx, sy, 5), (sx, sy - 4, 200), sr, sr)],
                       blood if self.contrast else 40.0)
        paint_segments(canvas, "pulmonary_artery",
                       [Segment((8, self.heart[1] + 10, -25), (14, -0.22 * self.trunk.half_front, 14),
                                13, 12)], blood)
        tx, ty, tr = self.trachea
        paint_segments(canvas, "airway", [Segment((tx, ty, 0), (tx, ty - 6, 250), tr, tr)], -990.0,
                       wall=("airway_wall", 2.0, 25.0))
        ex, ey, er = self.esophagus
        canvas.paint("esophagus", ((ex - er, ex + er), (ey - er, ey + er), zr),
                     lambda r: superellipse(r.x, r.y, ex, ey, er, er * 0.8) <= 1.0, 40.0)

    def _paint_chest_wall_extras(self, canvas: Canvas, zr) -> None:
        """Pectoral muscles, sternum and scapulae."""
        t = self.trunk
        a, b = t.half_width, t.half_front
        for side in (-1, 1):
            canvas.paint("muscle", t.bounds((max(zr[0], -60), zr[1])),
                         lambda r, s=side: (superellipse(r.x, r.y, s * 0.42 * a, -b + t.fat + 2,
                                                         0.42 * a, 14.0) <= 1.0) & (r.z > -60),
                         t.muscle_hu, within=("subcutaneous_fat",))
            sx, sy = side * 0.62 * a, t.half_back - t.fat - 18
            canvas.paint("muscle", ((sx - 60, sx + 60), (sy - 35, sy + 25), (max(zr[0], -40), zr[1])),
                         lambda r, sx=sx, sy=sy, s=side: (superellipse(r.x, r.y, sx, sy + 2, 50, 20, 2.0,
                                                                       s * 25) <= 1.0) & (r.z > -40),
                         t.muscle_hu, within=("subcutaneous_fat", "skin"))
            canvas.paint("scapula", ((sx - 60, sx + 60), (sy - 35, sy + 25), (max(zr[0], -40), zr[1])),
                         lambda r, sx=sx, sy=sy, s=side: (superellipse(r.x, r.y, sx, sy, 34, 2.6, 2.0,
                                                                       s * 22) <= 1.0) & (r.z > -35),
                         CORTICAL_HU * 0.55)
        inner_front = -b + t.fat + 6
        canvas.paint("sternum", ((-16, 16), (inner_front - 8, inner_front + 8), zr),
                     lambda r: (superellipse(r.x, r.y, 0, inner_front, 14, 6) <= 1.0) & (r.z < 80),
                     lambda r: np.where(superellipse(r.x, r.y, 0, inner_front, 14, 6) > 0.6,
                                        CORTICAL_HU * 0.7, 260.0))


def render_chest(anatomy: ChestAnatomy, shape, spacing, center, noise: float, noise_seed,
                 factors) -> tuple[np.ndarray, dict, tuple]:
    """Paint ``anatomy`` onto a grid; returns (HU array, masks, origin_xyz)."""
    canvas = Canvas(shape, spacing, center, factors)
    anatomy.paint(canvas)
    hu, masks = canvas.render(noise, np.random.default_rng(noise_seed))
    return hu, masks, canvas.origin_xyz
