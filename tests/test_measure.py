"""Measurements against phantom truth, JSON output, overlays and the `ctscribe analyze` command."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def run():
    from vision.measure import measure, overlays
    from vision.phantom import make_phantom
    from vision.regions import compute_regions

    p = make_phantom(0, shape=(160, 160, 96), spacing=(2.0, 2.0, 2.5),
                     findings={"Lung nodule": {"size_mm": 12}, "Medical material": True, "Emphysema": True})
    r = compute_regions(p.volume, backend="classical")
    return p, measure(p.volume, r), overlays(p.volume, r)


def _by_name(ms):
    return {m.name: m for m in ms if m.name != "nodule"}


def _report_grid_phantom(seed: int):
    """A tuning-seed phantom on the report geometry (128x128x96 at 2.7x2.7x3.33 mm) and its measurements."""
    from vision.measure import measure
    from vision.phantom import make_phantom, random_findings
    from vision.regions import compute_regions

    p = make_phantom(seed, shape=(128, 128, 96), spacing=(2.7, 2.7, 3.33), findings=random_findings(seed))
    return p, measure(p.volume, compute_regions(p.volume, backend="classical"))


def test_names_units_and_json(run):
    _, ms, _ = run
    names = set(_by_name(ms))
    for n in ("lung_volume_left_ml", "lung_volume_right_ml", "laa950_percent", "mean_lung_density_hu",
              "trachea_diameter_mm", "heart_volume_ml", "cardiothoracic_ratio", "aorta_max_diameter_mm",
              "medical_material", "aortic_calcium_score", "coronary_calcium_score", "pleural_fluid_volume_left_ml",
              "pleural_fluid_volume_right_ml", "pericardial_fluid_volume_ml"):
        assert n in names
    d = json.loads(json.dumps([m.to_dict() for m in ms]))
    assert all({"name", "value", "unit", "method", "region", "confidence"} <= set(x) for x in d)
    calc = _by_name(ms)["coronary_calcium_score"]
    assert calc.extra["approximate"] is True and calc.confidence == "low"


def test_phantom_values(run):
    p, ms, _ = run
    m, t = _by_name(ms), p.measurements
    assert abs(m["laa950_percent"].value - t["laa950_percent"]) <= 0.5
    truth = t["lung_volume_right_ml"]
    assert abs(m["lung_volume_right_ml"].value - truth) <= 0.05 * truth
    truth = t["lung_volume_left_ml"]  # stomach gas touching the left lung base is cut off
    assert abs(m["lung_volume_left_ml"].value - truth) <= 0.05 * truth
    assert abs(m["trachea_diameter_mm"].value - t["trachea_diameter_mm"]) <= 1.5
    assert abs(m["heart_volume_ml"].value - t["heart_volume_ml"]) <= 0.10 * t["heart_volume_ml"]
    assert abs(m["cardiothoracic_ratio"].value - t["cardiothoracic_ratio"]) <= 0.05
    assert abs(m["aorta_max_diameter_mm"].value - t["ascending_aorta_diameter_mm"]) <= 4.0


def test_nodule_and_metal_found(run):
    p, ms, ov = run
    truth = p.measurements["nodules"][0]
    nods = [m for m in ms if m.name == "nodule"]
    best = min(nods, key=lambda n: abs(n.value - truth["diameter_mm"]))
    assert abs(best.extra["diameter_mm"] - truth["diameter_mm"]) <= 1.0
    assert best.extra["side"] == truth["side"] and best.extra["location"].startswith(truth["side"])
    assert len(best.extra["center_ras_mm"]) == 3
    assert ov[best.extra["mask_id"]].shape == p.volume.shape and ov[best.extra["mask_id"]].any()
    metal = _by_name(ms)["medical_material"]
    assert metal.value == 1 and metal.extra["present"] and "metal" in ov  # one device, not its pieces


def test_no_vessel_nodules(run):
    """Vessel segments and branch points must not come out as nodules: every candidate is the true nodule."""
    p, ms, _ = run
    truth = p.measurements["nodules"][0]
    nods = [m for m in ms if m.name == "nodule"]
    assert len(nods) == 1 and abs(nods[0].value - truth["diameter_mm"]) <= 1.0
    assert nods[0].confidence in ("medium", "low")


@pytest.mark.data
def test_cli_analyze_writes_masks_in_input_geometry(tmp_path):
    import nibabel as nib

    from chatapp.cli import main
    from tests.conftest import shared_path

    src = shared_path("ct-volumes_totalsegmentator-tests", "aorta_report_ct_cropped.nii.gz")  # LPS input
    assert main(["analyze", str(src), "--out", str(tmp_path), "--backend", "classical"]) == 0
    meas = json.loads((tmp_path / "measurements.json").read_text())
    assert {"lung_volume_left_ml", "laa950_percent"} <= {x["name"] for x in meas}
    img, lung = nib.load(str(src)), nib.load(str(tmp_path / "regions" / "lung.nii.gz"))
    assert lung.shape == img.shape and np.allclose(lung.affine, img.affine)
    hu = np.asarray(img.dataobj)
    m = np.asarray(lung.dataobj) > 0
    if m.any():
        assert hu[m].mean() < -500  # the mask lands on lung in the input's own voxel order
    assert len(list((tmp_path / "regions").glob("*.nii.gz"))) == 10


def test_ground_glass_and_heterogeneity(run):
    """Ground-glass volume and attenuation heterogeneity: high with an opacity + mosaic pattern, low without
    (the ``run`` phantom has emphysema, which the heterogeneity index must not count as mosaic)."""
    from vision.measure import measure
    from vision.phantom import make_phantom
    from vision.regions import compute_regions

    _, base, _ = run
    b = _by_name(base)
    assert b["ground_glass_volume_ml"].value < 8.0 and b["lung_attenuation_heterogeneity_percent"].value < 10.0
    p = make_phantom(5, shape=(128, 128, 96), spacing=(2.7, 2.7, 3.33),
                     findings={"Lung opacity": {"severity": 0.5, "size_mm": 50}, "Mosaic attenuation pattern": True})
    m = _by_name(measure(p.volume, compute_regions(p.volume, backend="classical")))
    assert m["ground_glass_volume_ml"].value >= 8.0 and m["ground_glass_volume_ml"].unit == "mL"
    assert m["ground_glass_volume_ml"].extra["mask_id"] == "ground_glass"
    assert m["lung_attenuation_heterogeneity_percent"].value >= 10.0
    assert "coronal band" in m["lung_attenuation_heterogeneity_percent"].method


def test_ground_glass_reaching_the_pleura():
    """A dense ground-glass patch (-380 HU) that reaches the chest wall lies outside the aerated-lung mask (< -400 HU,
    hole-filled, but the patch is open to the pleura): the measurement grows the lung into connected ground glass.
    Before that, this phantom's 20 mL patch read 0.0 mL."""
    from vision.measure import measure, overlays
    from vision.phantom import make_phantom
    from vision.regions import compute_regions

    p = make_phantom(200046, shape=(128, 128, 96), spacing=(2.7, 2.7, 3.33),
                     findings={"Lung opacity": {"severity": 0.78, "side": "right", "lobe": "upper"}})
    r = compute_regions(p.volume, backend="classical")
    m = _by_name(measure(p.volume, r))
    assert m["ground_glass_volume_ml"].value >= 8.0
    ggo, truth = overlays(p.volume, r)["ground_glass"], p.finding_masks["lung_opacity"]
    assert (ggo & truth).sum() >= 0.5 * ggo.sum()  # what it measures is the patch, not the lung's rim


