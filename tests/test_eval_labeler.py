"""The open 18-finding labeler: wording, negation and uncertainty on hand-written sentences, the project's own
generated sentences, and cross-validated accuracy/speed on the 800 radiologist-labelled CT-RATE reports."""

from __future__ import annotations

import re
import time

import pytest

from chatapp.evaluation.labeler import find_mentions, label_report, label_reports
from vision.registry import FINDING_NAMES


def positives(text: str, **kw) -> set[str]:
    return {k for k, v in label_report(text, **kw).items() if v}


def test_all_18_names_in_ctrate_order():
    lab = label_report("")
    assert list(lab) == list(FINDING_NAMES) and len(lab) == 18 and set(lab.values()) == {0}


@pytest.mark.parametrize("text,finding", [
    ("Atheromatous plaques are seen in the thoracic aorta.", "Arterial wall calcification"),
    ("Sequelae changes in the right middle lobe.", "Pulmonary fibrotic sequela"),
    ("There is fluid in the right pleural space.", "Pleural effusion"),
    ("Hypoventilation at both lung bases.", "Atelectasis"),
    ("Calcified plaques in the left anterior descending coronary artery.", "Coronary artery wall calcification"),
    ("The cardiothoracic ratio is increased in favor of the heart.", "Cardiomegaly"),
    ("Small sliding hiatal hernia.", "Hiatal hernia"),
    ("A 16 mm subcarinal lymph node.", "Lymphadenopathy"),
    ("Centrilobular emphysematous changes in both upper lobes.", "Emphysema"),
    ("Ground-glass areas in the left lower lobe.", "Lung opacity"),
    ("Mosaic attenuation pattern in both lungs.", "Mosaic attenuation pattern"),
    ("Increased peribronchial thickness in the lower lobes.", "Peribronchial thickening"),
    ("Patchy consolidation in the right lower lobe.", "Consolidation"),
    ("Cylindrical bronchiectasis in both lower lobes.", "Bronchiectasis"),
    ("Interlobular septal thickening at the lung bases.", "Interlobular septal thickening"),
    ("A port catheter with its tip in the superior vena cava.", "Medical material"),
    ("Minimal pericardial effusion.", "Pericardial effusion"),
    ("Band-like atelectatic changes were noted in the left lower lobe.", "Atelectasis"),  # "were noted" ≠ "were not"
    ("Pleuroparenchymal density increases at both lung apices.", "Pulmonary fibrotic sequela"),
    ("Fluid 7 mm thick is present in the deepest part of the pericardium.", "Pericardial effusion"),
    ("Faint ground-glass areas next to the sequelae bands in the right upper lobe.", "Lung opacity"),
    ("Linear density increases in the lingula, consistent with sequelae.", "Lung opacity"),
])
def test_wordings(text, finding):
    assert finding in positives(text)


@pytest.mark.parametrize("text,finding", [
    ("No pleural effusion.", "Pleural effusion"),
    ("Pleural effusion-thickening was not detected.", "Pleural effusion"),
    ("No enlarged lymph nodes in prevascular, paratracheal or subcarinal stations were detected.", "Lymphadenopathy"),
    ("No suspicious mass, nodule or infiltration was detected in both lungs.", "Lung nodule"),
    ("Pericardial effusion-thickening was not observed.", "Pericardial effusion"),
    ("Without consolidation.", "Consolidation"),
    ("The ground-glass areas described on the prior study have completely regressed.", "Lung opacity"),
    ("Peribronchial thickening, which was present on the prior study, is not seen in the current examination.",
     "Peribronchial thickening"),
])
def test_negation(text, finding):
    assert finding not in positives(text)
    assert any(m.negated for m in find_mentions(text) if m.finding == finding)


@pytest.mark.parametrize("text,finding,other", [
    ("Calcified lymph nodes in the aortopulmonary window.", "Arterial wall calcification", "Lymphadenopathy"),
    ("Dilated ascending aorta, calcified plaques in the coronary arteries.", "Arterial wall calcification",
     "Coronary artery wall calcification"),
    ("Increased density in the anterior mediastinum, compatible with thymic tissue.", "Lung opacity", None),
    ("Hypodense nodules of up to 8 mm are present.", "Lung nodule", None),
    ("Fibro atelectasis at both lung apices.", "Atelectasis", "Pulmonary fibrotic sequela"),
    ("Mosaic density differences in both lungs.", "Lung opacity", "Mosaic attenuation pattern"),
    ("Areas of increased density in the right lower lobe, consistent with consolidation.", "Lung opacity",
     "Consolidation"),
])
def test_wording_that_names_another_finding(text, finding, other):
    """Words that look like ``finding`` but, as CT-RATE radiologists label them, name ``other`` (or nothing)."""
    found = positives(text)
    assert finding not in found
    assert other is None or other in found


