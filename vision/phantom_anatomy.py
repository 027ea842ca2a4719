"""Normal chest anatomy of the synthetic phantom, painted into an HU volume and a label map.

All dimensions below are millimetres for an adult-sized patient at ``scale == 1``; the whole patient is scaled
down (never up) so it fits any field of view, and jittered a little per seed. Structures are painted back to front
(painter's algorithm): later structures overwrite earlier ones, and the label map records who owns each voxel, so
structure masks are disjoint and always agree with the HU values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vision.phantom_geometry import Grid, Shape, ellipsoid, segments, tube

# label ids of the painted label map (0 = outside the body / air)
LABELS: dict[str, int] = {name: i for i, name in enumerate((
    "air", "body_fat", "muscle", "cavity_fat", "lung_right", "lung_left", "trachea", "bronchi", "heart", "aorta",
    "pulmonary_artery", "superior_vena_cava", "esophagus", "thyroid", "spine", "spinal_canal", "ribs", "sternum",
    "clavicles", "liver", "stomach", "spleen", "breast",
    # owners of finding voxels that leave their organ (so e.g. a lung mask never contains pleural fluid)
    "pleural_effusion", "pericardial_effusion", "lymph_node", "hiatal_hernia"))}
LUNG_IDS = (LABELS["lung_right"], LABELS["lung_left"])
BONE_IDS = (LABELS["spine"], LABELS["ribs"], LABELS["sternum"], LABELS["clavicles"])

# Hounsfield units of the tissues (non-contrast; contrast values where they differ)
HU = {
    "air": -1000.0, "fat": -100.0, "cavity_fat": -90.0, "muscle": 45.0, "lung": -855.0, "blood": 40.0,
    "blood_contrast": 260.0, "myocardium": 45.0, "myocardium_contrast": 110.0, "airway_wall": 0.0,
    "cortex": 750.0, "marrow": 240.0, "disc": 80.0, "csf": 20.0, "liver": 58.0, "liver_contrast": 115.0,
    "spleen": 48.0, "spleen_contrast": 120.0, "thyroid": 100.0, "thyroid_contrast": 160.0, "fluid": 12.0,
    "gland": 25.0, "esophagus": 40.0,
}


def label_in(labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """``np.isin(labels, ids)`` for uint8 label maps via a 256-entry lookup table (several times faster)."""
    lut = np.zeros(256, dtype=bool)
    lut[list(ids)] = True
    return lut[labels]


@dataclass
class Canvas:
    """The HU volume (float32 while painting) and its label map (uint8), both (X, Y, Z)."""

    grid: Grid
    hu: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls, grid: Grid) -> Canvas:
        return cls(grid, np.full(grid.shape, HU["air"], dtype=np.float32), np.zeros(grid.shape, dtype=np.uint8))

    def paint(self, shape: Shape, value: float | np.ndarray, label: str | None = None,
              within: Sequence[int] | None = None) -> np.ndarray:
        """Set ``value`` (scalar, or an array over ``shape.box``) inside ``shape``; returns the local mask painted.

        ``within`` restricts painting to voxels whose current label is one of those ids.
        """
        if shape.mask.size == 0:
            return shape.mask
        m = shape.mask
        if within is not None:
            m = m & label_in(self.labels[shape.box], within)
        view = self.hu[shape.box]
        view[m] = value[m] if isinstance(value, np.ndarray) else value
        if label is not None:
            self.labels[shape.box][m] = LABELS[label]
        return m

    def mask(self, *names: str) -> np.ndarray:
        ids = [LABELS[n] for n in names]
        return label_in(self.labels, ids)


@dataclass
class Anatomy:
    """Geometry the findings need (all mm, RAS, already scaled), filled by :func:`build_anatomy`."""

    scale: float
    contrast: bool
    lung: dict[str, dict[str, Any]] = field(default_factory=dict)  # side -> centre/radii/dome/z_apex
    airways: list[dict[str, Any]] = field(default_factory=list)  # {a, b, r, side, lobe, level}
    heart: dict[str, Any] = field(default_factory=dict)  # centre, radii, rotation
    aorta: dict[str, Any] = field(default_factory=dict)  # points, radii
    coronaries: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, 3) points on the heart surface
    trachea: dict[str, Any] = field(default_factory=dict)
    esophagus: dict[str, Any] = field(default_factory=dict)
    stomach: dict[str, Any] = field(default_factory=dict)
    sternum: dict[str, Any] = field(default_factory=dict)
    cavity: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, np.ndarray] = field(default_factory=dict)  # mediastinal lymph node stations -> centre mm
    body: dict[str, Any] = field(default_factory=dict)
    mediastinum: list[tuple[float, ...]] = field(default_factory=list)  # (z0, z1, cx, half-width, cy, half-depth)


def _rotation(long_axis: Sequence[float]) -> np.ndarray:
    """Orthonormal 3x3 matrix whose first column is ``long_axis``."""
    u = np.asarray(long_axis, float)
    u /= np.linalg.norm(u)
    helper = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    v = np.cross(helper, u)
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    return np.stack([u, v, w], axis=1)


def elliptic_cylinder(grid: Grid, cx: float, cy: float, rx: float, ry: float, z0: float, z1: float) -> Shape:
    """Axial elliptic cylinder between z0 and z1 mm."""
    box = grid.box((cx - rx, cy - ry, min(z0, z1)), (cx + rx, cy + ry, max(z0, z1)))
    if box is None:
        return Shape((slice(0, 0),) * 3, np.zeros((0, 0, 0), bool))  # type: ignore[arg-type]
    x, y, _ = grid.coords(box)
    m = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    return Shape(box, np.broadcast_to(m, tuple(s.stop - s.start for s in box)).copy())


def lung_shape(grid: Grid, lung: dict[str, Any]) -> tuple[Shape, np.ndarray]:
    """The lung envelope (before mediastinal carving) and its normalised radius (0 centre, 1 pleura) in its box.

    A z-dependent ellipse: full size below ``z_mid``, a dome up to the apex, cut from below by the diaphragm
    dome ``z_d(x, y) = dome - depth * rho^2`` (so the posterior/lateral recesses reach lower than the dome).
    """
    cx, cy = lung["center"]
    ax, ay = lung["radii"]
    zb = lung["dome"] - lung["depth"]
    box = grid.box((cx - ax, cy - ay, zb), (cx + ax, cy + ay, lung["apex"]))
    if box is None:
        return Shape((slice(0, 0),) * 3, np.zeros((0, 0, 0), bool)), np.zeros((0, 0, 0), np.float32)  # type: ignore
    x, y, z = grid.coords(box)
    t = np.clip((z - lung["mid"]) / (lung["apex"] - lung["mid"]), 0.0, 1.0)
    k = np.sqrt(np.clip(1.0 - t * t, 1e-4, 1.0))  # dome taper towards the apex
    rho2 = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
    q = rho2 / (k * k)
    z_d = lung["dome"] - lung["depth"] * np.minimum(rho2, 1.0)
    m = (q <= 1.0) & (z >= z_d) & (z <= lung["apex"])
    return Shape(box, m), np.sqrt(q).astype(np.float32)


def build_anatomy(grid: Grid, rng: np.random.Generator, *, contrast: bool = False) -> tuple[Canvas, Anatomy]:
    """Paint a normal adult chest (thyroid to upper abdomen) into a new canvas.

    Args:
        grid: the voxel grid (any shape and spacing).
        rng: the anatomy stream of the phantom's seed (size jitter, vessel tree, breast size).
        contrast: blood pool enhancement (aorta, heart chambers, pulmonary arteries ~ 260 HU).
    """
    hx, hy, hz = grid.extent_mm
    fit = min(hx / 170.0, hy / 122.0, hz / 162.0)
    s = float(min(1.0, fit) * rng.uniform(0.94, 1.04) if fit >= 1.0 else fit * rng.uniform(0.96, 1.0))
    cv = Canvas.empty(grid)
    an = Anatomy(scale=s, contrast=contrast)

    def P(*v: float) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) * s

    blood = HU["blood_contrast"] if contrast else HU["blood"]

    # --- body wall: skin/fat, muscle, thoracic cavity -----------------------------------------------------------
    A, B = 155 * s, 105 * s
    zt, zb = 165 * s, -165 * s
    an.body = {"radii": (A, B), "fat": 14 * s}
    cv.paint(elliptic_cylinder(grid, 0, 0, A, B, zb, zt), HU["fat"], "body_fat")
    cv.paint(elliptic_cylinder(grid, 0, 0, A - 14 * s, B - 14 * s, zb, zt), HU["muscle"], "muscle")
    cav = {"center": (0.0, 8 * s), "radii": (125 * s, 73 * s)}
    an.cavity = cav
    cv.paint(elliptic_cylinder(grid, *cav["center"], *cav["radii"], zb, 150 * s), HU["cavity_fat"], "cavity_fat")

    # --- breast (anterior chest wall, may bulge the skin) -----------------------------------------------------
    bs = rng.uniform(0.55, 1.0)
    for sx in (1, -1):
        br = ellipsoid(grid, P(sx * 72, 92, -5), P(55 * bs, 24 * bs + 6, 48 * bs))
        if br.mask.size:
            _, y, _ = grid.coords(br.box)
            br.mask &= (y >= (B - 14 * s) * 0.8) & label_in(cv.labels[br.box], [0, LABELS["body_fat"]])
            cv.paint(br, HU["fat"], "breast")
            gl = ellipsoid(grid, P(sx * 72, 98, -5), P(32 * bs, 12 * bs + 3, 28 * bs))
            cv.paint(gl, HU["gland"], within=[LABELS["breast"]])

    # --- upper abdomen (painted before the lungs: the lung bases overwrite it above the diaphragm) ----------
    organ_within = [LABELS["cavity_fat"]]
    liver_hu = HU["liver_contrast"] if contrast else HU["liver"]
    cv.paint(ellipsoid(grid, P(45, 5, -125), P(95, 72, 62)), liver_hu, "liver", within=organ_within)
    cv.paint(ellipsoid(grid, P(-78, -30, -112), P(26, 38, 42)),
             HU["spleen_contrast"] if contrast else HU["spleen"], "spleen", within=organ_within)
    st_c, st_r = P(-52, 18, -108), P(38, 34, 40)
    an.stomach = {"center": st_c, "radii": st_r}
    st = ellipsoid(grid, st_c, st_r)
    cv.paint(st, HU["muscle"], "stomach", within=organ_within + [LABELS["liver"]])
    inner = ellipsoid(grid, st_c, st_r - 4 * s)
    if inner.mask.size:
        _, _, z = grid.coords(inner.box)
        content = np.where(z > st_c[2] + 8 * s, HU["air"], HU["fluid"]).astype(np.float32)
        cv.paint(inner, np.broadcast_to(content, inner.mask.shape).copy(), within=[LABELS["stomach"]])

    # --- lungs ----------------------------------------------------------------------------------------------
    an.lung = {
        "right": {"center": (72 * s, 6 * s), "radii": (62 * s, 72 * s), "apex": 132 * s, "mid": 62 * s,
                  "dome": -52 * s, "depth": 62 * s},
        "left": {"center": (-72 * s, 4 * s), "radii": (60 * s, 70 * s), "apex": 130 * s, "mid": 60 * s,
                 "dome": -66 * s, "depth": 58 * s},
    }
    for side in ("right", "left"):
        shp, _ = lung_shape(grid, an.lung[side])
        if shp.mask.size:
            y = grid.coords(shp.box)[1]
            val = (HU["lung"] - 0.3 * y).astype(np.float32)  # dependent (posterior) lung is slightly denser
            cv.paint(shp, np.broadcast_to(val, shp.mask.shape).copy(), f"lung_{side}",
                     within=[LABELS["cavity_fat"], LABELS["liver"], LABELS["spleen"], LABELS["stomach"]])

    # --- mediastinal envelope: fat between the lungs (carves the medial lungs) ------------------------------
    an.mediastinum = [(20 * s, 150 * s, 2 * s, 24 * s, 12 * s, 72 * s), (-80 * s, 20 * s, -4 * s, 30 * s, 12 * s,
                                                                          72 * s)]
    for sh in mediastinal_envelope(grid, an):
        cv.paint(sh, HU["cavity_fat"], "cavity_fat", within=LUNG_IDS)

    # --- heart and great vessels ---------------------------------------------------------------------------
    rot = _rotation([-0.72, 0.42, -0.55])
    an.heart = {"center": P(-18, 32, -26), "radii": P(63, 46, 44), "rotation": rot}
    paint_heart(cv, an, an.heart["center"], an.heart["radii"])

    pa_pts = [P(-8, 56, 0), P(-18, 44, 30), P(-22, 32, 38)]
    cv.paint(tube(grid, pa_pts, 13 * s), blood, "pulmonary_artery")
    cv.paint(tube(grid, [P(-22, 32, 38), P(-46, 18, 34)], 10 * s), blood, "pulmonary_artery")
    cv.paint(tube(grid, [P(-22, 32, 38), P(-5, 22, 30), P(42, 14, 22)], 10 * s), blood, "pulmonary_artery")
    cv.paint(tube(grid, [P(34, 22, 120), P(30, 22, 0)], 9 * s), blood, "superior_vena_cava")

    ao_pts = [P(2, 30, 2), P(12, 36, 40), P(10, 34, 68), P(-8, 30, 84), P(-26, 8, 86), P(-27, -22, 70),
              P(-27, -26, 40), P(-24, -28, -60), P(-14, -18, -165)]
    ao_r = [15, 15, 14, 13, 12.5, 12, 12, 11, 10]
    an.aorta = {"points": np.asarray(ao_pts), "radii": np.asarray(ao_r, float) * s}
    cv.paint(tube(grid, ao_pts, an.aorta["radii"]), blood, "aorta")

    # --- airways: trachea, main/lobar/segmental bronchi ---------------------------------------------------
    tr_c = P(6, 6)
    carina = P(6, 6, 40)
    an.trachea = {"center": tr_c, "lumen_radius": 8.5 * s, "wall": 2.2 * s, "carina": carina, "top": 165 * s}
    paint_airway(cv, [P(6, 6, 165), carina], 8.5 * s, 2.2 * s, "trachea")
    tree = [  # (a, b, lumen radius, side, lobe, level)
        (carina, P(38, 2, 24), 6.0, "right", None, "main"),
        (carina, P(-40, 0, 16), 5.5, "left", None, "main"),
        (P(38, 2, 24), P(62, 2, 58), 3.8, "right", "upper", "lobar"),
        (P(38, 2, 24), P(48, 4, 2), 4.5, "right", None, "intermedius"),
        (P(48, 4, 2), P(66, 36, -14), 3.2, "right", "middle", "lobar"),
        (P(48, 4, 2), P(68, -24, -40), 4.0, "right", "lower", "lobar"),
        (P(-40, 0, 16), P(-62, 8, 48), 4.0, "left", "upper", "lobar"),
        (P(-40, 0, 16), P(-66, -22, -34), 4.0, "left", "lower", "lobar"),
    ]
    seg = []
    for a, b, r, side, lobe, level in tree:
        if level == "lobar":
            d = (b - a) / np.linalg.norm(b - a)
            for k in range(3):
                jitter = rng.normal(0, 0.45, 3)
                dd = d + jitter
                dd /= np.linalg.norm(dd)
                seg.append((b, b + dd * 32 * s, 2.4, side, lobe, "segmental"))
    for a, b, r, side, lobe, level in tree + seg:
        an.airways.append({"a": np.asarray(a), "b": np.asarray(b), "r": r * s, "side": side, "lobe": lobe,
                           "level": level})
    for aw in an.airways:
        if aw["level"] in ("main", "intermedius", "lobar"):
            paint_airway(cv, [aw["a"], aw["b"]], aw["r"], 1.5 * s, "bronchi")
        else:  # segmental bronchi stay part of the lung (a lung mask includes its small airways)
            paint_airway(cv, [aw["a"], aw["b"]], aw["r"], 1.0 * s, None, within=LUNG_IDS)

    # --- pulmonary vessels: a random branching tree from each hilum, clipped to the lung ---------------------
    vessel_hu = HU["blood_contrast"] * 0.8 if contrast else HU["blood"]
    vsegs = []
    for hilum, sx in ((P(40, 14, 22), 1.0), (P(-44, 14, 26), -1.0)):
        for main in ([0.3, 0.2, 1.0], [0.5, 0.6, -0.2], [0.5, -0.5, -0.7], [1.0, 0.0, 0.1], [0.3, -0.8, 0.3],
                     [0.4, 0.5, 0.6], [0.6, 0.1, -1.0], [0.7, -0.3, 0.8], [0.8, 0.6, 0.2], [0.6, -0.6, -0.2]):
            d = np.array([sx * main[0], main[1], main[2]])
            _branch(vsegs, hilum, d / np.linalg.norm(d), 28 * s, 4.0 * s, 6, rng)
    cv.paint(segments(grid, [(a, b, ra, rb) for a, b, ra, rb in vsegs]), vessel_hu, within=LUNG_IDS)

    # --- esophagus and thyroid -------------------------------------------------------------------------------
    es_pts = [P(-4, -16, 165), P(-4, -16, 0), P(-12, -8, -55), P(-40, 12, -86)]
    an.esophagus = {"points": np.asarray(es_pts), "radius": 8 * s}
    cv.paint(tube(grid, es_pts, 8 * s), HU["esophagus"], "esophagus",
             within=[LABELS["cavity_fat"], LABELS["stomach"], *LUNG_IDS, LABELS["liver"]])
    cv.paint(tube(grid, es_pts[:3], 2.2 * s), HU["air"], within=[LABELS["esophagus"]])
    thy = HU["thyroid_contrast"] if contrast else HU["thyroid"]
    for sx in (1, -1):
        cv.paint(ellipsoid(grid, P(6 + sx * 19, 12, 140), P(9, 10, 22)), thy, "thyroid",
                 within=[LABELS["cavity_fat"], LABELS["muscle"]])
    cv.paint(ellipsoid(grid, P(6, 20, 130), P(12, 4, 5)), thy, "thyroid", within=[LABELS["cavity_fat"]])

    # --- bones -------------------------------------------------------------------------------------------------
    paint_bones(cv, an, rng, P, s)

    # lymph node stations (mm) used by the lymphadenopathy finding: in mediastinal fat, clear of vessels/airways
    an.nodes = {"right_paratracheal": P(26, 2, 62), "subcarinal": P(4, -6, 18), "prevascular": P(-4, 58, 62),
                "aortopulmonary": P(-24, 28, 58), "left_hilar": P(-50, 20, 14), "right_hilar": P(50, 16, 8)}
    an.sternum = {"center": P(0, 87), "z": (P(-45)[0], P(100)[0])}
    return cv, an


def mediastinal_envelope(grid: Grid, an: Anatomy) -> list[Shape]:
    """The space between the lungs as rounded boxes (superellipse cross-sections), one per z band."""
    out = []
    for z0, z1, cx, w, cy, h in an.mediastinum:
        box = grid.box((cx - w, cy - h, z0), (cx + w, cy + h, z1))
        if box is not None:
            x, y, _ = grid.coords(box)
            m = (((x - cx) / w) ** 4 + ((y - cy) / h) ** 4) <= 1.0
            out.append(Shape(box, np.broadcast_to(m, tuple(b.stop - b.start for b in box)).copy()))
    return out


def diaphragm_z(grid: Grid, an: Anatomy, box) -> np.ndarray:
    """Height (mm) of the diaphragm surface under each (x, y) of ``box``, shape (nx, ny, 1)."""
    x, y, _ = grid.coords(box)
    out = None
    for side, sel in (("right", x >= 0), ("left", x < 0)):
        L = an.lung[side]
        rho2 = ((x - L["center"][0]) / L["radii"][0]) ** 2 + ((y - L["center"][1]) / L["radii"][1]) ** 2
        zd = L["dome"] - L["depth"] * np.minimum(rho2, 1.0)
        out = zd if out is None else np.where(sel, zd, out)
    return np.broadcast_to(out, (x.shape[0], y.shape[1], 1))


def paint_heart(cv: Canvas, an: Anatomy, center: np.ndarray, radii: np.ndarray,
                within: Sequence[int] | None = None) -> np.ndarray:
    """Myocardium with (contrast-enhanced) chambers; returns the full-size heart mask painted."""
    grid = cv.grid
    rot = an.heart["rotation"]
    shp = ellipsoid(grid, center, radii, rot)
    m = cv.paint(shp, HU["myocardium_contrast"] if an.contrast else HU["myocardium"], "heart", within=within)
    if an.contrast:
        ch = ellipsoid(grid, center, np.asarray(radii) * 0.72, rot)
        cv.paint(ch, HU["blood_contrast"], within=[LABELS["heart"]])
    full = np.zeros(grid.shape, bool)
    if m.size:
        full[shp.box] = m
    # coronary artery paths on the epicardial surface: (theta, phi) curves on the ellipsoid
    c, r = np.asarray(center), np.asarray(radii)

    def surf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        local = np.stack([np.cos(u), np.sin(u) * np.cos(v), np.sin(u) * np.sin(v)], axis=1) * r * 1.02
        return c + local @ rot.T

    t = np.linspace(0.0, 1.0, 24)
    an.coronaries = {
        "lad": surf(0.5 + 2.0 * t, np.full_like(t, 0.25 * np.pi)),  # anterior interventricular groove
        "lcx": surf(np.full_like(t, 1.0), 0.4 * np.pi + 1.6 * t),  # left AV groove
        "rca": surf(np.full_like(t, 2.3), -0.3 * np.pi - 1.6 * t),  # right AV groove
    }
    return full


def paint_airway(cv: Canvas, points: Sequence[np.ndarray], lumen: float, wall: float, label: str | None,
                 within: Sequence[int] | None = None) -> None:
    grid = cv.grid
    cv.paint(tube(grid, points, lumen + wall), HU["airway_wall"], label, within=within)
    cv.paint(tube(grid, points, lumen), HU["air"], label, within=within if label is None else None)


def _branch(out: list, start: np.ndarray, d: np.ndarray, length: float, radius: float, depth: int,
            rng: np.random.Generator) -> None:
    end = start + d * length
    r_end = radius * 0.86
    out.append((start, end, radius, r_end))
    if depth == 0:
        return
    for _ in range(2):
        nd = d + rng.normal(0.0, 0.5, 3)
        nd /= np.linalg.norm(nd)
        _branch(out, end, nd, length * 0.76, r_end * 0.86, depth - 1, rng)


def paint_bones(cv: Canvas, an: Anatomy, rng: np.random.Generator, P, s: float) -> None:
    """Spine (bodies with marrow, discs, canal, spinous processes), 12 rib pairs, sternum, clavicles."""
    grid = cv.grid
    zt, zb = 165 * s, -165 * s
    sc = P(0, -42)
    cv.paint(elliptic_cylinder(grid, sc[0], sc[1], 17 * s, 16 * s, zb, zt), HU["disc"], "spine")
    level = 26 * s
    z = zb
    while z < zt:
        z0, z1 = z + 2.5 * s, z + level - 2.5 * s
        cv.paint(elliptic_cylinder(grid, sc[0], sc[1], 17 * s, 16 * s, z0, z1), HU["cortex"], "spine")
        cv.paint(elliptic_cylinder(grid, sc[0], sc[1], 14 * s, 13 * s, z0 + 1.5 * s, z1 - 1.5 * s), HU["marrow"],
                 "spine")
        zm = (z0 + z1) / 2
        cv.paint(elliptic_cylinder(grid, 0, -68 * s, 12 * s, 11 * s, z0, z1), HU["cortex"], "spine")
        cv.paint(tube(grid, [P(0, -76, 0) + [0, 0, zm], P(0, -96, 0) + [0, 0, zm - 8 * s]], 5 * s), HU["cortex"],
                 "spine")
        for sx in (1, -1):
            cv.paint(tube(grid, [P(0, -60, 0) + [0, 0, zm], P(sx * 28, -58, 0) + [0, 0, zm]], 5 * s), HU["cortex"],
                     "spine")
        z += level
    cv.paint(elliptic_cylinder(grid, 0, -68 * s, 7.5 * s, 7 * s, zb, zt), HU["csf"], "spinal_canal")

    # ribs: around the cavity ellipse from the transverse process (posterior) to the anterior chest wall
    ra, rb = an.cavity["radii"][0] + 6 * s, an.cavity["radii"][1] + 6 * s
    cy = an.cavity["center"][1]
    for i in range(12):
        z_post = (112 - 21 * i) * s
        th = np.linspace(0.35, 2.55 - max(0, i - 6) * 0.18, 11)
        drop = (38 + 2 * i) * s * (th - th[0]) / (th[-1] - th[0])
        for sx in (1, -1):
            pts = np.stack([sx * ra * np.sin(th), cy - rb * np.cos(th), z_post - drop], axis=1)
            cv.paint(tube(grid, pts, 5.0 * s), HU["cortex"], "ribs", within=[LABELS["muscle"], LABELS["body_fat"],
                                                                           LABELS["cavity_fat"], *LUNG_IDS])
            cv.paint(tube(grid, pts, 3.0 * s), HU["marrow"], within=[LABELS["ribs"]])
    # sternum (flat) and clavicles
    z0, z1 = -45 * s, 100 * s
    cv.paint(elliptic_cylinder(grid, 0, 87 * s, 16 * s, 6 * s, z0, z1), HU["cortex"], "sternum")
    cv.paint(elliptic_cylinder(grid, 0, 87 * s, 13 * s, 3.5 * s, z0 + 2 * s, z1 - 2 * s), HU["marrow"], "sternum")
    for sx in (1, -1):
        pts = [P(sx * 16, 84, 128), P(sx * 70, 66, 140), P(sx * 122, 20, 150)]
        cv.paint(tube(grid, pts, 7 * s), HU["cortex"], "clavicles")
        cv.paint(tube(grid, pts, 4.5 * s), HU["marrow"], within=[LABELS["clavicles"]])
