"""load_ct on real data (../shared/data, skipped when absent) and on synthetic DICOM/NIfTI/NRRD/npy inputs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import shared_path
from malformed_corpus import ct_array, write_dicom_series, write_dicom_slice, write_nifti

from chatapp.cli import main
from vision.io import IngestLimits, load_ct

TCIA = ("ct-volumes_tcia-cptac-lscc", "cptac_lscc_C3N-00247_chest_ct_w_contrast.nii.gz")
TS = "ct-volumes_totalsegmentator-tests"


# ------------------------------------------------------------------------------------------------ real data
@pytest.mark.data
def test_tcia_chest_ct_geometry_and_hu():
    vol = load_ct(shared_path(*TCIA))
    assert vol.shape == (512, 512, 99)
    np.testing.assert_allclose(vol.spacing, (0.564, 0.564, 3.0), atol=1e-3)
    assert vol.array.dtype == np.int16  # int16 stays int16
    assert int(vol.array.min()) == -1024
    assert vol.orientation == "RAS" and vol.source["original_orientation"] == "LPS"
    assert vol.array.flags.writeable
    assert vol.warnings == []
    # the RAS array is the stored LPS array flipped along X and Y, voxel for voxel
    img = nib.load(shared_path(*TCIA))
    np.testing.assert_array_equal(vol.array[::-1, ::-1, :][100:110, 200:210, 50],
                                  img.dataobj[100:110, 200:210, 50])
    np.testing.assert_allclose(vol.affine, nib.as_closest_canonical(img).affine, atol=1e-4)


def _sitk_reference(dicom_dir: Path, out: Path) -> Path:
    """An independent NIfTI of the DICOM series, written by SimpleITK/GDCM (not by ctscribe)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom_dir)))
    sitk.WriteImage(reader.Execute(), str(out))
    return out


@pytest.mark.data
def test_totalsegmentator_jpeg2000_series_from_folder_and_zip_match_sitk_nifti(tmp_path):
    folder = shared_path(TS, "example_ct_dicom")
    ref = load_ct(_sitk_reference(folder, tmp_path / "ref.nii.gz"))
    vol = load_ct(folder)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"example_ct_dicom/{p.name}")
    zvol = load_ct(archive)
    for v in (vol, zvol):
        assert v.shape == ref.shape == (512, 512, 20)
        np.testing.assert_allclose(v.spacing, ref.spacing, atol=1e-3)
        np.testing.assert_allclose(v.affine, ref.affine, atol=1e-3)
        np.testing.assert_array_equal(v.array, ref.array)
        assert v.source["series"]["n_slices"] == 20 and v.source["format"] == "dicom"
        assert v.metadata["modality"] == "CT" and "JPEG 2000" in v.metadata["transfer_syntax"]
    assert zvol.source["container"] == "zip"
    assert int(vol.array.min()) == -1024 and int(vol.array.max()) == 1839


@pytest.mark.data
def test_example_ct_is_3mm_isotropic():
    vol = load_ct(shared_path(TS, "example_ct.nii.gz"))
    assert vol.shape == (122, 101, 112)
    np.testing.assert_allclose(vol.spacing, (3.0, 3.0, 3.0), atol=1e-4)
    assert vol.array.dtype == np.int16 and vol.source["stored_dtype"] == "int32"


