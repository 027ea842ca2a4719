"""Report-level NLG metrics with pycocoevalcap's exact conventions (COCO caption evaluation), fast.

Conventions, identical to ``pycocoevalcap``: texts are lower-cased and tokenized by the Stanford PTB tokenizer
(``-preserveLines -lowerCase``, punctuation tokens removed); BLEU-1..4 are corpus-level with the ``closest``
reference length; METEOR is METEOR 1.5 (``-l en -norm``) aggregated from the per-segment statistics; ROUGE-L and
CIDEr(-D) are means over pairs. The numbers equal pycocoevalcap's (tests compare to 1e-4; in practice they agree
to ~1e-15), the work is organised differently:

- one PTB tokenizer call for every distinct text (predictions, references and region texts together);
- METEOR: each distinct (hypothesis, reference) pair goes once to the jar (``SCORE``), split over two pipelined
  JVMs; corpus, per-pair, per-group and bootstrap scores are aggregated in Python with the jar's own formula
  (:mod:`chatapp.evaluation.meteor`), so nothing else needs Java;
- BLEU, ROUGE-L and CIDEr-D from shared n-gram counts and a bit-parallel LCS (:mod:`chatapp.evaluation.ngram`).

Bootstrap CIs resample pairs: BLEU and METEOR are recomputed exactly from the resampled per-pair statistics,
ROUGE-L and CIDEr are means of the per-pair scores (CIDEr's IDF stays that of the full reference corpus).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from chatapp.evaluation.meteor import JavaMissingError, MeteorJar, aggregate_stats, meteor_from_stats, require_java
from chatapp.evaluation.ngram import NgramCache, bleu_from_stats, bleu_stats, cider_d, rouge_l
from vision.errors import CTScribeError

__all__ = [
    "NLG_KEYS",
    "SMALL_CORPUS",
    "JavaMissingError",
    "NLGResult",
    "bertscore",
    "nlg_grouped",
    "nlg_scores",
    "ptb_tokenize",
]

NLG_KEYS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SMALL_CORPUS = 200  # distinct METEOR pairs below which one JVM runs instead of min(2, cpu_count)
_require_java = require_java  # old private name


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenize texts exactly as pycocoevalcap does (one Java call for all distinct texts).

    Args:
        texts: raw report texts (newlines become spaces).

    Returns:
        one lower-cased, space-joined token string per text, punctuation removed.
    """
    require_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    uniq = list(dict.fromkeys(t for t in texts if t and t.strip()))
    tok: dict[str, str] = {}
    if uniq:  # empty lines are not sent: the tokenizer's output lines must stay aligned with its input lines
        out = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(uniq)})
        tok = {t: out[i][0] for i, t in enumerate(uniq)}
    return [tok.get(t, "") if t and t.strip() else "" for t in texts]


# ----------------------------------------------------------------------------------------------------------------- BLEU
def _bleu_counts(hyps: Sequence[str], refs: Sequence[str], n: int = 4) -> np.ndarray:
    """Per-pair BLEU sufficient statistics, shape (N, 2 + 2n): testlen, reflen, guess[0..n), correct[0..n)."""
    assert n == 4, "BLEU-1..4 only"
    return bleu_stats(hyps, refs)


def _bleu_from_counts(totals: np.ndarray, n: int = 4) -> list[float]:
    """Corpus BLEU-1..n from summed statistics, with pycocoevalcap's smoothing constants."""
    return [float(x) for x in bleu_from_stats(np.asarray(totals, dtype=float))]


# ---------------------------------------------------------------------------------------------------------------- API
@dataclass
class NLGResult:
    scores: dict[str, float]  # corpus-level, pycocoevalcap names (NLG_KEYS order)
    per_pair: dict[str, list[float]] = field(default_factory=dict)  # BLEU-1, METEOR, ROUGE-L, CIDEr per pair
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    n: int = 0


