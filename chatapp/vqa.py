"""Visual question answering over a Study: RadGenome-style template questions answered from structured findings.

Question types (RadGenome-ChestCT): presence ("Can {abnormality} be seen in the {region}?"), location ("Where is the
{abnormality}?"), size ("How big is the {abnormality} in the {region}?") and abnormality ("What abnormalities are in
the {region}?"). They are answered from the same finding calls the report uses, so chat and report never disagree.
Everything else is either a free question (``plan_question`` returns a ``FreePlan``: the pipeline asks the LLM with the
scan facts and retrieved passages) or out of scope (a clear answer saying so). Follow-ups ("how big is it?",
"which lobe?") resolve the finding from the conversation history.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatapp import prompts
from chatapp.report import FindingCall, _canonical, lobe_text, nodule_diameter
from chatapp.schema import Answer, Citation, Evidence, Study
from vision.registry import FINDINGS
from vision.registry import region as region_info

# Extra wordings (beyond the registry's name and synonyms) users and RadGenome questions use for each finding.
_EXTRA_TERMS: dict[str, tuple[str, ...]] = {
    "Lung nodule": ("nodules", "pulmonary nodule", "pulmonary nodules", "lung nodules", "nodular lesion"),
    "Lung opacity": ("opacities", "ground glass", "ground-glass opacities", "ground glass areas", "ggo",
                     "ground glass opacities"),
    "Pleural effusion": ("pleural effusions", "effusion", "effusions", "pleural fluid"),
    "Pericardial effusion": ("pericardial effusions",),
    "Cardiomegaly": ("heart enlargement", "enlargement of the heart", "cardiac enlargement", "enlarged heart",
                     "heart enlarged", "heart is enlarged"),
    "Emphysema": ("emphysematous", "emphysematous areas"),
    "Arterial wall calcification": ("aortic calcification", "atherosclerosis", "vascular calcification",
                                    "atherosclerotic changes", "arterial calcification"),
    "Coronary artery wall calcification": ("coronary calcification", "coronary artery calcification",
                                           "coronary calcium", "coronary artery calcifications"),
    "Lymphadenopathy": ("lymph nodes", "lymph node enlargement", "adenopathy"),
    "Hiatal hernia": ("hernia",),
    "Medical material": ("medical device", "device", "implant", "metal"),
    "Pulmonary fibrotic sequela": ("fibrosis", "fibrotic sequelae", "fibrotic changes", "scarring"),
    "Mosaic attenuation pattern": ("mosaic pattern", "mosaic"),
    "Consolidation": ("consolidations", "consolidated areas"),
    "Atelectasis": ("atelectatic changes", "atelectases"),
    "Bronchiectasis": ("bronchiectatic",),
    "Interlobular septal thickening": ("septal thickening", "interlobular septal thickenings"),
    "Peribronchial thickening": ("bronchial wall thickening", "peribronchial thickenings"),
}


def _terms() -> list[tuple[str, str]]:
    out = []
    for f in FINDINGS:
        for t in (f.name, f.key.replace("_", " ")) + f.synonyms + _EXTRA_TERMS.get(f.name, ()):
            out.append((t.lower(), f.name))
    return sorted(set(out), key=lambda x: -len(x[0]))  # longest first: "pericardial effusion" before "effusion"


_FINDING_TERMS = _terms()

_REGION_WORDS: list[tuple[str, str]] = [
    (r"trachea|tracheal|bronch\w*|airways?", "trachea_and_bronchi"),
    (r"pleura|pleural|pleural space", "pleura"),
    (r"lungs?|pulmonary|lobes?|lung parenchyma", "lung"),
    (r"mediastin\w*|aorta|aortic|great vessels", "mediastinum"),
    (r"heart|cardiac|pericardi\w*|coronar\w*", "heart"),
    (r"esophag\w*|oesophag\w*", "esophagus"),
    (r"bones?|osseous|skeleton|spine|vertebra\w*|ribs?", "bone"),
    (r"thyroid( gland)?", "thyroid"),
    (r"breasts?", "breast"),
    (r"abdomen|abdominal|liver|spleen|kidneys?|stomach|pancreas", "abdomen"),
]
_WHOLE = re.compile(r"\b(scan|image|study|ct|chest|thorax|volume|examination)\b")
_LOBE = [re.compile(r"\b(left|right)\s+(?:lung\s+)?(upper|middle|lower)\s+lobe"),
         re.compile(r"\b(upper|middle|lower)\s+lobe\s+of\s+the\s+(left|right)\s+lung")]
_SIDE = re.compile(r"\b(left|right)\s+(?:lung|hemithorax|side|pleura\w*)")

_SIZE = re.compile(r"\b(size|sizes|how (big|large|much)|dimension|measure\w*|diameter|magnitude|scale|volume|"
                   r"extent)\b")
_LOCATION = re.compile(r"\b(where|location|located|locali[sz]ed|position|which (lobe|side|lung|region|part|area)|"
                       r"what (is |are )?(the )?(particular |specific |precise |exact )?"
                       r"(region|area|location|spot|lobe|side|part|site)|occupy|in which)\b")
_ABNORMAL = re.compile(r"\b(abnormalit\w*|anomal\w*|abnormal findings|irregular\w*|findings|disorders|"
                       r"what('s| is) wrong|patholog\w*)\b")
_AUX = re.compile(r"^\s*(?:(?:and|so|also|ok|okay|then|but|now)\b[\s,]*)?"
                  r"(can|could|is|are|does|do|did|was|were|has|have|any|show)\b")
_PHI = re.compile(r"\b(name|named|age|old|birth|born|address|phone|hospital|institution|who is the patient|"
                  r"gender|sex|social security|mrn|record number|date of|when was)\b")
_MEDICAL = re.compile(r"\b(ct|scan|finding\w*|measure\w*|guideline\w*|follow[- ]?up|fleischner|risk|hu|hounsfield|"
                      r"laa\w*|density|lobe|lesion|report|normal|recommend\w*|mean|explain|cause\w*|treat\w*|"
                      r"cancer|malignan\w*|benign|smok\w*|disease|diagnos\w*|symptom\w*|radiolog\w*|calcium|"
                      r"score|contrast|window|region\w*|mask|segment\w*|evidence|significan\w*|worry|serious)\b")
_PRONOUN = re.compile(r"\b(it|its|they|them|this|that|these|those|the lesion|the finding|the abnormality)\b")

# Regions a finding may be asked about (e.g. a pleural effusion "in the lungs").
_COMPATIBLE: dict[str, set[str]] = {"pleura": {"pleura", "lung"}, "trachea_and_bronchi": {"trachea_and_bronchi", "lung"},
                                    "heart": {"heart", "mediastinum"}, "mediastinum": {"mediastinum", "heart"}}


@dataclass
class ParsedQuestion:
    kind: str  # presence | location | size | abnormality | free | out_of_scope | phi
    findings: list[str] = field(default_factory=list)  # CT-RATE names mentioned (first = subject)
    region: str | None = None  # region key of "in the {region}" (None: whole scan)
    side: str | None = None
    lobe: str | None = None  # upper | middle | lower
    from_history: bool = False
    unknown_term: str = ""  # the unrecognised abnormality of a presence question


@dataclass
class FreePlan:
    """A free question: the parsed question, the retrieval query (a follow-up's finding appended) and the evidence
    the answer will carry."""

    parsed: ParsedQuestion
    query: str
    evidence: list[Evidence] = field(default_factory=list)


def match_findings(text: str) -> list[str]:
    """CT-RATE names mentioned in ``text``, ordered by first position."""
    low = " " + re.sub(r"[^a-z0-9\- ]+", " ", text.lower()) + " "
    hits: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for term, name in _FINDING_TERMS:
        for mt in re.finditer(r"(?<![a-z])" + re.escape(term) + r"(?![a-z])", low):
            if any(a <= mt.start() < b for a, b in taken):
                continue
            taken.append((mt.start(), mt.end()))
            hits.append((mt.start(), name))
    out: list[str] = []
    for _, n in sorted(hits):
        if n not in out:
            out.append(n)
    return out


def _region_of(phrase: str) -> str | None:
    for pat, key in _REGION_WORDS:
        if re.search(r"\b(" + pat + r")\b", phrase):
            return key
    return None


def parse_question(question: str, history: Sequence[dict[str, str]] = ()) -> ParsedQuestion:
    """Classify a question and extract the finding(s) and region it is about (resolving follow-ups via history)."""
    q = " ".join(question.lower().split())
    findings = match_findings(q)
    # the region of "... in the {region}" (RadGenome templates); otherwise the first region word after the finding
    region = None
    m = re.search(r"\b(?:in|of|within|upon examination of) (?:the |this |both )?([a-z \-]+?)(?: on this scan)?\??$", q)
    if m:
        region = _region_of(m.group(1))
        if region is None and _WHOLE.search(m.group(1)):
            region = None
    side = lobe = None
    for pat in _LOBE:
        if mt := pat.search(q):
            a, b = mt.groups()
            side, lobe = (a, b) if a in ("left", "right") else (b, a)
            region = region or "lung"
    if side is None and (mt := _SIDE.search(q)):
        side = mt.group(1)
    if _PHI.search(q) and not findings:
        return ParsedQuestion("phi")
    if _SIZE.search(q):
        kind = "size"
    elif _LOCATION.search(q):
        kind = "location"
    elif _ABNORMAL.search(q) and not findings:
        kind = "abnormality"
    elif findings and (_AUX.search(q) or q.rstrip("?").endswith(("there", "present", "seen"))):
        kind = "presence"
    elif findings:
        kind = "free"
    else:
        kind = ""
    from_history = False
    if kind in ("size", "location", "presence", "") and not findings:
        prior = _finding_from_history(history)
        if prior and (kind or _PRONOUN.search(q)):
            findings, from_history = [prior], True
            # "is it there?" asks presence; "what does it mean?" / "what causes it?" is a free question about it
            kind = kind or ("presence" if _AUX.search(q) else "free")
    if not kind:
        if _AUX.search(q) and re.search(r"\b(in|of) the\b", q) and (region or _WHOLE.search(q)):
            # a presence question about something ctscribe does not assess ("Is there a fracture in the bone?")
            term = re.sub(r"^\s*(can|could|is|are|does|do|did|was|were|has|have|any|show)\s+(there\s+)?"
                          r"(any |a |an )?(sign|signs|evidence|indication)?\s*(of\s+)?", "", q)
            return ParsedQuestion("out_of_scope", region=region, unknown_term=term.split(" in the ")[0].strip(" ?"))
        kind = "free" if (_MEDICAL.search(q) or region or _WHOLE.search(q) or _region_of(q)) else "out_of_scope"
    return ParsedQuestion(kind, findings, region, side, lobe, from_history)


def _finding_from_history(history: Sequence[dict[str, str]]) -> str | None:
    for turn in reversed(list(history or [])):
        names = match_findings(str(turn.get("content", "")))
        if names:
            return names[0]
    return None


def _label(name: str) -> str:
    return name[0].lower() + name[1:] if not name.isupper() else name


def _region_phrase(key: str | None) -> str:
    return "the scan" if key is None else "the " + region_info(key).label.lower()


def _compatible(finding_region: str, asked: str | None) -> bool:
    return asked is None or asked == finding_region or asked in _COMPATIBLE.get(finding_region, {finding_region})


def _nodules_matching(call: FindingCall, side: str | None, lobe: str | None) -> list[Any]:
    out = []
    for m in call.measurements:
        loc = lobe_text(m)
        if side and side not in loc:
            continue
        if lobe and lobe not in loc:
            continue
        out.append(m)
    return out


def _size_text(call: FindingCall) -> str | None:
    vals = {_canonical(m.name): m.value for m in call.measurements}
    n = call.name
    if n == "Lung nodule" and call.measurements:
        parts = [f"{nodule_diameter(m):.0f} mm in the {lobe_text(m)}" for m in call.measurements]
        return ("The nodule measures " if len(parts) == 1 else "The nodules measure ") + "; ".join(parts) + "."
    if n == "Lymphadenopathy" and (nodes := call.parts("lymph_node")):
        parts = [f"{float(m.value):.0f} mm ({m.extra.get('location') or 'mediastinum'})" for m in nodes]
        return ("The enlarged lymph node measures " if len(parts) == 1 else "The enlarged lymph nodes measure ") + \
            "; ".join(parts) + " in short axis."
    if n == "Bronchiectasis" and (tubes := call.parts("dilated_bronchus")):
        parts = [f"{float(m.value):.0f} mm in the {lobe_text(m)}" for m in tubes]
        return ("The dilated bronchus has a lumen of " if len(parts) == 1 else
                "The dilated bronchi have lumens of ") + "; ".join(parts) + "."
    if n == "Pleural effusion":
        parts = [f"about {vals[k]:.0f} mL on the {s}" for s in ("right", "left")
                 if (k := f"pleural_fluid_volume_ml_{s}") in vals]
        return "The pleural effusion measures " + " and ".join(parts) + "." if parts else None
    if n == "Pericardial effusion" and "pericardial_fluid_volume_ml" in vals:
        return f"The pericardial effusion measures about {vals['pericardial_fluid_volume_ml']:.0f} mL."
    if n == "Emphysema" and "laa950_percent" in vals:
        return f"Emphysema involves {vals['laa950_percent']:.1f}% of the lung volume below -950 HU (LAA-950)."
    if n == "Lung opacity" and "ground_glass_volume_ml" in vals:
        return f"The ground-glass opacity measures about {vals['ground_glass_volume_ml']:.0f} mL."
    if n == "Mosaic attenuation pattern" and "lung_attenuation_heterogeneity_percent" in vals:
        return (f"The mosaic attenuation involves about {vals['lung_attenuation_heterogeneity_percent']:.0f}% of the "
                "lung parenchyma.")
    if n == "Cardiomegaly" and "cardiothoracic_ratio" in vals:
        return f"The cardiothoracic ratio is {vals['cardiothoracic_ratio']:.2f}."
    if n == "Coronary artery wall calcification" and "coronary_calcium_score" in vals:
        return f"The approximate coronary calcium score is {vals['coronary_calcium_score']:.0f}."
    if n == "Arterial wall calcification" and "aortic_calcium_score" in vals:
        return f"The approximate aortic calcium score is {vals['aortic_calcium_score']:.0f}."
    return None


def _location_text(call: FindingCall, study: Study) -> str:
    if call.name == "Lung nodule" and call.measurements:
        locs = [f"the {lobe_text(m)} ({nodule_diameter(m):.0f} mm)" for m in call.measurements]
        return f"The {'nodule is' if len(locs) == 1 else 'nodules are'} in " + "; ".join(locs) + "."
    if call.name == "Lymphadenopathy" and (nodes := call.parts("lymph_node")):
        locs = sorted({str(m.extra.get("location") or "mediastinum") for m in nodes})
        return f"The enlarged lymph {'node is' if len(nodes) == 1 else 'nodes are'} in the " + " and the ".join(locs) + "."
    if call.name == "Bronchiectasis" and (tubes := call.parts("dilated_bronchus")):
        where = " and the ".join(sorted({lobe_text(m) for m in tubes}))
        return f"The dilated {'bronchus is' if len(tubes) == 1 else 'bronchi are'} in the {where}."
    if call.name == "Pleural effusion" and call.measurements:
        sides = [s for s in ("right", "left") if any(s in m.name for m in call.measurements)]
        where = "both pleural spaces" if len(sides) == 2 else f"the {sides[0]} pleural space"
        return f"The pleural effusion is in {where}."
    return f"The {_label(call.name)} is in {_region_phrase(call.region)}."


def answer_structured(p: ParsedQuestion, study: Study, calls: dict[str, FindingCall]) -> Answer | None:
    """Answer a template question from the finding calls; ``None`` when the question needs the LLM."""
    weights = study.weights
    if p.kind == "phi":
        return Answer(prompts.PHI_REFUSAL, kind="out_of_scope", weights=weights)
    if p.kind == "out_of_scope":
        text = prompts.OUT_OF_SCOPE
        if p.unknown_term:
            text = (f"I can't answer that from this scan: ctscribe does not assess {p.unknown_term!s}. It reports "
                    "these findings: " + ", ".join(_label(f.name) for f in FINDINGS) + ".")
        return Answer(text, kind="out_of_scope", weights=weights)
    if p.kind == "abnormality":
        if p.region in study.absent_regions:
            return Answer(prompts.absent_region_text(p.region) + " I can't assess it on this scan.",
                          evidence=[Evidence("region", f"{p.region}: absent", False, p.region)], kind="abnormality",
                          weights=weights)
        pos = [c for c in calls.values() if c.present and (p.region is None or c.region == p.region)]
        ev = [e for c in pos for e in c.evidence]
        if not pos:
            return Answer(f"No abnormality among the assessed findings in {_region_phrase(p.region)}.",
                          evidence=ev, kind="abnormality", weights=weights)
        parts = []
        for c in pos:
            s = _size_text(c) if c.source == "measured" else None
            parts.append(_label(c.name) + (f" ({s.rstrip('.')})" if s else ""))
        return Answer(f"Abnormalities in {_region_phrase(p.region)}: " + "; ".join(parts) + ".", evidence=ev,
                      kind="abnormality", weights=weights)
    if p.kind not in ("presence", "location", "size"):
        return None
    if not p.findings:
        pos = [c.name for c in calls.values() if c.present]
        hint = f" Findings on this scan: {', '.join(_label(n) for n in pos)}." if pos else ""
        return Answer(f"Which finding do you mean?{hint}", kind=p.kind, weights=weights)
    name = p.findings[0]
    call = calls[name]
    ev = list(call.evidence)
    from vision.registry import finding as _finding

    where = p.region or _finding(name).region  # no region asked: the finding's own region must be in view
    if where in study.absent_regions:
        return Answer(prompts.absent_region_text(where) + f" I can't say whether there is {_label(name)} there.",
                      evidence=[Evidence("region", f"{where}: absent", False, where)], kind=p.kind,
                      weights=weights)
    if call.source == "none":
        return Answer(f"I can't answer that from this scan: {_label(name)} was not assessed ({call.note}).",
                      evidence=ev, kind=p.kind, weights=weights)
    present_here = call.present and _compatible(call.region, p.region)
    sub = call
    if present_here and name == "Lung nodule" and (p.side or p.lobe):
        ms = _nodules_matching(call, p.side, p.lobe)
        present_here = bool(ms)
        sub = FindingCall(call.name, bool(ms), call.source, call.confidence, call.region, call.evidence, ms)
    if p.kind == "presence":
        where = (" in the " + (f"{p.side} {p.lobe} lobe" if p.side and p.lobe else f"{p.lobe} lobe" if p.lobe
                               else f"{p.side} lung")
                 if (p.side or p.lobe) and name == "Lung nodule" else
                 f" in {_region_phrase(p.region)}" if p.region else "")
        if present_here:
            detail = _size_text(sub) if sub.source == "measured" else None
            if call.source != "measured":  # a model guess is not a finding: say so (report wording, issue 7)
                return Answer(f"Yes, possibly: {_model_estimate(call, weights)}{where}, not measured \u2014 "
                              "verify.", evidence=ev, kind="presence", weights=weights)
            return Answer(f"Yes. {name} is present{where} (measured)." + (f" {detail}" if detail else ""),
                          evidence=ev, kind="presence", weights=weights)
        if call.withheld_reason:
            return Answer(f"Not reported: {_model_estimate(call, weights)}, but {call.withheld_reason} "
                          "— verify on the images.", evidence=ev, kind="presence", weights=weights)
        return Answer(f"No. No {_label(name)} is seen{where}.", evidence=ev, kind="presence", weights=weights)
    if not call.present:
        return Answer(f"No {_label(name)} is seen on this scan, so there is no {p.kind} to report.", evidence=ev,
                      kind=p.kind, weights=weights)
    if p.kind == "location":
        return Answer(_location_text(sub if present_here else call, study), evidence=ev, kind="location",
                      weights=weights)
    s = _size_text(sub if present_here else call) if call.source == "measured" else None
    if s is None:
        s = (f"{_model_estimate(call, weights)[0].upper()}{_model_estimate(call, weights)[1:]} but has no "
             "measurement on this scan, so I can't give its size.")
    return Answer(s, evidence=ev, kind="size", weights=weights)


def _model_estimate(call: FindingCall, weights: str = "") -> str:
    """'consolidation is suggested by the image model (probability 0.73; demo weights trained on synthetic
    phantoms)'."""
    from chatapp.schema import DEMO_WEIGHTS_NOTICE

    note = f"; {DEMO_WEIGHTS_NOTICE}" if "demo" in (weights or "").lower() else ""
    return f"{_label(call.name)} is suggested by the image model (probability {_prob(call):.2f}{note})"


