"""Report-level NLG metrics with pycocoevalcap's exact conventions (COCO caption evaluation).

Conventions, identical to ``pycocoevalcap``: texts are lower-cased and tokenized by the Stanford PTB tokenizer
(``-preserveLines -lowerCase``, punctuation tokens removed); BLEU-1..4 are corpus-level with the ``closest``
reference length; METEOR is METEOR 1.5 (``-l en -norm``) aggregated by the jar from the per-segment statistics;
ROUGE-L and CIDEr(-D) are means over pairs. pycocoevalcap's own scorers are used for BLEU, ROUGE-L and CIDEr.
For METEOR the same jar and the same command line are used, but the segment statistics are streamed through
one pipelined process per worker instead of one blocking round trip per pair (numbers are identical; ~2x faster).

Bootstrap CIs resample pairs: BLEU is recomputed exactly from per-pair n-gram counts, METEOR is re-aggregated
by the jar from the per-pair statistics, ROUGE-L and CIDEr are means of the per-pair scores (CIDEr's IDF stays that
of the full reference corpus).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from vision.errors import CTScribeError

NLG_KEYS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SMALL_CORPUS = 200  # pairs below which METEOR runs in one JVM instead of min(2, cpu_count)


class JavaMissingError(CTScribeError):
    """Java is needed by the PTB tokenizer and METEOR 1.5."""


def _require_java() -> None:
    if shutil.which("java") is None:
        raise JavaMissingError("Java was not found on PATH: pycocoevalcap's PTB tokenizer and METEOR 1.5 need it. "
                               "Install a Java runtime (e.g. `apt-get install default-jre-headless`), or run "
                               "`ctscribe evaluate --no-nlg` for label and template metrics only.")


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenize texts exactly as pycocoevalcap does (one Java call for all texts).

    Args:
        texts: raw report texts (newlines become spaces).

    Returns:
        one lower-cased, space-joined token string per text, punctuation removed.
    """
    _require_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    result = [""] * len(texts)
    if keep:  # empty lines are not sent: the tokenizer's output lines must stay aligned with its input lines
        out = PTBTokenizer().tokenize({i: [{"caption": texts[i]}] for i in keep})
        for i in keep:
            result[i] = out[i][0]
    return result


# --------------------------------------------------------------------------------------------------------------- METEOR
def _meteor_dir() -> str:
    import pycocoevalcap.meteor.meteor as mm

    return os.path.dirname(os.path.abspath(mm.__file__))


def _meteor_proc() -> subprocess.Popen:
    # same command line as pycocoevalcap.meteor.Meteor
    return subprocess.Popen(["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"],
                            cwd=_meteor_dir(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def _pipelined(proc: subprocess.Popen, lines: Sequence[str], n_out: Sequence[int]) -> list[list[str]]:
    """Write all ``lines`` from a thread while reading ``n_out[i]`` answer lines per input line (no deadlock)."""
    def writer() -> None:
        for line in lines:
            proc.stdin.write((line + "\n").encode())
        proc.stdin.flush()

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    out = [[proc.stdout.readline().decode().strip() for _ in range(k)] for k in n_out]
    th.join()
    return out


def _score_line(hyp: str, refs: Sequence[str]) -> str:
    hyp = hyp.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(refs), hyp))


