"""Pure-data registries shared by the CLI, the UI, the labeler/router, the phantom generator and the model.

No torch, no numpy: importing this module is instant. Order matters and is part of the contract:
``FINDINGS`` follows the column order of the CT-RATE label files, ``REGIONS`` follows the RadGenome-ChestCT
report order (which is also the section order of a ctscribe report).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    name: str  # exact CT-RATE column name, e.g. "Lung nodule"
    key: str  # snake_case identifier used in file names and JSON keys
    region: str  # primary RadGenome region key the finding is reported under
    synonyms: tuple[str, ...] = field(default=())  # common wordings in reports (the labeler has the full rules)


@dataclass(frozen=True)
class Region:
    key: str  # snake_case key used in files (DIR/regions/<key>.nii.gz) and JSON
    radgenome_name: str  # the region name used by RadGenome-ChestCT region reports
    label: str  # human-readable section title
    totalseg_classes: tuple[str, ...] = field(default=())  # TotalSegmentator (v2 'total' task) classes that make it up


FINDINGS: tuple[Finding, ...] = (
    Finding("Medical material", "medical_material", "mediastinum",
            ("pacemaker", "stent", "catheter", "port", "prosthesis", "surgical clips", "sternotomy wires")),
    Finding("Arterial wall calcification", "arterial_wall_calcification", "mediastinum",
            ("atherosclerotic calcification", "atheromatous plaque", "calcified plaque in the aorta")),
    Finding("Cardiomegaly", "cardiomegaly", "heart", ("enlarged heart", "increased cardiac size")),
    Finding("Pericardial effusion", "pericardial_effusion", "heart", ("pericardial fluid", "pericardial thickening")),
    Finding("Coronary artery wall calcification", "coronary_artery_wall_calcification", "heart",
            ("coronary calcification", "calcified coronary plaque")),
    Finding("Hiatal hernia", "hiatal_hernia", "esophagus", ("hiatus hernia", "sliding hernia")),
    Finding("Lymphadenopathy", "lymphadenopathy", "mediastinum",
            ("enlarged lymph nodes", "pathologically enlarged lymph node", "lymph nodes of pathological size")),
    Finding("Emphysema", "emphysema", "lung", ("emphysematous changes", "bullae", "centrilobular emphysema")),
    Finding("Atelectasis", "atelectasis", "lung", ("subsegmental atelectasis", "hypoventilation", "collapse")),
    Finding("Lung nodule", "lung_nodule", "lung", ("nodule", "nodular density", "micronodule")),
    Finding("Lung opacity", "lung_opacity", "lung", ("ground glass opacity", "ground-glass", "opacity", "infiltration")),
    Finding("Pulmonary fibrotic sequela", "pulmonary_fibrotic_sequela", "lung",
            ("fibrotic changes", "sequelae changes", "fibroatelectasis", "parenchymal band")),
    Finding("Pleural effusion", "pleural_effusion", "pleura", ("pleural fluid", "fluid in the pleural space")),
    Finding("Mosaic attenuation pattern", "mosaic_attenuation_pattern", "lung", ("mosaic attenuation", "mosaic perfusion")),
    Finding("Peribronchial thickening", "peribronchial_thickening", "trachea_and_bronchi",
            ("bronchial wall thickening", "peribronchial cuffing")),
    Finding("Consolidation", "consolidation", "lung", ("consolidative area", "air bronchogram")),
    Finding("Bronchiectasis", "bronchiectasis", "trachea_and_bronchi", ("bronchiectatic changes", "dilated bronchi")),
    Finding("Interlobular septal thickening", "interlobular_septal_thickening", "lung",
            ("septal thickening", "interlobular septa thickened")),
)

FINDING_NAMES: tuple[str, ...] = tuple(f.name for f in FINDINGS)
FINDING_KEYS: tuple[str, ...] = tuple(f.key for f in FINDINGS)

_LUNG_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
               "lung_lower_lobe_right")
_VERTEBRAE = tuple(f"vertebrae_{v}" for v in ("C7", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10",
                                               "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"))
_RIBS = tuple(f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13))

REGIONS: tuple[Region, ...] = (
    Region("lung", "lung", "Lungs", _LUNG_LOBES),
    Region("trachea_and_bronchi", "trachea and bronchie", "Trachea and bronchi", ("trachea",)),
    Region("mediastinum", "mediastinum", "Mediastinum",
           ("aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left",
            "common_carotid_artery_right", "common_carotid_artery_left", "brachiocephalic_vein_left",
            "brachiocephalic_vein_right", "superior_vena_cava", "atrial_appendage_left")),
    Region("heart", "heart", "Heart", ("heart",)),
    Region("esophagus", "esophagus", "Esophagus", ("esophagus",)),
    Region("pleura", "pleura", "Pleura", ()),  # no TotalSegmentator class: derived as a shell around the lungs
    Region("bone", "bone", "Bones", _VERTEBRAE + _RIBS + ("sternum", "costal_cartilages", "clavicula_left",
                                                          "clavicula_right", "scapula_left", "scapula_right",
                                                          "humerus_left", "humerus_right")),
    Region("thyroid", "thyroid", "Thyroid", ("thyroid_gland",)),
    Region("breast", "breast", "Breast", ()),  # no TotalSegmentator class in the 'total' task: derived from body fat
    Region("abdomen", "abdomen", "Upper abdomen",
           ("liver", "spleen", "kidney_left", "kidney_right", "stomach", "pancreas", "gallbladder",
            "adrenal_gland_left", "adrenal_gland_right", "duodenum", "small_bowel", "colon")),
)

REGION_KEYS: tuple[str, ...] = tuple(r.key for r in REGIONS)


@dataclass(frozen=True)
class Window:
    name: str
    center: float  # HU
    width: float  # HU

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2


WINDOWS: dict[str, Window] = {
    "lung": Window("lung", -600, 1500),
    "mediastinum": Window("mediastinum", 40, 400),
    "bone": Window("bone", 400, 1800),
    "abdomen": Window("abdomen", 50, 350),
}


def finding(name_or_key: str) -> Finding:
    """Look a finding up by CT-RATE name or key (case-insensitive)."""
    q = name_or_key.strip().lower()
    for f in FINDINGS:
        if q in (f.name.lower(), f.key):
            return f
    raise KeyError(f"unknown finding {name_or_key!r}; known: {', '.join(FINDING_NAMES)}")


def region(key: str) -> Region:
    q = key.strip().lower().replace(" ", "_")
    for r in REGIONS:
        if q in (r.key, r.radgenome_name.replace(" ", "_")):
            return r
    raise KeyError(f"unknown region {key!r}; known: {', '.join(REGION_KEYS)}")
