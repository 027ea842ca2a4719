"""Deterministic, region-grounded report structure: finding calls → sentences → sections, impression, recommendations.

The structure comes first and carries every number: each sentence is built from a measurement (``source="measured"``),
a finding probability (``"model"``), a guideline passage (``"guideline"``) or is a normal statement (``"normal"``).
An LLM may later rephrase sentences (``chatapp.guard`` decides what survives); nothing here needs torch or a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatapp import prompts
from chatapp.schema import DEMO_WEIGHTS_NOTICE, Citation, Evidence, Report, Section, Sentence, Study
from vision.registry import FINDINGS, REGIONS
from vision.registry import finding as finding_info
from vision.schema import Measurement

# Findings decided from a measurement when that measurement exists (the model probability is kept as evidence).
# ``min`` is in the measurement's unit; values can be overridden in the ``report.measured`` config section.
DEFAULT_MEASURED_RULES: dict[str, dict[str, Any]] = {
    # diameter_mm; Fleischner ignores < 3 mm micronodules. Candidates of "low" confidence (>= 10 mm blobs joined to
    # the bronchovascular tree) were thickened bronchial walls, consolidation or hilar nodes on 5 of 6 tuning
    # phantoms (seeds 200000-200029): they stay measurements but do not make a nodule call. Session 4, all 200 tuning
    # seeds: 2 of 30 low candidates were true nodules (20 of the 28 others in phantoms with enlarged hilar nodes), and
    # no ball_ratio / vessel_ratio cut separates them; medium candidates: 42 true, 6 false
    "Lung nodule": {"measurement": ["nodule"], "min": 3.0, "min_confidence": "medium"},
    "Emphysema": {"measurement": ["laa950_percent"], "min": 6.0},  # % lung voxels < -950 HU
    # both spellings: the contract's pleural_fluid_volume_ml_<side> and vision.measure's pleural_fluid_volume_<side>_ml
    "Pleural effusion": {"measurement": ["pleural_fluid_volume_ml_left", "pleural_fluid_volume_ml_right",
                                         "pleural_fluid_volume_left_ml", "pleural_fluid_volume_right_ml"],
                         "min": 25.0},  # classical fluid masks read ~20 mL in effusion-free phantoms
    "Pericardial effusion": {"measurement": ["pericardial_fluid_volume_ml"], "min": 50.0},  # normal fluid < ~50 mL
    "Cardiomegaly": {"measurement": ["cardiothoracic_ratio"], "min": 0.5},
    "Coronary artery wall calcification": {"measurement": ["coronary_calcium_score"], "min": 1.0},
    "Arterial wall calcification": {"measurement": ["aortic_calcium_score"], "min": 1.0},
    "Medical material": {"measurement": ["medical_material"], "min": 1.0},
    # ground-glass blobs (-700..-300 HU, the lung grown into connected ground glass, opened 3 mm, >= 2 mL each):
    # phantom opacities (tuning seeds 200000-200059) read 6-90 mL (17 of 20 >= 8), opacity-free ones <= 2.5 mL, the
    # real TCIA chest CT 0 mL (5.9 mL of partial-volume specks with a 2 mm opening; 12.9 mL with growth and 2 mm,
    # mostly the partial-volumed posterior diaphragm dome in 3 mm slices)
    # Session 5, first 160 tuning seeds: opacity-free phantoms <= 2.5 mL, 44 of 46 with opacity >= 5 mL (40 >= 8),
    # so the minimum went from 8 to 5 mL
    "Lung opacity": {"measurement": ["ground_glass_volume_ml"], "min": 5.0},
    # % parenchyma deviating > 50 HU from its coronal band; phantoms with mosaic read >= 9.5 %, without <= 0.3 %
    # (first 160 tuning seeds), the real TCIA chest CT 6.4 %: 8 keeps the real CT below and calls 4 more phantoms
    "Mosaic attenuation pattern": {"measurement": ["lung_attenuation_heterogeneity_percent"], "min": 8.0},
    # short axis of the largest node candidate (vision.measure._mediastinal_blobs; 0 when none) and each node >= 10 mm:
    # all 200 tuning phantoms (seeds 200000-200199) 30 of 59 with enlarged nodes found, 0 false calls in 141 without
    "Lymphadenopathy": {"measurement": ["lymph_node_max_short_axis_mm", "lymph_node"], "min": 10.0},
    # widest dilated-bronchus candidate (vision.measure._dilated_bronchi; 0 when none) and each tube >= 7 mm:
    # all 200 tuning phantoms 51 of 59 with bronchiectasis found, 1 false call in 141 (an emphysema cluster)
    "Bronchiectasis": {"measurement": ["dilated_bronchus_max_lumen_mm", "dilated_bronchus"], "min": 7.0},
}

DEFAULT_SETTINGS: dict[str, Any] = {
    "use_llm": "auto",  # true | false | "auto" (only when the LLM runs on a GPU; see configs/default.yaml)
    "use_model": True,  # false → no CT model at all (measurements only), e.g. for fast batch runs and tests
    "use_store": True,  # false → no knowledge store (built-in citation for recommendations, no passages in chat)
    "probability_threshold": 0.5,  # P(finding) at or above which a model-only finding is reported
    "thresholds": {},  # per-finding overrides, CT-RATE name → probability
    "measured": {},  # per-finding overrides of DEFAULT_MEASURED_RULES
    # out-of-domain guard for the image model: when its calls disagree with more than this fraction of the scan's
    # measured findings (at least model_trust_min_measured compared), its model-only findings are withheld from the
    # report body and listed in a notice. Phantom-trained demo weights disagree with 0-5 of 10 on unseen phantoms
    # (median 1-2) and with 8 of 10 on the real TCIA chest CT. null switches the guard off.
    "model_trust_max_disagreement": 0.6,
    "model_trust_min_measured": 5,
    # the same, when more than this share of the scan's region features lie beyond 3 SD of the checkpoint's training
    # data (Study.model_novelty): unseen phantoms <= 0.026, real CTs 0.17-0.72 with the demo weights. null = off
    "model_trust_max_novelty": 0.05,
    "rephrase": "findings",  # which sentences the LLM rephrases: findings | all | none
    "max_new_tokens": 60,  # per rephrased sentence
    "size_decimals": 0,  # nodule diameters are reported to the nearest mm (Fleischner convention)
    # chat (free questions): passages given to the LLM and their length; with the prompt-prefix cache these decide
    # the time to first token (2 x 300 characters: 0.8 s on 2 cores after warm-up; 3 x 600: 1.9 s)
    "chat_passages": 2,
    "chat_passage_chars": 300,
    "warm_chat": True,  # the app prefills the shared chat prompt (facts, cues, visual tokens) after an upload
    # free questions: "auto" = the grounded extractive composer (chatapp.compose) for small LLMs (the embedded one, or
    # a name giving < 2B parameters) and whenever the gate rejects the LLM's text; "llm" = the LLM's text always; "extractive" = never
    # the LLM
    "free_answer": "auto",
    "free_answer_passages": 3,  # retrieved passages the composer picks sentences from
    "free_answer_sentences": 2,  # knowledge-base sentences quoted verbatim, each with its [n]
}


def report_settings(section: dict[str, Any] | None) -> dict[str, Any]:
    """Merge the ``report:`` config section over the defaults."""
    out = dict(DEFAULT_SETTINGS)
    out.update(section or {})
    return out


@dataclass
class FindingCall:
    """The pipeline's decision about one CT-RATE finding, with the evidence behind it.

    Args:
        name: CT-RATE finding name.
        present: whether the report asserts the finding.
        source: ``"measured"`` (a measurement decided), ``"model"`` (a probability decided) or ``"none"``.
        confidence: 0..1; the measurement's confidence or the model probability (of the decision taken).
        region: RadGenome region key the finding is reported under.
        evidence: measurements / probabilities that support the decision.
        measurements: the measurements behind a measured call (nodules: one per nodule, largest first).
        note: why a call was suppressed or conflicts (empty when none).
    """

    name: str
    present: bool
    source: str
    confidence: float
    region: str
    evidence: list[Evidence] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    note: str = ""

    @property
    def probability(self) -> float | None:
        """The image model's P(finding) from the evidence; None when the model gave none."""
        return next((float(e.value) for e in self.evidence if e.kind == "probability"), None)

    def parts(self, name: str) -> list[Measurement]:
        """The call's measurements called ``name`` (e.g. each ``lymph_node`` behind a lymphadenopathy call)."""
        return [m for m in self.measurements if m.name == name]

    @property
    def withheld_reason(self) -> str | None:
        """Why the out-of-domain guard kept this model-only finding out of the report; None when it did not."""
        return self.note.split(": ", 1)[1] if self.note.startswith(WITHHELD + ": ") else None


