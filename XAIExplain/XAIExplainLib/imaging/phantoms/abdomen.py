"""Procedural contrast-enhanced abdominal CT (liver to lower kidney poles).

The anatomy is random per seed (habitus, organ sizes and positions, vessel
trees, bowel loops); the contrast phase sets the attenuation of every
enhancing structure.  Mean values follow the multiphase CT literature
(unenhanced blood ~40 HU; late arterial aorta ~300 HU with a bright renal
cortex and still-dark medulla - corticomedullary differentiation - and a
heterogeneous "moire" spleen; portal venous phase with the liver at its peak
~110 HU and a homogeneous nephrogram; delayed/excretory phase with washed-out
vessels ~110-130 HU and contrast excreted into the renal collecting systems).
Each sample scales the enhancement by a random factor (cardiac output,
contrast dose, timing) within limits that keep the phases physiologically
distinct.

Knowing every structure's mask, we know which voxels carry the phase
information: aorta, IVC, portal and hepatic veins, kidney cortex and medulla,
renal pelvis, liver and spleen.
"""
from __future__ import annotations


import numpy as np

from ._canvas import Canvas, Region, smooth_noise
from ._shapes import Segment, ellipsoid, grow_tree, paint_segments, superellipse, taper
from ._trunk import Trunk

PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")

#: Mean HU per structure and phase (non-contrast, arterial, portal venous, delayed).
PHASE_HU: dict[str, tuple[float, float, float, float]] = {
    "aorta": (42, 310, 170, 118),
    "arteries": (42, 280, 160, 112),
    "ivc": (40, 95, 140, 112),
    "portal_vein": (40, 125, 180, 120),
    "hepatic_veins": (40, 48, 155, 112),
    "renal_veins": (40, 190, 165, 118),
    "liver": (58, 75, 110, 86),
    "spleen": (46, 125, 120, 95),
    "pancreas": (42, 115, 95, 75),
    "kidney_cortex": (32, 185, 170, 135),
    "kidney_medulla": (32, 70, 160, 145),
    "renal_pelvis": (8, 8, 12, 520),
    "bowel_wall": (40, 90, 95, 72),
    "stomach_wall": (40, 95, 100, 74),
}

#: Structures whose attenuation depends on the phase: the voxels that carry the signal.
PHASE_STRUCTURES = tuple(PHASE_HU)

#: Every structure an abdominal phantom can contain (``Phantom.masks`` holds those present).
STRUCTURES = ("skin", "subcutaneous_fat", "muscle", "visceral_fat", "bowel_wall", "bowel_content",
              "bowel_gas", "stomach_wall", "stomach_content", "liver", "gallbladder", "spleen",
              "pancreas", "perirenal_fat", "kidney", "kidney_cortex", "kidney_medulla",
              "renal_sinus_fat", "renal_pelvis", "portal_vein", "hepatic_veins", "renal_veins",
              "arteries", "aorta", "ivc", "psoas", "lung", "paraspinal_muscle", "vertebra",
              "spinal_canal", "rib")

#: Default z range (mm) of the anatomy: below the kidneys to the liver dome.
Z_RANGE = (-60.0, 150.0)


