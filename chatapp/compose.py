"""Grounded answers to free chat questions: the Study's own facts + verbatim knowledge-base sentences, cited [n].

The embedded 135M LLM answers free questions poorly on CPU (on the TCIA CT, "What does emphysema mean for this
patient?" got "The patient is a medical aid, not a diagnosis.": an echo of its system prompt). This module builds the
answer without it, and judges an LLM answer when there is one:

- ``fact_sentences``: what THIS scan shows about the finding(s) the question is about (measured values, the image
  model's probability with the demo-weights wording, "no ... is seen", "not assessed"), from the same finding calls
  the report uses, so chat and report never disagree.
- ``passage_sentences``: the sentences of the retrieved passages that best match the question (IDF-weighted content
  words shared with the question and the finding names, a small bonus for a passage's opening sentence and for the
  better-ranked passage), kept verbatim from the knowledge base with their ``[n]``.
- ``compose_answer``: both, as an ordered list of sentences (the pipeline streams them one by one, so the first text
  appears at once) plus the citations actually cited, renumbered 1..k in order of first use.
- ``llm_gate``: reasons to reject an LLM answer (empty, echo of the system prompt, off topic, repeating itself,
  a finding the scan does not support or a present finding denied, invented numbers).

Pure Python (no torch, no store calls): the pipeline passes the retrieved citations in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from chatapp import prompts
from chatapp.guard import plural_fold
from chatapp.report import FindingCall, finding_sentences
from chatapp.schema import DEMO_WEIGHTS_NOTICE, Citation, Evidence, Study
from vision.registry import finding as finding_info
from vision.registry import region as region_info

# Words that carry no topic: question words, chat filler, and words every answer about a scan shares.
_STOP = frozenset("""
a about above after again all also am an and any are as at be because been before being below between both but by
can could did do does doing done each explain explained few for from further had has have having he her here how i
if in into is it its itself just like may me mean means meaning might more most much must my no nor not now of on
once only or other our out over own patient patients please same scan scans she should so some such tell than that
the their them then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your ct image study imply implies significance significant
""".split())
_WORD = re.compile(r"[a-z][a-z0-9\-]+")
_MEANING = re.compile(r"\b(mean|means|meaning|what is|what are|define|definition|explain)\b", re.IGNORECASE)
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")
_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


def content_words(text: str) -> set[str]:
    """Lower-case, plural-folded words of >= 3 letters that are not stop words."""
    return {plural_fold(w) for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP}


def split_sentences(text: str) -> list[str]:
    """Sentences of a knowledge passage (whitespace normalised; a split needs '. ' followed by a capital)."""
    return [s.strip() for s in _SPLIT.split(" ".join(str(text).split())) if s.strip()]


def _lc(s: str) -> str:
    """Lower-case the first letter unless the first word is an acronym ('A 7 mm nodule' -> 'a 7 mm nodule', 'LAA-950'
    stays)."""
    first = s.split(" ", 1)[0] if s else ""
    return s if not s or (len(first) > 1 and first[:2].isupper()) else s[0].lower() + s[1:]


def passage_body(c: Citation) -> str:
    """A stored passage without its heading line ('<title> (<section>).' the store prepends for retrieval)."""
    t = str(c.text)
    if c.title and t.startswith(c.title):
        nl = t.find("\n")
        if nl != -1 and nl <= len(c.title) + len(c.section or "") + 8:
            return t[nl + 1:]
        rest = t[len(c.title):]
        if c.section and rest.startswith(f" ({c.section})"):
            rest = rest[len(c.section) + 3:]
        return rest.lstrip(" .")
    return t


# Measurement words that name the finding they measure ("What is LAA-950?" is about emphysema).
# The last field: the question is broad (follow-up, cancer risk), so the scan's other findings are listed after it.
_MEASURE_TOPICS: tuple[tuple[re.Pattern, str, bool], ...] = (
    (re.compile(r"\blaa|low attenuation area|-950|densitometr", re.IGNORECASE), "Emphysema", False),
    (re.compile(r"cardiothoracic|\bctr\b|heart size", re.IGNORECASE), "Cardiomegaly", False),
    (re.compile(r"aortic calcium|aortic calcif", re.IGNORECASE), "Arterial wall calcification", False),
    (re.compile(r"agatston|calcium score|\bcac\b", re.IGNORECASE), "Coronary artery wall calcification", False),
    (re.compile(r"fleischner|lung-?rads|follow[- ]?up|lung cancer|malignan", re.IGNORECASE), "Lung nodule", True),
    (re.compile(r"ground[- ]glass", re.IGNORECASE), "Lung opacity", False),
)


def _readable(label: str) -> str:
    """'pleural_fluid_volume_left_ml = 0 mL' -> 'pleural fluid volume left = 0 mL'."""
    name, _, rest = label.partition(" = ")
    words = [w for w in name.split("_") if w not in ("ml", "percent", "hu", "mm", "count")]
    return " ".join(words) + (f" = {rest}" if rest else "")


def _is_demo(weights: str) -> bool:
    return "demo" in (weights or "").lower()


# ------------------------------------------------------------------------------------------------ study facts
def fact_sentences(findings: Sequence[str], study: Study, calls: dict[str, FindingCall], settings: dict,
                   region: str | None = None, max_findings: int = 3) -> list[tuple[str, list[Evidence]]]:
    """What this scan shows about ``findings`` (CT-RATE names), or — when none is named — its positive findings.

    Args:
        findings: the findings the question is about (first = subject), possibly resolved from history/passages.
        study: the analysed Study (its weights label decides the demo-weights wording).
        calls: the pipeline's finding calls (``chatapp.report.call_findings``).
        settings: the ``report:`` settings (nodule size decimals).
        region: a region key the question names (restricts the summary of positive findings).
        max_findings: at most this many findings are described.

    Returns:
        (sentence, evidence) pairs, in the order to say them.
    """
    note = DEMO_WEIGHTS_NOTICE if _is_demo(study.weights) else ""
    out: list[tuple[str, list[Evidence]]] = []
    if region and region in study.absent_regions:
        return [(prompts.absent_region_text(region), [Evidence("region", f"{region}: absent", False, region)])]
    if findings:
        for name in list(dict.fromkeys(findings))[:max_findings]:
            call = calls.get(name)
            if call is None:
                continue
            out.append(_one_fact(call, study, settings, note))
        return out
    pos = [c for c in calls.values() if c.present and (region is None or c.region == region)]
    if not pos:
        where = "the scan" if region is None else "the " + region_info(region).label.lower()
        return [(f"No abnormality is seen in {where} among the findings ctscribe assesses.",
                 [e for c in calls.values() if c.region == (region or c.region) for e in c.evidence[:1]][:6])]
    measured = [c for c in pos if c.source == "measured"]
    model = [c for c in pos if c.source != "measured"]
    if measured:
        parts = [_short(c, settings) for c in measured]
        out.append(("Measured on this scan: " + "; ".join(parts) + ".", [e for c in measured for e in c.evidence]))
    if model:
        inside = "; ".join(f"{_lc(c.name)} (probability {c.confidence:.2f})" for c in model)
        why = f"not measured; {note}" if note else "not measured"
        out.append((f"Suggested by the image model only ({why}), to verify: {inside}.",
                    [e for c in model for e in c.evidence]))
    return out


def _one_fact(call: FindingCall, study: Study, settings: dict, note: str) -> tuple[str, list[Evidence]]:
    label = _lc(call.name)
    ev = list(call.evidence)
    if call.source == "none":
        return f"{call.name} was not assessed on this scan ({call.note or 'no measurement and no model'}).", ev
    if (f := finding_info(call.name)) and f.region in study.absent_regions:
        return prompts.absent_region_text(f.region) + f" I can't say whether there is {label}.", ev
    if call.present:
        sents = [s.text for s in finding_sentences(call, settings, note)]
        if call.source != "measured":
            return "On this scan, " + _lc(sents[0]), ev
        first = sents[0]
        if first.endswith(("is present.", "is seen.", "are present.")):
            text = "On this scan, " + _lc(first)
        else:
            text = "This scan shows " + _lc(first)
        if len(sents) > 1:
            text += " " + " ".join(sents[1:])
        return text, ev
    if call.source == "measured":
        m = next((e for e in ev if e.kind == "measurement"), None)
        return f"No {label} is seen on this scan" + (f" (measured: {_readable(m.label)})." if m else
                                                      " (measured)."), ev
    p = call.confidence if call.probability is None else call.probability
    inside = f"image model probability {p:.2f}" + (f"; {note}" if note else "")
    if call.withheld_reason:  # the out-of-domain guard kept a model-only finding out of the report
        return f"{call.name} is not reported ({inside}): {call.withheld_reason}; verify on the images.", ev
    return f"No {label} is called on this scan ({inside}).", ev


def _short(call: FindingCall, settings: dict) -> str:
    """'emphysema (LAA-950 11.4%)': a finding with its key measured value."""
    text = finding_sentences(call, settings)[0].text.rstrip(".")
    return _lc(text)


# ------------------------------------------------------------------------------------------------ passages
@dataclass
class Picked:
    """One passage sentence chosen for an answer."""

    text: str
    citation: Citation
    score: float
    position: int = 0  # sentence index inside its passage


def passage_sentences(question: str, citations: Sequence[Citation], topic_terms: Sequence[str] = (),
                      k: int = 2, max_chars: int = 400) -> list[Picked]:
    """The ``k`` passage sentences that best match the question, verbatim.

    Score = sum of IDF weights (over all candidate sentences) of the question's content words the sentence contains
    + 0.5 per topic term (finding names) it names + 0.3 for a passage's first sentence (where the knowledge base
    defines its subject) + 0.1 / passage rank. Sentences sharing nothing with the question or the topic are never
    picked, so an unrelated passage adds no text.

    Args:
        question: the user's question.
        citations: retrieved passages (their ``text``), in retrieval order.
        topic_terms: finding names (or other phrases) the answer is about.
        k: sentences to return.
        max_chars: longer sentences are skipped (tables, lists).
    """
    cands: list[tuple[str, Citation, int, set[str]]] = []
    for c in citations:
        for i, s in enumerate(split_sentences(passage_body(c))):
            if 25 <= len(s) <= max_chars:
                cands.append((s, c, i, content_words(s)))
    if not cands:
        return []
    qw = content_words(question)
    df: dict[str, int] = {}
    for _, _, _, ws in cands:
        for w in ws & qw:
            df[w] = df.get(w, 0) + 1
    n = len(cands)
    topics = [t.lower() for t in topic_terms if t]
    asks_meaning = bool(_MEANING.search(question))
    picked: list[Picked] = []
    for s, c, i, ws in cands:
        low = s.lower()
        lex = sum(math.log(1.0 + n / df[w]) for w in ws & qw)
        top = 0.5 * math.log(1.0 + n) if any(t in low for t in topics) else 0.0
        if lex <= 0 and top <= 0:
            continue
        score = lex + top + (0.3 if i == 0 else 0.0) + 0.1 / max(1, c.n)
        if asks_meaning and any(re.match(re.escape(t) + r"s?\b(?: \([^)]*\))? (?:is|are|means)\b", low) for t in topics):
            score += 1.0  # "What does emphysema mean?": the knowledge base's definition sentence
        picked.append(Picked(s, c, score, i))
    picked.sort(key=lambda p: -p.score)
    out: list[Picked] = []
    for p in picked:
        if any(p.text == q.text for q in out):
            continue
        out.append(p)
        if len(out) == k:
            break
    return out


def _with_marker(sentence: str, n: int) -> str:
    s = sentence.rstrip()
    end = s[-1] if s and s[-1] in ".!?" else "."
    return f"{s.rstrip('.!?').rstrip()} [{n}]{end}"


# ------------------------------------------------------------------------------------------------ the answer
@dataclass
class Composed:
    """An extractive answer: ``sentences`` in order (join with spaces), the citations they cite, their evidence."""

    sentences: list[str] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def compose_answer(question: str, findings: Sequence[str], study: Study, calls: dict[str, FindingCall],
                   citations: Sequence[Citation], settings: dict, region: str | None = None,
                   k_sentences: int = 2, guidance: Sequence[tuple[str, Citation]] = ()) -> Composed:
    """The grounded extractive answer to a free question (see the module docstring).

    Args:
        question: the user's question (with a follow-up's resolved finding appended by the caller if wanted).
        findings: CT-RATE names the question is about (may be empty).
        study, calls, settings: as for ``fact_sentences``.
        citations: retrieved passages in retrieval order (their ``n`` as retrieved).
        region: a region key the question names.
        k_sentences: knowledge-base sentences to quote.
        guidance: (sentence, citation) pairs said before the quotes, e.g. the report's Fleischner recommendation
            for the measured nodule ("... suggests ... [1]."; its marker is renumbered); quotes from the same
            passage are then skipped.
    """
    out = Composed()
    facts = fact_sentences(findings, study, calls, settings, region)
    topic, broad = topic_of(question, citations) if not findings and not region else (None, False)
    if topic in calls:
        # no finding named: the finding the question is about first, then (broad questions) what else the scan shows
        findings = [topic]
        others = {n: c for n, c in calls.items() if n != topic}
        facts = fact_sentences(findings, study, calls, settings)
        if broad and any(c.present for c in others.values()):
            facts += [(t.replace("Measured on this scan:", "Also measured on this scan:"), ev)
                      for t, ev in fact_sentences([], study, others, settings)]
    for text, ev in facts:
        out.sentences.append(text)
        out.evidence.extend(ev)
    topics = [_lc(n) for n in findings] + [t for n in findings for t in finding_info(n).synonyms[:2]]
    renum: dict[str, int] = {}
    by_key = {c.key: c for c in citations}
    for text, cit in guidance:
        n = renum.setdefault(cit.key, len(renum) + 1)
        by_key.setdefault(cit.key, cit)
        out.sentences.append(_with_marker(re.sub(r"\s*\[\d+\]", "", text), n))
    n_quotes = k_sentences - len(guidance) if guidance else max(1, k_sentences)
    picks = [p for p in passage_sentences(question, citations, topics, k=k_sentences + len(guidance))
             if p.citation.key not in renum][:max(0, n_quotes)]
    for p in picks:
        n = renum.setdefault(p.citation.key, len(renum) + 1)
        out.sentences.append(_with_marker(p.text, n))
    out.citations = [replace(by_key[key], n=n) for key, n in renum.items()]
    for c in out.citations:
        out.evidence.append(Evidence("passage", c.title, c.text[:300], c.key))
    if not picks and not guidance and citations:
        out.sentences.append("The knowledge base has no passage that answers this directly.")
    if not citations:
        out.sentences.append("No knowledge-base passage is available for this question.")
    return out


def topic_of(question: str, citations: Sequence[Citation]) -> tuple[str | None, bool]:
    """(finding, broad) for a question that names no finding: a measurement word ('LAA-950' -> emphysema,
    'cardiothoracic ratio' -> cardiomegaly, 'follow-up' -> nodule, broad), else the top passage's title (broad)."""
    for pat, name, broad in _MEASURE_TOPICS:
        if pat.search(question):
            return name, broad
    from chatapp.vqa import match_findings

    for c in list(citations)[:1]:
        if names := match_findings(c.title):
            return names[0], True
    return None, True


