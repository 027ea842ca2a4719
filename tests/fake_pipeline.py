"""A fast, deterministic stand-in for ``chatapp.pipeline.Pipeline`` used by the app tests and the browser tests.

It honours the Pipeline contract (``analyze``/``report``/``ask``/``ask_stream``/``knowledge``) without any model:
the volume is a synthetic chest phantom (64x64x48, 1.5 mm voxels) whose study id is the sha256 of the uploaded
bytes, so two different uploads give two different studies and every report sentence names its study id (the
session-isolation tests look for it). Unsupported files raise ``UnsupportedFormatError`` like the real loader.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from chatapp.schema import DEMO_WEIGHTS_NOTICE, Answer, Citation, Evidence, Report, Section, Sentence, Study
from vision.errors import InputNotFoundError, UnsupportedFormatError
from vision.registry import region as region_info
from vision.schema import Measurement
from vision.volume import CTVolume

SHAPE = (64, 64, 48)
SUFFIXES = (".zip", ".nii", ".nii.gz", ".nrrd", ".npy", ".dcm")

KB = {
    "fleischner-2017-solid": Citation(
        n=1, key="fleischner-2017-solid", title="Fleischner Society 2017: solid nodules", source="Radiology 2017",
        section="Solid nodules", text="For a single solid nodule under 6 mm in a low-risk patient no routine "
        "follow-up is required (synthetic test passage)."),
    "emphysema-laa": Citation(
        n=2, key="emphysema-laa", title="Quantifying emphysema with LAA-950", source="Test knowledge base",
        text="The percentage of lung voxels below -950 HU estimates emphysema extent (synthetic test passage)."),
}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def _phantom(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Air outside, soft tissue body, two lungs, a heart, a spine and one nodule whose position depends on seed."""
    x, y, z = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    body = ((x - 32) / 28) ** 2 + ((y - 32) / 22) ** 2 <= 1
    arr = np.full(SHAPE, -1000, np.int16)
    arr[body] = 40
    lung_l = (((x - 20) / 9) ** 2 + ((y - 34) / 13) ** 2 <= 1) & (z > 4) & (z < 44)  # RAS: low X = left
    lung_r = (((x - 44) / 9) ** 2 + ((y - 34) / 13) ** 2 <= 1) & (z > 4) & (z < 44)
    lung = lung_r | lung_l
    arr[lung] = -850
    heart = ((x - 34) / 7) ** 2 + ((y - 24) / 7) ** 2 + ((z - 18) / 8) ** 2 <= 1
    arr[heart] = 45
    bone = ((x - 32) / 4) ** 2 + ((y - 50) / 4) ** 2 <= 1
    arr[bone] = 700
    rng = np.random.default_rng(seed)
    c = (int(rng.integers(40, 48)), int(rng.integers(28, 40)), int(rng.integers(12, 36)))
    nodule = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= 4
    arr[nodule] = 30
    regions = {"lung": lung, "heart": heart, "bone": bone}
    return arr, regions, {"findings/lung_nodule_1": nodule}


