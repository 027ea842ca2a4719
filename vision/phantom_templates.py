"""Report sentences written for ctscribe (CT-RATE style), as pure data plus one small renderer.

The report engine may reuse these tables: ``REGION_NORMAL`` (one sentence per RadGenome region when it has no
finding), ``NEGATIVES`` (a finding's negation, said in a region that has other findings), ``POSITIVE`` (per finding,
``str.format`` templates over that finding's measurements plus ``location``/``side_phrase``) and ``IMPRESSION``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vision.registry import FINDINGS, REGION_KEYS

REGION_NORMAL: dict[str, str] = {
    "lung": "Both lungs are normally aerated, without nodule, consolidation or ground-glass opacity.",
    "trachea_and_bronchi": "Trachea and both main bronchi are patent.",
    "mediastinum": "Mediastinal vascular structures are of normal calibre; no lymph node of pathological size.",
    "heart": "Heart size is normal. No pericardial effusion.",
    "esophagus": "The esophagus is of normal calibre.",
    "pleura": "No pleural effusion or pleural thickening.",
    "bone": "No lytic or destructive lesion in the visible bones.",
    "thyroid": "The visible thyroid is unremarkable.",
    "breast": "No mass in the visible breast tissue.",
    "abdomen": "The visible upper abdominal organs are unremarkable.",
}

NEGATIVES: dict[str, str] = {
    "cardiomegaly": "Heart size is normal.",
    "pericardial_effusion": "No pericardial effusion.",
    "lymphadenopathy": "No lymph node of pathological size.",
    "lung_nodule": "No pulmonary nodule.",
    "consolidation": "No consolidation.",
    "pleural_effusion": "No pleural effusion.",
}

POSITIVE: dict[str, str] = {
    "medical_material:pacemaker": "A cardiac pacemaker is seen in the left anterior chest wall, with its lead "
                                  "extending into the right heart.",
    "medical_material:sternal_wires": "Median sternotomy wires are present.",
    "medical_material:port": "A right chest wall port is present, with its catheter in the superior vena cava.",
    "arterial_wall_calcification": "Calcified atherosclerotic plaques in the wall of the thoracic aorta.",
    "cardiomegaly": "The heart is enlarged (cardiothoracic ratio {ctr:.2f}).",
    "pericardial_effusion": "Pericardial effusion up to {thickness_mm:.0f} mm thick.",
    "coronary_artery_wall_calcification": "Calcified plaques in the coronary arteries ({vessel_list}).",
    "hiatal_hernia": "{article} {diameter_mm:.0f} mm hiatal hernia containing air and fluid behind the heart.",
    "lymphadenopathy": "{count_phrase} of pathological size in the mediastinum, the largest {short_axis_mm:.0f} mm "
                       "in short axis.",
    "emphysema": "Centrilobular emphysema, upper-lobe predominant, {side_phrase} (LAA-950 {laa950_percent:.1f}% of "
                 "the lung volume).",
    "atelectasis": "Subsegmental atelectasis at the {side} lung base.",
    "lung_nodule": "{article} {diameter_mm:.0f} mm solid nodule in the {location}.",
    "lung_opacity": "A ground-glass opacity in the {location}.",
    "pulmonary_fibrotic_sequela": "Fibrotic sequelae with parenchymal bands in the {location}.",
    "pleural_effusion": "{side_cap} pleural effusion, up to {max_depth_mm:.0f} mm deep.",
    "mosaic_attenuation_pattern": "Mosaic attenuation pattern in both lungs.",
    "peribronchial_thickening": "Peribronchial thickening {side_phrase}.",
    "consolidation": "Consolidation with air bronchograms in the {location}.",
    "bronchiectasis": "Cylindrical bronchiectasis in the {location}, bronchi up to {lumen_diameter_mm:.0f} mm wide.",
    "interlobular_septal_thickening": "Interlobular septal thickening at the lung periphery {side_phrase}.",
}

IMPRESSION: dict[str, str] = {
    "medical_material": "Medical material ({type}).",
    "arterial_wall_calcification": "Aortic atherosclerosis.",
    "cardiomegaly": "Cardiomegaly.",
    "pericardial_effusion": "Pericardial effusion.",
    "coronary_artery_wall_calcification": "Coronary artery calcification.",
    "hiatal_hernia": "Hiatal hernia.",
    "lymphadenopathy": "Mediastinal lymphadenopathy.",
    "emphysema": "Emphysema.",
    "atelectasis": "Basal atelectasis ({side}).",
    "lung_nodule": "Pulmonary nodule{plural} ({nodule_summary}).",
    "lung_opacity": "Ground-glass opacity ({location}).",
    "pulmonary_fibrotic_sequela": "Fibrotic sequelae ({location}).",
    "pleural_effusion": "{side_cap} pleural effusion.",
    "mosaic_attenuation_pattern": "Mosaic attenuation.",
    "peribronchial_thickening": "Peribronchial thickening.",
    "consolidation": "Consolidation ({location}).",
    "bronchiectasis": "Bronchiectasis ({location}).",
    "interlobular_septal_thickening": "Interlobular septal thickening.",
}

IMPRESSION_NORMAL = "No significant abnormality in the thorax."
VESSEL_NAMES = {"lad": "LAD", "lcx": "circumflex", "rca": "RCA"}
_COUNT_WORDS = {1: "One lymph node", 2: "Two lymph nodes", 3: "Three lymph nodes", 4: "Four lymph nodes"}


def article(number: float) -> str:
    """'An' before numbers read with a leading vowel sound (8, 11, 18, 80-89 mm), else 'A'."""
    n = str(round(number))
    return "An" if n.startswith("8") or n in ("11", "18") else "A"


def _fields(key: str, info: Mapping[str, Any], measurements: Mapping[str, Any]) -> dict[str, Any]:
    f = dict(info.get("params", {}))
    f.update({k: v for k, v in info.items() if k != "params"})
    side = f.get("side", "bilateral")
    f["side_phrase"] = "in both lungs" if side == "bilateral" else f"in the {side} lung"
    f["side_cap"] = "Bilateral" if side == "bilateral" else side.capitalize()
    if "lobe" in f and side in ("left", "right"):
        f["location"] = f"{side} {f['lobe']} lobe"
    f["ctr"] = measurements.get("cardiothoracic_ratio", 0.0)
    f["laa950_percent"] = measurements.get("laa950_percent", 0.0)
    f["vessel_list"] = ", ".join(VESSEL_NAMES.get(v, v) for v in f.get("vessels", ()))
    n = int(f.get("count", 1))
    f["count_phrase"] = _COUNT_WORDS.get(n, f"{n} lymph nodes")
    nods = f.get("nodules", [])
    f["article"] = article(float(f.get("diameter_mm", 1)))
    f["plural"] = "s" if len(nods) > 1 else ""
    f["nodule_summary"] = "; ".join(f"{x['diameter_mm']:.0f} mm, {x['side']} {x['lobe']} lobe" for x in nods)
    return f


def render_report(findings: Mapping[str, Mapping[str, Any]], measurements: Mapping[str, Any]) -> str:
    """CT-RATE style "Findings: ... Impression: ..." text, regions in registry order.

    Args:
        findings: finding key -> {"params": {...}, **finding measurements} for the findings present.
        measurements: phantom-level measurements (``cardiothoracic_ratio``, ``laa950_percent``, ...).
    """
    by_region: dict[str, list[str]] = {r: [] for r in REGION_KEYS}
    impression: list[str] = []
    for f in FINDINGS:  # registry order
        if f.key not in findings:
            continue
        fields = _fields(f.key, findings[f.key], measurements)
        if f.key == "medical_material":
            tmpl = POSITIVE[f"medical_material:{fields.get('type', 'pacemaker')}"]
        else:
            tmpl = POSITIVE[f.key]
        if f.key == "lung_nodule":
            for nod in fields.get("nodules", []):
                by_region[f.region].append(tmpl.format(**{**fields, **nod, "article": article(nod["diameter_mm"]),
                                                          "location": f"{nod['side']} {nod['lobe']} lobe"}))
        else:
            by_region[f.region].append(tmpl.format(**fields))
        impression.append(IMPRESSION[f.key].format(**fields))
    sentences: list[str] = []
    for r in REGION_KEYS:
        if not by_region[r]:
            sentences.append(REGION_NORMAL[r])
            continue
        sentences += by_region[r]
        sentences += [neg for k, neg in NEGATIVES.items()
                      if k not in findings and next(f for f in FINDINGS if f.key == k).region == r]
    return "Findings: " + " ".join(sentences) + "\n\nImpression: " + (" ".join(impression) or IMPRESSION_NORMAL)