# ------------------------------------------------------------------------------------------------ LLM gate
def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def llm_gate(text: str, question: str, facts: str, citations: Sequence[Citation], calls: dict[str, FindingCall],
             question_findings: Sequence[str] = (), repeated: bool = False,
             system: str = prompts.CHAT_SYSTEM) -> list[str]:
    """Reasons to reject an LLM answer to a free question (empty list: it may be kept).

    Args:
        text: the LLM's answer (after the repeat cut).
        question: the user's question.
        facts: the scan facts the prompt gave (``vqa.study_facts``).
        citations: the passages the prompt gave.
        calls: the finding calls (what the scan supports).
        question_findings: findings the question itself names (asking about one is not asserting it).
        repeated: the stream was cut because the LLM started repeating a sentence.
        system: the system prompt (echo check).
    """
    reasons: list[str] = []
    words = re.findall(r"[a-z0-9]+", text.lower())
    cw = content_words(text)
    if len(cw) < 3:
        return ["too short to answer the question"]
    sys_words = re.findall(r"[a-z0-9]+", system.lower())
    if _ngrams(words, 4) & _ngrams(sys_words, 4):
        reasons.append("echoes the system prompt")
    elif cw and len(cw & content_words(system)) / len(cw) >= 0.5:
        reasons.append("mostly the system prompt's words")
    topic = content_words(question) | {w for n in question_findings for w in content_words(n)}
    passage_words = set().union(*(content_words(c.text) for c in citations)) if citations else set()
    if topic and not (cw & topic) and len(cw & passage_words) < 3:
        reasons.append("off topic: shares no content word with the question and few with the passages")
    grams = [tuple(words[i:i + 6]) for i in range(len(words) - 5)]
    if repeated or len(set(grams)) < len(grams):  # a 6-word run said twice: a loop inside one sentence
        reasons.append("repeats itself")
    if bad_refs := sorted({int(n) for n in re.findall(r"\[(\d+)\]", text)} - {c.n for c in citations}):
        reasons.append("cites passage(s) that were not given: " + ", ".join(f"[{n}]" for n in bad_refs))
    text = re.sub(r"\[\d+\]", " ", text)  # citation markers are not numbers of the answer
    supported = {n for n, c in calls.items() if c.present}
    try:
        from chatapp.evaluation.labeler import find_mentions

        mentions = [(m.finding, m.negated) for m in find_mentions(text)]
    except ImportError:  # pragma: no cover - the labeler ships with the package
        from chatapp.guard import positive_findings

        mentions = [(n, False) for n in positive_findings(text)]
    if bad := sorted({n for n, neg in mentions if not neg} - supported - set(question_findings)):
        reasons.append("asserts finding(s) the scan does not support: " + ", ".join(bad))
    if denied := sorted({n for n, neg in mentions if neg} & {n for n in supported
                                                              if calls[n].source == "measured"}):
        reasons.append("denies measured finding(s): " + ", ".join(denied))
    known = [float(x) for x in _NUM.findall(" ".join([facts, question] + [c.text for c in citations]))]
    known += [float(c.n) for c in citations]

    def stated(tok: str) -> bool:  # the same value, rounded as the answer wrote it (12.34 -> "12.3")
        d = len(tok.split(".")[1]) if "." in tok else 0
        return any(abs(round(y, d) - float(tok)) < 1e-9 for y in known)

    if invented := sorted({float(x) for x in _NUM.findall(text) if not stated(x)}):
        reasons.append("number(s) not in the facts or passages: " + ", ".join(f"{x:g}" for x in invented[:3]))
    return reasons


__all__ = ["Composed", "Picked", "compose_answer", "content_words", "fact_sentences", "llm_gate",
           "passage_body", "passage_sentences", "split_sentences", "topic_of"]
