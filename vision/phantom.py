"""Synthetic chest CT phantoms with ground truth: regions, structures, 18 injectable findings, measurements, report.

The phantom is what the demo, the tests and the demo weights are built on: a contrast or non-contrast adult chest
(thyroid to upper abdomen) with realistic Hounsfield units, any matrix size and spacing, deterministic by seed.

Example:
    >>> from vision.phantom import make_phantom
    >>> ph = make_phantom(3, findings={"Lung nodule": {"size_mm": 8, "side": "right", "lobe": "upper"}})
    >>> ph.labels["Lung nodule"], ph.measurements["nodules"][0]["diameter_mm"]
    (1, 8.0)

Sizes are physical (mm) whatever the spacing. A nodule's ``size_mm`` is its **equivalent-sphere diameter**
``(6 V / pi)^(1/3)`` with V = mask voxels x voxel volume; the voxelised sphere is placed at the sub-voxel offset whose
volume best matches, so the mask measures the requested diameter within ~1 mm for spacings up to ~5 mm.

Random streams: anatomy, noise and each finding use their own stream derived from the seed, so adding a finding
never changes the anatomy, the noise or another finding's random draws, and changes only the voxels of its mask.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vision.phantom_anatomy import LABELS, LUNG_IDS, build_anatomy, diaphragm_z, label_in, mediastinal_envelope
from vision.phantom_findings import INJECTORS, PARAMS, PhantomSpecError, lobe_map, validate_params
from vision.phantom_geometry import Grid
from vision.phantom_templates import render_report
from vision.registry import FINDING_KEYS, FINDING_NAMES, FINDINGS, REGION_KEYS, finding
from vision.volume import CTVolume

__all__ = ["PARAMS", "Phantom", "PhantomSpecError", "make_phantom", "normalize_findings", "random_findings"]

NOISE_HU = 10.0  # std of the white image noise (a smooth-kernel CT of an adult has ~10-20 HU)
STRUCTURE_LABELS = ("lung_left", "lung_right", "trachea", "bronchi", "heart", "aorta", "pulmonary_artery",
                    "superior_vena_cava", "esophagus", "thyroid", "spine", "spinal_canal", "ribs", "sternum",
                    "clavicles", "liver", "stomach", "spleen", "breast")
# diffuse findings first, focal ones last, so small lesions are never painted over by a large one
APPLY_ORDER = ("cardiomegaly", "pericardial_effusion", "mosaic_attenuation_pattern", "emphysema",
               "interlobular_septal_thickening", "lung_opacity", "consolidation", "atelectasis", "pleural_effusion",
               "pulmonary_fibrotic_sequela", "bronchiectasis", "peribronchial_thickening", "hiatal_hernia",
               "lymphadenopathy", "lung_nodule", "arterial_wall_calcification", "coronary_artery_wall_calcification",
               "medical_material")
LOBE_STRUCTURES = {("right", 0): "lung_upper_lobe_right", ("right", 1): "lung_middle_lobe_right",
                   ("right", 2): "lung_lower_lobe_right", ("left", 0): "lung_upper_lobe_left",
                   ("left", 2): "lung_lower_lobe_left"}


@dataclass
class Phantom:
    """A synthetic CT and its ground truth.

    Args:
        volume: int16 HU, RAS, origin-centred affine; ``metadata["synthetic"] is True``.
        regions: the 10 RadGenome region keys -> bool (X, Y, Z).
        structures: finer anatomy -> bool (X, Y, Z) (lungs, lobes, airways, heart, vessels, bones, organs, body).
        finding_masks: finding key -> bool (X, Y, Z), present findings only.
        labels: the 18 CT-RATE names -> 0/1.
        measurements: ground truth (mL, mm, %, HU); JSON-serialisable.
        report: reference report ("Findings: ... Impression: ...").
        findings: finding key -> parameters actually used (explicit and drawn).
    """

    volume: CTVolume
    regions: dict[str, np.ndarray]
    structures: dict[str, np.ndarray]
    finding_masks: dict[str, np.ndarray]
    labels: dict[str, int]
    measurements: dict[str, Any]
    report: str
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, out_dir: str | Path, *, structures: bool = False) -> Path:
        """Write ct.nii.gz, labels.json (18 labels + ``measurements``), regions/<key>.nii.gz,
        findings/<key>.nii.gz, report.txt (and structures/<name>.nii.gz when asked)."""
        import nibabel as nib

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)

        def write(arr: np.ndarray, path: Path, dtype) -> None:
            img = nib.Nifti1Image(np.asarray(arr, dtype=dtype), self.volume.affine)
            img.header.set_xyzt_units("mm")
            img.set_qform(self.volume.affine, code=1)
            img.set_sform(self.volume.affine, code=1)
            nib.save(img, str(path))

        write(self.volume.array, out / "ct.nii.gz", np.int16)
        groups = [("regions", self.regions), ("findings", self.finding_masks)]
        if structures:
            groups.append(("structures", self.structures))
        for sub, masks in groups:
            (out / sub).mkdir(exist_ok=True)
            for k, m in masks.items():
                write(m, out / sub / f"{k}.nii.gz", np.uint8)
        labels = {**self.labels, "measurements": self.measurements}
        (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
        (out / "report.txt").write_text(self.report + "\n")
        return out


def normalize_findings(findings: Mapping[str, Mapping[str, Any] | bool] | Iterable[str] | str | None
                       ) -> dict[str, dict[str, Any]]:
    """Finding spec -> {finding key: validated params}. Accepts CT-RATE names or keys, a comma-separated string,
    a list, or a mapping to params / True / False. Unknown names or params raise :class:`PhantomSpecError`."""
    if findings is None:
        return {}
    if isinstance(findings, str):
        findings = [f for f in (x.strip() for x in findings.split(",")) if f]
    items = findings.items() if isinstance(findings, Mapping) else ((f, True) for f in findings)
    out: dict[str, dict[str, Any]] = {}
    for name, params in items:
        if not isinstance(name, str):
            raise PhantomSpecError(f"finding names must be strings, got {name!r}")
        try:
            key = finding(name).key
        except KeyError:
            raise PhantomSpecError(f"unknown finding {name!r}; valid names: {', '.join(FINDING_NAMES)} (or their "
                                   f"snake_case keys)") from None
        if params is False:
            continue
        if params is True or params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise PhantomSpecError(f"parameters of {name!r} must be a mapping such as {{'size_mm': 8}}, got "
                                   f"{params!r}")
        out[key] = validate_params(key, params)
    return out


def _check_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    try:
        shp = tuple(int(s) for s in shape)
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise PhantomSpecError(f"shape must be 3 integers and spacing 3 numbers (mm), got {shape!r}, {spacing!r}")
    if len(shp) != 3 or len(sp) != 3:
        raise PhantomSpecError(f"shape and spacing need 3 values (X Y Z), got {shape!r} and {spacing!r}")
    if any(s != float(o) for s, o in zip(shp, shape)) or not all(16 <= s <= 1024 for s in shp):
        raise PhantomSpecError(f"shape values must be integers in 16..1024, got {tuple(shape)}")
    if not all(np.isfinite(s) and 0.2 <= s <= 10.0 for s in sp):
        raise PhantomSpecError(f"spacing values must be millimetres in 0.2..10, got {tuple(spacing)}")
    return shp, sp


def make_phantom(seed: int = 0, *, shape: Sequence[int] = (256, 256, 128),
                 spacing: Sequence[float] = (1.4, 1.4, 2.5),
                 findings: Mapping[str, Mapping[str, Any] | bool] | Iterable[str] = (),
                 contrast: bool = False) -> Phantom:
    """Build a synthetic chest CT.

    Args:
        seed: non-negative integer; the same seed, shape, spacing and findings give the same phantom.
        shape: voxels along (X, Y, Z) in RAS order.
        spacing: voxel size in mm along (X, Y, Z) (anisotropic allowed).
        findings: CT-RATE names or keys, optionally mapped to params (``size_mm``, ``side``, ``lobe``,
            ``severity``, ``count``, ``type``; see ``PARAMS``). Missing params are drawn from the seed.
        contrast: enhance the blood pool (aorta/heart/pulmonary arteries ~260 HU).

    Returns:
        a :class:`Phantom`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomSpecError(f"seed must be a non-negative integer, got {seed!r}")
    spec = normalize_findings(findings)
    shp, sp = _check_geometry(shape, spacing)
    grid = Grid(shp, sp)
    cv, an = build_anatomy(grid, np.random.default_rng([int(seed), 0]), contrast=bool(contrast))

    masks: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, Any]] = {}
    for key in APPLY_ORDER:
        if key not in spec:
            continue
        params = dict(spec[key])
        # the stream depends on the seed and the finding's registry index only, never on the other findings
        res = INJECTORS[key]((cv, an), params, np.random.default_rng([int(seed), 1, FINDING_KEYS.index(key)]))
        cv.hu[res.mask] = res.values
        if res.relabel:
            cv.labels[res.mask] = LABELS[res.relabel]
        for other in masks.values():  # a finding painted over another one hides it there
            other &= ~res.mask
        masks[key] = res.mask
        info[key] = {"params": _jsonable(res.params), **_jsonable(res.measurements)}
    masks = {k: masks[k] for k in FINDING_KEYS if k in masks}
    info = {k: info[k] for k in FINDING_KEYS if k in info}

    noise = np.random.default_rng([int(seed), 2]).standard_normal(shp, dtype=np.float32)
    noise *= NOISE_HU
    cv.hu += noise
    np.clip(cv.hu, -1024, 3071, out=cv.hu)
    arr = np.rint(cv.hu).astype(np.int16)

    structures = _structures(cv, an)
    regions = _regions(cv, an, masks)
    measurements = _measure(arr, cv, an, grid, structures, info)
    measurements["generator"] = {"seed": int(seed), "shape": list(shp), "spacing": list(sp),
                                 "contrast": bool(contrast), "patient_scale": round(an.scale, 4),
                                 "nodule_size": "equivalent-sphere diameter (6V/pi)^(1/3)"}
    labels = {f.name: int(f.key in masks) for f in FINDINGS}
    report = render_report(info, measurements)
    volume = CTVolume(arr, sp, grid.affine,
                      metadata={"modality": "CT", "synthetic": True, "manufacturer": "ctscribe phantom",
                                "contrast": bool(contrast), "slice_thickness": sp[2], "kvp": 120,
                                "series_description": "synthetic chest CT phantom"},
                      source={"format": "phantom", "seed": int(seed), "findings": sorted(masks)})
    return Phantom(volume, regions, structures, masks, labels, measurements, report,
                   {k: v["params"] for k, v in info.items()})


