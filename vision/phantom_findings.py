"""Injectors for the 18 CT-RATE findings of the synthetic phantom.

Each injector gets the painted canvas, the anatomy, validated parameters and its own random stream, and returns a
:class:`FindingResult`: the finding's mask and the new HU values *inside that mask only*. The composer in
``vision.phantom`` writes them, so a finding can never change voxels outside its own mask.

Parameters (all optional; missing ones are drawn from the finding's random stream):
    ``size_mm``  physical size, meaning per finding (see ``PARAMS``); ``side`` "left"/"right" (effusion and
    peribronchial thickening also "bilateral"); ``lobe`` "upper"/"middle"/"lower" (no middle lobe on the left:
    use "upper" for the lingula); ``severity`` 0..1; ``count`` an integer; ``type`` for medical material.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vision.errors import CTScribeError
from vision.phantom_anatomy import (
    HU,
    LABELS,
    LUNG_IDS,
    Anatomy,
    Canvas,
    _branch,
    _rotation,
    label_in,
    lung_shape,
    paint_heart,
)
from vision.phantom_geometry import Grid, Shape, ball_exact, ellipsoid, segments, tube


class PhantomSpecError(CTScribeError):
    """A phantom finding name, parameter or value is invalid (or the field of view is too small for it)."""


# finding key -> {parameter: what it means}; the keys are the accepted parameters
PARAMS: dict[str, dict[str, str]] = {
    "medical_material": {"type": "pacemaker | sternal_wires | port"},
    "arterial_wall_calcification": {"count": "number of plaques", "size_mm": "plaque diameter", "severity": "0..1"},
    "cardiomegaly": {"severity": "0..1 (heart scaled by 1.22 + 0.28 * severity)"},
    "pericardial_effusion": {"size_mm": "fluid rim thickness", "severity": "0..1"},
    "coronary_artery_wall_calcification": {"count": "number of plaques", "size_mm": "plaque diameter",
                                           "severity": "0..1"},
    "hiatal_hernia": {"size_mm": "diameter of the herniated stomach above the diaphragm", "severity": "0..1"},
    "lymphadenopathy": {"count": "number of enlarged nodes", "size_mm": "short-axis diameter (>= 10)",
                        "severity": "0..1"},
    "emphysema": {"severity": "0..1 (LAA-950 target 5..40 % of the lung)", "side": "left | right | bilateral"},
    "atelectasis": {"side": "left | right", "size_mm": "band length", "severity": "0..1"},
    "lung_nodule": {"count": "number of nodules", "size_mm": "equivalent-sphere diameter", "side": "left | right",
                    "lobe": "upper | middle | lower"},
    "lung_opacity": {"side": "left | right", "lobe": "upper | middle | lower", "size_mm": "extent diameter",
                     "severity": "0..1"},
    "pulmonary_fibrotic_sequela": {"side": "left | right", "lobe": "upper | middle | lower", "count": "bands",
                                   "severity": "0..1"},
    "pleural_effusion": {"side": "left | right | bilateral", "size_mm": "maximum fluid depth", "severity": "0..1"},
    "mosaic_attenuation_pattern": {"severity": "0..1 (fraction of lobules affected)"},
    "peribronchial_thickening": {"side": "left | right | bilateral", "size_mm": "extra wall thickness",
                                 "severity": "0..1"},
    "consolidation": {"side": "left | right", "lobe": "upper | middle | lower", "size_mm": "extent diameter",
                      "severity": "0..1"},
    "bronchiectasis": {"side": "left | right", "lobe": "upper | middle | lower", "size_mm": "lumen diameter",
                       "count": "number of dilated bronchi"},
    "interlobular_septal_thickening": {"severity": "0..1", "side": "left | right | bilateral"},
}

SIDES = ("left", "right")
LOBES = {"right": ("upper", "middle", "lower"), "left": ("upper", "lower")}
METAL_TYPES = ("pacemaker", "sternal_wires", "port")


@dataclass
class FindingResult:
    """What one injected finding did.

    Args:
        mask: bool (X, Y, Z), the finding's voxels.
        values: new HU inside ``mask`` (scalar, or 1-D in ``mask`` order).
        relabel: label-map owner for the voxels (None keeps the organ, e.g. a nodule stays "lung").
        params: the parameters actually used (explicit + drawn), for the report and labels.json.
        measurements: ground truth for this finding (mm, mL, HU).
    """

    mask: np.ndarray
    values: float | np.ndarray
    relabel: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)


Ctx = tuple[Canvas, Anatomy]


# ------------------------------------------------------------------------------------------------ validation
def validate_params(key: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and values of one finding's parameters; returns a plain dict (raises PhantomSpecError)."""
    allowed = PARAMS[key]
    bad = [p for p in params if p not in allowed]
    if bad:
        raise PhantomSpecError(f"unknown parameter(s) {', '.join(map(repr, bad))} for finding {key!r}; valid: "
                               f"{', '.join(f'{k} ({v})' for k, v in allowed.items())}")
    out = dict(params)
    if "side" in out:
        sides = SIDES + (("bilateral",) if "bilateral" in allowed["side"] else ())
        if out["side"] not in sides:
            raise PhantomSpecError(f"{key}: side must be one of {', '.join(sides)}, got {out['side']!r}")
    if "lobe" in out:
        if out["lobe"] not in ("upper", "middle", "lower"):
            raise PhantomSpecError(f"{key}: lobe must be upper, middle or lower, got {out['lobe']!r}")
        if out["lobe"] == "middle" and out.get("side") == "left":
            raise PhantomSpecError(f"{key}: the left lung has no middle lobe; use lobe 'upper' (lingula) or 'lower'")
    if "severity" in out:
        sev = out["severity"]
        if not isinstance(sev, (int, float)) or not 0.0 <= float(sev) <= 1.0:
            raise PhantomSpecError(f"{key}: severity must be a number in 0..1, got {sev!r}")
        out["severity"] = float(sev)
    if "size_mm" in out:
        sz = out["size_mm"]
        if not isinstance(sz, (int, float)) or not 0.5 <= float(sz) <= 150.0:
            raise PhantomSpecError(f"{key}: size_mm must be a number of millimetres in 0.5..150, got {sz!r}")
        out["size_mm"] = float(sz)
    if "count" in out:
        c = out["count"]
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 1 <= int(c) <= 50:
            raise PhantomSpecError(f"{key}: count must be an integer in 1..50, got {c!r}")
        out["count"] = int(c)
    if "type" in out and out["type"] not in METAL_TYPES:
        raise PhantomSpecError(f"{key}: type must be one of {', '.join(METAL_TYPES)}, got {out['type']!r}")
    return out