def phase_values(phase: str, rng: np.random.Generator) -> dict[str, float]:
    """HU per enhancing structure for one patient in ``phase`` (randomised within limits)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    index = PHASES.index(phase)
    scale = rng.uniform(0.85, 1.15)
    out = {}
    for name, values in PHASE_HU.items():
        base = values[0] + rng.normal(0, 3)
        gain = (values[index] - values[0]) * scale * rng.uniform(0.94, 1.06)
        out[name] = base + gain
    return out


class AbdomenAnatomy:
    """One random abdomen (seeded); :meth:`paint` draws it onto a canvas for a phase."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        t = self.trunk = Trunk.sample(rng, "abdomen")
        a, b = t.half_width, t.half_front
        self.cavity = t.cavity_shrink
        j = lambda s: rng.uniform(-s, s)  # noqa: E731 - tiny jitter helper
        sy = t.spine_y
        rx, ry = t.vertebra_radius
        self.aorta = (rx * 0.45 + j(4), sy - ry - rng.uniform(10, 14), rng.uniform(10, 13))
        self.ivc = (-rx - rng.uniform(2, 6), sy - ry - rng.uniform(10, 14), rng.uniform(11, 14))
        self.liver_r = (-0.45 * a + j(6), -0.05 * b + j(6), 62 + j(8))
        self.liver_radii = (0.52 * a * rng.uniform(0.92, 1.08), 0.78 * b * rng.uniform(0.92, 1.05),
                            rng.uniform(78, 92))
        self.liver_l = (-0.05 * a + j(8), -0.45 * b + j(6), 95 + j(8))
        self.liver_l_radii = (0.38 * a * rng.uniform(0.8, 1.15), 0.28 * b, rng.uniform(35, 45))
        self.spleen = (0.56 * a + j(6), 0.22 * b + j(6), 78 + j(10))
        self.spleen_radii = (0.2 * a * rng.uniform(0.85, 1.2), 0.36 * b * rng.uniform(0.85, 1.2),
                             rng.uniform(42, 55))
        self.spleen_angle = -35 + j(10)
        self.kidneys = []
        for side, z0 in ((-1, -8.0), (1, 8.0)):
            center = (side * (rx + rng.uniform(32, 42)), sy + j(5), z0 + j(8))
            radii = (rng.uniform(22, 27), rng.uniform(27, 33), rng.uniform(48, 58))
            self.kidneys.append((side, center, radii, side * rng.uniform(25, 40)))
        self.stomach = (0.32 * a + j(8), -0.38 * b + j(6), 108 + j(10))
        self.stomach_radii = (0.27 * a, 0.28 * b, rng.uniform(40, 55))
        self.gallbladder = (-0.42 * a + j(8), -0.5 * b + j(6), 32 + j(10))
        self.bowel = self._bowel_loops()
        self.vessels = self._vessels()
        self.noise_seed = int(rng.integers(2**31))
        self.pancreas = self._pancreas()

    # ---- implicit organs ------------------------------------------------------------------

    def in_cavity(self, x, y):
        return self.trunk.inside(x, y, self.cavity)

    def liver_inside(self, x, y, z):
        right = ellipsoid(x, y, z, self.liver_r, self.liver_radii) <= 1.0
        left = ellipsoid(x, y, z, self.liver_l, self.liver_l_radii) <= 1.0
        return (right | left) & self.in_cavity(x, y)

    def _point_in_liver(self, p) -> bool:
        x, y, z = (np.asarray(v, float) for v in p)
        return bool(self.liver_inside(x, y, z))

    def _vessels(self) -> dict[str, list[Segment]]:
        rng = self.rng
        ax, ay, ar = self.aorta
        vx, vy, vr = self.ivc
        hilum = (self.liver_r[0] + 0.42 * self.liver_radii[0], ay - 18, self.liver_r[2] - 12)
        confluence = (ax - 10, ay - 28, 30.0)
        out: dict[str, list[Segment]] = {"portal_vein": [Segment(confluence, hilum, 7.5, 7.0)]}
        for direction in ((-1.0, 0.15, 0.25), (0.7, -0.7, 0.35), (-0.6, -0.5, 0.4)):
            out["portal_vein"] += grow_tree(rng, hilum, direction, 5.5, 28, self._point_in_liver,
                                            min_radius=1.2, spread=30)
        top = (vx, vy, self.liver_r[2] + 0.75 * self.liver_radii[2])
        out["hepatic_veins"] = []
        for direction in ((-1.0, -0.3, -0.45), (-0.25, -1.0, -0.4), (0.6, -1.0, -0.3)):
            out["hepatic_veins"] += grow_tree(rng, top, direction, 5.0, 30, self._point_in_liver,
                                              min_radius=1.2, spread=24)
        spleen_hilum = (self.spleen[0] - 0.6 * self.spleen_radii[0], self.spleen[1] - 8,
                        self.spleen[2] - 10)
        out["portal_vein"].append(Segment(confluence, spleen_hilum, 5.0, 4.5))
        sma_top = (ax, ay - ar - 2, 34.0)
        out["arteries"] = [Segment((ax, ay, 42.0), sma_top, 4.0, 4.0),
                           Segment(sma_top, (ax - 4, ay - ar - 28, -60.0), 4.0, 3.0)]
        out["renal_veins"] = []
        for side, center, radii, _ in self.kidneys:
            cx, cy, cz = center
            hilum_k = (cx - side * radii[0] * 0.6, cy - 6, cz)
            out["arteries"].append(Segment((ax + side * ar * 0.8, ay, cz + 6), hilum_k, 3.0, 2.6))
            target = (vx + vr * 0.5, vy, cz + 4)
            if side > 0:  # left renal vein crosses in front of the aorta
                mid = (ax, ay - ar - 6, cz + 4)
                out["renal_veins"] += [Segment(hilum_k, mid, 4.5, 4.0), Segment(mid, target, 4.0, 5.0)]
            else:
                out["renal_veins"].append(Segment(hilum_k, target, 5.0, 5.5))
        return out

    def _pancreas(self) -> list[Segment]:
        ax, ay, _ = self.aorta
        head = (ax - 35, ay - 30, 22.0)
        neck = (ax - 5, ay - 40, 32.0)
        tail = (self.spleen[0] - 0.9 * self.spleen_radii[0], self.spleen[1] - 20, self.spleen[2] - 14)
        body = ((neck[0] + tail[0]) / 2, min(neck[1], tail[1]) - 6, (neck[2] + tail[2]) / 2)
        return [Segment(head, neck, 13, 10), Segment(neck, body, 10, 9), Segment(body, tail, 9, 7)]

    def _bowel_loops(self) -> list[tuple[list[Segment], str]]:
        rng = self.rng
        t = self.trunk
        a, b = t.half_width, t.half_front
        loops: list[tuple[list[Segment], str]] = []
        # Colon: ascending (patient right), transverse (front), descending (left).
        asc = [Segment((-0.66 * a, -0.05 * b, -70), (-0.64 * a, -0.1 * b, 35), 21, 22)]
        trans = [Segment((-0.64 * a, -0.1 * b, 35), (-0.1 * a, -0.62 * b, 28), 20, 19),
                 Segment((-0.1 * a, -0.62 * b, 28), (0.62 * a, -0.2 * b, 62), 19, 18)]
        desc = [Segment((0.62 * a, -0.2 * b, 62), (0.7 * a, 0.05 * b, -70), 17, 16)]
        for segs in (asc, trans, desc):
            loops.append((segs, "colon"))
        # Small bowel: random short loops in the lower anterior abdomen.
        for _ in range(int(rng.integers(10, 18))):
            p = np.array([rng.uniform(-0.45, 0.45) * a, rng.uniform(-0.6, -0.05) * b,
                          rng.uniform(-70, 25)])
            segs = []
            d = rng.normal(size=3)
            d[2] *= 0.4
            for _ in range(int(rng.integers(3, 6))):
                d = d / np.linalg.norm(d)
                q = p + d * rng.uniform(18, 32)
                r = rng.uniform(9, 13)
                segs.append(Segment(tuple(p), tuple(q), r, r))
                p = q
                d = d + rng.normal(scale=0.9, size=3)
                d[2] *= 0.5
            loops.append((segs, "small_bowel"))
        return loops

    # ---- painting -------------------------------------------------------------------------

    def paint(self, canvas: Canvas, phase: str) -> None:
        rng = np.random.default_rng(self.noise_seed)
        hu = phase_values(phase, rng)
        t = self.trunk
        z0, z1 = canvas.bounds()[2]
        zr = (z0 - 1, z1 + 1)
        texture = canvas.upsample(smooth_noise(canvas.shape, [2.5 / s for s in canvas.spacing], rng))
        coarse = canvas.upsample(smooth_noise(canvas.shape, [6.0 / s for s in canvas.spacing], rng))
        tex = lambda r, amp: amp * texture[r.slices]  # noqa: E731
        t.paint_wall(canvas, zr)
        canvas.paint("visceral_fat", t.bounds(zr), lambda r: self.in_cavity(r.x, r.y),
                     lambda r: t.fat_hu + 8 + tex(r, 6))
        self._paint_bowel(canvas, hu, coarse)
        self._paint_stomach(canvas, hu)
        canvas.paint("liver", t.bounds(zr), lambda r: self.liver_inside(r.x, r.y, r.z),
                     lambda r: hu["liver"] + tex(r, 5))
        gb = self.gallbladder
        canvas.paint("gallbladder", ((gb[0] - 18, gb[0] + 18), (gb[1] - 16, gb[1] + 16),
                                     (gb[2] - 36, gb[2] + 36)),
                     lambda r: ellipsoid(r.x, r.y, r.z, gb, (16, 14, 35)) <= 1.0, 12.0)
        sp = self.spleen
        spleen_hu = (lambda r: hu["spleen"] + 55 * np.tanh(2.5 * coarse[r.slices])) \
            if phase == "arterial" else (lambda r: hu["spleen"] + tex(r, 4))
        canvas.paint("spleen", t.bounds(zr),
                     lambda r: (ellipsoid(r.x, r.y, r.z, sp, self.spleen_radii, self.spleen_angle) <= 1.0)
                     & self.in_cavity(r.x, r.y), spleen_hu)
        paint_segments(canvas, "pancreas", self.pancreas, hu["pancreas"])
        self._paint_kidneys(canvas, hu, texture)
        for name in ("portal_vein", "hepatic_veins", "renal_veins", "arteries"):
            paint_segments(canvas, name, self.vessels[name], hu[name])
        ax, ay, ar = self.aorta
        canvas.paint("aorta", ((ax - ar, ax + ar), (ay - ar, ay + ar), (-999, 999)),
                     lambda r: superellipse(r.x, r.y, ax, ay, ar, ar) <= 1.0, hu["aorta"])
        vx, vy, vr = self.ivc
        canvas.paint("ivc", ((vx - vr, vx + vr), (vy - vr, vy + vr), (-999, 160)),
                     lambda r: superellipse(r.x, r.y, vx, vy, vr, vr * 0.75) <= 1.0, hu["ivc"])
        self._paint_psoas(canvas)
        self._paint_lung_bases(canvas, zr)
        t.paint_spine(canvas, zr)
        t.paint_ribs(canvas, np.random.default_rng(self.noise_seed + 1), z_top=250.0,
                     z_bottom=80.0, drop=130.0)

    def _paint_stomach(self, canvas: Canvas, hu) -> None:
        c, radii = self.stomach, self.stomach_radii
        b = ((c[0] - radii[0], c[0] + radii[0]), (c[1] - radii[1], c[1] + radii[1]),
             (c[2] - radii[2], c[2] + radii[2]))
        inside = lambda r: (ellipsoid(r.x, r.y, r.z, c, radii) <= 1.0) & self.in_cavity(r.x, r.y)  # noqa: E731
        canvas.paint("stomach_wall", b, inside, hu["stomach_wall"])
        inner = (radii[0] - 5, radii[1] - 5, radii[2] - 5)
        level = c[1] - 0.15 * radii[1]
        canvas.paint("stomach_content", b,
                     lambda r: (ellipsoid(r.x, r.y, r.z, c, inner) <= 1.0) & self.in_cavity(r.x, r.y),
                     lambda r: np.where(r.y < level, -1000.0, 18.0))

    def _paint_bowel(self, canvas: Canvas, hu, coarse) -> None:
        rng = np.random.default_rng(self.noise_seed + 7)
        for segments, kind in self.bowel:
            wall_name = "bowel_wall"
            if kind == "colon":
                content = lambda r: np.where(coarse[r.slices] < -0.6, -950.0,  # noqa: E731
                                             -40.0 + 90.0 * coarse[r.slices])
            else:
                content = float(rng.choice([12.0, 12.0, 25.0, -1000.0]))  # fluid, chyme or gas
            gas = not callable(content) and content < -500
            fill_name = "bowel_gas" if gas else "bowel_content"
            thin = [Segment(s.a, s.b, s.ra - 2.5, s.rb - 2.5) for s in segments]
            paint_segments(canvas, wall_name, segments, hu["bowel_wall"], within=("visceral_fat",))
            paint_segments(canvas, fill_name, thin, content, within=(wall_name,))

    def _paint_kidneys(self, canvas: Canvas, hu, texture) -> None:
        for side, (cx, cy, cz), (rx, ry, rz), angle in self.kidneys:
            b = ((cx - ry - 8, cx + ry + 8), (cy - ry - 8, cy + ry + 8), (cz - rz - 8, cz + rz + 8))
            canvas.paint("perirenal_fat", b,
                         lambda r: ellipsoid(r.x, r.y, r.z, (cx, cy, cz), (rx + 6, ry + 6, rz + 8), angle) <= 1.0,
                         -95.0)
            hx, hy = cx - side * rx * 0.95, cy - ry * 0.25

            def parts(r: Region, cx=cx, cy=cy, cz=cz, rx=rx, ry=ry, rz=rz, angle=angle, hx=hx, hy=hy):
                s = taper(r.z, cz, rz)
                rho2 = superellipse(r.x, r.y, cx, cy, rx * s, ry * s, 2.0, angle)
                notch = (superellipse(r.x, r.y, hx, hy, 10, 8) <= 1.0) & (np.abs(r.z - cz) < 0.4 * rz)
                return rho2, notch, s

            def kidney_hu(r: Region, parts=parts, cx=cx, cy=cy, cz=cz, rx=rx, ry=ry, rz=rz,
                          angle=angle, side=side):
                rho2, _, s = parts(r)
                rho = np.sqrt(rho2)
                theta = np.arctan2(r.y - cy, r.x - cx)
                pyramid = (rho > 0.42) & (rho < 0.8) & (np.cos(7 * theta + 0.3 * angle) > -0.2)
                value = np.where(pyramid, hu["kidney_medulla"], hu["kidney_cortex"])
                central = np.abs(r.z - cz) < 0.55 * rz
                sinus = superellipse(r.x, r.y, cx - side * rx * 0.45, cy - ry * 0.1,
                                     rx * 0.55 * s, ry * 0.42 * s, 2.0, angle) <= 1.0
                value = np.where(sinus & central, -70.0, value)
                pelvis = superellipse(r.x, r.y, cx - side * rx * 0.55, cy - ry * 0.12,
                                      rx * 0.32 * s, ry * 0.22 * s, 2.0, angle) <= 1.0
                pelvis &= np.abs(r.z - cz) < 0.35 * rz
                return np.where(pelvis, hu["renal_pelvis"], value) + 3 * texture[r.slices]

            canvas.paint("kidney", b, lambda r, parts=parts: (parts(r)[0] <= 1.0) & ~parts(r)[1],
                         kidney_hu)
        self._split_kidney_labels(canvas, hu)

    def _split_kidney_labels(self, canvas: Canvas, hu) -> None:
        """Relabel kidney voxels as cortex / medulla / sinus fat / pelvis from their HU."""
        if "kidney" not in canvas.names:
            return
        kid = canvas.label == canvas.names["kidney"]
        values = canvas.hu[kid]
        labels = np.full(values.shape, canvas.label_id("kidney_cortex"), dtype=np.uint8)
        medulla_mid = (hu["kidney_medulla"] + hu["kidney_cortex"]) / 2
        if abs(hu["kidney_medulla"] - hu["kidney_cortex"]) > 20:
            lower = hu["kidney_medulla"] < hu["kidney_cortex"]
            is_med = values < medulla_mid if lower else values > medulla_mid
            labels[is_med & (values > -20)] = canvas.label_id("kidney_medulla")
        labels[values < -20] = canvas.label_id("renal_sinus_fat")
        labels[np.abs(values - hu["renal_pelvis"]) < 12] = canvas.label_id("renal_pelvis")
        canvas.label[kid] = labels
        for name in ("kidney_cortex", "kidney_medulla", "renal_sinus_fat", "renal_pelvis"):
            if name in canvas.names and "kidney" in canvas.extent:
                canvas.extent[name] = [list(v) for v in canvas.extent["kidney"]]

    def _paint_psoas(self, canvas: Canvas) -> None:
        t = self.trunk
        rx, _ = t.vertebra_radius
        for side in (-1, 1):
            cx = side * (rx + 12)
            canvas.paint("psoas", ((cx - 26, cx + 26), (t.spine_y - 26, t.spine_y + 20), (-999, 35)),
                         lambda r, cx=cx: superellipse(
                             r.x, r.y, cx + side * 2, t.spine_y - 2,
                             np.clip(5 + (35 - r.z) * 0.16, 0, 22),
                             np.clip(5 + (35 - r.z) * 0.14, 0, 19)) <= 1.0,
                         t.muscle_hu - 2)

    def _paint_lung_bases(self, canvas: Canvas, zr) -> None:
        t = self.trunk
        rx, _ = t.vertebra_radius

        def recess(r: Region):
            # Posterior costophrenic recesses: a crescent along the back of the cavity
            # that widens towards the chest.
            depth = np.clip((r.z - 105) * 0.012, 0, 0.35)
            rim = t.radius(r.x, r.y, self.cavity) > (1.0 - depth) ** 2
            return (rim & (r.y > t.spine_y - 70) & (np.abs(r.x) > rx + 12)
                    & t.inside(r.x, r.y, self.cavity))

        canvas.paint("lung", t.bounds((max(zr[0], 110), zr[1])), recess, -850.0)