# Overlay ids of vision.measure.overlays for measurements that do not name their own mask.
_MASK_IDS = {"medical_material": "findings/metal", "aortic_calcium_score": "findings/calcium_aortic",
             "coronary_calcium_score": "findings/calcium_coronary",
             "pericardial_fluid_volume_ml": "findings/pericardial_fluid"}

_CONF = {"high": 0.95, "medium": 0.8, "low": 0.6, "absent": 0.0}


def _num(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def nodule_diameter(m: Measurement) -> float | None:
    return _num(m.extra.get("diameter_mm", m.value))


def measurement_evidence(m: Measurement) -> Evidence:
    if m.name == "nodule":
        d = nodule_diameter(m)
        return Evidence("measurement", f"nodule diameter = {d:.1f} mm" if d is not None else "nodule", d,
                        nodule_mask(m))
    v = "n/a" if m.value is None else f"{m.value:.4g}"
    return Evidence("measurement", f"{m.name} = {v} {m.unit}".strip(), m.value, m.name)


def probability_evidence(name: str, p: float) -> Evidence:
    return Evidence("probability", f"P({name}) = {p:.2f}", round(float(p), 4), name)


def nodule_mask(m: Measurement) -> str | None:
    for k in ("mask", "mask_id", "id"):
        v = m.extra.get(k)
        if v:
            v = str(v)
            return v if "/" in v else f"findings/{v}"
    return None


def lobe_text(m: Measurement) -> str:
    """Human-readable location of a nodule: 'right upper lobe', 'left lung', or 'lung'."""
    side = str(m.extra.get("side") or "").strip().lower()
    lobe = str(m.extra.get("lobe") or "").strip().lower()
    if lobe in ("upper", "middle", "lower") and side in ("left", "right"):
        return f"{side} {lobe} lobe"
    raw = str(m.extra.get("location") or m.extra.get("lobe") or "").strip()
    if raw:
        t = raw.lower().replace("_", " ")
        mt = re.match(r"lung (upper|middle|lower) lobe (left|right)$", t)  # TotalSegmentator class name
        if mt:
            return f"{mt.group(2)} {mt.group(1)} lobe"
        mt = re.match(r"(left|right) lung (upper|middle|lower) lobe$", t)  # RadGenome anatomy wording
        if mt:
            return f"{mt.group(1)} {mt.group(2)} lobe"
        if re.fullmatch(r"(r|l)(u|m|l)l", t):
            return {"r": "right", "l": "left"}[t[0]] + " " + {"u": "upper", "m": "middle", "l": "lower"}[t[1]] + " lobe"
        return t
    if side in ("left", "right"):
        return f"{side} lung"
    return "lung"


def call_findings(study: Study, settings: dict[str, Any]) -> dict[str, FindingCall]:
    """Decide every CT-RATE finding from the Study's measurements (preferred) and model probabilities.

    Returns: CT-RATE name → FindingCall, in registry order. Findings whose region is absent from the field of view
    are never asserted (their call carries a note instead).
    """
    rules = {k: dict(v) for k, v in DEFAULT_MEASURED_RULES.items()}
    for k, v in (settings.get("measured") or {}).items():
        rules.setdefault(k, {}).update(v)
    thr_default = float(settings.get("probability_threshold", 0.5))
    thr = settings.get("thresholds") or {}
    absent = set(study.absent_regions)
    calls: dict[str, FindingCall] = {}
    for f in FINDINGS:
        p = study.probabilities.get(f.name)
        ev_p = [probability_evidence(f.name, p)] if p is not None else []
        call: FindingCall | None = None
        rule = rules.get(f.name)
        if rule:
            names = rule["measurement"] if isinstance(rule["measurement"], list) else [rule["measurement"]]
            ms = [m for m in study.measurements if m.name in names]
            if f.name == "Lung nodule":
                floor = _CONF.get(str(rule.get("min_confidence", "absent")), 0.0)
                ms = [m for m in ms if nodule_diameter(m) is not None and _CONF.get(m.confidence, 0.8) >= floor]
                pos = sorted([m for m in ms if nodule_diameter(m) >= rule["min"]], key=nodule_diameter, reverse=True)
                measured_ok = any(m.name == "nodule" for m in study.measurements) or _nodule_search_ran(study)
            else:
                ms = [m for m in ms if m.value is not None and m.confidence != "absent"]
                pos = [m for m in ms if float(m.value) >= rule["min"]]
                measured_ok = bool(ms)
            if measured_ok:
                conf = max((_CONF.get(m.confidence, 0.8) for m in (pos or ms)), default=0.9)
                call = FindingCall(f.name, bool(pos), "measured", conf, f.region,
                                   [measurement_evidence(m) for m in (pos or ms)] + ev_p, pos)
                if p is not None and (p >= thr.get(f.name, thr_default)) != bool(pos):
                    call.note = (f"model probability {p:.2f} disagrees with the measurement; "
                                 "the measurement decides")
                    call.confidence = min(call.confidence, 0.7)
        if call is None:
            if p is not None:
                present = p >= float(thr.get(f.name, thr_default))
                call = FindingCall(f.name, present, "model", float(p if present else 1 - p), f.region, ev_p)
            else:
                call = FindingCall(f.name, False, "none", 0.0, f.region, [], note="not assessed")
        if call.present and f.region in absent:
            call.present, call.note = False, f"suppressed: region {f.region} is not in the field of view"
        calls[f.name] = call
    _withhold_untrusted_model_calls(calls, settings, study.model_novelty)
    return calls


WITHHELD = "withheld"  # FindingCall.note prefix of a model-only finding the out-of-domain guard kept out of the report


def _withhold_untrusted_model_calls(calls: dict[str, FindingCall], settings: dict[str, Any],
                                    novelty: float | None = None) -> None:
    """Withhold model-only positive calls when the image model is outside the data it was trained on (e.g.
    phantom-trained demo weights on a real CT), judged two ways:

    - its calls disagree with most of this scan's measurements (``model_trust_max_disagreement``);
    - the scan's region features lie outside the training range (``novelty`` = ``Study.model_novelty`` above
      ``model_trust_max_novelty``).

    Its findings that nothing measures are then not asserted; each keeps its probability as evidence and a note
    that says why (see ``withheld_notice``).
    """
    why = None
    max_novelty = settings.get("model_trust_max_novelty")
    if novelty is not None and max_novelty is not None and novelty > float(max_novelty):
        why = (f"{novelty:.0%} of this scan's image features lie outside the range of the image model's training "
               "data, so its model-only findings are not asserted")
    frac = settings.get("model_trust_max_disagreement")
    compared = [c for c in calls.values() if c.source == "measured" and c.probability is not None]
    if why is None and frac is not None and len(compared) >= int(settings.get("model_trust_min_measured", 5)):
        k = sum("disagrees" in c.note for c in compared)
        if k > float(frac) * len(compared):
            why = (f"the image model disagrees with {k} of {len(compared)} measured findings on this scan, so its "
                   "model-only findings are not asserted")
    if why is None:
        return
    for c in calls.values():
        if c.source == "model" and c.present:
            c.present = False
            c.note = f"{WITHHELD}: {why}"


def withheld_notice(calls: dict[str, FindingCall]) -> str:
    """One line listing the model-only findings the out-of-domain guard withheld, with their probabilities."""
    held = [c for c in calls.values() if c.withheld_reason]
    if not held:
        return ""
    listed = "; ".join(f"{c.name[0].lower() + c.name[1:]} (probability {c.probability:.2f})" for c in held)
    return f"Not reported ({held[0].withheld_reason}; verify on the images): {listed}."


def _nodule_search_ran(study: Study) -> bool:
    """True when the measurement stage searched for nodules (lung present and lung measurements exist)."""
    return "lung" not in study.absent_regions and any(m.region == "lung" for m in study.measurements)


MAX_NODULES_LISTED = 4  # larger counts are summarised in one sentence


def _canonical(name: str) -> str:
    """pleural_fluid_volume_left_ml → pleural_fluid_volume_ml_left (one spelling inside this module)."""
    m = re.fullmatch(r"pleural_fluid_volume_(left|right)_ml", name)
    return f"pleural_fluid_volume_ml_{m.group(1)}" if m else name


def _article(num: str) -> str:
    """'An' before numbers read with a leading vowel sound (8, 11, 18, 80-89, 800-899 ...)."""
    whole = num.split(".")[0]
    return "An" if whole.startswith("8") or whole in ("11", "18") else "A"


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def finding_sentences(call: FindingCall, settings: dict[str, Any], weights_note: str = "") -> list[Sentence]:
    """Positive sentences for one present finding (one per nodule), each with evidence and mask.

    A finding only the model supports reads as a model estimate with its probability (and ``weights_note``, e.g.
    "demo weights trained on synthetic phantoms"), never as a plain assertion.
    """
    f = finding_info(call.name)
    mask = f"regions/{f.region}"
    if call.source != "measured":
        return [Sentence(prompts.model_suggestion_text(f.name, call.confidence, weights_note), f.region, mask,
                         list(call.evidence), "model", round(call.confidence, 3), [f.name])]
    ms = call.measurements
    ev = list(call.evidence)
    ids = [x for x in (nodule_mask(m) or _MASK_IDS.get(m.name) for m in ms) if x]
    if ids:
        mask = ids[0]
    if f.name == "Lung nodule":
        dec = int(settings.get("size_decimals", 0))
        out = []
        shown = ms[:MAX_NODULES_LISTED]
        for m in shown:
            d = nodule_diameter(m)
            text = f"{_article(_fmt(d, dec))} {_fmt(d, dec)} mm nodule in the {lobe_text(m)}."
            out.append(Sentence(text, "lung", nodule_mask(m) or mask, [measurement_evidence(m)] +
                                [e for e in ev if e.kind == "probability"], "measured", round(call.confidence, 3),
                                [f.name]))
        if rest := ms[MAX_NODULES_LISTED:]:
            lo, hi = min(map(nodule_diameter, rest)), max(map(nodule_diameter, rest))
            out.append(Sentence(f"{len(rest)} further smaller nodules measure {_fmt(lo, dec)} to {_fmt(hi, dec)} mm.",
                                "lung", nodule_mask(rest[0]) or mask, [measurement_evidence(m) for m in rest],
                                "measured", round(call.confidence, 3), [f.name]))
        return out
    v = {_canonical(m.name): float(m.value) for m in ms}
    if f.name == "Emphysema":
        text = f"Emphysema, with {v['laa950_percent']:.1f}% of lung volume below -950 HU (LAA-950)."
    elif f.name == "Pleural effusion":
        sides = [s for s in ("right", "left") if f"pleural_fluid_volume_ml_{s}" in v]
        if len(sides) == 2:
            text = (f"Bilateral pleural effusion, about {v['pleural_fluid_volume_ml_right']:.0f} mL on the right and "
                    f"{v['pleural_fluid_volume_ml_left']:.0f} mL on the left.")
        else:
            text = f"Pleural effusion on the {sides[0]}, about {v[f'pleural_fluid_volume_ml_{sides[0]}']:.0f} mL."
    elif f.name == "Pericardial effusion":
        text = f"Pericardial fluid collection, about {v['pericardial_fluid_volume_ml']:.0f} mL."
    elif f.name == "Cardiomegaly":
        text = f"Cardiomegaly, with a cardiothoracic ratio of {v['cardiothoracic_ratio']:.2f}."
    elif f.name == "Coronary artery wall calcification":
        text = f"Coronary artery wall calcification (approximate calcium score {v['coronary_calcium_score']:.0f})."
    elif f.name == "Arterial wall calcification":
        text = f"Arterial wall calcification of the aorta (approximate calcium score {v['aortic_calcium_score']:.0f})."
    elif f.name == "Lung opacity":
        text = (f"Ground-glass opacity in the lungs, about {v['ground_glass_volume_ml']:.0f} mL "
                "(attenuation -700 to -300 HU).")
    elif f.name == "Lymphadenopathy":
        text = lymph_node_text(call.parts("lymph_node") or ms)
    elif f.name == "Bronchiectasis":
        text = bronchiectasis_text(call.parts("dilated_bronchus") or ms)
    elif f.name == "Mosaic attenuation pattern":
        text = (f"Mosaic attenuation pattern: {v['lung_attenuation_heterogeneity_percent']:.0f}% of the lung "
                "parenchyma differs by more than 50 HU from its surroundings.")
    else:  # Medical material and any rule added by config
        text = prompts.MODEL_FINDING_TEXT[f.name]
    return [Sentence(text, f.region, mask, ev, "measured", round(call.confidence, 3), [f.name])]


def lymph_node_text(nodes: list[Measurement]) -> str:
    """'An enlarged lymph node (right mediastinum or hilum), 14 mm in short axis.' or, for several, the count and
    the largest."""
    big = max(nodes, key=lambda m: float(m.value))
    where = str(big.extra.get("location") or "mediastinum")
    d = f"{float(big.value):.0f}"
    if len(nodes) == 1:
        return f"An enlarged lymph node ({where}), {d} mm in short axis."
    return f"{len(nodes)} enlarged lymph nodes, the largest ({where}) {d} mm in short axis."


def bronchiectasis_text(tubes: list[Measurement]) -> str:
    """'Bronchiectasis: a dilated bronchus in the right lower lobe, lumen 9 mm.' or, for several, where they are and
    the widest lumen."""
    wide = max(tubes, key=lambda m: float(m.value))
    d = f"{float(wide.value):.0f}"
    if len(tubes) == 1:
        return f"Bronchiectasis: a dilated bronchus in the {lobe_text(wide)}, lumen {d} mm."
    where = " and the ".join(sorted({lobe_text(m) for m in tubes}))
    return f"Bronchiectasis: {len(tubes)} dilated bronchi in the {where}, lumen up to {d} mm."


def context_sentences(study: Study, region_key: str) -> list[Sentence]:
    """Measured, finding-free facts per region (volumes, diameters) so every number shown has a measurement."""
    g = study.measurement
    out: list[Sentence] = []
    mask = f"regions/{region_key}"

    def add(text: str, *ms: Measurement) -> None:
        out.append(Sentence(text, region_key, mask, [measurement_evidence(m) for m in ms], "measured",
                            min(_CONF.get(m.confidence, 0.8) for m in ms)))

    def ok(name: str) -> Measurement | None:
        m = g(name)
        return m if m is not None and m.value is not None and m.confidence != "absent" else None

    if region_key == "lung":
        r, l, d = ok("lung_volume_right_ml"), ok("lung_volume_left_ml"), ok("mean_lung_density_hu")
        if r and l:
            add(f"Lung volumes are {r.value:.0f} mL on the right and {l.value:.0f} mL on the left.", r, l)
        if d:
            add(f"Mean lung density is {d.value:.0f} HU.", d)
    elif region_key == "trachea_and_bronchi" and (t := ok("trachea_diameter_mm")):
        add(f"The trachea measures {t.value:.0f} mm in diameter.", t)
    elif region_key == "mediastinum" and (a := ok("aorta_max_diameter_mm")):
        qual = "dilated" if a.value >= 40 else "within normal limits"
        add(f"The maximal thoracic aortic diameter is {a.value:.0f} mm, {qual}.", a)
    elif region_key == "heart" and (h := ok("heart_volume_ml")):
        add(f"Heart volume is {h.value:.0f} mL.", h)
    return out


def build_structured_report(study: Study, settings: dict[str, Any],
                            recommend: Callable[[dict[str, FindingCall]], tuple[list[Sentence], list[Citation]]]
                            | None = None,
                            calls: dict[str, FindingCall] | None = None) -> Report:
    """Build the deterministic report: sections in RadGenome region order, impression, recommendations.

    Args:
        study: the analysed study.
        settings: ``report_settings(config.section("report"))``.
        recommend: callable turning finding calls into recommendation sentences + citations (see
            ``chatapp.pipeline``); ``None`` gives no recommendations section.
        calls: precomputed ``call_findings`` result.
    """
    calls = calls if calls is not None else call_findings(study, settings)
    have_model = any(c.source == "model" for c in calls.values()) or bool(study.probabilities)
    weights_note = DEMO_WEIGHTS_NOTICE if "demo" in (study.weights or "").lower() else ""
    sections: list[Section] = []
    impression: list[Sentence] = []
    for r in REGIONS:
        if r.key in study.absent_regions:
            sections.append(Section(r.key, r.label, [Sentence(prompts.absent_region_text(r.key), r.key, None,
                                                              [Evidence("region", f"{r.key}: absent", False, r.key)],
                                                              "measured", 0.9)]))
            continue
        pos: list[Sentence] = []
        for f in FINDINGS:
            c = calls[f.name]
            if c.present and c.region == r.key:
                pos.extend(finding_sentences(c, settings, weights_note))
        sents = list(pos)
        if not pos:
            sents.append(_normal_sentence(study, calls, r.key, have_model))
        sents.extend(context_sentences(study, r.key))
        sections.append(Section(r.key, r.label, sents))
        impression.extend(pos)
    imp = impression_sentences(impression, calls, weights_note)
    if not imp and all(c.source == "none" for c in calls.values()):
        imp = [Sentence("No finding could be assessed on this scan (model and measurements unavailable).",
                        "impression", None, [], "normal", 0.0)]
    elif not imp:
        imp = [Sentence(prompts.pick_variant(prompts.NO_FINDINGS_IMPRESSION, study.study_id), "impression", None,
                        [], "normal", 0.9 if have_model else 0.5)]
    sections.append(Section("impression", "Impression", imp))
    citations: list[Citation] = []
    if recommend is not None:
        recs, citations = recommend(calls)
        if recs:
            sections.append(Section("recommendations", "Recommendations", recs))
    rep = Report(study.study_id, sections, citations, weights=study.weights)
    for i, s in enumerate(rep.sentences()):
        s.id = f"s{i}"
    for note in (disagreement_notice(calls), withheld_notice(calls)):
        if note:
            rep.notices.append(note)
    if not have_model:
        rep.notices.append("Model findings unavailable: this report comes from measurements only; findings without a "
                           "measurement were not assessed.")
    return rep


def disagreement_notice(calls: dict[str, FindingCall]) -> str:
    """One line naming each finding where the measurement and the image model disagree, with both values; the
    measurement decides (empty when they agree everywhere)."""
    parts = []
    for c in calls.values():
        if c.source != "measured" or "disagrees" not in c.note:
            continue
        meas = next((e.label for e in c.evidence if e.kind == "measurement"), "")
        prob = c.probability
        verdict = "present" if c.present else "not present"
        parts.append(f"{c.name[0].lower() + c.name[1:]}: measured {verdict}" + (f" ({meas})" if meas else "")
                     + (f", image model probability {float(prob):.2f}" if prob is not None else ""))
    if not parts:
        return ""
    return "Measurement and image model disagree (the measurement decides): " + "; ".join(parts) + "."


def impression_sentences(positive: list[Sentence], calls: dict[str, FindingCall],
                         weights_note: str = "") -> list[Sentence]:
    """Measured findings restated first; model-only findings gathered in one separate 'to verify' sentence."""
    out = [Sentence(s.text, "impression", s.mask, list(s.evidence), s.source, s.confidence, list(s.findings))
           for s in positive if s.source != "model"]
    model = [calls[n] for s in positive if s.source == "model" for n in s.findings]
    if model:
        text = prompts.model_suggestions_impression([(c.name, c.confidence) for c in model], weights_note)
        out.append(Sentence(text, "impression", None, [e for c in model for e in c.evidence], "model",
                            round(min(c.confidence for c in model), 3), [c.name for c in model]))
    return out


def _normal_sentence(study: Study, calls: dict[str, FindingCall], key: str, have_model: bool) -> Sentence:
    """The region's statement when nothing is asserted: normal only for what was actually assessed."""
    ev = [Evidence("region", f"{key}: present", True, key)]
    graded = [c for c in calls.values() if c.region == key]
    assessed = [c for c in graded if c.source != "none"]
    if not graded:  # bones, thyroid, breast, upper abdomen: none of the 18 findings lives there
        return Sentence(prompts.unassessed_region_text(key), key, f"regions/{key}", ev, "normal", 0.0)
    if not assessed:
        return Sentence(prompts.not_assessed_text(key, "model and measurements unavailable"), key, f"regions/{key}",
                        ev, "normal", 0.0)
    conf = min(c.confidence for c in assessed)
    if not have_model and len(assessed) < len(graded):
        conf = min(conf, 0.5)
    return Sentence(prompts.pick_variant(prompts.NORMAL_STATEMENTS[key], study.study_id + key), key,
                    f"regions/{key}", ev + _negative_evidence(calls, key), "normal", round(conf, 3))


def _negative_evidence(calls: dict[str, FindingCall], region_key: str) -> list[Evidence]:
    out = []
    for c in calls.values():
        if c.region == region_key and c.source != "none":
            out.extend(e for e in c.evidence)
    return out[:6]


def supported_findings(calls: dict[str, FindingCall]) -> set[str]:
    return {n for n, c in calls.items() if c.present}