def _prob(call: FindingCall) -> float:
    p = call.probability
    return float(call.confidence) if p is None else p


def study_facts(study: Study, calls: dict[str, FindingCall]) -> str:
    """Plain-text facts about the Study for the LLM prompt (findings with evidence, key measurements, absent regions)."""
    lines = []
    pos = [c for c in calls.values() if c.present]
    lines.append("Findings present: " + ("; ".join(
        f"{c.name} ({c.source}: " + ", ".join(e.label for e in c.evidence[:3]) + ")" for c in pos) if pos else "none"))
    neg = [c.name for c in calls.values() if not c.present and c.source != "none"]
    if neg:
        lines.append("Findings absent: " + ", ".join(neg))
    ms = [m for m in study.measurements if m.name != "nodule" and m.value is not None]
    if ms:
        lines.append("Measurements: " + "; ".join(f"{m.name} = {m.value:.4g} {m.unit}" for m in ms))
    if study.absent_regions:
        lines.append("Not in the field of view: " + ", ".join(study.absent_regions))
    return "\n".join(lines)


def plan_question(question: str, history: Sequence[dict[str, str]], study: Study,
                  calls: dict[str, FindingCall]) -> Answer | FreePlan:
    """Answer from structure when possible, else return what the LLM needs for a free answer."""
    p = parse_question(question, history)
    ans = answer_structured(p, study, calls)
    if ans is not None:
        return ans
    query = question
    if p.kind == "free" and p.from_history and p.findings:
        # "What does it mean?" after a turn about emphysema: answer (and retrieve) about emphysema
        query = f"{question} ({_label(p.findings[0])})"
    ev = [e for n in p.findings for e in calls[n].evidence] if p.findings else []
    return FreePlan(p, query, ev)


def citations_from_hits(hits: Sequence[Any]) -> list[Citation]:
    out = []
    for i, h in enumerate(hits, 1):
        if hasattr(h, "to_citation"):
            out.append(h.to_citation(i))
        else:
            out.append(Citation(i, getattr(h, "key", f"hit-{i}"), getattr(h, "title", ""), getattr(h, "source", ""),
                                getattr(h, "section", ""), getattr(h, "url", ""), getattr(h, "text", ""),
                                getattr(h, "score", None)))
    return out


def fallback_free_answer(question: str, study: Study, calls: dict[str, FindingCall],
                         citations: Sequence[Citation]) -> str:
    """Answer without the LLM: the scan facts and the retrieved passages, said plainly."""
    facts = study_facts(study, calls).splitlines()[0]
    text = f"The language model is not available, so here are the scan facts and the most relevant passages. {facts}."
    for c in list(citations)[:3]:
        snippet = " ".join(c.text.split())[:240]
        text += f" [{c.n}] {c.title}: {snippet}"
    return text


__all__ = [
    "FreePlan",
    "ParsedQuestion",
    "answer_structured",
    "citations_from_hits",
    "fallback_free_answer",
    "match_findings",
    "parse_question",
    "plan_question",
    "study_facts",
]
