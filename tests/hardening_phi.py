"""A DICOM CT series whose every PHI tag carries a marker (HIPAA Safe Harbor identifiers), and a grep for it.

``write_phi_series(folder)`` writes a small synthetic chest-like CT series; names, IDs, dates, addresses, phone
numbers, institution, device serials/station, physicians, UIDs and free-text comments/descriptions all hold one
of the ``MARKERS`` below. ``find_markers(text_or_bytes)`` returns the markers found (case-insensitive).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from malformed_corpus import write_dicom_series

TEXT = "ZQPHI"  # in every text tag, with the tag name after it
DATE = "19230417"  # every date (and its ISO spelling)
UID = "31337271828"  # inside every UID
AGE = "091Y"  # an age over 89 is itself an identifier
MARKERS = (TEXT, DATE, "1923-04-17", UID, AGE)
DESC = "QXDESCR"  # SeriesDescription, the one free-text tag ctscribe reads (never kept: free text)


def phi_tags() -> dict[str, object]:
    """DICOM keyword → marker value for every identifying tag ctscribe might see."""
    t = {k: f"{TEXT}{k}"[:64] for k in (
        "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "MedicalRecordLocator", "AccessionNumber",
        "PatientAddress", "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress",
        "InstitutionalDepartmentName", "DeviceSerialNumber", "ImageComments", "PatientComments",
        "AdditionalPatientHistory", "StudyDescription", "RequestedProcedureDescription",
        "PerformedProcedureStepDescription", "ProtocolName", "CountryOfResidence", "RegionOfResidence",
        "Occupation", "DerivationDescription", "AdmittingDiagnosesDescription")}
    t["SeriesDescription"] = f"CHEST {DESC}^JANE 1923"
    t["StationName"] = f"{TEXT}STATION"  # SH: 16 chars
    t["StudyID"] = f"{TEXT}STUDY"
    for k in ("OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "ReferringPhysicianName",
              "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy", "RequestingPhysician"):
        t[k] = f"{TEXT}^{k}"
    for k in ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        t[k] = DATE
    t["PatientAge"] = AGE
    t["StudyInstanceUID"] = f"1.2.826.0.1.{UID}.1"
    t["FrameOfReferenceUID"] = f"1.2.826.0.1.{UID}.2"
    return t


def chest_like(shape=(64, 64, 32)) -> np.ndarray:
    """(X, Y, Z) int16 HU: body, two air-filled lungs, a heart and a spine (enough for the classical regions)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    a = np.full(shape, -1000, np.int16)
    a[(x / 0.9) ** 2 + (y / 0.7) ** 2 <= 1] = 40
    for cx in (-0.45, 0.45):
        a[((x - cx) / 0.3) ** 2 + ((y + 0.05) / 0.45) ** 2 + (z / 0.85) ** 2 <= 1] = -850
    a[((x - 0.05) / 0.2) ** 2 + ((y + 0.25) / 0.2) ** 2 + (z / 0.5) ** 2 <= 1] = 45
    a[(x / 0.1) ** 2 + ((y - 0.55) / 0.1) ** 2 <= 1] = 700
    return a


def write_phi_series(folder: Path, shape=(64, 64, 32)) -> list[Path]:
    """Write the marked series (shuffled files) into ``folder``; returns the file paths."""
    tags = phi_tags()
    return write_dicom_series(folder, chest_like(shape), spacing=(5.0, 5.0, 8.0), patient=f"{TEXT}^PatientName",
                              series_uid=f"1.2.826.0.1.{UID}.3", extra=tags)


def _pdf_text(data: bytes) -> bytes:
    """A PDF's bytes plus its inflated streams (text is usually deflated)."""
    out = [data]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
        try:
            out.append(zlib.decompress(m.group(1)))
        except zlib.error:
            pass
    return b"\n".join(out)


def find_markers(data: str | bytes) -> list[str]:
    """The markers present in ``data`` (case-insensitive)."""
    b = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if b.startswith(b"%PDF"):
        b = _pdf_text(b)
    low = b.lower()
    return [m for m in MARKERS if m.lower().encode() in low]


def grep_tree(roots: Iterable[Path]) -> dict[str, list[str]]:
    """path → markers for every file under ``roots`` that holds one."""
    hits: dict[str, list[str]] = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            try:
                found = find_markers(f.read_bytes())
            except OSError:
                continue
            if found:
                hits[str(f)] = found
    return hits
