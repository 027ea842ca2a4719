"""Prompt templates for the LLM parts of the report and the chat, plus the fixed wording of structured sentences.

Pure data and string formatting: no torch, no model. Keeping the wording here (not scattered over report.py/vqa.py)
lets the guard, the tests and the app share one source of truth.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from vision.registry import region as region_info

REPHRASE_SYSTEM = (
    "You rewrite one CT report sentence in radiology style. Keep every medical word and every number exactly. "
    "Reply with the rewritten sentence only."
)

# One worked example: a 135M instruct model copies the answer format of a shown example far more reliably than it
# follows an instruction (without it SmolLM2 echoed "Section: Lungs" for 6 of 8 sentences on the TCIA CT).
REPHRASE_EXAMPLE = ("Pleural effusion on the left, about 150 mL.", "There is a left pleural effusion of about 150 mL.")

CHAT_SYSTEM = (
    "You are ctscribe, an assistant that answers questions about one chest CT scan. "
    "Use only the scan facts and the numbered passages given with the question. Cite passages as [n]. "
    "If the facts do not answer the question, say that it cannot be answered from this scan. "
    "You are a drafting aid, not a diagnosis."
)

OUT_OF_SCOPE = ("I can't answer that from this scan. I can answer questions about the findings, regions and "
                "measurements of this CT (for example presence, location or size of a finding), and explain "
                "them with cited passages.")

PHI_REFUSAL = ("I can't answer that from this scan: ctscribe keeps no patient identity, dates or demographic "
               "details, only the image and its PHI-free acquisition metadata.")

# Concise normal statements per region; several wordings so reports of different normal studies do not collapse to
# one template (the variant is chosen deterministically from the study id). They never name one of the 18 findings,
# so a labeler cannot read them as positive.
NORMAL_STATEMENTS: dict[str, tuple[str, ...]] = {
    "lung": ("Both lungs are clear.", "The lung parenchyma is unremarkable.", "The lungs appear normal."),
    "trachea_and_bronchi": ("The trachea and main bronchi are patent.", "The central airways are patent.",
                            "Trachea and both main bronchi are open and of normal calibre."),
    "mediastinum": ("Mediastinal structures are unremarkable.", "The mediastinum appears normal.",
                    "Mediastinal contours are within normal limits."),
    "heart": ("Heart size is within normal limits.", "The heart is of normal size.",
              "Cardiac contour and size appear normal."),
    "esophagus": ("The esophagus is unremarkable.", "The esophagus appears normal.",
                  "Esophageal course and calibre are normal."),
    "pleura": ("The pleural spaces are clear.", "No pleural abnormality is seen.", "Pleural surfaces are smooth."),
}

NO_FINDINGS_IMPRESSION = ("No abnormality identified among the assessed findings.",
                          "No significant abnormality detected in the assessed regions.",
                          "Unremarkable study for the assessed findings.")

# Positive statements for findings decided by the model (no measurement available). The finding's CT-RATE name
# or a registry synonym appears verbatim so the labeler can verify the sentence.
MODEL_FINDING_TEXT: dict[str, str] = {
    "Medical material": "Medical material (a metallic device) is present.",
    "Arterial wall calcification": "Arterial wall calcification is seen.",
    "Cardiomegaly": "Cardiomegaly is present.",
    "Pericardial effusion": "Pericardial fluid collection is present.",  # "effusion" alone reads as pleural
    "Coronary artery wall calcification": "Coronary artery wall calcification is seen.",
    "Hiatal hernia": "A hiatal hernia is present.",
    "Lymphadenopathy": "Mediastinal lymphadenopathy is present.",
    "Emphysema": "Emphysema is present in the lungs.",
    "Atelectasis": "Atelectasis is present in the lungs.",
    "Lung nodule": "A lung nodule is present.",
    "Lung opacity": "A lung opacity is present.",
    "Pulmonary fibrotic sequela": "Pulmonary fibrotic sequelae are present.",
    "Pleural effusion": "Pleural effusion is present.",
    "Mosaic attenuation pattern": "A mosaic attenuation pattern is seen in the lungs.",
    "Peribronchial thickening": "Peribronchial thickening is present.",
    "Consolidation": "Consolidation is present in the lungs.",
    "Bronchiectasis": "Bronchiectasis is present.",
    "Interlobular septal thickening": "Interlobular septal thickening is present.",
}

# Subjects of the model-estimate sentences (a finding decided by the image model alone, no measurement behind it):
# "<subject> is suggested by the image model (probability 0.73; demo weights ...) — verify." The labeler reads them
# as uncertain mentions, which count as positive, so the evaluation and the guard still see the finding.
MODEL_SUGGESTION_SUBJECT: dict[str, str] = {
    "Medical material": "Medical material (a device)",
    "Arterial wall calcification": "Arterial wall calcification",
    "Cardiomegaly": "Cardiomegaly",
    "Pericardial effusion": "A pericardial fluid collection",
    "Coronary artery wall calcification": "Coronary artery wall calcification",
    "Hiatal hernia": "A hiatal hernia",
    "Lymphadenopathy": "Mediastinal lymphadenopathy",
    "Emphysema": "Emphysema",
    "Atelectasis": "Atelectasis",
    "Lung nodule": "A lung nodule",
    "Lung opacity": "A lung opacity",
    "Pulmonary fibrotic sequela": "Pulmonary fibrotic sequelae",
    "Pleural effusion": "Pleural effusion",
    "Mosaic attenuation pattern": "A mosaic attenuation pattern",
    "Peribronchial thickening": "Peribronchial thickening",
    "Consolidation": "Consolidation",
    "Bronchiectasis": "Bronchiectasis",
    "Interlobular septal thickening": "Interlobular septal thickening",
}

MODEL_ESTIMATE_NOTE = "not measured, image-model estimate"


def model_suggestion_text(finding_name: str, probability: float, weights_note: str = "") -> str:
    """'Consolidation is suggested by the image model (probability 0.73; demo weights trained on synthetic
    phantoms) — verify.' Honest wording for a finding only the model supports.

    Args:
        finding_name: CT-RATE finding name.
        probability: the model's P(finding), 0..1 (printed with 2 decimals; stored beside it as evidence).
        weights_note: e.g. ``DEMO_WEIGHTS_NOTICE`` when the weights are demo weights; empty otherwise.
    """
    subject = MODEL_SUGGESTION_SUBJECT[finding_name]
    verb = "are" if subject.endswith("sequelae") else "is"
    inside = f"probability {probability:.2f}" + (f"; {weights_note}" if weights_note else "")
    return f"{subject} {verb} suggested by the image model ({inside}) \u2014 verify."


def model_suggestions_impression(items: Sequence[tuple[str, float]], weights_note: str = "") -> str:
    """One impression sentence listing the model-only findings apart from the measured ones.

    Args:
        items: (CT-RATE finding name, probability) pairs.
        weights_note: as in ``model_suggestion_text``.
    """
    listed = ", ".join(f"{MODEL_SUGGESTION_SUBJECT[n][0].lower() + MODEL_SUGGESTION_SUBJECT[n][1:]} "
                       f"(probability {p:.2f})" for n, p in items)
    why = "no supporting measurement" + (f"; {weights_note}" if weights_note else "")
    return f"Suggested by the image model only ({why}), to verify: {listed}."


ABSENT_REGION = "The {label} is not in the field of view."


NOT_ASSESSED = "The {label} {verb} in the field of view but {pron} not assessed on this scan{why}."
UNASSESSED_REGION = "The {label} {verb} in the field of view; ctscribe does not grade {pron2} for abnormalities."

_PLURAL = {"lung", "trachea_and_bronchi", "bone"}


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def absent_region_text(region_key: str) -> str:
    """'The thyroid is not in the field of view.' (grammatical number from the region's label)."""
    text = ABSENT_REGION.format(label=region_info(region_key).label.lower())
    if region_key in _PLURAL:
        text = text.replace(" is not ", " are not ")
    return _cap(text)


def not_assessed_text(region_key: str, why: str = "") -> str:
    """The region is visible but none of its findings could be assessed (model and measurements unavailable)."""
    pl = region_key in _PLURAL
    return _cap(NOT_ASSESSED.format(label=region_info(region_key).label.lower(), verb="are" if pl else "is",
                                    pron="they were" if pl else "it was", why=f" ({why})" if why else ""))


def unassessed_region_text(region_key: str) -> str:
    """Regions without any of the 18 findings (bones, thyroid, breast, upper abdomen): say so, never 'normal'."""
    pl = region_key in _PLURAL
    return _cap(UNASSESSED_REGION.format(label=region_info(region_key).label.lower(), verb="are" if pl else "is",
                                         pron2="them" if pl else "it"))


def pick_variant(options: Sequence[str], seed: str) -> str:
    """Deterministic choice among wordings (stable across runs, unlike ``hash()``)."""
    import zlib

    return options[zlib.crc32(seed.encode("utf-8")) % len(options)]


def rephrase_messages(sentence: str, region_label: str = "") -> list[dict[str, str]]:
    """Chat messages asking the LLM to rephrase one structured sentence: system, one example turn, the sentence alone.

    ``region_label`` is accepted for compatibility and not shown: small models echo it back ("Section: Lungs").
    """
    ex_in, ex_out = REPHRASE_EXAMPLE
    return [{"role": "system", "content": REPHRASE_SYSTEM},
            {"role": "user", "content": ex_in}, {"role": "assistant", "content": ex_out},
            {"role": "user", "content": sentence}]


_ECHO = re.compile(r"^\s*(?:section|sentence|rewritten sentence|rewrite|answer)\s*:\s*", re.IGNORECASE)


def clean_rephrase(text: str) -> str:
    """First non-empty line of an LLM rewrite without echoed labels ("Section: Lungs", "Rewritten sentence:").

    A line that is only a label with a section name (no sentence) comes back empty, which the guard rejects.
    """
    for line in str(text).splitlines():
        line = line.strip().strip('"').strip()
        if not line:
            continue
        if re.match(r"^\s*section\s*:", line, re.IGNORECASE):
            continue  # "Section: Lungs" carries no sentence
        return _ECHO.sub("", line).strip()
    return ""


def rephrase_max_new_tokens(sentence: str, tokenizer: Any = None, cap: int = 60) -> int:
    """Generation budget near the source length: a faithful rewrite is about as long as the sentence.

    Args:
        sentence: the structured sentence.
        tokenizer: the LLM's tokenizer (``None``: ~4 characters per token).
        cap: upper bound (``report.max_new_tokens``).
    """
    n = len(tokenizer(sentence, add_special_tokens=False).input_ids) if tokenizer is not None else len(sentence) // 4
    return max(8, min(int(cap), int(n * 1.3) + 6))


def chat_messages(facts: str, passages: Sequence[Any], history: Sequence[dict[str, str]],
                  question: str, passage_chars: int = 300) -> list[dict[str, str]]:
    """Messages for a free question: system prompt + scan facts, prior turns, then the numbered passages and the
    question in the last user message.

    Everything that does not change between questions about one study comes first, so the LLM's prompt-prefix KV
    cache (``model.llm.prefix_cache``) reuses it and a question prefills only its passages and its own words.

    Args:
        facts: plain-text summary of the Study (findings with evidence, measurements, absent regions).
        passages: retrieved passages, each with ``title`` and ``text`` (numbered [1], [2], ... in this order).
        history: prior turns as ``{"role", "content"}`` dicts (oldest first).
        question: the user's question.
        passage_chars: characters of each passage shown to the LLM (the chat time-to-first-token grows with it).
    """
    msgs = [{"role": "system", "content": CHAT_SYSTEM + "\n\nScan facts:\n" + facts}]
    msgs.extend({"role": h["role"], "content": h["content"]} for h in history if h.get("role") in ("user", "assistant"))
    if passages:
        cited = "\n".join(f"[{i}] {getattr(p, 'title', '')}: {getattr(p, 'text', '')[:passage_chars]}"
                          for i, p in enumerate(passages, 1))
        question = f"Passages:\n{cited}\n\nQuestion: {question}"
    msgs.append({"role": "user", "content": question})
    return msgs