def test_negation_scope_ends_at_contrast():
    assert positives("There is no pleural effusion, but bibasilar atelectasis is seen.") == {"Atelectasis"}
    assert positives("No pathological wall thickening in the esophagus, and there is a small hiatal hernia.") == {
        "Hiatal hernia"}


@pytest.mark.parametrize("text", ["Atelectasis cannot be excluded.", "Findings suspicious for atelectasis.",
                                  "Linear density at the left base (atelectasis?)."])
def test_uncertainty(text):
    ms = [m for m in find_mentions(text) if m.finding == "Atelectasis"]
    assert ms and all(m.uncertain and not m.negated for m in ms)
    assert "Atelectasis" in positives(text)
    assert "Atelectasis" not in positives(text, uncertain_positive=False)


def test_context_decides_vessel_and_organ():
    assert positives("Calcific atheroma plaques in the coronary arteries.") == {"Coronary artery wall calcification"}
    assert positives("Calcified plaques in the aorta and coronary arteries.") == {
        "Arterial wall calcification", "Coronary artery wall calcification"}
    assert positives("A 12 mm nodule in the left thyroid lobe.") == set()
    assert positives("Minimal pericardial effusion.") == {"Pericardial effusion"}
    assert positives("Calcific pleural plaques on the right.") == set()
    assert positives("Fibroatelectatic band in the lingula.") == {"Pulmonary fibrotic sequela"}


def test_generated_sentences_of_the_phantom_generator():
    report = ("Trachea and both main bronchi are patent. A 8 mm solid nodule in the right upper lobe. "
              "No pleural effusion. Heart size is normal. No mediastinal lymphadenopathy. "
              "Mild centrilobular emphysema in both upper lobes.")
    assert positives(report) == {"Lung nodule", "Emphysema"}
    m = next(x for x in find_mentions(report) if x.finding == "Lung nodule")
    assert report[m.span[0]:m.span[1]].lower().startswith("nodul")
    assert m.sentence.strip() == "A 8 mm solid nodule in the right upper lobe."


# CV floor: the level reached (issue 3, session 2): mean over 5 folds 0.9574 (dev folds 0-3: 0.9691/0.9648/0.9607/
# 0.9538); fold 4, whose reports nobody has read while writing rules, 0.9385 (was 0.9339, 0.9260 before). Weakest
# labels: Peribronchial thickening 0.899, Lung opacity 0.908. The test fails if a change makes the labeler worse.
CV_MEAN_FLOOR = 0.954
CV_HELDOUT_FOLD_FLOOR = 0.934
CV_LABEL_FLOOR = 0.88


@pytest.mark.data
def test_cross_validated_accuracy_and_speed():
    import numpy as np
    from conftest import shared_path

    from chatapp.evaluation.labeler_cv import cross_validate, load, speed

    texts, y = load(shared_path("ct-rate_ctclip-text-classifier", "train.csv"))
    res = cross_validate(texts, y)
    macro = [f["macro_f1"] for f in res["per_fold"]]
    assert np.mean(macro) >= CV_MEAN_FLOOR, macro
    assert macro[4] >= CV_HELDOUT_FOLD_FLOOR, macro
    assert min(res["f1"]) >= CV_LABEL_FLOOR, dict(zip(FINDING_NAMES, res["f1"]))
    # speed relative to a baseline pass over the same texts in this process (lower-case + sentence split), so a
    # loaded or slow machine slows both: measured 42-48x slower than that baseline (~550 reports/s, loaded box);
    # 100x would mean an order-of-magnitude regression (the compiled patterns or the per-sentence work lost)
    t0 = time.process_time()
    for _ in range(5):
        sum(len(re.split(r"(?<=[.!?])\s+", t.lower())) for t in texts)
    base = 5 * len(texts) / (time.process_time() - t0)
    rate = speed(texts, cached=False)  # every sentence analysed anew (the cache only makes repeats faster)
    assert base / rate <= 100, f"{rate:.0f} reports/s (CPU time), {base / rate:.0f}x slower than the baseline pass"