def _structures(cv, an) -> dict[str, np.ndarray]:
    out = {name: cv.labels == LABELS[name] for name in STRUCTURE_LABELS}
    out["body"] = cv.labels != 0
    for side in ("right", "left"):
        lung = out[f"lung_{side}"]
        for (sd, code), name in LOBE_STRUCTURES.items():
            if sd == side:
                out[name] = np.zeros_like(lung)
        idx = np.argwhere(lung.any(axis=(1, 2))), np.argwhere(lung.any(axis=(0, 2))), np.argwhere(lung.any(axis=(0, 1)))
        if any(i.size == 0 for i in idx):
            continue
        box = tuple(slice(int(i[0, 0]), int(i[-1, 0]) + 1) for i in idx)
        code_map = lobe_map(cv.grid, an, box, side)
        for (sd, code), name in LOBE_STRUCTURES.items():
            if sd == side:
                out[name][box] = lung[box] & (code_map == code)
    return out


def _regions(cv, an, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    L = cv.labels
    grid = cv.grid
    zd = diaphragm_z(grid, an, grid.full_box())
    below = grid.coords(grid.full_box())[2] < zd  # (X, Y, Z) bool: under the diaphragm
    lung = label_in(L, LUNG_IDS)
    effusion = L == LABELS["pleural_effusion"]
    # pleura: a one-voxel shell around the lungs (and the pleural fluid) in the chest wall / mediastinal fat
    inside = lung | effusion
    grown = inside.copy()
    for ax in range(3):
        grown[(slice(None),) * ax + (slice(1, None),)] |= inside[(slice(None),) * ax + (slice(None, -1),)]
        grown[(slice(None),) * ax + (slice(None, -1),)] |= inside[(slice(None),) * ax + (slice(1, None),)]
    shell_ok = label_in(L, [LABELS[k] for k in ("cavity_fat", "muscle", "ribs")])
    pleura = (grown & ~inside & shell_ok & ~below) | effusion
    envelope = np.zeros(grid.shape, bool)
    for sh in mediastinal_envelope(grid, an):
        envelope[sh.box] |= sh.mask
    cav_fat = L == LABELS["cavity_fat"]
    vessels = label_in(L, [LABELS[k] for k in ("aorta", "pulmonary_artery", "superior_vena_cava", "lymph_node")])
    mediastinum = ((cav_fat & envelope) | vessels) & ~below & ~pleura
    heart = label_in(L, [LABELS["heart"], LABELS["pericardial_effusion"]])
    if "coronary_artery_wall_calcification" in masks:
        heart |= masks["coronary_artery_wall_calcification"]
    abdomen = label_in(L, [LABELS[k] for k in ("liver", "stomach", "spleen")]) | (
        below & label_in(L, [LABELS["cavity_fat"], LABELS["aorta"]]))
    regions = {
        "lung": lung & ~heart,
        "trachea_and_bronchi": label_in(L, [LABELS["trachea"], LABELS["bronchi"]]),
        "mediastinum": mediastinum & ~heart,
        "heart": heart,
        "esophagus": label_in(L, [LABELS["esophagus"], LABELS["hiatal_hernia"]]),
        "pleura": pleura,
        "bone": label_in(L, [LABELS[k] for k in ("spine", "ribs", "sternum", "clavicles")]),
        "thyroid": L == LABELS["thyroid"],
        "breast": L == LABELS["breast"],
        "abdomen": abdomen,
    }
    assert tuple(regions) == REGION_KEYS
    return regions


def _width_mm(mask: np.ndarray, spacing_x: float) -> np.ndarray:
    """Per axial slice: left-right extent (mm) of ``mask``; 0 where empty. Shape (Z,)."""
    rows = mask.any(axis=1)  # (X, Z)
    has = rows.any(axis=0)
    first = np.argmax(rows, axis=0)
    last = rows.shape[0] - 1 - np.argmax(rows[::-1], axis=0)
    return np.where(has, (last - first + 1) * spacing_x, 0.0)


def _measure(arr: np.ndarray, cv, an, grid: Grid, st: dict[str, np.ndarray],
             info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ml = grid.voxel_volume_mm3 / 1000.0
    lung = st["lung_left"] | st["lung_right"]
    n_lung = int(lung.sum())
    thorax = lung | (cv.labels == LABELS["pleural_effusion"])
    heart_w = _width_mm(st["heart"], grid.spacing[0])
    thorax_w = _width_mm(thorax, grid.spacing[0])
    m: dict[str, Any] = {
        "lung_volume_left_ml": round(float(st["lung_left"].sum()) * ml, 1),
        "lung_volume_right_ml": round(float(st["lung_right"].sum()) * ml, 1),
        "lung_volume_ml": round(n_lung * ml, 1),
        "laa950_percent": round(100.0 * float((arr[lung] < -950).sum()) / max(n_lung, 1), 2),
        "heart_volume_ml": round(float(st["heart"].sum()) * ml, 1),
        "cardiothoracic_ratio": round(float(heart_w.max()) / max(float(thorax_w.max()), 1e-6), 3),
        "trachea_diameter_mm": round(2 * an.trachea["lumen_radius"], 1),
        "ascending_aorta_diameter_mm": round(2 * float(an.aorta["radii"][1]), 1),
        "nodules": info.get("lung_nodule", {}).get("nodules", []),
        "findings": info,
    }
    pe = info.get("pleural_effusion", {})
    m["pleural_effusion_volume_ml_left"] = pe.get("volume_ml_left", 0.0)
    m["pleural_effusion_volume_ml_right"] = pe.get("volume_ml_right", 0.0)
    m["pericardial_effusion_volume_ml"] = info.get("pericardial_effusion", {}).get("volume_ml", 0.0)
    if "medical_material" in info:
        mm = info["medical_material"]
        m["metal"] = {"type": mm.get("type"), "center_ras_mm": mm.get("center_ras_mm"),
                      "center_voxel": mm.get("center_voxel")}
    return m


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return round(float(x), 4)
    return x


def random_findings(seed: int, *, p: float = 0.3) -> dict[str, dict[str, Any]]:
    """A random finding set with random parameters (for training/evaluation datasets), deterministic by seed.

    Each of the 18 findings is present with probability ``p``; params are drawn in plausible ranges.
    """
    if not 0.0 <= p <= 1.0:
        raise PhantomSpecError(f"p must be a probability in 0..1, got {p!r}")
    rng = np.random.default_rng([int(seed), 3])
    out: dict[str, dict[str, Any]] = {}
    for key in FINDING_KEYS:
        present = rng.random() < p
        side = str(rng.choice(("left", "right")))
        lobes = ("upper", "middle", "lower") if side == "right" else ("upper", "lower")
        lobe = str(rng.choice(lobes))
        sev = round(float(rng.uniform(0.2, 1.0)), 2)
        if not present:
            continue
        params: dict[str, Any] = {}
        allowed = PARAMS[key]
        if "severity" in allowed:
            params["severity"] = sev
        if "side" in allowed and "bilateral" not in allowed["side"]:
            params["side"] = side
        if "lobe" in allowed:
            params["lobe"] = lobe
        if key == "lung_nodule":
            params["size_mm"] = round(float(rng.uniform(4.0, 20.0)), 1)
            params["count"] = int(rng.integers(1, 3))
        if key == "medical_material":
            params["type"] = str(rng.choice(("pacemaker", "sternal_wires", "port")))
        out[key] = params
    return out