def nlg_scores(hyps: Sequence[str], refs: Sequence[str], *, tokenized: bool = False, n_boot: int = 0,
               seed: int = 0, meteor: bool = True, workers: int | None = None) -> NLGResult:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of hypotheses against one reference each.

    Args:
        hyps: generated reports, one per pair.
        refs: reference reports, aligned with ``hyps``.
        tokenized: True when both are already PTB-tokenized (skip the Java tokenizer).
        n_boot: bootstrap resamples for 95% CIs (0: none).
        meteor: False skips METEOR (Java is still needed for the tokenizer unless ``tokenized``).
        workers: METEOR processes (default ``min(2, cpu_count)``, one below :data:`SMALL_CORPUS` pairs).
    """
    return nlg_grouped(hyps, refs, {"all": range(len(hyps))}, tokenized=tokenized, n_boot=n_boot, seed=seed,
                       meteor=meteor, workers=workers)["all"]


def nlg_grouped(hyps: Sequence[str], refs: Sequence[str], groups: Mapping[str, Sequence[int]], *,
                tokenized: bool = False, n_boot: int = 0, seed: int = 0, meteor: bool = True,
                meteor_groups: Sequence[str] | None = None, boot_groups: Sequence[str] | None = None,
                workers: int | None = None, jar: MeteorJar | None = None) -> dict[str, NLGResult]:
    """NLG metrics of several groups of pairs (e.g. whole reports and each region) sharing one tokenizer call and
    one METEOR pass; each group is scored as its own corpus (its own BLEU lengths and CIDEr IDF), exactly as a
    separate pycocoevalcap run on that group would.

    Args:
        groups: group name → indices into ``hyps``/``refs``; empty groups are skipped.
        meteor_groups: groups that get METEOR (default: all when ``meteor``).
        boot_groups: groups that get bootstrap CIs (default: all when ``n_boot``).
        workers: METEOR processes (default ``min(2, cpu_count)``, one below :data:`SMALL_CORPUS` distinct pairs).
        jar: METEOR processes started earlier by the caller (so they load while it does other work); the caller
            closes them. Default: started here and closed on return.
    """
    if len(hyps) != len(refs):
        raise CTScribeError(f"{len(hyps)} predictions but {len(refs)} references: pass aligned lists.")
    if not hyps:
        raise CTScribeError("no report pairs to score: check that prediction and reference ids overlap.")
    want_met = set(groups if meteor_groups is None else meteor_groups) if meteor else set()
    need = sorted({i for g, idx in groups.items() if g in want_met for i in idx})
    if workers is None and len({(hyps[i], refs[i]) for i in need}) < SMALL_CORPUS:
        workers = 1  # a second JVM (~2 s of CPU to load the paraphrase tables) only pays off on larger corpora
    own = jar is None
    met = (MeteorJar(workers) if own else jar) if need else None  # JVMs load while the tokenizer runs
    stats = np.zeros((len(hyps), 23))
    out: dict[str, NLGResult] = {}
    weights: dict[str, np.ndarray | None] = {}
    try:
        if not tokenized:
            toks = ptb_tokenize(list(refs) + list(hyps))
            refs, hyps = toks[:len(refs)], toks[len(refs):]
        box: dict = {}
        worker = None
        if met is not None:  # the jar aligns in the background while Python scores BLEU/ROUGE-L/CIDEr
            def align() -> None:
                try:
                    box["stats"] = met.stats([hyps[i] for i in need], [refs[i] for i in need])
                except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
                    box["error"] = e

            worker = threading.Thread(target=align, daemon=True)
            worker.start()
        cache = NgramCache()
        for g, idx in groups.items():
            idx = list(idx)
            if idx:
                nb = n_boot if boot_groups is None or g in boot_groups else 0
                out[g], weights[g] = _score_group([hyps[i] for i in idx], [refs[i] for i in idx], nb, seed, cache)
        if worker is not None:
            worker.join()
            if "error" in box:
                raise box["error"]
            stats[need] = box["stats"]
    finally:
        if met is not None and own:
            met.close()
    for g, idx in groups.items():
        if g in out and g in want_met:
            _add_meteor(out[g], stats[list(idx)], weights[g])
    return out


def _score_group(hyps: list[str], refs: list[str], n_boot: int, seed: int, cache: NgramCache
                 ) -> tuple[NLGResult, np.ndarray | None]:
    """BLEU, ROUGE-L and CIDEr of one group (+ CIs); returns the bootstrap weights (n_boot, N) for METEOR's CI."""
    n = len(hyps)
    scores: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    bstats = bleu_stats(hyps, refs, cache)
    for k, b in enumerate(bleu_from_stats(bstats.sum(0))):
        scores[f"BLEU-{k + 1}"] = float(b)
    per["BLEU-1"] = [float(x) for x in bleu_from_stats(bstats)[:, 0]]
    rl = rouge_l(hyps, refs)
    scores["ROUGE-L"], per["ROUGE-L"] = float(np.mean(rl)), [float(x) for x in rl]
    cd = cider_d(hyps, refs, cache)
    scores["CIDEr"], per["CIDEr"] = float(np.mean(cd)), [float(x) for x in cd]
    ci: dict[str, tuple[float, float]] = {}
    w = None
    if n_boot:
        rng = np.random.default_rng(seed)  # the same draws as one rng.integers(0, n, n) per resample
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(float)
        boots = bleu_from_stats(w @ bstats)
        for k in range(4):
            ci[f"BLEU-{k + 1}"] = _pct(boots[:, k])
        for key, arr in (("ROUGE-L", rl), ("CIDEr", cd)):
            ci[key] = _pct(w @ arr / n)
    return NLGResult({k: scores[k] for k in NLG_KEYS if k in scores}, per, ci, n), w


