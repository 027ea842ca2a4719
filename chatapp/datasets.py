"""Training data adapters. Every source yields ``Example``s: a volume loader, 18 finding labels (NaN = unknown),
and (prompt messages, target text) pairs for report generation and VQA.

- ``CTRateSource``: the CT-RATE layout — a volume folder (searched recursively for ``VolumeName`` files), a reports CSV
  (``VolumeName, Findings_EN, Impressions_EN, ...``) and a labels CSV (``VolumeName`` + the 18 finding columns).
- ``RadGenomeVQASource``: RadGenome-ChestCT VQA CSVs (presence / abnormality / location / size) joined to volumes.
- ``PhantomSource``: synthetic phantoms from ``vision.phantom`` with their labels and report.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vision.errors import ConfigError, InputNotFoundError
from vision.registry import FINDING_NAMES, FINDINGS
from vision.volume import CTVolume

REPORT_TASK = "Write the findings section of the radiology report for this chest CT."


@dataclass
class Example:
    """One volume and its supervision.

    Attributes:
        key: stable id (volume name or phantom seed).
        load: returns the ``CTVolume`` (called once; encoder features are cached by content hash).
        labels: 18 floats in registry order: 1 present, 0 absent, NaN unknown.
        pairs: (user question, target answer) pairs; the first is usually the report task.
    """

    key: str
    load: Callable[[], CTVolume]
    labels: list[float]
    pairs: list[tuple[str, str]] = field(default_factory=list)


def presence_questions(labels: list[float], rng: random.Random, n: int = 2) -> list[tuple[str, str]]:
    """Yes/no VQA pairs about known findings (balanced between present and absent where possible)."""
    known = [(f, y) for f, y in zip(FINDINGS, labels) if not math.isnan(y)]
    pos = [f for f, y in known if y >= 0.5]
    neg = [f for f, y in known if y < 0.5]
    out = []
    for i in range(n):
        pool = pos if (i % 2 == 0 and pos) or not neg else neg
        if not pool:
            break
        f = rng.choice(pool)
        ans = "Yes." if f in pos else "No."
        out.append((f"Is there {f.name.lower()} in this scan?", ans))
    return out


def _load_nifti(path: Path) -> CTVolume:
    try:
        from vision.io import load_ct  # engineer A's loader (HU checks, RAS, metadata)

        return load_ct(path)
    except ImportError:
        import nibabel as nib
        import numpy as np

        img = nib.as_closest_canonical(nib.load(str(path)))
        arr = np.asarray(img.dataobj, dtype=np.float32)
        return CTVolume(arr, tuple(float(z) for z in img.header.get_zooms()[:3]), img.affine,
                        source={"format": "nifti"})


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not Path(path).exists():
        raise InputNotFoundError(f"CSV file {path} does not exist; check the dataset paths in the train config")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _index_volumes(folder: Path) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"volume folder {folder} does not exist; set train.data.volumes to the folder "
                                 "holding the .nii.gz files (searched recursively)")
    return {p.name: p for p in folder.rglob("*.nii*")}


def _labels_from_row(row: dict[str, str]) -> list[float]:
    out = []
    for name in FINDING_NAMES:
        v = row.get(name, "")
        out.append(float(v) if str(v).strip() not in ("", "nan", "NaN") else float("nan"))
    return out


class CTRateSource:
    """CT-RATE layout: volumes folder + reports CSV + labels CSV, joined on ``VolumeName``."""

    def __init__(self, volumes: Path, reports_csv: Path, labels_csv: Path | None = None, vqa_per_volume: int = 2,
                 seed: int = 0, limit: int | None = None):
        vols = _index_volumes(volumes)
        labels = {r["VolumeName"]: _labels_from_row(r) for r in _read_csv(labels_csv)} if labels_csv else {}
        rng = random.Random(seed)
        self.examples: list[Example] = []
        for row in _read_csv(reports_csv):
            name = row.get("VolumeName", "")
            if name not in vols:
                continue
            findings = (row.get("Findings_EN") or "").strip()
            impression = (row.get("Impressions_EN") or "").strip()
            target = findings + (f"\nImpression: {impression}" if impression else "")
            lab = labels.get(name, [float("nan")] * len(FINDING_NAMES))
            pairs = [(REPORT_TASK, target)] + presence_questions(lab, rng, vqa_per_volume)
            self.examples.append(Example(name, lambda p=vols[name]: _load_nifti(p), lab, pairs))
            if limit and len(self.examples) >= limit:
                break
        if not self.examples:
            raise InputNotFoundError(f"no report in {reports_csv} matches a volume under {volumes} (joined on "
                                     "VolumeName); check the paths")

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __len__(self) -> int:
        return len(self.examples)


class RadGenomeVQASource:
    """RadGenome-ChestCT VQA CSVs (``train_vqa_{presence,abnormality,location,size}.csv``) joined to volumes."""

    def __init__(self, volumes: Path, vqa_csvs: list[Path], labels_csv: Path | None = None,
                 per_volume: int = 4, seed: int = 0):
        vols = _index_volumes(volumes)
        labels = {r["VolumeName"]: _labels_from_row(r) for r in _read_csv(labels_csv)} if labels_csv else {}
        pairs: dict[str, list[tuple[str, str]]] = {}
        for path in vqa_csvs:
            for r in _read_csv(path):
                name, region = r.get("Volumename", ""), (r.get("Anatomy") or "").split("/")[-1]
                if name not in vols:
                    continue
                if "Presence" in r:
                    q, a = f"Is {r['Finding']} seen in the {region}?", r["Presence"]
                elif "Size" in r:
                    q, a = f"How large is the {r['Abnormality']} in the {region}?", r["Size"]
                elif "location" in Path(path).name:
                    q, a = f"Where is the {r['Abnormality']} located?", region
                else:
                    q, a = f"Which abnormalities are seen in the {region}?", r["Abnormality"]
                pairs.setdefault(name, []).append((q, a))
        rng = random.Random(seed)
        self.examples = [Example(n, lambda p=vols[n]: _load_nifti(p),
                                 labels.get(n, [float("nan")] * len(FINDING_NAMES)),
                                 rng.sample(ps, min(per_volume, len(ps)))) for n, ps in sorted(pairs.items())]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __len__(self) -> int:
        return len(self.examples)


class PhantomSource:
    """Synthetic phantoms (``vision.phantom.make_phantom``) with exact labels and their generated report."""

    def __init__(self, n: int, seed: int = 0, shape: tuple[int, int, int] = (96, 96, 64),
                 spacing: tuple[float, float, float] = (4.0, 4.0, 5.0), vqa_per_volume: int = 2):
        try:
            from vision import phantom  # noqa: F401
        except ImportError:
            raise ConfigError("the phantom data source needs vision.phantom (the synthetic phantom generator)") \
                from None
        self.n, self.seed, self.shape, self.spacing, self.vqa = int(n), int(seed), tuple(shape), tuple(spacing), \
            int(vqa_per_volume)

    def make(self, i: int):
        from vision.phantom import make_phantom, random_findings

        s = self.seed + i
        return make_phantom(s, shape=self.shape, spacing=self.spacing, findings=random_findings(s))

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Example]:
        for i in range(self.n):
            ph = self.make(i)  # generated once here; phantoms are cheap relative to encoding
            lab = [float(ph.labels.get(n, 0)) for n in FINDING_NAMES]
            rng = random.Random(self.seed + i)
            pairs = [(REPORT_TASK, _report_text(ph.report))] + presence_questions(lab, rng, self.vqa)
            yield Example(f"phantom-{self.seed + i}", lambda v=ph.volume: v, lab, pairs)


def _report_text(report) -> str:
    if isinstance(report, str):
        return report
    if isinstance(report, dict):
        return str(report.get("findings") or report.get("text") or " ".join(str(v) for v in report.values()))
    return str(getattr(report, "findings", None) or getattr(report, "text", None) or report)


def build_source(spec: dict, base: Path | None = None):
    """Build a data source from a ``train.data`` config mapping (``kind: ctrate|radgenome|phantom``)."""
    kind = str(spec.get("kind", ""))

    def p(key: str) -> Path | None:
        v = spec.get(key)
        if v is None:
            return None
        q = Path(str(v)).expanduser()
        return q if q.is_absolute() or base is None else base / q

    if kind == "ctrate":
        return CTRateSource(p("volumes"), p("reports_csv"), p("labels_csv"), int(spec.get("vqa_per_volume", 2)),
                            int(spec.get("seed", 0)), spec.get("limit"))
    if kind == "radgenome":
        csvs = [Path(c) if base is None or Path(c).is_absolute() else base / c for c in spec.get("vqa_csvs", [])]
        return RadGenomeVQASource(p("volumes"), csvs, p("labels_csv"), int(spec.get("per_volume", 4)),
                                  int(spec.get("seed", 0)))
    if kind == "phantom":
        return PhantomSource(int(spec.get("n", 64)), int(spec.get("seed", 0)),
                             tuple(spec.get("shape", (96, 96, 64))), tuple(spec.get("spacing", (4.0, 4.0, 5.0))),
                             int(spec.get("vqa_per_volume", 2)))
    raise ConfigError(f"train.data.kind={kind!r}: use ctrate, radgenome or phantom")
