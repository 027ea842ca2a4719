"""TotalSegmentator adapter: map a v2 'total' label map onto the 10 RadGenome regions.

The class table below is pure data (TotalSegmentator v2 ``total`` task, class ids 1..117). Which classes make up
which report region lives in ``vision.registry.REGIONS[*].totalseg_classes`` — this module never re-lists it.
TotalSegmentator itself (``pip install TotalSegmentator`` plus its downloaded weights) is optional: when it is not
importable, or its weights are not on disk, ``available()`` is False and ctscribe runs the classical path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from vision.registry import REGIONS

if TYPE_CHECKING:  # pragma: no cover
    from vision.volume import CTVolume

log = logging.getLogger(__name__)

# TotalSegmentator v2 'total' task: class id -> class name (totalsegmentator/map_to_binary.py, class_map["total"]).
_V2_NAMES = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right adrenal_gland_left "
    "lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right "
    "esophagus trachea thyroid_gland small_bowel duodenum colon urinary_bladder prostate kidney_cyst_left "
    "kidney_cyst_right sacrum vertebrae_S1 vertebrae_L5 vertebrae_L4 vertebrae_L3 vertebrae_L2 vertebrae_L1 "
    "vertebrae_T12 vertebrae_T11 vertebrae_T10 vertebrae_T9 vertebrae_T8 vertebrae_T7 vertebrae_T6 vertebrae_T5 "
    "vertebrae_T4 vertebrae_T3 vertebrae_T2 vertebrae_T1 vertebrae_C7 vertebrae_C6 vertebrae_C5 vertebrae_C4 "
    "vertebrae_C3 vertebrae_C2 vertebrae_C1 heart aorta pulmonary_vein brachiocephalic_trunk subclavian_artery_right "
    "subclavian_artery_left common_carotid_artery_right common_carotid_artery_left brachiocephalic_vein_left "
    "brachiocephalic_vein_right atrial_appendage_left superior_vena_cava inferior_vena_cava "
    "portal_vein_and_splenic_vein iliac_artery_left iliac_artery_right iliac_vena_left iliac_vena_right humerus_left "
    "humerus_right scapula_left scapula_right clavicula_left clavicula_right femur_left femur_right hip_left hip_right "
    "spinal_cord gluteus_maximus_left gluteus_maximus_right gluteus_medius_left gluteus_medius_right "
    "gluteus_minimus_left gluteus_minimus_right autochthon_left autochthon_right iliopsoas_left iliopsoas_right brain "
    "skull"
).split() + [f"rib_left_{i}" for i in range(1, 13)] + [f"rib_right_{i}" for i in range(1, 13)] + [
    "sternum", "costal_cartilages"]

TOTAL_V2_CLASSES: dict[int, str] = {i + 1: name for i, name in enumerate(_V2_NAMES)}
TOTAL_V2_IDS: dict[str, int] = {name: i for i, name in TOTAL_V2_CLASSES.items()}

# Structures (beyond the 10 regions) that measurements use, as unions of TotalSegmentator classes.
STRUCTURE_CLASSES: dict[str, tuple[str, ...]] = {
    "lung_left": ("lung_upper_lobe_left", "lung_lower_lobe_left"),
    "lung_right": ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
    **{lobe: (lobe,) for lobe in ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
                                  "lung_middle_lobe_right", "lung_lower_lobe_right")},
    "trachea": ("trachea",),
    "heart": ("heart",),
    "aorta": ("aorta",),
    "esophagus": ("esophagus",),
    "vertebrae": tuple(n for n in _V2_NAMES if n.startswith("vertebrae_") or n == "sacrum"),
    "ribs": tuple(n for n in TOTAL_V2_CLASSES.values() if n.startswith("rib_")),
    "sternum": ("sternum",),
    "liver": ("liver",),
    "spleen": ("spleen",),
}


def class_ids(names: tuple[str, ...] | list[str]) -> list[int]:
    """TotalSegmentator v2 class ids for class names; unknown names raise KeyError naming the bad class."""
    out = []
    for n in names:
        if n not in TOTAL_V2_IDS:
            raise KeyError(f"{n!r} is not a TotalSegmentator v2 'total' class")
        out.append(TOTAL_V2_IDS[n])
    return out


def region_masks_from_labelmap(labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Map a TotalSegmentator v2 'total' label map to region masks and measurement structures.

    Args:
        labels: integer label map (X, Y, Z), class ids 0..117 (0 = background).

    Returns:
        ``(regions, structures)``: dicts of bool (X, Y, Z) masks. Regions without TotalSegmentator classes (pleura,
        breast) are absent here: the classical path derives them.
    """
    labels = np.asarray(labels)
    regions = {r.key: np.isin(labels, class_ids(r.totalseg_classes)) for r in REGIONS if r.totalseg_classes}
    structures = {k: np.isin(labels, class_ids(v)) for k, v in STRUCTURE_CLASSES.items()}
    return regions, structures


def available() -> bool:
    """True when the TotalSegmentator package is importable (weights are checked when it runs)."""
    import importlib.util

    return importlib.util.find_spec("totalsegmentator") is not None


def run_totalsegmentator(volume: CTVolume, *, fast: bool = True) -> np.ndarray:
    """Run TotalSegmentator (v2 'total' task) on ``volume`` and return its label map in the volume grid.

    Requires the package and its weights already on disk (we never download at run time: ``TOTALSEG_HOME_DIR`` /
    ``~/.totalsegmentator`` must hold them). Raises ``CheckpointError`` with what to do when they are missing.
    """
    from vision.errors import CheckpointError

    if not available():
        raise CheckpointError("TotalSegmentator is not installed; install it with its weights "
                              "(`pip install TotalSegmentator` and `totalseg_download_weights -t total`) "
                              "or use --set regions.backend=classical")
    import nibabel as nib
    from totalsegmentator.python_api import totalsegmentator  # type: ignore[import-not-found]

    img = nib.Nifti1Image(np.asarray(volume.array, dtype=np.int16), volume.affine)
    try:
        out = totalsegmentator(img, None, task="total", fast=fast, ml=True, quiet=True, skip_saving=True)
    except Exception as e:  # the package raises plain exceptions when weights are missing (and would download)
        raise CheckpointError(f"TotalSegmentator failed ({e}); make sure its weights are downloaded beforehand "
                              "or use --set regions.backend=classical") from e
    out = nib.as_closest_canonical(out)
    lab = np.asarray(out.dataobj).astype(np.uint8)
    if lab.shape != volume.shape:
        raise CheckpointError(f"TotalSegmentator returned shape {lab.shape}, expected {volume.shape}")
    return lab