def _add_meteor(res: NLGResult, met_stats: np.ndarray, w: np.ndarray | None) -> None:
    """Corpus and per-pair METEOR (+ CI with the group's bootstrap weights) from the jar's per-pair statistics."""
    res.scores["METEOR"] = float(meteor_from_stats(aggregate_stats(met_stats)))
    res.per_pair["METEOR"] = [float(x) for x in meteor_from_stats(met_stats)]
    if w is not None:
        res.ci95["METEOR"] = _pct(meteor_from_stats(aggregate_stats(met_stats, w)))
    res.scores = {k: res.scores[k] for k in NLG_KEYS if k in res.scores}
    res.ci95 = {k: res.ci95[k] for k in NLG_KEYS if k in res.ci95}


def _pct(values) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(values, dtype=float), [2.5, 97.5])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------------------------------ BERTScore
def bertscore(hyps: Sequence[str], refs: Sequence[str], model_path: str, *, num_layers: int | None = None,
              batch_size: int = 16) -> dict[str, float]:
    """Mean BERTScore P/R/F1 with a *local* model directory (never a hub id: nothing may be downloaded).

    Args:
        model_path: a local Hugging Face model folder (e.g. a RadBERT/RoBERTa copy the user has).
        num_layers: representation layer (bert-score's default for known models; else the last layer).
    """
    from pathlib import Path

    p = Path(model_path).expanduser()
    if not p.is_dir():
        raise CTScribeError(f"BERTScore model folder {model_path!r} does not exist: set evaluation.bertscore_model "
                            "to a local model directory, or leave it null to skip BERTScore.")
    from bert_score import score
    from transformers import AutoConfig

    layers = num_layers or AutoConfig.from_pretrained(str(p), local_files_only=True).num_hidden_layers
    P, R, F = score(list(hyps), list(refs), model_type=str(p), num_layers=layers, batch_size=batch_size,
                    device="cpu", lang="en")
    return {"precision": float(P.mean()), "recall": float(R.mean()), "f1": float(F.mean()),
            "model": str(p), "num_layers": layers}
