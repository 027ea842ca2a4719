"""TotalSegmentator v2 'total' mapping: pure-data table, registry consistency, and the real 117-class label map."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import shared_path
from vision.registry import REGIONS
from vision.totalseg import STRUCTURE_CLASSES, TOTAL_V2_CLASSES, TOTAL_V2_IDS, class_ids, region_masks_from_labelmap


def test_table_matches_totalsegmentator_v2_ids():
    assert len(TOTAL_V2_CLASSES) == 117 and min(TOTAL_V2_CLASSES) == 1
    expected = {1: "spleen", 5: "liver", 10: "lung_upper_lobe_left", 14: "lung_lower_lobe_right", 16: "trachea",
                17: "thyroid_gland", 26: "vertebrae_S1", 44: "vertebrae_C7", 51: "heart", 52: "aorta",
                79: "spinal_cord", 92: "rib_left_1", 115: "rib_right_12", 116: "sternum", 117: "costal_cartilages"}
    for i, name in expected.items():
        assert TOTAL_V2_CLASSES[i] == name and TOTAL_V2_IDS[name] == i


def test_registry_and_structures_use_valid_classes():
    for r in REGIONS:
        class_ids(r.totalseg_classes)  # raises KeyError on a misspelt class
    for names in STRUCTURE_CLASSES.values():
        class_ids(names)
    with pytest.raises(KeyError):
        class_ids(["lung_left"])


def test_mapping_synthetic_labels():
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[0, 0, 0], lab[1, 1, 1], lab[2, 2, 2], lab[3, 3, 3] = 10, 51, 52, 30
    regions, structs = region_masks_from_labelmap(lab)
    assert regions["lung"].sum() == 1 and regions["lung"][0, 0, 0]
    assert regions["heart"][1, 1, 1] and regions["mediastinum"][2, 2, 2] and regions["bone"][3, 3, 3]
    assert structs["lung_left"][0, 0, 0] and not structs["lung_right"].any() and structs["vertebrae"][3, 3, 3]
    assert "pleura" not in regions and "breast" not in regions  # no TotalSegmentator class: classical path


@pytest.mark.data
def test_real_labelmap_vs_classical_masks():
    import nibabel as nib

    from vision.regions import compute_regions, from_labelmap
    from vision.volume import CTVolume

    d = "ct-volumes_totalsegmentator-tests"
    ct = nib.as_closest_canonical(nib.load(shared_path(d, "example_ct_sm.nii.gz")))
    seg = nib.as_closest_canonical(nib.load(shared_path(d, "example_seg_for_example_ct_sm.nii.gz")))
    lab = np.asarray(seg.dataobj).astype(np.uint8)
    vol = CTVolume(np.asarray(ct.dataobj).astype(np.int16), (3.0, 3.0, 3.0), ct.affine)
    regions, structs = region_masks_from_labelmap(lab)
    assert regions["lung"].sum() == np.isin(lab, [10, 11, 12, 13, 14]).sum()
    assert regions["abdomen"].sum() > regions["lung"].sum()  # upper-abdomen scan
    ours = compute_regions(vol, backend="classical")

    def dice(a, b):
        return 2 * (np.asarray(a) & b).sum() / (np.asarray(a).sum() + b.sum())

    assert dice(ours.structures["lung_left"], structs["lung_left"]) >= 0.85
    assert dice(ours.structures["lung_right"], structs["lung_right"]) >= 0.85
    assert dice(ours.structures["aorta"], structs["aorta"]) >= 0.7
    assert dice(ours.structures["vertebrae"], structs["vertebrae"]) >= 0.6
    assert "heart" in ours.absent and "thyroid" in ours.absent  # not in this field of view: never invented
    res = from_labelmap(vol, lab)
    assert res.info["backend"] == "totalsegmentator" and "heart" in res.absent
    assert np.array_equal(np.asarray(res.masks["lung"]), regions["lung"])