def _side(p: dict, rng: np.random.Generator, bilateral: bool = False) -> str:
    if "side" not in p:
        p["side"] = "bilateral" if bilateral else str(rng.choice(SIDES))
    return p["side"]


def _lobe(p: dict, rng: np.random.Generator, default: str | None = None) -> str:
    if "lobe" not in p:
        p["lobe"] = default if default and default in LOBES[p["side"]] else str(rng.choice(LOBES[p["side"]]))
    if p["lobe"] not in LOBES[p["side"]]:
        raise PhantomSpecError("the left lung has no middle lobe; use lobe 'upper' (lingula) or 'lower'")
    return p["lobe"]


def _sev(p: dict, rng: np.random.Generator, lo: float = 0.3, hi: float = 0.8) -> float:
    if "severity" not in p:
        p["severity"] = round(float(rng.uniform(lo, hi)), 2)
    return p["severity"]


def _size(p: dict, rng: np.random.Generator, lo: float, hi: float) -> float:
    if "size_mm" not in p:
        p["size_mm"] = round(float(rng.uniform(lo, hi)), 1)
    return p["size_mm"]


# ------------------------------------------------------------------------------------------------ helpers
def lobe_map(grid: Grid, an: Anatomy, box, side: str) -> np.ndarray:
    """Lobe code per voxel of ``box`` for the lung of ``side``: 0 upper, 1 middle, 2 lower (geometry only).

    Oblique fissure: a plane from posterior-superior (y=-50, z=+55 mm) to anterior-inferior (y=+60, z=-50 mm);
    right horizontal fissure: z = +5 mm anterior to the oblique fissure.
    """
    s = an.scale
    _, y, z = grid.coords(box)
    lower = 105.0 * (y + 50 * s) + 110.0 * (z - 55 * s) < 0
    code = np.where(lower, 2, 0)
    if side == "right":
        code = np.where(~lower & (z <= 5 * s), 1, code)
    return np.broadcast_to(code, tuple(b.stop - b.start for b in box)).astype(np.uint8)


def lung_lobe_mask(cv: Canvas, an: Anatomy, side: str, lobe: str | None = None) -> np.ndarray:
    """Full-size bool mask of the current lung (label map) of ``side``, optionally restricted to a lobe."""
    m = cv.labels == LABELS[f"lung_{side}"]
    if lobe is None:
        return m
    code = {"upper": 0, "middle": 1, "lower": 2}[lobe]
    out = np.zeros_like(m)
    box = _bbox(m)
    if box is None:
        return out
    out[box] = m[box] & (lobe_map(cv.grid, an, box, side) == code)
    return out