@pytest.mark.data
def test_cli_inspect_prints_json_and_writes_png(tmp_path, capsys):
    png = tmp_path / "m.png"
    assert main(["inspect", str(shared_path(TS, "example_ct_sm.nii.gz")), "--png", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shape"] == [122, 101, 30] and out["orientation"] == "RAS"
    assert out["spacing"] == [3.0, 3.0, 3.0]
    assert out["hu"]["min"] <= out["hu"]["p1"] <= out["hu"]["p50"] <= out["hu"]["p99"] <= out["hu"]["max"]
    assert out["warnings"] == [] and out["png"] == str(png)
    from PIL import Image

    assert Image.open(png).size == (768, 512)


# ------------------------------------------------------------------------------------------- synthetic DICOM
def _marker_volume(shape=(24, 20, 8)) -> np.ndarray:
    a = ct_array(shape)
    for k in range(shape[2]):
        a[0, 0, k] = 100 + 10 * k  # slice signature, to check sorting
    a[2, 3, 1] = 1500  # a marker for orientation checks
    return a


def test_dicom_series_sorted_rescaled_and_oriented(tmp_path):
    hu = _marker_volume()
    write_dicom_series(tmp_path / "s", hu, spacing=(0.8, 0.7, 2.0), shuffle=True)
    vol = load_ct(tmp_path / "s")
    assert vol.shape == hu.shape and vol.orientation == "RAS" and vol.array.dtype == np.int16
    np.testing.assert_allclose(vol.spacing, (0.8, 0.7, 2.0), atol=1e-6)
    # DICOM column i → LPS +x (patient left) becomes RAS −X: the array is flipped along X and Y
    np.testing.assert_array_equal(vol.array, hu[::-1, ::-1, :])
    idx = np.argwhere(vol.array == 1500)[0]
    world = vol.affine @ np.r_[idx, 1.0]
    np.testing.assert_allclose(world[:3], [10.0 - 2 * 0.8, 20.0 - 3 * 0.7, 2.0], atol=1e-6)  # LPS (-10+..) → RAS


def test_dicom_float_rescale_and_list_of_files(tmp_path):
    hu = np.maximum(ct_array((16, 16, 5)), -1000)  # stored = (hu + 1000) / 0.5 must be unsigned
    paths = write_dicom_series(tmp_path / "s", hu, slope=0.5, intercept=-1000.0)
    vol = load_ct(paths)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, hu[::-1, ::-1, :], atol=0.5)


def test_most_slices_ct_series_is_chosen_and_said(tmp_path):
    d = tmp_path / "study"
    write_dicom_series(d / "thin", ct_array((16, 16, 9)), series_uid="1.2.3.1", series_description="thin")
    write_dicom_series(d / "thick", ct_array((16, 16, 4)), series_uid="1.2.3.2", series_description="thick")
    for k in range(12):
        write_dicom_slice(d / "mr" / f"{k}.dcm", np.full((16, 16), 200, np.uint16), position=(0, 0, k),
                          modality="MR", series_uid="1.2.3.3", intercept=0.0)
    vol = load_ct(d)
    assert vol.shape[2] == 9
    assert vol.source["series"]["n_slices"] == 9
    assert "description" not in vol.source["series"]  # free text, may carry PHI (DICOM PS3.15)
    assert "most slices among 2 CT series" in vol.source["series_reason"]
    assert any("several CT series" in w for w in vol.warnings)
    assert len(vol.source["candidates"]) == 3


def test_metadata_is_phi_free_unless_age_sex_allowed(tmp_path):
    write_dicom_series(tmp_path / "s", ct_array((16, 16, 4)))
    vol = load_ct(tmp_path / "s")
    blob = json.dumps([vol.metadata, vol.source, vol.warnings], default=str)
    for phi in ("Doe", "Jane", "ID-123456", "19500101", "20240101", "General Hospital", "071Y", "1.2.826"):
        assert phi not in blob
    assert vol.metadata["manufacturer"] == "ACME" and vol.metadata["kvp"] == 120.0
    assert vol.metadata["kernel"] == "B30f" and vol.metadata["contrast"] is False
    kept = load_ct(tmp_path / "s", keep_age_sex=True)
    assert kept.metadata["age"] == "071Y" and kept.metadata["sex"] == "F"


def test_duplicate_slices_are_dropped_with_warning(tmp_path):
    hu = ct_array((16, 16, 4))
    write_dicom_series(tmp_path / "s", hu, shuffle=False)
    write_dicom_slice(tmp_path / "s" / "dup.dcm", (hu[:, :, 2].T + 1024).astype(np.uint16), position=(-10, -20, 4.0))
    vol = load_ct(tmp_path / "s")
    assert vol.shape == (16, 16, 4)
    assert any("duplicate" in w for w in vol.warnings)


# ---------------------------------------------------------------------------------------- HU sanity rules
def test_offset_by_1024_is_corrected_and_logged(tmp_path, caplog):
    hu = ct_array((24, 20, 8))
    vol = load_ct(write_nifti(tmp_path / "u.nii.gz", (hu.astype(np.int32) + 1024).astype(np.uint16)))
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.array.dtype == np.int16
    assert any("subtracted 1024" in w for w in vol.warnings)
    assert any("HU correction" in r.getMessage() for r in caplog.records)


def test_double_rescale_is_corrected(tmp_path):
    hu = ct_array((24, 20, 8))
    vol = load_ct(write_nifti(tmp_path / "d.nii.gz", (hu - 1024).astype(np.int16)))
    np.testing.assert_array_equal(vol.array, hu)
    assert any("applied twice" in w for w in vol.warnings)


def test_outside_fov_padding_is_not_mistaken_for_an_offset(tmp_path):
    hu = ct_array((24, 20, 8))
    hu[:3] = -3024  # GE/Siemens padding outside the reconstruction circle
    vol = load_ct(write_nifti(tmp_path / "p.nii.gz", hu))
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.warnings == []


# ------------------------------------------------------------------------------------- other formats, limits
def test_nrrd_lps_matches_nifti(tmp_path):
    import nrrd

    hu = ct_array((24, 20, 8))
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.8, 0.7, 2.0]),
              "space origin": np.array([-10.0, -20.0, 5.0])}
    nrrd.write(str(tmp_path / "v.nrrd"), hu, header)
    vol = load_ct(tmp_path / "v.nrrd")
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff = lps_to_ras @ np.array([[0.8, 0, 0, -10], [0, 0.7, 0, -20], [0, 0, 2.0, 5], [0, 0, 0, 1]])
    ref = load_ct(_nifti_with_affine(tmp_path, hu, aff))
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-6)