def test_holdout_scoring_of_a_labelled_csv(tmp_path, capsys):
    """``labeler_cv --holdout`` scores a never-seen labelled CSV whole: perfect labels give macro-F1 1, a flipped
    gold label lowers it."""
    import csv

    from chatapp.evaluation.labeler_cv import main

    rows = [("r1", "Cardiomegaly. No pleural effusion.", {"Cardiomegaly"}),
            ("r2", "Bilateral pleural effusion. Emphysema in both lungs.", {"Pleural effusion", "Emphysema"}),
            ("r3", "No pathological finding.", set())]

    def write(path, flip=False):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["AccessionNo", "report_text", *FINDING_NAMES])
            for i, (rid, text, pos) in enumerate(rows):
                labels = [int(n in pos) for n in FINDING_NAMES]
                if flip and i == 0:
                    labels[FINDING_NAMES.index("Cardiomegaly")] = 0
                w.writerow([rid, text, *labels])

    write(tmp_path / "ok.csv")
    write(tmp_path / "flip.csv", flip=True)
    assert main(["--holdout", str(tmp_path / "ok.csv")]) == 0
    assert "3 reports, macro-F1 1.0000" in capsys.readouterr().out
    main(["--holdout", str(tmp_path / "flip.csv")])
    out = capsys.readouterr().out
    assert "macro-F1 1.0000" not in out and "Cardiomegaly" in out


@pytest.mark.data
def test_never_seen_holdout_when_available():
    """The acceptance figure on never-seen reports (CT-CLIP val split, not in ../shared): set
    CTSCRIBE_LABELER_HOLDOUT to a CSV of them to check it (measured 0.963 on 194 reports)."""
    import os

    import numpy as np

    from chatapp.evaluation.labeler_cv import load, prf

    path = os.environ.get("CTSCRIBE_LABELER_HOLDOUT")
    if not path or not os.path.exists(path):
        pytest.skip("CTSCRIBE_LABELER_HOLDOUT not set (the never-seen CT-CLIP validation reports are not in ../shared)")
    texts, y = load(path)
    pred = np.array([[r[n] for n in FINDING_NAMES] for r in label_reports(texts)], dtype=int)
    assert prf(y, pred)[2].mean() >= 0.95


# ------------------------------------------------------------------------------------------------------------------
# Every sentence the project itself writes (chatapp.report / chatapp.prompts / vision.phantom_templates) must get
# exactly its own finding: CE metrics of ctscribe's reports go through this labeler.
_FIELDS = {"ctr": 0.55, "vessel_list": "LAD, RCA", "article": "A", "diameter_mm": 16,
           "count_phrase": "Two lymph nodes", "short_axis_mm": 14, "side_phrase": "in both lungs",
           "laa950_percent": 11.3, "side": "right", "location": "right upper lobe", "side_cap": "Bilateral",
           "max_depth_mm": 20, "lumen_diameter_mm": 9, "thickness_mm": 8, "type": "pacemaker", "plural": "s",
           "nodule_summary": "16 mm, right upper lobe"}

# the f-string wordings of chatapp.report.finding_sentences, filled in
_REPORT_ENGINE = [
    ("Emphysema, with 11.3% of lung volume below -950 HU (LAA-950).", "Emphysema"),
    ("A 16 mm nodule in the right middle lobe.", "Lung nodule"),
    ("An 8 mm nodule in the left lower lobe.", "Lung nodule"),
    ("3 further smaller nodules measure 4 to 6 mm.", "Lung nodule"),
    ("Bilateral pleural effusion, about 250 mL on the right and 120 mL on the left.", "Pleural effusion"),
    ("Pleural effusion on the left, about 90 mL.", "Pleural effusion"),
    ("Pericardial fluid collection, about 40 mL.", "Pericardial effusion"),
    ("Cardiomegaly, with a cardiothoracic ratio of 0.51.", "Cardiomegaly"),
    ("Coronary artery wall calcification (approximate calcium score 63).", "Coronary artery wall calcification"),
    ("Arterial wall calcification of the aorta (approximate calcium score 120).", "Arterial wall calcification"),
    ("Medical material is present.", "Medical material"),
    ("Pericardial and pleural effusions.", "Pericardial effusion|Pleural effusion"),
]
_REPORT_ENGINE_NEUTRAL = [
    "Lung volumes are 2500 mL on the right and 2300 mL on the left.", "Mean lung density is -850 HU.",
    "The trachea measures 18 mm in diameter.", "The maximal thoracic aortic diameter is 42 mm, dilated.",
    "The maximal thoracic aortic diameter is 32 mm, within normal limits.", "Heart volume is 650 mL.",
    "No finding could be assessed on this scan (model and measurements unavailable).", "No pleural abnormality is seen.",
    "No pericardial or pleural effusion.", "Pericardial effusion-thickening was not observed.",
]