def test_enlarged_lymph_node_measured():
    """Of a tuning phantom's two enlarged nodes (15.2 mm short axis, in mediastinal fat; the phantom also has
    cardiomegaly and a pericardial effusion), the right paratracheal one is measured within 1.5 mm, on the right of
    the tracheal midline, with its mask (the aortopulmonary one touches the pulmonary artery and is missed); the module fixture's phantom (no enlarged nodes: its nodule,
    metal and emphysema, normal vessels and heart) gives none and a 0 mm maximum."""
    from vision.measure import measure, overlays
    from vision.phantom import make_phantom, random_findings
    from vision.regions import compute_regions

    p = make_phantom(200002, shape=(128, 128, 96), spacing=(2.7, 2.7, 3.33), findings=random_findings(200002))
    assert p.labels["Lymphadenopathy"] == 1 and p.measurements["findings"]["lymphadenopathy"]["short_axis_mm"] == 15.2
    r = compute_regions(p.volume, backend="classical")
    ms = measure(p.volume, r)
    nodes = [m for m in ms if m.name == "lymph_node"]
    assert nodes, "no lymph node candidate"
    best = min(nodes, key=lambda m: abs(m.value - 15.2))
    assert abs(best.value - 15.2) <= 1.5 and best.confidence == "medium"
    assert best.extra["side"] in ("left", "right", "midline") and best.extra["mask_id"].startswith("lymph_node_")
    ov = overlays(p.volume, r)[best.extra["mask_id"]]
    truth = p.finding_masks["lymphadenopathy"]
    assert (ov & truth).sum() >= 0.5 * ov.sum()
    centers = [n["center_ras_mm"] for n in p.measurements["findings"]["lymphadenopathy"]["nodes"]]
    hit = min(centers, key=lambda c: np.linalg.norm(np.subtract(c, best.extra["center_ras_mm"])))
    assert np.linalg.norm(np.subtract(hit, best.extra["center_ras_mm"])) <= 10.0
    assert best.extra["side"] == ("right" if hit[0] > 10 else "left" if hit[0] < -10 else "midline")
    mx = _by_name(ms)["lymph_node_max_short_axis_mm"]
    assert mx.value == max(n.value for n in nodes) and mx.extra["count"] == len(nodes)


