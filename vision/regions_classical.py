"""Classical (weight-free) segmentation of chest CT into the 10 RadGenome regions and measurement structures.

Everything here runs on a *work grid* (the caller block-averages the CT to ~1.6 mm in-plane); arrays are (X, Y, Z)
in RAS voxel order (+X patient right, +Y anterior, +Z superior), HU as float32, ``sp`` the voxel size in mm.
Methods are thresholds, connected components, per-slice tracking and distance transforms (scipy.ndimage), so they
work with or without IV contrast; anything not found is left empty and reported absent by the caller.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from vision import regions_ops as ops

LUNG_HU = -400.0  # air/lung vs soft tissue (midway between aerated lung ~-850 and soft tissue ~40)
AIRWAY_HU = -600.0  # airway lumen (air) vs airway wall; stricter so the wall separates trachea from lung in 2D
BONE_HU = 150.0  # trabecular bone and cortex; contrast blood pools (150-450 HU) are removed by the cortex test
CORTEX_HU = 500.0
AIRWAY_WALL_MM = 2.0  # tracheal/bronchial wall thickness added around the lumen (adult trachea wall ~1-3 mm)
METAL_HU = 2800.0  # above dense contrast boli and sharp-kernel cortex on the averaged grid


def _slice_label(mask2d: np.ndarray):
    return ndi.label(mask2d)


def find_body(hu: np.ndarray, sp) -> np.ndarray:
    """Patient body: HU > -500, opened to cut the table, largest component, holes filled per slice."""
    body = hu > -500
    body = ndi.binary_opening(body, structure=ops.ball(2.0, sp, in_plane=True))
    body = ops.largest(body)
    return ops.fill_holes_2d(body)


def find_airway(hu: np.ndarray, body: np.ndarray, sp) -> tuple[np.ndarray, dict]:
    """Trachea and main bronchi by tracking the midline air tube down from the top slice (2D components).

    Returns (airway mask, info with ``carina_z`` / ``trachea_top_z`` slice indices or None).
    """
    air = (hu < AIRWAY_HU) & body
    _X, _Y, Z = hu.shape
    px = sp[0] * sp[1]
    airway = np.zeros_like(air)
    info: dict = {"carina_z": None, "trachea_top_z": None, "trachea_bottom_z": None}
    start, cur, prev_area = None, None, None
    zmin_search = max(0, Z - 1 - round(80.0 / sp[2]))  # the trachea must start within 8 cm of the top slice
    for z in range(Z - 1, zmin_search - 1, -1):
        if not body[:, :, z].any():
            continue
        bx = np.flatnonzero(body[:, :, z].any(axis=1))
        cx = 0.5 * (bx[0] + bx[-1])
        lab, _ = _slice_label(air[:, :, z])
        best = None
        for i, sl in enumerate(ndi.find_objects(lab), start=1):
            comp = lab[sl] == i
            area = comp.sum() * px
            if not 40.0 <= area <= 700.0:
                continue
            fill = comp.sum() / comp.size
            ccx = (sl[0].start + sl[0].stop - 1) / 2
            if abs(ccx - cx) * sp[0] > 25.0 or fill < 0.45:
                continue
            w = (sl[0].stop - sl[0].start) * sp[0], (sl[1].stop - sl[1].start) * sp[1]
            if max(w) > 2.5 * min(w):
                continue
            if best is None or abs(ccx - cx) < best[0]:
                best = (abs(ccx - cx), lab == i, area)
        if best is not None:
            start, cur, prev_area = z, best[1], best[2]
            break
    if start is None:
        return airway, info
    airway[:, :, start] = cur
    branches = [(cur, prev_area)]
    carina = None
    st = ndi.generate_binary_structure(2, 2)
    bottom = start
    for z in range(start - 1, -1, -1):
        lab, _n = _slice_label(air[:, :, z])
        new = []
        for bmask, barea in branches:
            hit = np.unique(lab[ndi.binary_dilation(bmask, st) & (lab > 0)])
            for i in hit:
                comp = lab == i
                area = comp.sum() * px
                if area > max(3.0 * barea, 250.0) or area > 700.0:
                    continue  # this branch opened into lung parenchyma: stop it
                if any((comp & c).any() for c, _ in new):
                    continue
                new.append((comp, area))
        if not new:
            break
        if len(new) >= 2 and carina is None:
            carina = z
        if carina is not None and (carina - z) * sp[2] > 50.0:
            break
        for comp, _ in new:
            airway[:, :, z] |= comp
        branches = new
        bottom = z
    if (start - bottom) * sp[2] < 20.0:  # too short to be a trachea (bowel gas, artefact)
        return np.zeros_like(air), info
    # no division seen (bronchi opened straight into lung): the tracked tube's end is the carina level
    info.update(carina_z=carina if carina is not None else bottom, trachea_top_z=start, trachea_bottom_z=bottom)
    return airway, info


GAS_HU = -960.0  # pure gas (stomach, bowel, bullae) vs aerated lung (~-850; -900 at most in healthy lung)
GAS_MAX_LUNG_CONTACT = 0.4  # share of a gas pocket's surface touching aerated lung: bullae ~0.8-1, stomach ~0.25


def subphrenic_gas(hu: np.ndarray, lungs: np.ndarray, sp) -> np.ndarray:
    """Stomach/bowel gas that touches the lung base (no visible diaphragm between them) as a bool mask.

    A gas pocket is a component of pure gas (HU < ``GAS_HU``, opened by 2 mm) inside the air mask. It is
    sub-phrenic when it lies in the lower 40% of the air mask's height and less than ``GAS_MAX_LUNG_CONTACT`` of its
    surface touches aerated lung (the rest is stomach wall, fluid or the diaphragm). Emphysematous bullae and
    low-attenuation lung are mostly surrounded by lung and are kept. The pocket is grown by 2 voxels into gas-dense
    voxels (HU < -900) to take back the rim the opening removed.
    """
    bb = ops.bbox(lungs, margin=1)
    out = np.zeros_like(lungs)
    sub, h = lungs[bb], hu[bb]
    gas = sub & (h < GAS_HU)
    gas = ndi.binary_opening(gas, structure=ops.ball(2.0, sp))
    lab, sizes = ops.components(gas)
    big = np.flatnonzero(sizes * float(np.prod(sp)) / 1000.0 >= 2.0)
    if big.size == 0:
        return out
    zl = np.flatnonzero(sub.any(axis=(0, 1)))
    z_cut = zl[0] + 0.4 * (zl[-1] - zl[0])
    lung_only = sub & ~gas
    objs = ndi.find_objects(lab)
    hit = np.zeros(sizes.size, bool)
    for i in big:
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in objs[i - 1])
        c = lab[sl] == i
        if ndi.center_of_mass(c)[2] + sl[2].start > z_cut:
            continue
        shell = ndi.binary_dilation(c) & ~c
        hit[i] = (shell & lung_only[sl]).sum() < GAS_MAX_LUNG_CONTACT * shell.sum()
    if not hit.any():
        return out
    pocket = hit[lab]
    pocket = ndi.binary_dilation(pocket, iterations=2, mask=sub & (h < -900.0))
    out[bb] = pocket
    return out


def find_lungs(hu: np.ndarray, body: np.ndarray, airway: np.ndarray, sp, right_is_plus_x: bool):
    """Left/right lungs: large air components inside the body minus the airway, split into two sides.

    Returns (lung_left, lung_right, lungs_raw) where the side masks are hole-filled (vessels and nodules inside)
    and ``lungs_raw`` holds only the aerated voxels.
    """
    vml = float(np.prod(sp)) / 1000.0
    air = (hu < LUNG_HU) & body & ~ops.dilate(airway, 2.0, sp, in_plane=True)
    lab, sizes = ops.components(air)
    keep = np.zeros(sizes.size, bool)
    if sizes.max(initial=0) > 0:
        means = ndi.mean(hu, lab, index=np.arange(sizes.size))
        objs = ndi.find_objects(lab)
        by = np.flatnonzero(body.any(axis=(0, 2)))
        y_post = by[0] + 0.35 * (by[-1] - by[0])  # posterior 35% of the body
        # lungs reach the posterior costophrenic recesses (supine) and the top of the air in the scan; stomach
        # and bowel gas (anterior when supine, lower) do not
        cands = [i for i in np.flatnonzero(sizes) if sizes[i] * vml >= 5.0 and -960.0 <= means[i] <= -500.0
                 and objs[i - 1][1].start <= y_post]
        if cands:
            top = max(objs[i - 1][2].stop for i in cands)
            big = max(sizes[i] for i in cands)
            for i in cands:
                near_top = (top - objs[i - 1][2].stop) * sp[2] <= 40.0
                keep[i] = (near_top and sizes[i] >= 0.02 * big) or sizes[i] >= 0.3 * big
    lungs = keep[lab]
    empty = np.zeros_like(lungs)
    if not lungs.any():
        return empty, empty, empty
    lungs &= ~subphrenic_gas(hu, lungs, sp)
    # split into two sides: components first, erosion if they touch, nearest-seed propagation back
    full_shape, bbl = lungs.shape, ops.bbox(lungs, margin=1)
    lungs = lungs[bbl]  # work inside the lungs' bounding box (erosions and the seed transform are costly)
    lab, sizes = ops.components(lungs)
    order = np.argsort(sizes)[::-1]
    seeds = None
    if sizes.size > 2 and sizes[order[1]] >= 0.15 * sizes[order[0]]:
        seeds = (lab == order[0], lab == order[1])
    else:
        er = lungs
        for _ in range(8):
            er = ndi.binary_erosion(er, ndi.generate_binary_structure(3, 1))
            l2, s2 = ops.components(er)
            o2 = np.argsort(s2)[::-1]
            if s2.size > 2 and s2[o2[1]] >= 0.15 * s2[o2[0]]:
                seeds = (l2 == o2[0], l2 == o2[1])
                break
    xs = np.arange(bbl[0].start, bbl[0].stop)[:, None, None]
    if seeds is not None:
        seedlab = np.zeros(lungs.shape, np.int8)
        seedlab[seeds[0]], seedlab[seeds[1]] = 1, 2
        if (lungs & (seedlab == 0)).any():  # eroded seeds or small extra pieces: nearest seed decides
            _, ind = ndi.distance_transform_edt(seedlab == 0, sampling=sp, return_indices=True)
            side = seedlab[tuple(ind)]
        else:  # the two sides were already separate components
            side = seedlab
        a, b = lungs & (side == 1), lungs & (side == 2)
        ca, cb = ndi.center_of_mass(a)[0], ndi.center_of_mass(b)[0]
        right, left = (a, b) if (ca > cb) == right_is_plus_x else (b, a)
    else:  # one lung only (or unsplittable): decide its side by the body midline
        bx = np.flatnonzero(body.any(axis=(1, 2)))
        mid = 0.5 * (bx[0] + bx[-1])
        is_right = (xs > mid) if right_is_plus_x else (xs < mid)
        right, left = lungs & is_right, lungs & ~is_right
        vr, vl = right.sum(), left.sum()
        if min(vr, vl) < 0.1 * max(vr, vl):  # a single lung: do not split it at the midline
            z0 = np.zeros_like(lungs)
            right, left = (lungs, z0) if vr >= vl else (z0, lungs)
    left_f, right_f, lungs_f = (np.zeros(full_shape, bool) for _ in range(3))
    left_f[bbl], right_f[bbl], lungs_f[bbl] = left, right, lungs
    left, right, lungs = left_f, right_f, lungs_f
    filled = []
    for m, other in ((left, right), (right, left)):
        if not m.any():
            filled.append(m)
            continue
        bb = ops.bbox(m, margin=4)
        sub = ops.close(m[bb], 4.0, sp, in_plane=True)
        sub = ops.fill_holes_2d(sub) & body[bb] & ~airway[bb] & ~other[bb]
        # vessels and nodules are small holes; under a diaphragm dome the lung rings the liver, spleen or stomach
        # in axial slices: drop added pieces larger than ~25 mL (a 30 mm nodule is 14 mL)
        add_lab, add_sizes = ops.components(sub & ~m[bb])
        big = add_sizes * float(np.prod(sp)) / 1000.0 > 25.0
        # dome contents (spleen, stomach, fat under the dome ringed by lung) sit on abdominal tissue: most of a
        # piece's lower face rests on non-lung voxels; a vessel or nodule rests on lung
        add = add_lab > 0
        bottom = add.copy()
        bottom[:, :, 1:] &= ~add[:, :, :-1]
        on_tissue = bottom.copy()
        on_tissue[:, :, 1:] &= ~m[bb][:, :, :-1]
        n_bot = np.bincount(add_lab[bottom], minlength=add_sizes.size)
        n_tis = np.bincount(add_lab[on_tissue], minlength=add_sizes.size)
        big |= n_tis > 0.5 * np.maximum(n_bot, 1)
        big[0] = False
        sub &= ~big[add_lab]
        out = np.zeros_like(m)
        out[bb] = sub
        filled.append(out | m)
    return filled[0], filled[1], lungs


def approximate_lobes(lung: np.ndarray, side: str) -> dict[str, np.ndarray]:
    """Geometric lobe approximation (no fissure detection): oblique fissure as a plane in the lung's bounding box.

    In normalised box coordinates (z' 0 = base, 1 = apex; y' 0 = posterior, 1 = anterior) the lower lobe is
    z' < 0.75 - 0.65 y'; on the right the middle lobe is the anterior part below the horizontal fissure z' < 0.45.
    """
    out: dict[str, np.ndarray] = {}
    bb = ops.bbox(lung)
    if bb is None:
        return out
    Y, Z = lung.shape[1], lung.shape[2]
    y = (np.arange(Y)[None, :, None] - bb[1].start) / max(1, bb[1].stop - 1 - bb[1].start)
    z = (np.arange(Z)[None, None, :] - bb[2].start) / max(1, bb[2].stop - 1 - bb[2].start)
    lower = z < 0.75 - 0.65 * y
    if side == "left":
        out["lung_upper_lobe_left"] = lung & ~lower
        out["lung_lower_lobe_left"] = lung & lower
    else:
        middle = ~lower & (z < 0.45)
        out["lung_upper_lobe_right"] = lung & ~lower & ~middle
        out["lung_middle_lobe_right"] = lung & middle
        out["lung_lower_lobe_right"] = lung & lower
    return out


def find_bone(hu: np.ndarray, body: np.ndarray, sp) -> tuple[np.ndarray, np.ndarray]:
    """Bone (components of HU > 180 that hold cortex > 500 HU) and metal (HU > 2500) masks."""
    vml = float(np.prod(sp)) / 1000.0
    metal = (hu > METAL_HU) & body
    cand = (hu > BONE_HU) & body & ~metal
    # contrast blood pools (heart, aorta) touch the spine and would join bone components: remove thick regions
    # below cortex density that no cortical ring encloses (vertebral bodies are enclosed, chambers are not)
    cortex_f = ops.fill_holes_2d(ndi.binary_closing(hu > CORTEX_HU, iterations=1))
    pool = ndi.binary_opening(cand & ~cortex_f & (hu < CORTEX_HU), structure=ops.ball(3.0, sp))
    cand &= ~pool
    lab, sizes = ops.components(cand)
    if sizes.max(initial=0) == 0:
        return np.zeros_like(cand), metal
    cortex = ndi.sum(hu > CORTEX_HU, lab, index=np.arange(sizes.size))
    ok = (sizes * vml >= 0.2) & (cortex >= np.maximum(2, 0.05 * sizes))
    ok[0] = False
    bone = ok[lab]
    # osteopenic trabecular bone can sit below the threshold inside its cortical ring: fill per slice
    bone |= ops.fill_holes_2d(bone) & body & (hu > -100.0)
    return bone, metal


def spine_track(bone: np.ndarray, body: np.ndarray, sp, right_is_plus_x: bool) -> dict:
    """Per-slice spine centre (x, y) and vertebral body anterior edge (y), interpolated where missing."""
    X, Y, Z = bone.shape
    vx = np.full(Z, np.nan)
    vy = np.full(Z, np.nan)
    xs, ys = np.arange(X), np.arange(Y)
    for z in range(Z):
        b = body[:, :, z]
        if not b.any():
            continue
        bxi = np.flatnonzero(b.any(axis=1))
        byi = np.flatnonzero(b.any(axis=0))
        cx, cy = 0.5 * (bxi[0] + bxi[-1]), 0.5 * (byi[0] + byi[-1])
        win = bone[:, :, z] & (np.abs(xs[:, None] - cx) * sp[0] < 25.0) & (ys[None, :] < cy)
        if win.sum() * sp[0] * sp[1] < 50.0:
            continue
        ii, jj = np.nonzero(win)
        vx[z], vy[z] = ii.mean(), jj.mean()
    good = np.isfinite(vx)
    if good.sum() == 0:
        return {"found": False}
    zz = np.arange(Z)
    vx = np.interp(zz, zz[good], vx[good])
    vy = np.interp(zz, zz[good], vy[good])
    vx, vy = ndi.median_filter(vx, 5, mode="nearest"), ndi.median_filter(vy, 5, mode="nearest")
    X_, Y_ = xs[:, None, None], ys[None, :, None]
    near = (np.abs(X_ - vx[None, None, :]) * sp[0] < 40.0) & ((Y_ - vy[None, None, :]) * sp[1] > -50.0) & \
        ((Y_ - vy[None, None, :]) * sp[1] < 45.0)
    vert = bone & near
    # anterior edge of the vertebral body: the most anterior bone within 15 mm of the midline
    core = bone & (np.abs(X_ - vx[None, None, :]) * sp[0] < 15.0) & ((Y_ - vy[None, None, :]) * sp[1] < 45.0)
    ant = np.where(core.any(axis=(0, 1)), (core * Y_).max(axis=(0, 1)), np.nan)
    okz = np.isfinite(ant)
    ant = np.interp(zz, zz[okz], ant[okz]) if okz.any() else vy + 25.0 / sp[1]
    return {"found": True, "vx": vx, "vy": vy, "ant_y": ant, "vertebrae": vert}


def find_descending_aorta(hu: np.ndarray, body: np.ndarray, bone: np.ndarray, lungs: np.ndarray, spine: dict, sp,
                          right_is_plus_x: bool, contrast: bool) -> tuple[np.ndarray, np.ndarray]:
    """Descending/abdominal aorta: per slice, the largest inscribed circle of non-fat tissue left-anterior of the spine.

    Returns (mask, per-slice radius in mm: 0 where not found or where the circle is not bounded by lung/fat, so
    its size cannot be trusted).
    """
    X, Y, Z = hu.shape
    out = np.zeros(hu.shape, bool)
    radius = np.zeros(Z)
    if not spine.get("found"):
        return out, radius
    tissue = (hu > (80.0 if contrast else -20.0)) & (hu < 700.0) & body & ~ops.dilate(bone, 2.0, sp, True) & ~lungs
    loose = (hu > (80.0 if contrast else -20.0)) & (hu < 700.0) & body & ~bone
    xs, ys = np.arange(X)[:, None], np.arange(Y)[None, :]
    left_sign = -1.0 if right_is_plus_x else 1.0
    prev = None
    for z in range(Z - 1, -1, -1):
        vx, ant = spine["vx"][z], spine["ant_y"][z]
        dxl = (xs - vx) * left_sign * sp[0]  # mm towards the patient's left
        dy = (ys - ant) * sp[1]
        win = (dxl > -15.0) & (dxl < 50.0) & (dy > -30.0) & (dy < 45.0)
        t = tissue[:, :, z] & win
        if not t.any():
            prev = None
            continue
        d = ndi.distance_transform_edt(t, sampling=sp[:2])
        # candidate centres: local maxima of the inscribed radius in the aortic size range (a touching heart or
        # crus is a bigger blob whose own maximum is out of range); the aorta hugs the spine's left-anterior edge
        peak = (d == ndi.maximum_filter(d, size=5)) & (d >= 4.0) & (d <= 20.0)
        if prev is not None:  # continuity: stay within 12 mm of the previous centre
            peak &= np.hypot((xs - prev[0]) * sp[0], (ys - prev[1]) * sp[1]) < 12.0
        if not peak.any():
            prev = None
            continue
        ii, jj = np.nonzero(peak)
        cost = np.hypot((ii - vx) * left_sign * sp[0] - 18.0, (jj - ant) * sp[1] - 5.0) - 0.5 * d[ii, jj]
        k = int(cost.argmin())
        i, j = int(ii[k]), int(jj[k])
        r = float(d[i, j])
        # the search mask kept 2 mm off lung and bone: the wall lies up to 2 mm further out
        disk = np.hypot((xs - i) * sp[0], (ys - j) * sp[1]) <= r + 2.0
        out[:, :, z] = disk & loose[:, :, z]
        # trust the size only where the circle is bounded (lung/fat around it): pressed against same-density
        # tissue (crus, oesophagus, heart without contrast) the inscribed circle grows into the neighbour
        dist = np.hypot((xs - i) * sp[0], (ys - j) * sp[1])
        ring = (dist > r + 3.0) & (dist <= r + 3.0 + 1.5 * max(sp[0], sp[1]))
        radius[z] = r + 2.0 if loose[:, :, z][ring].mean() < 0.4 else 0.0
        prev = (i, j)
    # keep the longest tube, bridging gaps of up to 2 slices (a rib or a partial-volume slice)
    lab, n = ndi.label(ndi.binary_dilation(out, structure=np.ones((1, 1, 5), bool)))
    if n:
        objs = ndi.find_objects(lab)
        best = 1 + int(np.argmax([o[2].stop - o[2].start for o in objs]))
        out &= lab == best
    radius[~out.any(axis=(0, 1))] = 0.0
    return out, radius


HEART_OPEN_MM = 10.0  # opening radius that cuts the great vessels (aortic root r ~15 mm) off the heart
HEART_OPEN_2D_MM = 14.0  # in-plane opening: cuts the ascending aorta and pulmonary trunk (r 12-15 mm) above the heart


def find_heart(cand: np.ndarray, rim: np.ndarray, sp) -> np.ndarray:
    """Heart: the largest blob of ``cand`` (mediastinal soft tissue kept 2 mm off lung and bone) opened by
    ``HEART_OPEN_MM``, holes filled per slice, then grown back by up to 2 mm into ``rim`` (soft tissue up to the
    lung boundary, where the 2 mm margin cut the myocardium)."""
    empty = np.zeros_like(cand)
    if not cand.any():
        return empty
    bb = ops.bbox(cand, margin=int(np.ceil(3.0 / min(sp))) + 1)
    c = cand[bb]
    core = ops.largest(ops.erode(c, HEART_OPEN_MM, sp))
    if core.sum() * np.prod(sp) / 1000.0 <= 10.0:
        return empty
    h = ops.largest(ops.fill_holes_2d(ops.dilate(core, HEART_OPEN_MM + 1.0, sp) & c))
    if HEART_OPEN_2D_MM:  # great vessels above the heart are tubes: an in-plane opening wider than them cuts them
        h = ops.largest(ops.open_(h, HEART_OPEN_2D_MM, sp, in_plane=True))
    h |= ops.dilate(h, 2.0, sp, in_plane=True) & rim[bb]
    out = empty
    out[bb] = h
    return out


def diaphragm_floor(lungs: np.ndarray, sp, carina_z: int | None) -> np.ndarray | None:
    """Per (x, y) column, the slice index of the diaphragm surface under the heart, from the lung bases.

    Columns with lung take their lowest lung slice when it lies in the lower thorax (below the midpoint between the
    lung bases and the carina: anterior lung tips over the heart are ignored); other columns (under the heart) take
    the nearest such column's value, median-smoothed over ~15 mm. Returns (X, Y) int or None without lungs.
    """
    zl = np.flatnonzero(lungs.any(axis=(0, 1)))
    if zl.size == 0:
        return None
    top = carina_z if carina_z is not None else zl[-1]
    zmid = 0.5 * (zl[0] + top)
    has = lungs.any(axis=2)
    low = np.where(has, lungs.argmax(axis=2), 10 ** 6)
    valid = has & (low < zmid)
    if not valid.any():
        return None
    _, (ix, iy) = ndi.distance_transform_edt(~valid, sampling=sp[:2], return_indices=True)
    floor = low[ix, iy]
    k = max(3, round(15.0 / sp[0]) | 1)
    return ndi.median_filter(floor, size=k, mode="nearest")


def segment(hu: np.ndarray, sp: tuple[float, float, float], right_is_plus_x: bool = True):
    """Run the whole classical pipeline on the work grid.

    Returns (regions, structures, info): dicts of bool (X, Y, Z) masks (possibly empty) and a dict of facts
    (contrast, carina slice, spine track, aorta radius per slice).
    """
    X, Y, Z = hu.shape
    xs, ys, zs = np.arange(X)[:, None, None], np.arange(Y)[None, :, None], np.arange(Z)[None, None, :]
    empty = np.zeros(hu.shape, bool)
    info: dict = {}
    body = find_body(hu, sp)
    airway, ainfo = find_airway(hu, body, sp)
    info.update(ainfo)
    lung_left, lung_right, lungs_raw = find_lungs(hu, body, airway, sp, right_is_plus_x)
    lungs = lung_left | lung_right
    if airway.any():
        zl0 = np.flatnonzero(lungs.any(axis=(0, 1)))
        # a trachea starts at or above the lung apices and divides above the lung bases; anything else is gas
        # in the stomach/bowel or the oesophagus
        ok = zl0.size and (zl0[-1] - info["trachea_top_z"]) * sp[2] <= 30.0 and info["trachea_bottom_z"] > zl0[0]
        if not ok:
            airway = np.zeros_like(airway)
            info.update(carina_z=None, trachea_top_z=None, trachea_bottom_z=None)
            lung_left, lung_right, lungs_raw = find_lungs(hu, body, airway, sp, right_is_plus_x)
            lungs = lung_left | lung_right
    bone, metal = find_bone(hu, body, sp)
    spine = spine_track(bone, body, sp, right_is_plus_x)
    info["spine"] = spine
    structures: dict[str, np.ndarray] = {"body": body, "lung_left": lung_left, "lung_right": lung_right,
                                         "lungs_aerated": lungs_raw, "airway": airway, "bone": bone, "metal": metal,
                                         "vertebrae": spine.get("vertebrae", empty)}
    structures.update(approximate_lobes(lung_left, "left"))
    structures.update(approximate_lobes(lung_right, "right"))
    # trachea = airway above the carina (bronchi below it)
    # airway masks are lumen + wall (the usual convention); diameters are measured on the lumen
    lumen = airway
    if airway.any():
        airway = lumen | (ops.dilate(lumen, AIRWAY_WALL_MM, sp, in_plane=True) & (hu > -500.0) & body)
    if info["carina_z"] is not None:
        structures["trachea"] = airway & (zs > info["carina_z"])
        structures["trachea_lumen"] = lumen & (zs > info["carina_z"])
        structures["main_bronchi"] = airway & (zs <= info["carina_z"])
    else:
        structures["trachea"], structures["trachea_lumen"], structures["main_bronchi"] = airway, lumen, empty
    structures["airway"] = airway

    # thoracic cavity: per-slice convex hull of the lungs (between-lung space = mediastinum and heart)
    cavity = empty.copy()
    zl = np.flatnonzero(lungs.any(axis=(0, 1)))
    if zl.size:
        bb = ops.bbox(lungs, margin=2)
        cavity[bb] = ops.convex_hull_2d(lungs[bb]) & body[bb]
    structures["thoracic_cavity"] = cavity
    lungs_d = ops.dilate(lungs, 2.0, sp, in_plane=True) if lungs.any() else empty
    bone_d = ops.dilate(bone, 3.0, sp, in_plane=True) if bone.any() else empty
    ant_y = spine["ant_y"][None, None, :] if spine.get("found") else np.full((1, 1, Z), -1e9)
    vy = spine["vy"][None, None, :] if spine.get("found") else np.full((1, 1, Z), -1e9)

    # aorta needs the contrast state; estimate it from the brightest mediastinal soft tissue first
    med_soft = cavity & ~lungs_d & ~bone_d & (hu > -20) & (hu < 700)
    contrast = bool(med_soft.sum() > 100 and np.percentile(hu[med_soft], 75) > 130.0)
    if not med_soft.any() and body.any():  # abdominal scan: look at the whole body soft tissue
        soft = body & (hu > -20) & (hu < 700) & ~bone_d
        contrast = bool(soft.sum() > 100 and np.percentile(hu[soft], 90) > 200.0)
    info["contrast"] = contrast
    aorta, aorta_r = find_descending_aorta(hu, body, bone, lungs_d, spine, sp, right_is_plus_x, contrast)
    structures["aorta"] = aorta
    info["aorta_radius_mm"] = aorta_r

    # heart: the largest soft-tissue blob in the cavity below the carina, anterior to the spine, opened by a ball
    # wider than the great vessels
    heart = empty.copy()
    if cavity.any():
        cand = cavity & ~lungs_d & ~bone_d & ~ops.dilate(aorta, 2.0, sp, True) & ~airway & (hu > -30) & (hu < 1000)
        cand &= ys > ant_y + 3.0 / sp[1]
        if info["carina_z"] is not None:
            cand &= zs < info["carina_z"] - round(5.0 / sp[2])
        floor = diaphragm_floor(lungs, sp, info["carina_z"])
        if floor is not None:  # the heart sits on the diaphragm: nothing below the lung-base surface (liver)
            cand &= zs >= floor[:, :, None]
        rim = cavity & ~lungs & ~bone & ~aorta & ~airway & (hu > -30) & (hu < 1000)
        heart = find_heart(cand, rim, sp)
    structures["heart"] = heart

    # oesophagus: approximate tube between the airway/heart and the spine, left of midline (no lumen tracking)
    eso = empty.copy()
    if spine.get("found") and zl.size:
        ex = spine["vx"][None, None, :] + (-1.0 if right_is_plus_x else 1.0) * 6.0 / sp[0]
        ey = spine["ant_y"][None, None, :] + 10.0 / sp[1]
        tube = np.hypot((xs - ex) * sp[0], (ys - ey) * sp[1]) <= 9.0
        eso = tube & (zs >= zl[0]) & body & ~bone & ~aorta & ~lungs & ~airway & ~heart & (hu > -200)
    structures["esophagus"] = eso

    # mediastinum: cavity minus lungs, heart and bone, anterior to the spinal canal
    mediastinum = cavity & ~lungs_d & ~bone_d & ~heart & (ys > vy) if cavity.any() else empty
    if info["carina_z"] is not None or mediastinum.any():
        mediastinum |= (aorta | structures["trachea"] | eso) & (zs >= (zl[0] if zl.size else 0))
        mediastinum &= ~heart

    # pleura: a 5 mm shell around the lungs inside the body (effusions are measured separately)
    pleura = (ops.dilate(lungs, 5.0, sp) & ~lungs & body & ~bone) if lungs.any() else empty

    # thyroid: bright (iodinated) tissue beside the trachea above the lung apices; absent when out of the field
    thyroid = empty.copy()
    tr = structures["trachea"]
    if tr.any() and zl.size:
        top_l = zl[-1]
        zlow = top_l - round(10.0 / sp[2])
        near_tr = ops.dilate(tr, 30.0, sp, in_plane=True, coarse=True) & ~ops.dilate(tr, 2.0, sp, in_plane=True)
        lo, hi = (80.0, 300.0) if not contrast else (120.0, 400.0)
        thyroid = near_tr & (zs > zlow) & (hu > lo) & (hu < hi) & ~bone_d & ~lungs_d & body
        thyroid = ndi.binary_opening(thyroid, structure=ops.ball(2.0, sp))
        if thyroid.sum() * np.prod(sp) / 1000.0 < 2.0:
            thyroid = empty.copy()

    # breast / anterior chest wall: body anterior to the cavity, outside it and the ribs, over the lung z range
    breast = empty.copy()
    if cavity.any():
        cy = np.array([np.flatnonzero(cavity[:, :, z].any(axis=0)).mean() if cavity[:, :, z].any() else np.nan
                       for z in range(Z)])
        cy = np.where(np.isfinite(cy), cy, np.inf)[None, None, :]
        breast = body & ~ops.dilate(cavity, 12.0, sp, True, coarse=True) & ~bone_d & (ys > cy) & (zs >= zl[0]) & (hu > -200)

    # abdomen: body below the diaphragm level (lung cross-section < half its maximum below the widest slice)
    if zl.size:
        area = lungs.sum(axis=(0, 1)).astype(float)
        zmax = int(area.argmax())
        below = np.flatnonzero(area[:zmax] < 0.5 * area[zmax])
        z_diaph = int(below[-1]) if below.size else -1
        abdomen = body & ~bone & ~lungs_d & (zs <= z_diaph)
    else:
        abdomen = body & ~bone
    info["z_diaphragm"] = int(below[-1]) if zl.size and below.size else None

    regions = {
        "lung": lungs,
        "trachea_and_bronchi": airway,
        "mediastinum": mediastinum,
        "heart": heart,
        "esophagus": eso,
        "pleura": pleura,
        "bone": bone,
        "thyroid": thyroid,
        "breast": breast,
        "abdomen": abdomen,
    }
    return regions, structures, info