def _generated_sentences() -> list[tuple[str, set[str]]]:
    from chatapp import prompts
    from vision import phantom_templates as pt
    from vision.registry import FINDINGS, REGION_KEYS

    out: list[tuple[str, set[str]]] = [(s, set(e.split("|"))) for s, e in _REPORT_ENGINE]
    out += [(s, set()) for s in _REPORT_ENGINE_NEUTRAL]
    for f in FINDINGS:
        out.append((prompts.MODEL_FINDING_TEXT[f.name], {f.name}))
        out += [(t.format(**_FIELDS), {f.name}) for k, t in pt.POSITIVE.items() if k.split(":")[0] == f.key]
        out.append((pt.IMPRESSION[f.key].format(**_FIELDS), {f.name}))
    normals = [*pt.REGION_NORMAL.values(), *pt.NEGATIVES.values(), pt.IMPRESSION_NORMAL,
               *prompts.NO_FINDINGS_IMPRESSION, *(x for v in prompts.NORMAL_STATEMENTS.values() for x in v)]
    for r in REGION_KEYS:
        normals += [prompts.absent_region_text(r), prompts.unassessed_region_text(r),
                    prompts.not_assessed_text(r, "model and measurements unavailable")]
    return out + [(s, set()) for s in normals]


def test_every_generated_sentence_gets_exactly_its_finding():
    cases = _generated_sentences()
    assert len(cases) > 90  # the tables are all there
    wrong = [(s, positives(s), want) for s, want in cases if positives(s) != want]
    assert not wrong, wrong


def test_pleural_effusion_pattern_does_not_fire_on_pericardial_effusion():
    assert positives("Pericardial effusion.") == {"Pericardial effusion"}
    assert positives("Minimal effusion in the pericardial space.") == {"Pericardial effusion"}
    assert positives("Pericardial effusion and bilateral pleural effusion.") == {"Pericardial effusion",
                                                                                 "Pleural effusion"}


@pytest.mark.parametrize("text,finding,want", [
    # CT-RATE labels any described mediastinal node: size qualifiers are not negations of the node
    ("Lymph nodes that did not reach pathological dimensions were observed in the paratracheal area.",
     "Lymphadenopathy", True),
    ("Lymph nodes that are not pathological in size and appearance are observed in the mediastinum.",
     "Lymphadenopathy", True),
    ("Right upper paratracheal millimetric lymph node is observed.", "Lymphadenopathy", True),
    ("No lymph node reaching mediastinal pathological dimension was detected.", "Lymphadenopathy", False),
    ("In mediastinal lymph node stations, no lymph node is observed in pathological size.", "Lymphadenopathy", False),
    ("Nodules of 3 mm on the major fissure (intrapulmonary lymph node?).", "Lymphadenopathy", False),
    ("Thickening of the peribronchovascular sheath is observed in the lower zones.", "Peribronchial thickening", True),
    ("Thickening of the peribronchovascular interstitium in the left lower lobe.", "Peribronchial thickening", False),
    ("An effusion of approximately 17 mm was observed in the deepest part of the pericardial area.",
     "Pericardial effusion", True),
    ("Prominence was observed in the bilateral interlobular septa.", "Interlobular septal thickening", True),
    ("Intra- and interseptal thickening in the upper lobes.", "Interlobular septal thickening", True),
    ("The jugular catheter, which was observed in the previous examination, was removed.", "Medical material", False),
    ("A stable lesion in the left breast (fibroadenoma?).", "Pulmonary fibrotic sequela", False),
])
def test_ctrate_labelling_conventions(text, finding, want):
    assert (finding in positives(text)) is want