def _the_one_node(seed: int, station: str):
    """(lymphadenopathy truth, its node at ``station``, the one lymph_node measured) for a report-grid phantom."""
    p, ms = _report_grid_phantom(seed)
    lf = p.measurements["findings"]["lymphadenopathy"]
    (truth,) = [n for n in lf["nodes"] if n["station"] == station]
    nodes = [m for m in ms if m.name == "lymph_node"]
    assert len(nodes) == 1, [(m.value, m.extra["location"]) for m in nodes]
    return lf, truth, nodes[0]


def test_node_against_the_aorta_is_measured():
    """An aortopulmonary node (16.4 mm short axis) abutting the aorta: the opening and the organ margins shaved it
    below 10 mm and the aortic wall counted as soft tissue running on, so it was missed; its short axis is now taken
    grown back to the organs, and only soft tissue that is no segmented organ counts against it (tuning seeds:
    aortopulmonary nodes 1/26 -> 6/26 found, no false node)."""
    lf, ap, n = _the_one_node(200133, "aortopulmonary")
    assert abs(n.value - lf["short_axis_mm"]) <= 1.5 and n.extra["side"] == "left"
    assert np.linalg.norm(np.subtract(ap["center_ras_mm"], n.extra["center_ras_mm"])) <= 10.0


def test_hilar_node_beside_the_vena_cava_is_found():
    """A 15 mm right hilar node touching the superior vena cava: without contrast the vena cava, ascending aorta and
    node were one soft-tissue blob, too big for a node. The vertical-tube tracker takes the vessels out, and the
    node, inside the hole-filled lung mask by the bronchi with aerated lung around it, is a hilar node; the aortic arch
    left over the tracked ascending aorta is not (it continues the tube through its end)."""
    _, hil, n = _the_one_node(200154, "right_hilar")
    # short axis 12.7 mm against 15.1 drawn: the 4 mm opening and the lung mask's edge shave hilar nodes (noted in
    # the measurement's method as a candidate); it still clears the 10 mm criterion
    assert n.extra["location"] == "right hilum" and 10.0 <= n.value <= hil["short_axis_mm"] + 1.0
    assert np.linalg.norm(np.subtract(hil["center_ras_mm"], n.extra["center_ras_mm"])) <= 10.0


def test_vertical_tubes_are_tracked_and_short_ovoids_are_not():
    """A 30 mm-wide vertical cylinder 60 mm tall is a tube; a 14 mm ball beside it is not."""
    from vision.measure_mediastinum import vertical_tubes

    sp = (2.0, 2.0, 3.0)
    x, y, z = np.meshgrid(np.arange(60) * 2.0, np.arange(60) * 2.0, np.arange(40) * 3.0, indexing="ij")
    cyl = (np.hypot(x - 40, y - 60) <= 15) & (z >= 15) & (z <= 75)
    ball = np.sqrt((x - 80) ** 2 + (y - 60) ** 2 + (z - 60) ** 2) <= 7
    tubes, chains = vertical_tubes(cyl | ball, sp)
    assert len(chains) == 1 and (tubes & cyl).sum() >= 0.9 * cyl.sum() and not (tubes & ball).any()


def test_no_lymph_node_in_a_normal_mediastinum(run):
    _, ms, _ = run
    assert not [m for m in ms if m.name == "lymph_node"]
    assert _by_name(ms)["lymph_node_max_short_axis_mm"].value == 0.0


def test_dilated_bronchus_measured():
    """A tuning phantom's bronchiectasis (8.8 mm lumen, right lower lobe) is one dilated-bronchus candidate with that
    lumen within 1.5 mm, its lobe and a mask on the tube; the module fixture's phantom (emphysema, whose air is
    -995..-965 HU, and normal airways) gives none."""
    from vision.measure import measure, overlays
    from vision.phantom import make_phantom, random_findings
    from vision.regions import compute_regions

    p = make_phantom(200003, shape=(128, 128, 96), spacing=(2.7, 2.7, 3.33), findings=random_findings(200003))
    assert p.findings["bronchiectasis"] == {"side": "right", "lobe": "lower", "size_mm": 8.8, "count": 3}
    r = compute_regions(p.volume, backend="classical")
    ms = measure(p.volume, r)
    tubes = [m for m in ms if m.name == "dilated_bronchus"]
    assert len(tubes) == 1
    t = tubes[0]
    assert abs(t.value - 8.8) <= 1.5 and (t.extra["side"], t.extra["lobe"]) == ("right", "lower")
    assert t.extra["length_mm"] >= 2.5 * t.value
    ov = overlays(p.volume, r)[t.extra["mask_id"]]
    assert (ov & p.finding_masks["bronchiectasis"]).sum() >= 0.7 * ov.sum()  # the median widens the lumen a little
    assert _by_name(ms)["dilated_bronchus_max_lumen_mm"].value == t.value


