"""Vertical soft-tissue tubes of the upper mediastinum (ascending aorta, superior vena cava, brachiocephalic vessels).

On a non-contrast CT these vessels have the density of lymph nodes, and a node that touches one merges with it into a
blob too big or too long to be a node. Seen slice by slice, a vertical vessel is a disk whose centre and radius
change little from slice to slice for several centimetres; a node is a short ovoid (<= ~25 mm). So the largest
inscribed circles of the soft tissue are found per axial slice (local maxima of the in-plane distance transform, radius
``TUBE_RADIUS_MM``) and linked across slices (centre moving <= ``TUBE_MAX_SHIFT_MM``, radius <= ``TUBE_MAX_DR_MM``);
chains at least ``TUBE_MIN_LENGTH_MM`` long are vessels, and their disks (radius + one voxel) are the vessel mask.
Horizontal vessels (the aortic arch, the pulmonary arteries) are not tubes along z and are not found here.
With contrast the vessels are brighter than soft tissue and drop out of the candidate tissue before this runs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

TUBE_RADIUS_MM = (6.0, 20.0)  # 12-40 mm vessels; nodes found inside a chain would need a 30 mm run of them
TUBE_MAX_SHIFT_MM = 6.0
TUBE_MAX_DR_MM = 4.0
TUBE_MIN_LENGTH_MM = 30.0


def vertical_tubes(tissue: np.ndarray, sp: tuple[float, float, float]) -> tuple[np.ndarray, list[list[tuple]]]:
    """Vertical tubes in ``tissue`` (bool (X, Y, Z), work grid; Z = slices).

    Returns: (bool mask of the tubes' disks within ``tissue``, chains as lists of (z, x, y, radius_mm) bottom to top).
    """
    X, Y, Z = tissue.shape
    peaks: list[np.ndarray] = []
    idx = [np.flatnonzero(tissue.any(axis=a)) for a in ((1, 2), (0, 2))]
    if not idx[0].size:
        return np.zeros(tissue.shape, bool), []
    x0, y0 = max(0, int(idx[0][0]) - 1), max(0, int(idx[1][0]) - 1)  # crop to the tissue: fewer pixels per EDT
    crop = tissue[x0:int(idx[0][-1]) + 2, y0:int(idx[1][-1]) + 2]
    for z in range(Z):
        t = crop[:, :, z]
        if not t.any():
            peaks.append(np.zeros((0, 3)))
            continue
        d = ndi.distance_transform_edt(t, sampling=sp[:2])
        pk = (d == ndi.maximum_filter(d, size=5)) & (d >= TUBE_RADIUS_MM[0]) & (d <= TUBE_RADIUS_MM[1])
        ii, jj = np.nonzero(pk)
        peaks.append(np.stack([ii + x0, jj + y0, d[ii, jj]], axis=1) if ii.size else np.zeros((0, 3)))
    # greedy linking, bottom to top: each open chain takes the nearest free peak of the next slice that fits
    done: list[list[tuple]] = []
    open_: list[list[tuple]] = []
    for z in range(Z):
        P = peaks[z]
        used = np.zeros(len(P), bool)
        cont: list[list[tuple]] = []
        for ch in open_:
            _, i, j, r = ch[-1]
            ok = np.zeros(len(P), bool)
            if len(P):
                dist = np.hypot((P[:, 0] - i) * sp[0], (P[:, 1] - j) * sp[1])
                ok = (dist <= TUBE_MAX_SHIFT_MM) & (np.abs(P[:, 2] - r) <= TUBE_MAX_DR_MM) & ~used
            if ok.any():
                k = int(np.argmin(np.where(ok, dist, np.inf)))
                used[k] = True
                ch.append((z, P[k, 0], P[k, 1], P[k, 2]))
                cont.append(ch)
            else:
                done.append(ch)
        cont += [[(z, P[k, 0], P[k, 1], P[k, 2])] for k in np.flatnonzero(~used)]
        open_ = cont
    chains = [ch for ch in done + open_ if (ch[-1][0] - ch[0][0] + 1) * sp[2] >= TUBE_MIN_LENGTH_MM]
    out = np.zeros(tissue.shape, bool)
    xs, ys = np.arange(X)[:, None], np.arange(Y)[None, :]
    for ch in chains:
        for z, i, j, r in ch:
            out[:, :, z] |= (np.hypot((xs - i) * sp[0], (ys - j) * sp[1]) <= r + max(sp[0], sp[1])) & tissue[:, :, z]
    return out, chains
