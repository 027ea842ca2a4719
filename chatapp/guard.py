"""The report guard: LLM text may only say what the structure supports, with the measured numbers.

Two checks, both recorded in ``Report.guard`` (nothing is ever silently kept):

1. ``apply_rephrasings``: each LLM rewrite of a structured sentence is re-labelled with the project's report labeler
   (``chatapp.evaluation.labeler``), its numbers are compared with the structured sentence's, and so is its
   vocabulary. A finding that the structured sentence does not assert, a finding it dropped, a number that differs,
   a content word it introduced (e.g. "cardiotracheal" for "cardiothoracic": no finding and no number changed, yet
   the sentence is wrong) or a medical term it dropped → the rewrite is rejected and the structured sentence is kept.
2. ``audit``: every kept sentence of the final report is labelled once more; a sentence asserting a finding that no
   finding call supports is removed (``status="removed"``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from chatapp.schema import Report, Sentence
from vision.registry import FINDINGS

log = logging.getLogger(__name__)

_NUM = re.compile(r"(?<![\w.])[-\u2212]?\d+(?:[.,]\d+)?")
_ENUM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")
_NEG = re.compile(r"\b(no|not|without|absence of|absent|negative for|free of|neither|nor|rule out)\b", re.IGNORECASE)


def extract_numbers(text: str) -> list[float]:
    """Numbers in a sentence (a leading list enumerator such as ``1.`` is ignored)."""
    text = _ENUM.sub("", text)
    out = []
    for t in _NUM.findall(text):
        try:
            out.append(float(t.replace("\u2212", "-").replace(",", ".")))
        except ValueError:
            continue
    return out


# Words a rewrite may add or drop freely: grammar and reporting style, never anatomy, findings or qualifiers.
# Everything else of >= 4 letters is a content word: a rewrite must keep the structured sentence's content words
# and may not bring new ones (a 135M model's "synonyms" are where wrong anatomy and made-up terms come from).
_STYLE_TEXT = """
about also approximately approximate appear appears appearing around been being both demonstrate demonstrates
demonstrated detected does evident evidence findings finding from have having here identified image imaging into
measure measures measured measuring measurement noted note observed present presence seen shown show shows
some that their there these this those visible visualized visualised were where which with within
"""
STYLE_WORDS: frozenset[str] = frozenset(_STYLE_TEXT.split())
_WORD = re.compile(r"[a-z]+")


def plural_fold(w: str) -> str:
    """Crude plural folding so 'effusions'/'effusion' and 'lobes'/'lobe' count as one word."""
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def content_words(text: str) -> set[str]:
    """Lower-case words of >= 4 letters that are not style words, plural-folded ('Pleural effusions' → {pleural,
    effusion})."""
    return {plural_fold(w) for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in STYLE_WORDS}


def vocabulary_reasons(rewrite: str, original: str) -> list[str]:
    """Reasons from the vocabulary check: introduced content words, dropped medical terms (empty: acceptable)."""
    new, old = content_words(rewrite), content_words(original)
    reasons = []
    if extra := sorted(new - old):
        reasons.append("introduced word(s) not in the structured sentence: " + ", ".join(extra))
    if missing := sorted(old - new):
        reasons.append("dropped term(s) of the structured sentence: " + ", ".join(missing))
    return reasons


def _fallback_positive(text: str) -> set[str]:
    """Registry-based labeler used only when ``chatapp.evaluation.labeler`` is not importable."""
    found: set[str] = set()
    low = text.lower()
    for f in FINDINGS:
        for term in (f.name.lower(),) + tuple(s.lower() for s in f.synonyms):
            for mt in re.finditer(r"\b" + re.escape(term) + r"(s|es)?\b", low):
                if not _NEG.search(low[max(0, mt.start() - 60):mt.start()]):
                    found.add(f.name)
    if "Pericardial effusion" in found and "pleural" not in low:
        found.discard("Pleural effusion")
    return found


def labeler_name() -> str:
    try:
        import chatapp.evaluation.labeler  # noqa: F401

        return "chatapp.evaluation.labeler"
    except ImportError:
        return "fallback (registry synonyms)"


def positive_findings(text: str) -> set[str]:
    """CT-RATE names a text asserts (negated mentions excluded; uncertain mentions count as asserted).

    Uses the project labeler's ``find_mentions`` so the guard and the evaluation agree.
    """
    try:
        from chatapp.evaluation.labeler import find_mentions
    except ImportError:
        return _fallback_positive(text)
    return {m.finding for m in find_mentions(text) if not m.negated}


def check_rewrite(rewrite: str, original: Sentence) -> list[str]:
    """Reasons to reject an LLM rewrite of ``original`` (empty list: the rewrite is acceptable)."""
    reasons: list[str] = []
    if not rewrite.strip():
        return ["empty rewrite"]
    allowed = set(original.findings)
    said = positive_findings(rewrite)
    if extra := sorted(said - allowed):
        reasons.append("unsupported finding(s): " + ", ".join(extra))
    if missing := sorted(allowed - said):
        reasons.append("dropped finding(s): " + ", ".join(missing))
    orig_nums = extract_numbers(original.text)
    for x in extract_numbers(rewrite):
        if not any(abs(x - y) < 1e-9 for y in orig_nums):
            reasons.append(f"number {x:g} differs from the measured values {sorted(set(orig_nums))}")
    for y in orig_nums:
        if not any(abs(x - y) < 1e-9 for x in extract_numbers(rewrite)):
            reasons.append(f"measured number {y:g} missing")
            break
    reasons.extend(vocabulary_reasons(rewrite, original.text))
    if len(rewrite) > 4 * len(original.text) + 80:
        reasons.append("rewrite much longer than the structured sentence")
    return reasons


def apply_rephrasings(report: Report, rewrites: dict[str, str]) -> None:
    """Replace sentences by their accepted LLM rewrites; record every rejection in ``report.guard``.

    Args:
        report: the structured report (modified in place).
        rewrites: sentence id → LLM text.
    """
    by_id = {s.id: s for s in report.sentences()}
    accepted, rejected = [], []
    for sid, text in rewrites.items():
        s = by_id.get(sid)
        if s is None:
            continue
        text = " ".join(_ENUM.sub("", text).split())
        reasons = check_rewrite(text, s)
        if reasons:
            rejected.append({"id": sid, "region": s.region, "llm_text": text, "kept": s.text, "reasons": reasons})
        else:
            accepted.append({"id": sid, "structured": s.text, "llm_text": text})
            s.evidence = list(s.evidence)
            s.text = text
    g = report.guard
    g.setdefault("labeler", labeler_name())
    g["rephrased"] = len(rewrites)
    g["accepted"] = accepted
    g["rejected"] = rejected


def audit(report: Report, supported: set[str]) -> int:
    """Remove kept sentences that assert a finding no finding call supports; return how many were removed."""
    removed: list[dict[str, Any]] = []
    for s in report.sentences():
        if s.status == "removed":
            continue
        bad = positive_findings(s.text) - supported
        if bad:
            s.status = "removed"
            removed.append({"id": s.id, "region": s.region, "text": s.text, "unsupported": sorted(bad)})
    g = report.guard
    g.setdefault("labeler", labeler_name())
    g["removed"] = removed
    g["unsupported_after_guard"] = sum(1 for s in report.sentences() if s.status != "removed"
                                       and positive_findings(s.text) - supported)
    if removed:
        log.warning("guard removed %d sentence(s) asserting unsupported findings", len(removed))
    return len(removed)
