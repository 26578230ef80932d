"""The body wall and skeleton shared by the chest and abdominal phantoms.

Body outline: a superellipse, rounder in front and flatter at the back (a
supine patient), with skin, subcutaneous fat and a muscle layer.  Skeleton:
vertebral bodies alternating with discs, spinal canal, laminae and spinous
process, transverse processes, paraspinal muscles, and ribs that run
obliquely (an axial slice cuts each rib into an arc of bone with bright
cortex), ending in costal cartilage in front.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._canvas import Canvas, Region
from ._shapes import superellipse

SKIN_HU = 35.0
FAT_HU = -105.0
MUSCLE_HU = 52.0
CORTICAL_HU = 1100.0
CANCELLOUS_HU = 230.0
DISC_HU = 85.0
CSF_HU = 15.0
CARTILAGE_HU = 140.0


@dataclass
class Trunk:
    """Random body habitus; all sizes in mm."""

    half_width: float
    half_front: float
    half_back: float
    fat: float
    wall: float
    spine_y: float
    vertebra_radius: tuple[float, float]
    vertebra_period: float
    vertebra_phase: float
    muscle_hu: float
    fat_hu: float

    @classmethod
    def sample(cls, rng: np.random.Generator, region: str) -> "Trunk":
        if region == "chest":
            half_width = rng.uniform(128, 168)
            half_front = rng.uniform(90, 118)
            fat = rng.uniform(6, 22)
            wall = rng.uniform(13, 18)
            vr = (rng.uniform(15, 19), rng.uniform(13, 16))
            period = rng.uniform(24, 28)
        else:
            half_width = rng.uniform(140, 180)
            half_front = rng.uniform(100, 130)
            fat = rng.uniform(10, 32)
            wall = rng.uniform(8, 13)
            vr = (rng.uniform(20, 25), rng.uniform(16, 19))
            period = rng.uniform(34, 40)
        half_back = half_front * rng.uniform(0.85, 0.95)
        spine_y = half_back - fat - wall - vr[1] - rng.uniform(2, 8)
        return cls(half_width, half_front, half_back, fat, wall, spine_y, vr, period,
                   rng.uniform(0, period), rng.uniform(45, 58), rng.uniform(-112, -95))

    # ---- outline -----------------------------------------------------------------------

    def radius(self, x, y, shrink: float = 0.0):
        """Normalised body radius for the outline moved ``shrink`` mm inwards (<= 1 inside).

        It depends on (x, y) only and the same grids are asked for many times
        (every rib, every layer), so results are memoised per grid.
        """
        key = (round(float(shrink), 4), x.shape, y.shape, float(x.flat[0]), float(x.flat[-1]),
               float(y.flat[0]), float(y.flat[-1]))
        cache = self.__dict__.setdefault("_radius_cache", {})
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            a = self.half_width - shrink
            front = superellipse(x, y, 0.0, 0.0, a, self.half_front - shrink, 2.1)
            back = superellipse(x, y, 0.0, 0.0, a, self.half_back - shrink, 3.2)
            cache[key] = np.where(y < 0, front, back)
        return cache[key]

    def inside(self, x, y, shrink: float = 0.0):
        return self.radius(x, y, shrink) <= 1.0

    def bounds(self, z_range):
        return ((-self.half_width, self.half_width), (-self.half_front, self.half_back),
                tuple(z_range))

    @property
    def cavity_shrink(self) -> float:
        return self.fat + self.wall

    def paint_wall(self, canvas: Canvas, z_range) -> None:
        """Skin, subcutaneous fat and the muscle layer; the cavity is left as muscle."""
        b = self.bounds(z_range)
        canvas.paint("skin", b, lambda r: self.inside(r.x, r.y), SKIN_HU)
        canvas.paint("subcutaneous_fat", b, lambda r: self.inside(r.x, r.y, 2.0), self.fat_hu)
        canvas.paint("muscle", b, lambda r: self.inside(r.x, r.y, self.fat), self.muscle_hu)

    # ---- skeleton -----------------------------------------------------------------------

    def is_disc(self, z):
        return np.mod(z - self.vertebra_phase, self.vertebra_period) < 0.22 * self.vertebra_period

    def paint_spine(self, canvas: Canvas, z_range, paraspinal_scale: float = 1.0) -> None:
        rx, ry = self.vertebra_radius
        yv = self.spine_y
        canal_r = 8.5 if rx > 19 else 7.5
        yc = yv + ry + canal_r + 1.5
        back = self.half_back - self.fat - 4.0
        zb = tuple(z_range)
        # Paraspinal (erector spinae) muscles either side of the spinous process.
        pw, ph = 26.0 * paraspinal_scale, (back - yc + 6.0) / 2.0
        pb = ((-2 * pw - 8, 2 * pw + 8), (yc - 2 * ph - 10, back + 2), zb)
        for side in (-1, 1):
            canvas.paint("paraspinal_muscle", pb,
                         lambda r, s=side: superellipse(r.x, r.y, s * (pw * 0.95 + 3), yc + ph - 4,
                                                        pw, ph, 2.2) <= 1.0, self.muscle_hu + 3)
        bone = self._bone_value
        vb = ((-rx - 2, rx + 2), (yv - ry - 2, yv + ry + 2), zb)
        canvas.paint("vertebra", vb, lambda r: superellipse(r.x, r.y, 0, yv, rx, ry, 2.3) <= 1.0,
                     lambda r: np.where(self.is_disc(r.z), DISC_HU,
                                        bone(superellipse(r.x, r.y, 0, yv, rx, ry, 2.3))))
        # Posterior arch: pedicles + laminae (a ring around the canal) and the spinous process.
        canvas.paint("vertebra", ((-canal_r - 7, canal_r + 7), (yc - canal_r - 6, yc + canal_r + 6), zb),
                     lambda r: (superellipse(r.x, r.y, 0, yc, canal_r + 4.5, canal_r + 4) <= 1.0)
                     & (r.y > yv + ry - 3), CANCELLOUS_HU + 300)
        canvas.paint("vertebra", ((-5, 5), (yc, back), zb),
                     lambda r: superellipse(r.x, r.y, 0, (yc + back) / 2, 3.2,
                                            (back - yc) / 2, 2.0) <= 1.0, CANCELLOUS_HU + 300)
        # Transverse processes: thin bars angled backwards, in the upper part of each vertebra.
        tp = rx * 1.9
        canvas.paint("vertebra", ((-tp, tp), (yc - 8, yc + 12), zb),
                     lambda r: (np.abs(r.y - (yc - 2 + 0.18 * np.abs(r.x))) < 2.8)
                     & (np.abs(r.x) < tp) & (np.abs(r.x) > canal_r)
                     & (np.mod(r.z - self.vertebra_phase, self.vertebra_period)
                        > 0.7 * self.vertebra_period),
                     CANCELLOUS_HU + 250)
        canvas.paint("spinal_canal", ((-canal_r, canal_r), (yc - canal_r, yc + canal_r), zb),
                     lambda r: superellipse(r.x, r.y, 0, yc, canal_r, canal_r * 0.9) <= 1.0, CSF_HU)

    @staticmethod
    def _bone_value(rho):
        """Cancellous core with a bright cortical rim (rho: normalised radius)."""
        return np.where(rho > 0.72, CORTICAL_HU * 0.85, CANCELLOUS_HU)

    def paint_ribs(self, canvas: Canvas, rng: np.random.Generator, z_top: float, z_bottom: float,
                   drop: float = 75.0) -> None:
        """Oblique ribs from ``z_top`` down to ``z_bottom`` (posterior ends), 22-28 mm apart."""
        outer = self.fat + 1.5
        inner = min(self.cavity_shrink, outer + 6.0)
        depth = inner - outer
        z = z_top
        spacing = rng.uniform(22, 28)
        while z > z_bottom:
            z_i = z + rng.uniform(-2, 2)
            height = rng.uniform(7, 9)

            def rib(r: Region, zi=z_i, h=height):
                phi = np.arctan2(np.abs(r.x), r.y)  # 0 = straight back, pi = straight front
                z_rib = zi - drop * (phi / math.pi)
                dz = np.abs(r.z - z_rib) / (h / 2)
                shell = (self.radius(r.x, r.y, outer) <= 1.0) & (self.radius(r.x, r.y, inner) > 1.0)
                return shell & (dz < 1.0) & (phi > 0.16 * math.pi) & (phi < 0.86 * math.pi)

            def rib_hu(r: Region, zi=z_i, h=height):
                phi = np.arctan2(np.abs(r.x), r.y)
                dz = np.abs(r.z - (zi - drop * (phi / math.pi))) / (h / 2)
                mid = inner - depth / 2
                radial = np.abs(self.radius(r.x, r.y, mid) - 1.0) * (self.half_width - mid) / (depth / 2)
                edge = np.maximum(dz, radial)
                bone = np.where(edge > 0.6, CORTICAL_HU * 0.8, CANCELLOUS_HU + 60)
                return np.where(phi > 0.72 * math.pi, CARTILAGE_HU, bone)

            b = self.bounds((z_i - drop - height, z_i + height))
            canvas.paint("rib", b, rib, rib_hu, within=("muscle",))
            z -= spacing