def _bbox(m: np.ndarray):
    if not m.any():
        return None
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(m.any(axis=other))
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)


def smooth_field(shape: tuple[int, ...], spacing, cell_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field (float32, ~zero mean, unit-ish std) with correlation length ~``cell_mm`` over ``shape``."""
    from scipy.ndimage import zoom

    coarse = [max(2, int(np.ceil(n * sp / cell_mm)) + 1) for n, sp in zip(shape, spacing)]
    c = rng.standard_normal(coarse).astype(np.float32)
    f = zoom(c, [n / k for n, k in zip(shape, coarse)], order=1, grid_mode=False)
    out = np.zeros(shape, np.float32)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(shape, f.shape))
    out[sl] = f[sl]
    return out


def _random_voxel(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return np.array(np.unravel_index(int(idx[rng.integers(idx.size)]), mask.shape))


def _need(mask: np.ndarray, what: str) -> np.ndarray:
    if not mask.any():
        raise PhantomSpecError(f"cannot place {what}: the field of view is too small or too coarse for it; use a "
                               f"larger shape or a finer spacing")
    return mask


def _blob(cv: Canvas, region: np.ndarray, center_vox: np.ndarray, diameter_mm: float, rng: np.random.Generator,
          cell_mm: float = 14.0) -> np.ndarray:
    """Irregular blob of roughly ``diameter_mm`` around a voxel, clipped to ``region`` (full-size bool)."""
    grid = cv.grid
    c = np.asarray(grid.to_mm(center_vox))
    r = diameter_mm / 2.0
    shp = ellipsoid(grid, c, [r * 1.3] * 3)
    out = np.zeros(grid.shape, bool)
    if shp.mask.size == 0:
        return out
    x, y, z = grid.coords(shp.box)
    d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / r
    f = smooth_field(shp.mask.shape, grid.spacing, cell_mm, rng)
    out[shp.box] = (d + 0.25 * f <= 1.0) & region[shp.box]
    return out


# ------------------------------------------------------------------------------------------------ injectors
def medical_material(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    grid, s = cv.grid, an.scale
    kind = p.setdefault("type", "pacemaker")
    wire = max(1.2, 0.5 * max(grid.spacing))  # thin leads stay visible on coarse grids
    shapes: list[Shape] = []
    A, B = an.body["radii"]
    if kind in ("pacemaker", "port"):
        gx = -70 * s if kind == "pacemaker" else 62 * s
        gy = B * np.sqrt(1 - (gx / A) ** 2) - an.body["fat"] * 0.55
        gen_c = np.array([gx, gy, 95 * s])
        gen_r = np.array([22, 5, 20]) * s if kind == "pacemaker" else np.array([12, 6, 12]) * s
        shapes.append(ellipsoid(grid, gen_c, np.maximum(gen_r, wire)))
        path = [gen_c, np.array([gx * 0.6, 70 * s, 118 * s]), np.array([12 * s, 40 * s, 112 * s]),
                np.array([30 * s, 22 * s, 100 * s]), np.array([30 * s, 22 * s, 5 * s])]
        if kind == "pacemaker":
            path.append(np.array([-5 * s, 52 * s, -40 * s]))
        shapes.append(tube(grid, path, wire))
        where = gen_c
    else:  # sternal wires: loops around the sternum
        c = an.sternum["center"]
        z0, z1 = an.sternum["z"]
        for z in np.linspace(z0 + 15 * s, z1 - 15 * s, 5):
            th = np.linspace(0, 2 * np.pi, 17)
            pts = np.stack([c[0] + 19 * s * np.cos(th), c[1] + 9 * s * np.sin(th), np.full_like(th, z)], axis=1)
            shapes.append(tube(grid, pts, wire))
        where = np.array([c[0], c[1], (z0 + z1) / 2])
    mask = np.zeros(grid.shape, bool)
    for sh in shapes:
        if sh.mask.size:
            mask[sh.box] |= sh.mask
    mask &= cv.labels != 0  # a generator bulging through the skin is clipped to the body
    _need(mask, "the medical material")
    vals = rng.uniform(2800, 3200, int(mask.sum())).astype(np.float32)
    return FindingResult(mask, vals, None, p, {"type": kind, "center_ras_mm": [round(float(v), 1) for v in where],
                                               "center_voxel": list(grid.to_voxel(where))})


def _plaques(cv: Canvas, centers: np.ndarray, p: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    grid = cv.grid
    mask = np.zeros(grid.shape, bool)
    for c in centers:
        sh, _ = ball_exact(grid, c, p["size_mm"] * rng.uniform(0.8, 1.2), rng, tries=4)
        mask[sh.box] |= sh.mask
    mask &= cv.labels != 0
    _need(mask, "the calcifications")
    return mask, rng.uniform(350, 900, int(mask.sum())).astype(np.float32)


def arterial_wall_calcification(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    sev = _sev(p, rng)
    n = p.setdefault("count", int(3 + round(12 * sev)))
    _size(p, rng, 3.0, 5.0)
    pts, rad = an.aorta["points"], an.aorta["radii"]
    centers = []
    for _ in range(n):
        k = int(rng.integers(1, len(pts) - 1))
        t = rng.random()
        c = pts[k] + t * (pts[k + 1] - pts[k])
        r = rad[k] + t * (rad[k + 1] - rad[k])
        d = pts[k + 1] - pts[k]
        d = d / np.linalg.norm(d)
        v = rng.normal(size=3)
        v -= (v @ d) * d
        centers.append(c + v / np.linalg.norm(v) * r * 0.95)
    mask, vals = _plaques(cv, np.asarray(centers), p, rng)
    return FindingResult(mask, vals, None, p, {"count": n, "volume_mm3": round(float(mask.sum()) *
                                                                               cv.grid.voxel_volume_mm3, 1)})


def cardiomegaly(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    sev = _sev(p, rng, 0.4, 1.0)
    f = 1.22 + 0.28 * sev  # CTR ~0.42 normal -> ~0.51..0.62
    radii = np.asarray(an.heart["radii"]) * f
    # paint into a scratch copy; the composer copies back only the enlarged heart's voxels
    scratch = Canvas(cv.grid, cv.hu.copy(), cv.labels.copy())
    within = [LABELS[n] for n in ("cavity_fat", "heart", "lung_left", "lung_right", "liver", "stomach", "spleen",
                                  "pulmonary_artery", "superior_vena_cava")]
    mask = paint_heart(scratch, an, an.heart["center"], radii, within=within)  # also moves the coronary paths
    an.heart = {**an.heart, "radii": radii}
    return FindingResult(mask, scratch.hu[mask], "heart", p, {"scale": round(f, 3)})


def pericardial_effusion(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    sev = _sev(p, rng)
    t = p.setdefault("size_mm", round(5 + 15 * sev, 1))
    shp = ellipsoid(cv.grid, an.heart["center"], np.asarray(an.heart["radii"]) + t, an.heart["rotation"])
    mask = shp.full(cv.grid.shape)
    mask &= label_in(cv.labels, [LABELS[n] for n in ("cavity_fat", "lung_left", "lung_right", "liver", "stomach")])
    _need(mask, "the pericardial effusion")
    return FindingResult(mask, HU["fluid"], "pericardial_effusion", p,
                         {"thickness_mm": t, "volume_ml": round(float(mask.sum()) * cv.grid.voxel_volume_mm3 / 1e3, 1)})


def coronary_artery_wall_calcification(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    sev = _sev(p, rng)
    n = p.setdefault("count", int(2 + round(8 * sev)))
    _size(p, rng, 2.5, 4.0)
    names = list(an.coronaries)
    centers = []
    vessels = []
    for _ in range(n):
        name = names[int(rng.integers(len(names)))]
        path = an.coronaries[name]
        centers.append(path[int(rng.integers(2, len(path) - 2))])
        vessels.append(name)
    mask, vals = _plaques(cv, np.asarray(centers), p, rng)
    return FindingResult(mask, vals, None, p, {"count": n, "vessels": sorted(set(vessels)),
                                               "volume_mm3": round(float(mask.sum()) * cv.grid.voxel_volume_mm3, 1)})


def hiatal_hernia(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    s = an.scale
    sev = _sev(p, rng)
    d = p.setdefault("size_mm", round(30 + 30 * sev, 1))
    r = d / 2
    c = np.array([-10 * s, -6 * s, -58 * s + r * 0.6])
    shp = ellipsoid(cv.grid, c, [r, r * 0.8, r])
    within = [LABELS[n] for n in ("cavity_fat", "lung_left", "lung_right", "esophagus", "liver", "stomach")]
    mask = shp.full(cv.grid.shape) & label_in(cv.labels, within)
    _need(mask, "the hiatal hernia")
    inner = ellipsoid(cv.grid, c, [r - 3 * s, r * 0.8 - 3 * s, r - 3 * s]).full(cv.grid.shape)[mask]
    z = cv.grid.axes[2][np.nonzero(mask)[2]]
    content = np.where(z > c[2] + 0.1 * r, HU["air"], HU["fluid"])  # air-fluid level inside the sac
    vals = np.where(inner, content, HU["muscle"]).astype(np.float32)
    return FindingResult(mask, vals, "hiatal_hernia", p, {"diameter_mm": d,
                                                          "center_ras_mm": [round(float(v), 1) for v in c]})


def lymphadenopathy(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    sev = _sev(p, rng)
    n = p.setdefault("count", int(1 + round(2 * sev)))
    sa = p.setdefault("size_mm", round(11 + 10 * sev, 1))
    stations = list(an.nodes)
    order = [stations[int(j)] for j in rng.permutation(len(stations))]
    within = [LABELS[k] for k in ("cavity_fat", "lung_left", "lung_right")]
    allowed = label_in(cv.labels, within)
    mask = np.zeros(cv.grid.shape, bool)
    nodes = []
    for i in range(4 * len(stations)):  # stations taken by other findings (a huge heart) are skipped
        if len(nodes) == n:
            break
        name = order[i % len(order)]
        c = an.nodes[name] + (rng.random(3) - 0.5) * 4 * an.scale + (i // len(order)) * np.array([0, 0, 14.0])
        shp = ellipsoid(cv.grid, c, [sa / 2, sa / 2, sa * 0.7])
        m = shp.full(cv.grid.shape) & allowed & ~mask
        if not m.any():  # smaller than a voxel on a coarse grid: keep the nearest voxel when it is free
            v = cv.grid.to_voxel(c)
            if not (allowed[v] and not mask[v]):
                continue
            m[v] = True
        mask |= m
        nodes.append({"station": name, "short_axis_mm": sa, "long_axis_mm": round(sa * 1.4, 1),
                      "center_ras_mm": [round(float(x), 1) for x in c]})
    p["count"] = n = len(nodes) or n
    _need(mask, "the lymph nodes")
    return FindingResult(mask, 42.0, "lymph_node", p, {"count": n, "nodes": nodes, "short_axis_mm": sa})


def emphysema(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    sev = _sev(p, rng)
    side = _side(p, rng, bilateral=True)
    target = 0.05 + 0.35 * sev
    lung = cv.mask("lung_left", "lung_right") if side == "bilateral" else cv.mask(f"lung_{side}")
    parenchyma = lung & (cv.hu < -700)  # not vessels / airway walls
    box = _bbox(_need(parenchyma, "emphysema"))
    f = smooth_field(tuple(b.stop - b.start for b in box), cv.grid.spacing, 7.0, rng)
    _, _, z = cv.grid.coords(box)
    f = f + 0.6 * (z / (130 * an.scale))  # upper-lobe predominant (centrilobular)
    sub = parenchyma[box]
    thr = np.quantile(f[sub], 1.0 - target)
    mask = np.zeros(cv.grid.shape, bool)
    mask[box] = sub & (f > thr)
    _need(mask, "emphysema")
    vals = rng.uniform(-995, -965, int(mask.sum())).astype(np.float32)
    return FindingResult(mask, vals, None, p, {"target_laa950_percent": round(100 * target, 1)})


def atelectasis(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    s = an.scale
    side = _side(p, rng)
    sev = _sev(p, rng)
    length = _size(p, rng, 35.0, 70.0)
    L = an.lung[side]
    cx, cy = L["center"]
    ax, ay = L["radii"]
    c = np.array([cx + (0.15 if side == "right" else -0.15) * ax, cy - 0.55 * ay, L["dome"] + 8 * s])
    thick = 4 + 8 * sev
    rot = _rotation([0.0, 1.0, 0.25])
    shp = ellipsoid(cv.grid, c, [length / 2, length / 2, thick / 2 + 0.5 * cv.grid.spacing[2]], _rotation_xy(rot))
    mask = shp.full(cv.grid.shape) & (cv.labels == LABELS[f"lung_{side}"])
    _need(mask, "the atelectasis")
    return FindingResult(mask, 25.0, None, p, {"side": side, "thickness_mm": round(thick, 1),
                                               "volume_ml": round(float(mask.sum()) * cv.grid.voxel_volume_mm3 / 1e3,
                                                                  1)})


def _rotation_xy(rot: np.ndarray) -> np.ndarray:
    """A plate in the x/y-ish plane tilted like ``rot`` (third local axis ~ z)."""
    u = np.array([1.0, 0.0, 0.0])
    w = rot[:, 0] if abs(rot[2, 0]) > 0.9 else np.array([0.0, -0.25, 1.0])
    w = w / np.linalg.norm(w)
    v = np.cross(w, u)
    v /= np.linalg.norm(v)
    u = np.cross(v, w)
    return np.stack([u, v, w], axis=1)


def lung_nodule(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    grid = cv.grid
    n = p.setdefault("count", 1)
    d = _size(p, rng, 5.0, 14.0)
    side = _side(p, rng)
    lobe = _lobe(p, rng)
    region = lung_lobe_mask(cv, an, side, lobe)
    _need(region, f"a nodule in the {side} {lobe} lobe")
    lung_all = cv.mask("lung_left", "lung_right")
    mask = np.zeros(grid.shape, bool)
    nodules = []
    margin = d / 2 + 2.0
    for i in range(n):
        for attempt in range(200):
            v = _random_voxel(region & ~mask, rng)
            if v is None:
                break
            c = np.asarray(grid.to_mm(v))
            probe = ellipsoid(grid, c, [margin] * 3)
            if probe.mask.size and lung_all[probe.box][probe.mask].all() and not mask[probe.box][probe.mask].any():
                break
        else:
            raise PhantomSpecError(f"cannot fit a {d} mm nodule in the {side} {lobe} lobe at this field of view; "
                                   f"use a smaller size_mm or a larger shape")
        shp, c = ball_exact(grid, c, d, rng)
        m = shp.full(grid.shape)
        mask |= m
        vol = float(m.sum()) * grid.voxel_volume_mm3
        nodules.append({"diameter_mm": d, "measured_diameter_mm": round((6 * vol / np.pi) ** (1 / 3), 2),
                        "volume_mm3": round(vol, 1), "side": side, "lobe": lobe,
                        "center_ras_mm": [round(float(x), 1) for x in c], "center_voxel": list(grid.to_voxel(c))})
    vals = rng.normal(35, 6, int(mask.sum())).astype(np.float32)
    return FindingResult(mask, vals, None, p, {"nodules": nodules})


def lung_opacity(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    side = _side(p, rng)
    lobe = _lobe(p, rng)
    sev = _sev(p, rng)
    size = _size(p, rng, 30.0, 60.0)
    region = _need(lung_lobe_mask(cv, an, side, lobe), f"an opacity in the {side} {lobe} lobe")
    mask = _blob(cv, region, _random_voxel(region, rng), size, rng)
    _need(mask, "the opacity")
    level = -520 + 180 * sev  # ground glass: -520..-340 HU; vessels inside stay visible
    old = cv.hu[mask]
    vals = np.maximum(old, level + rng.normal(0, 25, old.size).astype(np.float32))
    return FindingResult(mask, vals, None, p, {"side": side, "lobe": lobe, "mean_hu": round(level, 0),
                                               "volume_ml": round(float(mask.sum()) * cv.grid.voxel_volume_mm3 / 1e3,
                                                                  1)})


def pulmonary_fibrotic_sequela(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    grid = cv.grid
    side = _side(p, rng)
    lobe = _lobe(p, rng, default="upper")
    sev = _sev(p, rng)
    n = p.setdefault("count", int(2 + round(4 * sev)))
    region = _need(lung_lobe_mask(cv, an, side, lobe), f"fibrotic bands in the {side} {lobe} lobe")
    r = max(1.2, 0.45 * min(grid.spacing))
    segs = []
    for _ in range(n):
        a = np.asarray(grid.to_mm(_random_voxel(region, rng)))
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        length = rng.uniform(25, 50)
        mid = a + d * length / 2
        kink = rng.normal(0, 4, 3)
        segs += [(a, mid + kink, r, r), (mid + kink, a + d * length, r, r * 0.8)]
    shp = segments(grid, segs)
    mask = shp.full(grid.shape) & region
    _need(mask, "the fibrotic bands")
    return FindingResult(mask, -60.0, None, p, {"side": side, "lobe": lobe, "count": n})


def pleural_effusion(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    grid = cv.grid
    side = _side(p, rng)
    sev = _sev(p, rng)
    depth = p.setdefault("size_mm", round(15 + 45 * sev, 1))
    sides = SIDES if side == "bilateral" else (side,)
    mask = np.zeros(grid.shape, bool)
    meas: dict[str, Any] = {"max_depth_mm": depth}
    for sd in sides:
        lung = cv.labels == LABELS[f"lung_{sd}"]
        box = _bbox(lung)
        if box is None:
            continue
        m = lung[box]
        first = np.argmax(m, axis=1)  # most posterior lung voxel of each (x, z) column
        has = m.any(axis=1)
        j = np.arange(m.shape[1])[None, :, None]
        dist = (j - first[:, None, :]) * grid.spacing[1]
        z = grid.coords(box)[2]
        zmin = float(z[0, 0, np.flatnonzero(m.any(axis=(0, 1)))[0]])
        height = 60 * an.scale + 90 * an.scale * sev
        t = depth * np.clip(1.0 - (z - zmin) / height, 0.0, 1.0)  # meniscus: deepest at the base
        sub = m & has[:, None, :] & (dist < t)
        mask[box] |= sub
        meas[f"volume_ml_{sd}"] = round(float(sub.sum()) * grid.voxel_volume_mm3 / 1e3, 1)
    _need(mask, "the pleural effusion")
    vals = rng.uniform(5, 18, int(mask.sum())).astype(np.float32)
    return FindingResult(mask, vals, "pleural_effusion", p, meas)


def mosaic_attenuation_pattern(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, _ = ctx
    grid = cv.grid
    sev = _sev(p, rng)
    lung = cv.mask("lung_left", "lung_right")
    box = _bbox(_need(lung, "mosaic attenuation"))
    shape = tuple(b.stop - b.start for b in box)
    # patches of a few secondary lobules: a smooth random field split at its quantiles into darker (air
    # trapping / hypoperfusion, -925 HU) and denser (-740 HU) patches
    field = smooth_field(shape, grid.spacing, 11.0, rng)
    frac = 0.2 + 0.4 * sev
    inside = field[lung[box]]
    lo_thr, hi_thr = np.quantile(inside, [frac * 0.6, 1.0 - frac * 0.4])
    dark = field < lo_thr
    dense = field > hi_thr
    parenchyma = lung[box] & (cv.hu[box] < -700) & (cv.hu[box] > -990)
    mask = np.zeros(grid.shape, bool)
    mask[box] = parenchyma & (dark | dense)
    _need(mask, "mosaic attenuation")
    local = np.where(dark, -925.0, -740.0).astype(np.float32)
    full = np.zeros(grid.shape, np.float32)
    full[box] = local
    return FindingResult(mask, full[mask] + rng.normal(0, 10, int(mask.sum())).astype(np.float32), None, p,
                         {"affected_fraction": round(float(mask.sum()) / float(lung.sum()), 3)})


def peribronchial_thickening(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    side = _side(p, rng, bilateral=True)
    sev = _sev(p, rng)
    extra = p.setdefault("size_mm", round(1.5 + 2.5 * sev, 1))
    extra = max(extra, 0.6 * max(cv.grid.spacing[:2]))
    sides = SIDES if side == "bilateral" else (side,)
    segs_outer, segs_inner = [], []
    for aw in an.airways:
        if aw["side"] in sides and aw["level"] != "main":
            wall = 1.5 * an.scale if aw["level"] != "segmental" else 1.0 * an.scale
            segs_outer.append((aw["a"], aw["b"], aw["r"] + wall + extra, aw["r"] + wall + extra))
            segs_inner.append((aw["a"], aw["b"], aw["r"] + wall, aw["r"] + wall))
    outer = segments(cv.grid, segs_outer).full(cv.grid.shape)
    inner = segments(cv.grid, segs_inner).full(cv.grid.shape)
    mask = outer & ~inner & label_in(cv.labels, [*LUNG_IDS, LABELS["cavity_fat"]]) & (cv.hu > -990)
    _need(mask, "peribronchial thickening")
    return FindingResult(mask, 30.0, "bronchi", p, {"extra_wall_mm": extra})


def consolidation(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    grid = cv.grid
    side = _side(p, rng)
    lobe = _lobe(p, rng, default="lower")
    sev = _sev(p, rng)
    size = _size(p, rng, 40.0, 80.0)
    region = _need(lung_lobe_mask(cv, an, side, lobe), f"a consolidation in the {side} {lobe} lobe")
    mask = _blob(cv, region, _random_voxel(region, rng), size, rng, cell_mm=20.0)
    _need(mask, "the consolidation")
    # air bronchograms: branching air tubes from the lobe's bronchus into the consolidated area
    segs: list = []
    aw = [a for a in an.airways if a["side"] == side and a["lobe"] == lobe and a["level"] == "lobar"]
    start = aw[0]["b"] if aw else np.asarray(grid.to_mm(_random_voxel(mask, rng)))
    c = np.asarray(grid.to_mm(np.argwhere(mask).mean(axis=0)))
    d = c - start
    d = d / (np.linalg.norm(d) or 1.0)
    _branch(segs, start, d, max(15.0, np.linalg.norm(c - start) * 0.6), max(1.8, 0.55 * min(grid.spacing)), 3, rng)
    air = segments(grid, segs).full(grid.shape) & mask
    vals = np.where(air[mask], -940.0, 38.0 - 10 * (1 - sev)).astype(np.float32)
    vals += rng.normal(0, 8, vals.size).astype(np.float32)
    return FindingResult(mask, vals, None, p, {"side": side, "lobe": lobe, "volume_ml": round(
        float(mask.sum()) * grid.voxel_volume_mm3 / 1e3, 1), "air_bronchogram_voxels": int(air.sum())})


def bronchiectasis(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    grid = cv.grid
    side = _side(p, rng)
    lobe = _lobe(p, rng, default="lower")
    d = _size(p, rng, 7.0, 12.0)
    n = p.setdefault("count", 3)
    region = _need(lung_lobe_mask(cv, an, side, lobe), f"bronchiectasis in the {side} {lobe} lobe")
    aw = [a for a in an.airways if a["side"] == side and a["lobe"] == lobe and a["level"] == "lobar"]
    start = aw[0]["b"] if aw else np.asarray(grid.to_mm(_random_voxel(region, rng)))
    target = np.asarray(grid.to_mm(np.argwhere(region).mean(axis=0)))
    base = target - start
    base /= np.linalg.norm(base) or 1.0
    lumen_r = d / 2
    wall = max(1.5, 0.5 * min(grid.spacing))
    outer_segs, inner_segs = [], []
    for _ in range(n):
        dd = base + rng.normal(0, 0.35, 3)
        dd /= np.linalg.norm(dd)
        b = start + dd * rng.uniform(35, 55) * an.scale
        outer_segs.append((start, b, lumen_r + wall, lumen_r + wall))
        inner_segs.append((start, b, lumen_r, lumen_r))
    outer = segments(grid, outer_segs).full(grid.shape) & region
    inner = segments(grid, inner_segs).full(grid.shape)
    mask = outer
    _need(mask, "bronchiectasis")
    vals = np.where(inner[mask], -1000.0, 10.0).astype(np.float32)
    return FindingResult(mask, vals, "bronchi", p, {"side": side, "lobe": lobe, "lumen_diameter_mm": d,
                                                    "count": n})


def interlobular_septal_thickening(ctx: Ctx, p: dict, rng: np.random.Generator) -> FindingResult:
    cv, an = ctx
    grid = cv.grid
    sev = _sev(p, rng)
    side = _side(p, rng, bilateral=True)
    sides = SIDES if side == "bilateral" else (side,)
    period = 14.0 - 4.0 * sev  # secondary lobule size, mm
    depth = 0.82 - 0.15 * sev  # periphery: normalised lung radius above this
    mask = np.zeros(grid.shape, bool)
    for sd in sides:
        shp, q = lung_shape(grid, an.lung[sd])
        if shp.mask.size == 0:
            continue
        x, y, z = grid.coords(shp.box)
        lines = np.zeros(shp.mask.shape, bool)
        off = rng.uniform(0, period, 3)
        for coord, sp, o in ((x, grid.spacing[0], off[0]), (y, grid.spacing[1], off[1]), (z, grid.spacing[2], off[2])):
            w = max(1.0, sp * 0.51)
            ph = np.abs(np.mod(coord + o, period) - period / 2)
            lines |= np.broadcast_to(ph < w, shp.mask.shape)
        sub = shp.mask & lines & (q > depth) & (cv.labels[shp.box] == LABELS[f"lung_{sd}"]) & (cv.hu[shp.box] < -700)
        mask[shp.box] |= sub
    _need(mask, "septal thickening")
    vals = rng.uniform(-380, -250, int(mask.sum())).astype(np.float32)
    return FindingResult(mask, vals, None, p, {"line_spacing_mm": round(period, 1)})


INJECTORS: dict[str, Callable[[Ctx, dict, np.random.Generator], FindingResult]] = {
    "medical_material": medical_material,
    "arterial_wall_calcification": arterial_wall_calcification,
    "cardiomegaly": cardiomegaly,
    "pericardial_effusion": pericardial_effusion,
    "coronary_artery_wall_calcification": coronary_artery_wall_calcification,
    "hiatal_hernia": hiatal_hernia,
    "lymphadenopathy": lymphadenopathy,
    "emphysema": emphysema,
    "atelectasis": atelectasis,
    "lung_nodule": lung_nodule,
    "lung_opacity": lung_opacity,
    "pulmonary_fibrotic_sequela": pulmonary_fibrotic_sequela,
    "pleural_effusion": pleural_effusion,
    "mosaic_attenuation_pattern": mosaic_attenuation_pattern,
    "peribronchial_thickening": peribronchial_thickening,
    "consolidation": consolidation,
    "bronchiectasis": bronchiectasis,
    "interlobular_septal_thickening": interlobular_septal_thickening,
}