class FakePipeline:
    """Pipeline look-alike. ``delay`` (s) slows ``analyze`` down so concurrency and progress can be observed."""

    def __init__(self, delay: float = 0.0, demo_weights: bool = True):
        self.delay = delay
        self.weights = f"fake-checkpoint ({DEMO_WEIGHTS_NOTICE})" if demo_weights else "fake-checkpoint"

    @classmethod
    def from_config(cls, config: Any = None, **overrides: Any) -> FakePipeline:
        return cls(**overrides)

    def analyze(self, path: str | Path, *, progress: Callable[[float, str], None] | None = None) -> Study:
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"{p} does not exist; upload a DICOM zip/folder or a NIfTI file")
        if p.is_file() and not p.name.lower().endswith(SUFFIXES) and not p.name.startswith("CT."):
            raise UnsupportedFormatError(f"{p.name} is not a CT file ctscribe can read; upload a DICOM zip or folder, "
                                         "or a NIfTI (.nii/.nii.gz) file")
        if p.is_file() and p.suffix == ".zip" and not zipfile.is_zipfile(p):
            raise UnsupportedFormatError(f"{p.name} is not a valid zip archive; re-create the zip and upload it again")
        steps = ("loading", "regions", "encoding")
        for i, step in enumerate(steps):
            if progress:
                progress(i / len(steps), step)
            time.sleep(self.delay / len(steps))
        sid = _digest(p)
        arr, regions, findings = _phantom(int(sid[:8], 16))
        vol = CTVolume(array=arr, spacing=(1.5, 1.5, 2.0), affine=np.diag([1.5, 1.5, 2.0, 1.0]),
                       source={"format": "fake"})
        nod_vox = int(findings["findings/lung_nodule_1"].sum())
        meas = [
            Measurement("lung_volume_ml", round(float(regions["lung"].sum()) * 4.5 / 1000, 1), "mL",
                        "voxels below -400 HU inside the lung mask", "lung"),
            Measurement("nodule", 4.0, "mm", "largest axial diameter of the connected component", "lung",
                        extra={"diameter_mm": 4.0, "volume_mm3": nod_vox * 4.5}),
        ]
        if progress:
            progress(1.0, "analysis done")
        return Study(study_id=sid, volume=vol, regions=regions, finding_masks=findings, measurements=meas,
                     probabilities={"Lung nodule": 0.81, "Emphysema": 0.12}, weights=self.weights,
                     absent_regions=["breast"])

    def report(self, study: Study) -> Report:
        tag = study.study_id[:8]
        lung = Section("lung", region_info("lung").label, [
            Sentence(f"A 4 mm solid nodule is seen in the right lung (study {tag}).", "lung",
                     "findings/lung_nodule_1", [Evidence("measurement", "nodule diameter = 4.0 mm", 4.0, "nodule"),
                                                Evidence("probability", "P(Lung nodule) = 0.81", 0.81,
                                                         "Lung nodule")],
                     source="measured", confidence=0.81, findings=["Lung nodule"], id="s1"),
            Sentence("No emphysema.", "lung", "regions/lung",
                     [Evidence("probability", "P(Emphysema) = 0.12", 0.12, "Emphysema")],
                     source="model", confidence=0.88, id="s2"),
        ])
        heart = Section("heart", region_info("heart").label, [
            Sentence("Heart size is normal.", "heart", "regions/heart", [], source="normal", confidence=0.9,
                     id="s3")])
        bone = Section("bone", region_info("bone").label, [
            Sentence("No destructive bone lesion.", "bone", "regions/bone", [], source="normal", id="s4")])
        imp = Section("impression", "Impression", [
            Sentence("Small solid pulmonary nodule [1].", "impression", "findings/lung_nodule_1", [],
                     source="guideline", citations=[1], id="s5")])
        rec = Section("recommendations", "Recommendations", [
            Sentence("No routine follow-up is required for a nodule under 6 mm in a low-risk patient [1].",
                     "recommendations", None, [], source="guideline", citations=[1], id="s6")])
        return Report(study_id=study.study_id, sections=[lung, heart, bone, imp, rec],
                      citations=[KB["fleischner-2017-solid"]], weights=study.weights)

    def ask(self, study: Study, question: str, history: list[dict] | None = None) -> Answer:
        ans: Answer | None = None
        for part in self.ask_stream(study, question, history):
            if isinstance(part, Answer):
                ans = part
        assert ans is not None
        return ans

    def ask_stream(self, study: Study, question: str, history: list[dict] | None = None) -> Iterator[str | Answer]:
        q = question.lower()
        if "nodule" in q or "follow" in q:
            text = f"There is one 4 mm solid nodule in the right lung of study {study.study_id[:8]} [1]."
            cites = [KB["fleischner-2017-solid"]]
        else:
            text = f"Study {study.study_id[:8]}: the lungs are otherwise clear [1]."
            cites = [Citation(**{**KB["emphysema-laa"].to_dict(), "n": 1})]
        words = text.split(" ")
        for i, w in enumerate(words):
            yield w + (" " if i < len(words) - 1 else "")
        yield Answer(text=text, citations=cites, evidence=[Evidence("measurement", "nodule diameter = 4.0 mm")],
                     kind="size", weights=self.weights)

    def knowledge(self, key: str) -> Citation | None:
        return KB.get(key)