def test_no_dilated_bronchus_in_emphysema(run):
    _, ms, _ = run
    assert not [m for m in ms if m.name == "dilated_bronchus"]
    assert _by_name(ms)["dilated_bronchus_max_lumen_mm"].value == 0.0


def test_metal_rim_is_not_calcium():
    """A pacing lead's partial-volume rim (2782 HU, under the 2800 HU metal threshold) in the heart shell read as a
    coronary calcium score of 32 on this tuning phantom (no calcification); dense voxels >= 2000 HU now count as
    metal for the calcium search."""
    p, ms = _report_grid_phantom(200048)
    m = _by_name(ms)
    assert p.labels["Medical material"] == 1 and p.labels["Coronary artery wall calcification"] == 0
    assert m["medical_material"].value >= 1
    assert m["coronary_calcium_score"].value == 0.0 and m["aortic_calcium_score"].value == 0.0


def test_pericardial_recess_fluid_is_not_pleural():
    """Pericardial fluid in a recess past the heart mask, away from the chest wall, read 39.6 mL of right pleural
    fluid on this tuning phantom (enlarged heart with a pericardial effusion, no pleural effusion)."""
    p, ms = _report_grid_phantom(200047)
    m = _by_name(ms)
    assert p.labels["Pericardial effusion"] == 1 and p.labels["Pleural effusion"] == 0
    assert m["pleural_fluid_volume_right_ml"].value < 25.0 and m["pleural_fluid_volume_left_ml"].value < 25.0
    assert m["pericardial_fluid_volume_ml"].value >= 50.0


def test_nodule_against_the_mediastinum_is_found():
    """A 16.1 mm left lower lobe nodule against the mediastinal pleura: the nodule search leaves out the hilum, and
    the lymph-node search saw it as a node until the fat rule; a compact blob with lung and no fat around it is now a
    nodule (on the 200 tuning phantoms all 7 such blobs were nodules)."""
    p, ms = _report_grid_phantom(200118)
    (t,) = p.measurements["nodules"]
    nods = [m for m in ms if m.name == "nodule"]
    assert len(nods) == 1 and not [m for m in ms if m.name == "lymph_node"]
    n = nods[0]
    assert abs(n.value - t["diameter_mm"]) <= 1.0 and (n.extra["side"], n.extra["lobe"]) == (t["side"], t["lobe"])
    assert n.confidence == "medium" and "mediastinal pleura" in n.method


def test_isolated_two_slice_nodule_is_found():
    """An 8.3 mm left upper lobe nodule on the 2.7x2.7x3.33 mm report grid is a 3x3x2-voxel block touching no
    vessel: the 1.5 mm opening (a 3-slice cross) erased it; the isolated-component path keeps it, sized within 1 mm."""
    p, ms = _report_grid_phantom(200138)
    (t,) = p.measurements["nodules"]
    nods = [m for m in ms if m.name == "nodule"]
    assert len(nods) == 1
    n = nods[0]
    assert abs(n.value - t["diameter_mm"]) <= 1.0 and (n.extra["side"], n.extra["lobe"]) == (t["side"], t["lobe"])
    assert n.confidence == "medium" and "isolated" in n.method


def test_juxtapleural_nodule_is_found():
    """A 12 mm right upper lobe nodule on the lung surface lies mostly outside the lung mask (a dent in it): the
    juxtapleural path finds it in the dent a 10 mm closing fills, sized within 1 mm and placed in the lobe it borders;
    the hilar vessels in the dents near the bronchi of the same scan are not candidates."""
    p, ms = _report_grid_phantom(200070)
    (t,) = p.measurements["nodules"]
    nods = [m for m in ms if m.name == "nodule" and "juxtapleural" in m.method]
    assert len(nods) == 1
    n = nods[0]
    assert abs(n.value - t["diameter_mm"]) <= 1.0 and (n.extra["side"], n.extra["lobe"]) == (t["side"], t["lobe"])
    assert n.confidence == "low"  # 3 true / 5 false on the unseen phantoms: a candidate, not a report finding


def test_box_count_equals_the_median_threshold():
    """_dilated_bronchi thresholds the 3x3x3 median with a box count (>= 14 of 27 below): the same mask."""
    from scipy import ndimage as ndi

    hu = np.random.default_rng(0).normal(-980, 30, (40, 30, 20)).astype(np.float32)
    median = ndi.median_filter(hu, size=3) < -990
    count = ndi.uniform_filter((hu < -990).astype(np.float32), size=3) * 27.0 > 13.5
    assert median.any() and np.array_equal(median, count)