class Meteor:
    """METEOR 1.5 through the jar shipped with pycocoevalcap, with ``workers`` pipelined processes.

    The processes start at construction (the jar loads its paraphrase tables in a few seconds) and are reused for
    statistics and aggregation; use as a context manager or call :meth:`close`.
    """

    def __init__(self, workers: int | None = None) -> None:
        _require_java()
        n = max(1, workers or min(2, os.cpu_count() or 1))
        self._procs = [_meteor_proc() for _ in range(n)]

    def __enter__(self) -> "Meteor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.stdin.close()
                p.wait()
        self._procs = []

    def stats(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> list[str]:
        """Per-pair METEOR sufficient statistics (the jar's SCORE answers), same order as ``hyps``."""
        lines = [_score_line(h, r) for h, r in zip(hyps, refs)]
        n = len(self._procs)
        chunks = [lines[k::n] for k in range(n)]
        results: list[list[str]] = [[] for _ in range(n)]

        def work(k: int) -> None:
            results[k] = [o[0] for o in _pipelined(self._procs[k], chunks[k], [1] * len(chunks[k]))]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out: list[str] = [""] * len(lines)
        for k in range(n):
            out[k::n] = results[k]
        return out

    def aggregate(self, stats: Sequence[str], subsets: Sequence[Sequence[int]] = ()
                  ) -> tuple[float, list[float], list[float]]:
        """Corpus METEOR from statistics, as the jar computes it; also the corpus score of each index subset.

        Returns:
            (corpus score, per-pair scores, scores of ``subsets``)
        """
        lines = ["EVAL ||| " + " ||| ".join(stats)]
        lines += ["EVAL ||| " + " ||| ".join(stats[i] for i in s) for s in subsets]
        n_out = [len(stats) + 1] + [len(s) + 1 for s in subsets]
        out = _pipelined(self._procs[0], lines, n_out)
        seg = [float(x) for x in out[0][:-1]]
        return float(out[0][-1]), seg, [float(o[-1]) for o in out[1:]]


# ----------------------------------------------------------------------------------------------------------------- BLEU
def _bleu_counts(hyps: Sequence[str], refs: Sequence[str], n: int = 4) -> np.ndarray:
    """Per-pair BLEU sufficient statistics, shape (N, 2 + 2n): testlen, reflen, guess[0..n), correct[0..n)."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = np.zeros((len(hyps), 2 + 2 * n))
    for i, (h, r) in enumerate(zip(hyps, refs)):
        c = cook_test(h, cook_refs([r], n=n), eff="closest", n=n)
        rows[i, 0], rows[i, 1] = c["testlen"], c["reflen"]
        rows[i, 2:2 + n], rows[i, 2 + n:] = c["guess"], c["correct"]
    return rows


def _bleu_from_counts(totals: np.ndarray, n: int = 4) -> list[float]:
    """Corpus BLEU-1..n from summed statistics, with pycocoevalcap's smoothing constants."""
    tiny, small = 1e-15, 1e-9
    testlen, reflen = totals[0], totals[1]
    guess, correct = totals[2:2 + n], totals[2 + n:]
    out, bleu = [], 1.0
    for k in range(n):
        bleu *= (correct[k] + tiny) / (guess[k] + small)
        out.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


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
                workers: int | None = None) -> dict[str, NLGResult]:
    """NLG metrics of several groups of pairs (e.g. whole reports and each region) sharing one tokenizer call and
    one METEOR pass; each group is scored as its own corpus (its own BLEU lengths and CIDEr IDF), exactly as a
    separate pycocoevalcap run on that group would.

    Args:
        groups: group name → indices into ``hyps``/``refs``; empty groups are skipped.
        meteor_groups: groups that get METEOR (default: all when ``meteor``).
        boot_groups: groups that get bootstrap CIs (default: all when ``n_boot``).
    """
    if len(hyps) != len(refs):
        raise CTScribeError(f"{len(hyps)} predictions but {len(refs)} references: pass aligned lists.")
    if not hyps:
        raise CTScribeError("no report pairs to score: check that prediction and reference ids overlap.")
    want_met = set(groups if meteor_groups is None else meteor_groups) if meteor else set()
    n_met = len({i for g, idx in groups.items() if g in want_met for i in idx})
    if workers is None and n_met < SMALL_CORPUS:
        workers = 1  # a second JVM (~2 s of CPU to load the paraphrase tables) only pays off on larger corpora
    met = Meteor(workers) if want_met else None  # starts the JVMs now: they load while the tokenizer runs
    try:
        if not tokenized:
            toks = ptb_tokenize(list(refs) + list(hyps))
            refs, hyps = toks[:len(refs)], toks[len(refs):]
        need = sorted({i for g, idx in groups.items() if g in want_met for i in idx})
        stats: dict[int, str] = {}
        if met is not None and need:
            stats = dict(zip(need, met.stats([hyps[i] for i in need], [[refs[i]] for i in need])))
        out = {}
        for g, idx in groups.items():
            idx = list(idx)
            if not idx:
                continue
            gstats = [stats[i] for i in idx] if g in want_met and met is not None else None
            nb = n_boot if boot_groups is None or g in boot_groups else 0
            out[g] = _score_group([hyps[i] for i in idx], [refs[i] for i in idx], gstats, met, nb, seed)
        return out
    finally:
        if met is not None:
            met.close()


def _rouge(hyps: Sequence[str], refs: Sequence[str]) -> tuple[float, list[float]]:
    """pycocoevalcap ROUGE-L (mean of per-pair scores); an empty hypothesis scores 0 instead of dividing by 0."""
    from pycocoevalcap.rouge.rouge import Rouge

    r = Rouge()
    per = [float(r.calc_score([h], [ref])) if h.split() and ref.split() else 0.0 for h, ref in zip(hyps, refs)]
    return float(np.mean(per)), per


def _score_group(hyps: list[str], refs: list[str], met_stats: list[str] | None, met: Meteor | None, n_boot: int,
                 seed: int) -> NLGResult:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    scores: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        scores[f"BLEU-{k + 1}"] = float(bleu[k])
    per["BLEU-1"] = [float(x) for x in bleu_per[0]]
    scores["ROUGE-L"], per["ROUGE-L"] = _rouge(hyps, refs)
    cider, cider_per = Cider().compute_score(gts, res)
    scores["CIDEr"], per["CIDEr"] = float(cider), [float(x) for x in cider_per]
    ci: dict[str, tuple[float, float]] = {}
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(hyps), len(hyps)) for _ in range(n_boot)]
    if met_stats is not None and met is not None:
        total, seg, boot = met.aggregate(met_stats, idx)
        scores["METEOR"], per["METEOR"] = total, seg
        if n_boot:
            ci["METEOR"] = _pct(boot)
    if n_boot:
        counts = _bleu_counts(hyps, refs)
        boots = np.array([_bleu_from_counts(counts[i].sum(0)) for i in idx])
        for k in range(4):
            ci[f"BLEU-{k + 1}"] = _pct(boots[:, k])
        for key in ("ROUGE-L", "CIDEr"):
            arr = np.asarray(per[key])
            ci[key] = _pct([arr[i].mean() for i in idx])
    ordered = {k: scores[k] for k in NLG_KEYS if k in scores}
    return NLGResult(ordered, per, {k: ci[k] for k in NLG_KEYS if k in ci}, len(hyps))


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
