"""Synthetic phantom: determinism, the 18 findings one by one, physical sizes, anatomy sanity, CLI, typed errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from chatapp.cli import main
from vision.errors import CTScribeError
from vision.phantom import make_phantom, random_findings
from vision.phantom_templates import IMPRESSION_NORMAL
from vision.registry import FINDING_KEYS, FINDING_NAMES, FINDINGS, REGION_KEYS

SMALL = {"shape": (128, 128, 64), "spacing": (2.8, 2.8, 5.0)}  # whole patient, 8x fewer voxels than the default


@pytest.fixture(scope="module")
def base_small():
    return make_phantom(7, **SMALL)


@pytest.fixture(scope="module")
def base_default():
    return make_phantom(3)


def eq_diameter_mm(mask: np.ndarray, spacing) -> float:
    return float((6.0 * mask.sum() * np.prod(spacing) / np.pi) ** (1.0 / 3.0))


def test_deterministic_by_seed():
    a = make_phantom(11, findings=["Lung nodule", "Emphysema"], **SMALL)
    b = make_phantom(11, findings=["Lung nodule", "Emphysema"], **SMALL)
    c = make_phantom(12, findings=["Lung nodule", "Emphysema"], **SMALL)
    assert np.array_equal(a.volume.array, b.volume.array)
    assert a.report == b.report and a.measurements == b.measurements
    assert all(np.array_equal(a.finding_masks[k], b.finding_masks[k]) for k in a.finding_masks)
    assert not np.array_equal(a.volume.array, c.volume.array)


@pytest.mark.parametrize("key", FINDING_KEYS)
def test_each_finding_alone_changes_only_its_label_and_mask(key, base_small):
    ph = make_phantom(7, findings=[key], **SMALL)
    name = next(f.name for f in FINDINGS if f.key == key)
    assert ph.labels == {n: int(n == name) for n in FINDING_NAMES}
    assert set(ph.finding_masks) == {key}
    mask = ph.finding_masks[key]
    assert mask.dtype == bool and mask.shape == ph.volume.shape and mask.any()
    changed = ph.volume.array != base_small.volume.array
    assert changed.any(), f"{key} is invisible in the image"
    assert not (changed & ~mask).any(), f"{key} changed voxels outside its own mask"
    assert not (mask & ~ph.structures["body"]).any(), f"{key} mask leaves the body"
    assert ph.report.split("Impression:")[1].strip() != IMPRESSION_NORMAL


def test_findings_look_like_themselves(base_default):
    ph = make_phantom(3, findings={"Pleural effusion": {"side": "right", "size_mm": 40},
                                   "Medical material": {"type": "pacemaker"},
                                   "Arterial wall calcification": {"count": 8},
                                   "Lung opacity": {"side": "left", "lobe": "upper", "severity": 0.5},
                                   "Lymphadenopathy": {"size_mm": 14, "count": 2}})
    hu = ph.volume.array.astype(np.float32)
    eff = ph.finding_masks["pleural_effusion"]
    assert -5 < np.median(hu[eff]) < 25  # fluid
    ys = np.argwhere(eff)[:, 1]
    lung_ys = np.argwhere(ph.structures["lung_right"] | eff)[:, 1]
    assert np.median(ys) < np.median(lung_ys)  # dependent (posterior)
    assert ph.measurements["pleural_effusion_volume_ml_right"] > 50
    assert ph.measurements["pleural_effusion_volume_ml_left"] == 0
    assert np.percentile(hu[ph.finding_masks["medical_material"]], 50) > 2500
    assert np.all(hu[ph.finding_masks["arterial_wall_calcification"]] > 130)
    ggo = hu[ph.finding_masks["lung_opacity"]]
    assert -560 < np.median(ggo) < -300
    assert 20 < np.median(hu[ph.finding_masks["lymphadenopathy"]]) < 70
    assert ph.regions["pleura"][eff].all() and not ph.regions["lung"][eff].any()
    assert ph.regions["mediastinum"][ph.finding_masks["lymphadenopathy"]].mean() > 0.9
    from scipy.ndimage import label

    comps, n = label(ph.finding_masks["lymphadenopathy"])
    assert n == 2
    for i in range(1, n + 1):  # short axis (smallest in-plane extent of the widest slice) is >= 10 mm
        vox = np.argwhere(comps == i)
        widths = [min(np.ptp(vox[vox[:, 2] == z][:, a]) + 1 for a in (0, 1)) * 1.4 for z in np.unique(vox[:, 2])]
        assert 12 <= max(widths) <= 16
    assert "Right pleural effusion" in ph.report and "pacemaker" in ph.report


def test_cardiomegaly_raises_ctr_above_half(base_small):
    ph = make_phantom(7, findings={"Cardiomegaly": {"severity": 0.0}}, **SMALL)
    assert base_small.measurements["cardiothoracic_ratio"] < 0.48
    assert ph.measurements["cardiothoracic_ratio"] > 0.5
    assert ph.measurements["heart_volume_ml"] > 1.5 * base_small.measurements["heart_volume_ml"]


def test_emphysema_severity_controls_laa():
    laa = [make_phantom(2, findings={"Emphysema": {"severity": s}}, **SMALL).measurements["laa950_percent"]
           for s in (0.1, 0.9)]
    assert 5 < laa[0] < laa[1] and laa[1] > 25


@pytest.mark.parametrize("shape,spacing,size", [((64, 64, 48), (5.0, 5.0, 5.0), 8.0), ((64, 64, 48), (5.0, 5.0, 5.0), 12.0),
                                                ((256, 256, 128), (1.4, 1.4, 2.5), 8.0),
                                                ((200, 200, 80), (0.9, 0.9, 3.0), 8.0),
                                                ((200, 200, 80), (0.9, 0.9, 3.0), 15.0)])
def test_nodule_size_is_physical(shape, spacing, size):
    ph = make_phantom(4, shape=shape, spacing=spacing,
                      findings={"Lung nodule": {"size_mm": size, "side": "right", "lobe": "lower"}})
    mask = ph.finding_masks["lung_nodule"]
    assert abs(eq_diameter_mm(mask, spacing) - size) <= 1.0
    nod = ph.measurements["nodules"][0]
    assert nod["diameter_mm"] == size and nod["side"] == "right" and nod["lobe"] == "lower"
    assert ph.structures["lung_lower_lobe_right"][tuple(nod["center_voxel"])]
    assert f"{size:.0f} mm solid nodule in the right lower lobe" in ph.report


def test_anatomy_regions_and_hu_are_plausible(base_default):
    ph = base_default
    m = ph.measurements
    assert 2000 < m["lung_volume_ml"] < 7000
    assert m["lung_volume_right_ml"] > m["lung_volume_left_ml"]
    assert 0.35 < m["cardiothoracic_ratio"] < 0.52 and 300 < m["heart_volume_ml"] < 900
    assert m["laa950_percent"] < 2
    assert list(ph.regions) == list(REGION_KEYS)
    body = ph.structures["body"]
    for k, r in ph.regions.items():
        assert r.dtype == bool and r.shape == ph.volume.shape and r.any(), k
        assert not (r & ~body).any(), k
    hu = ph.volume.array
    assert -900 < np.median(hu[ph.regions["lung"]]) < -800
    assert -120 < np.median(hu[ph.structures["breast"]]) < 0
    assert np.median(hu[ph.regions["bone"]]) > 200 and hu[ph.structures["ribs"]].max() > 700
    assert 20 < np.median(hu[ph.structures["heart"]]) < 60
    assert np.median(hu[~body]) < -990
    assert ph.volume.array.dtype == np.int16 and ph.volume.orientation == "RAS"
    assert ph.volume.metadata["synthetic"] is True
    # anatomy is where it belongs: right lung at +x (RAS), heart anterior to the spine, thyroid above the lungs
    com = {k: np.argwhere(ph.structures[k]).mean(axis=0) for k in ("lung_right", "lung_left", "heart", "spine",
                                                                     "thyroid", "liver")}
    assert com["lung_right"][0] > com["lung_left"][0]
    assert com["heart"][1] > com["spine"][1]
    assert com["thyroid"][2] > com["lung_right"][2] > com["liver"][2]
    assert "Trachea and both main bronchi are patent." in ph.report and "No pleural effusion" in ph.report


def test_contrast_enhances_blood_pool():
    ph = make_phantom(1, contrast=True, **SMALL)
    assert np.median(ph.volume.array[ph.structures["aorta"]]) > 200


def test_random_findings_are_deterministic_and_valid():
    a, b = random_findings(5, p=0.5), random_findings(5, p=0.5)
    assert a == b and a
    ph = make_phantom(5, findings=a, **SMALL)
    assert {k for k, v in ph.labels.items() if v} == {f.name for f in FINDINGS if f.key in a}


@pytest.mark.parametrize("findings,needle", [
    (["Lung nodle"], "Lung nodule"),
    ({"Lung nodule": {"size": 8}}, "size_mm"),
    ({"Lung nodule": {"side": "left", "lobe": "middle"}}, "no middle lobe"),
    ({"Emphysema": {"severity": 3}}, "0..1"),
    ({"Medical material": {"type": "robot"}}, "pacemaker"),
])
def test_bad_specs_raise_typed_error(findings, needle):
    with pytest.raises(CTScribeError, match=needle):
        make_phantom(0, findings=findings, **SMALL)


def test_bad_geometry_raises_typed_error():
    with pytest.raises(CTScribeError, match="shape"):
        make_phantom(0, shape=(64, 64), spacing=(1, 1, 1))
    with pytest.raises(CTScribeError, match="spacing"):
        make_phantom(0, shape=(64, 64, 64), spacing=(0, 1, 1))


def test_cli_writes_every_file(tmp_path, capsys):
    import nibabel as nib

    out = tmp_path / "ph"
    rc = main(["phantom", "--seed", "1", "--findings", "Lung nodule,Pleural effusion", "--shape", "64", "64", "48",
               "--spacing", "5", "5", "5", "--out", str(out)])
    assert rc == 0
    labels = json.loads((out / "labels.json").read_text())
    assert [k for k in labels if k != "measurements"] == list(FINDING_NAMES)
    assert labels["Lung nodule"] == 1 and labels["Pleural effusion"] == 1 and labels["Cardiomegaly"] == 0
    assert labels["measurements"]["nodules"][0]["diameter_mm"] > 0
    ct = nib.load(out / "ct.nii.gz")
    assert ct.shape == (64, 64, 48) and np.allclose(ct.header.get_zooms(), 5.0)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    for k in REGION_KEYS:
        assert nib.load(out / "regions" / f"{k}.nii.gz").shape == (64, 64, 48)
    assert sorted(p.name for p in (out / "findings").iterdir()) == ["lung_nodule.nii.gz", "pleural_effusion.nii.gz"]
    assert (out / "report.txt").read_text().startswith("Findings:")
    try:
        from vision.io import load_ct
    except ImportError:  # ingestion lives in another module; the roundtrip is checked once it exists
        pass
    else:
        vol = load_ct(out / "ct.nii.gz")
        ref = make_phantom(1, findings=["Lung nodule", "Pleural effusion"], shape=(64, 64, 48), spacing=(5, 5, 5))
        assert np.array_equal(np.asarray(vol.array), ref.volume.array)
        assert np.allclose(vol.affine, ref.volume.affine, atol=1e-3)
    capsys.readouterr()
    rc = main(["phantom", "--findings", "Lung nodle", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Lung nodule" in err


def test_default_phantom_speed():
    t = time.process_time()  # CPU seconds: the generator is single-threaded numpy, wall time varies with load
    make_phantom(9, findings=["Lung nodule", "Pleural effusion"])
    dt = time.process_time() - t
    print(f"256x256x128 phantom: {dt:.2f} s CPU")
    assert dt < 10.0  # 0.75-1.1 s measured on one core; generous for loaded CI runners