def _nifti_with_affine(tmp_path: Path, arr: np.ndarray, aff: np.ndarray) -> Path:
    p = tmp_path / "aff.nii.gz"
    nib.save(nib.Nifti1Image(arr, aff), str(p))
    return p


def test_npy_and_npz_need_spacing(tmp_path):
    hu = ct_array((24, 20, 8))
    np.save(tmp_path / "v.npy", hu)
    vol = load_ct(tmp_path / "v.npy", spacing=(0.7, 0.7, 1.5))
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == (0.7, 0.7, 1.5) and any("RAS voxel order" in w for w in vol.warnings)
    np.savez_compressed(tmp_path / "v.npz", ct=hu, spacing=np.array([1.0, 1.0, 2.0]))
    assert load_ct(tmp_path / "v.npz").spacing == (1.0, 1.0, 2.0)


def test_spacing_argument_overrides_header_with_warning(tmp_path):
    p = write_nifti(tmp_path / "v.nii.gz", ct_array((24, 20, 8)), zooms=(1.0, 1.0, 1.0))
    vol = load_ct(p, spacing=(0.5, 0.5, 2.0))
    assert vol.spacing == (0.5, 0.5, 2.0) and any("replaced" in w for w in vol.warnings)


def test_limits_from_config_and_enforced(tmp_path):
    from chatapp.config import load_config
    from vision.errors import GeometryError, UnsupportedFormatError

    lim = IngestLimits.from_config(load_config(overrides=["vision.max_upload_mb=1", "vision.zip_max_ratio=50"]))
    assert lim.max_file_mb == 1 and lim.zip_max_ratio == 50
    big = write_nifti(tmp_path / "big.nii", np.zeros((128, 128, 40), np.int16) - 1000)
    with pytest.raises(UnsupportedFormatError, match="over the 1 MB limit"):
        load_ct(big, limits=lim)
    with pytest.raises(GeometryError, match="beyond the limits"):
        load_ct(big, limits=IngestLimits(max_voxels=100_000))


def test_zip_or_folder_holding_one_nifti(tmp_path):
    hu = ct_array((24, 20, 8))
    (tmp_path / "one").mkdir()
    nii = write_nifti(tmp_path / "one" / "ct.nii.gz", hu)
    np.testing.assert_array_equal(load_ct(tmp_path / "one").array, hu)
    with zipfile.ZipFile(tmp_path / "ct.zip", "w") as zf:
        zf.write(nii, "ct.nii.gz")
    vol = load_ct(tmp_path / "ct.zip")
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.source["format"] == "nifti" and vol.source["container"] == "zip"


def test_nifti_scl_slope_and_intercept(tmp_path):
    hu = ct_array((24, 20, 8))
    img = nib.Nifti1Image((hu.astype(np.int32) + 1024).astype(np.uint16), np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(tmp_path / "i.nii.gz"))
    vol = load_ct(tmp_path / "i.nii.gz")
    assert vol.array.dtype == np.int16 and vol.warnings == []
    np.testing.assert_array_equal(vol.array, hu)
    img = nib.Nifti1Image(((hu.astype(np.int32) + 1024) * 2).astype(np.uint16), np.eye(4))
    img.header.set_slope_inter(0.5, -1024.0)
    nib.save(img, str(tmp_path / "f.nii.gz"))
    vol = load_ct(tmp_path / "f.nii.gz")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, hu)


def test_cli_inspect_npy_with_spacing(tmp_path, capsys):
    np.save(tmp_path / "v.npy", ct_array((24, 20, 8)))
    assert main(["inspect", str(tmp_path / "v.npy"), "--spacing", "0.7", "0.7", "1.5", "--no-png"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spacing"] == [0.7, 0.7, 1.5] and out["format"] == "npy" and "png" not in out
