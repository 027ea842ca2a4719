"""METEOR 1.5 through the jar shipped with pycocoevalcap: Java aligns each pair once, Python aggregates.

The jar (``-l en -norm``, pycocoevalcap's command line) answers ``SCORE ||| ref ||| hyp`` with the pair's
sufficient statistics (23 numbers). Its ``EVAL`` command sums statistics and applies METEOR's formula; that formula
is reproduced here (:func:`meteor_from_stats`) so the corpus score, per-pair scores, bootstrap resamples and
per-region corpora need no further Java round trip. Statistics layout (``MeteorStats.toString``)::

    0 test length  1 reference length  2 test function words  3 reference function words
    4 + 4·s + (0 test content, 1 reference content, 2 test function, 3 reference function) matches of stage s
        (stages: exact, stem, synonym, paraphrase)
    20 chunks  21 test word matches  22 reference word matches

Aggregation is a plain sum, except that a pair matched perfectly in one chunk adds no chunks (``addStats``).
Parameters of the English task: alpha 0.85, beta 0.20, gamma 0.60, delta 0.75, stage weights 1.0/0.6/0.8/0.6;
``tests/test_eval_metrics.py`` checks this against the jar's own ``EVAL``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from typing import Self

import numpy as np

from vision.errors import CTScribeError

ALPHA, BETA, GAMMA, DELTA = 0.85, 0.20, 0.60, 0.75
STAGE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
N_STATS = 23


class JavaMissingError(CTScribeError):
    """Java is needed by the PTB tokenizer and METEOR 1.5."""


def require_java() -> None:
    if shutil.which("java") is None:
        raise JavaMissingError("Java was not found on PATH: pycocoevalcap's PTB tokenizer and METEOR 1.5 need it. "
                               "Install a Java runtime (e.g. `apt-get install default-jre-headless`), or run "
                               "`ctscribe evaluate --no-nlg` for label and template metrics only.")


def _meteor_dir() -> str:
    import pycocoevalcap.meteor.meteor as mm

    return os.path.dirname(os.path.abspath(mm.__file__))


def _meteor_proc() -> subprocess.Popen:
    # pycocoevalcap.meteor.Meteor's command line (same jar, same options, same scores); the serial collector uses
    # ~15% less CPU than the default G1 on a 2-core machine where two of these run side by side
    return subprocess.Popen(["java", "-XX:+UseSerialGC", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio",
                             "-l", "en", "-norm"],
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
    hyp = hyp.replace("|||", "").replace("  ", " ")  # as pycocoevalcap's Meteor._stat
    return " ||| ".join(("SCORE", " ||| ".join(refs), hyp))


def parse_stats(lines: Sequence[str]) -> np.ndarray:
    """The jar's statistics lines → array (N, 23)."""
    arr = np.array([[float(x) for x in s.split()] for s in lines], dtype=float)
    return arr.reshape(len(lines), N_STATS)


def meteor_from_stats(stats: np.ndarray) -> np.ndarray:
    """METEOR score of statistics rows, exactly as ``MeteorScorer.computeMetrics`` (NaN → 0, clipped at 0).

    Args:
        stats: (23,) or (M, 23) statistics (one pair's, or sums from :func:`aggregate_stats`).

    Returns:
        () or (M,) scores.
    """
    s = np.atleast_2d(np.asarray(stats, dtype=float))
    stage = s[:, 4:20].reshape(-1, 4, 4)  # [row, stage, (test content, ref content, test function, ref function)]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_len = DELTA * (s[:, 0] - s[:, 2]) + (1.0 - DELTA) * s[:, 2]
        r_len = DELTA * (s[:, 1] - s[:, 3]) + (1.0 - DELTA) * s[:, 3]
        t_m = np.zeros(len(s))
        r_m = np.zeros(len(s))
        for i, w in enumerate(STAGE_WEIGHTS):  # same summation order as the jar
            t_m = t_m + stage[:, i, 0] * w * DELTA
        for i, w in enumerate(STAGE_WEIGHTS):
            r_m = r_m + stage[:, i, 1] * w * DELTA
        for i, w in enumerate(STAGE_WEIGHTS):
            t_m = t_m + stage[:, i, 2] * w * (1.0 - DELTA)
        for i, w in enumerate(STAGE_WEIGHTS):
            r_m = r_m + stage[:, i, 3] * w * (1.0 - DELTA)
        p, r = t_m / t_len, r_m / r_len
        fmean = 1.0 / (((1.0 - ALPHA) / p) + (ALPHA / r))
        t_tot = stage[:, :, 0].sum(1) + stage[:, :, 2].sum(1)
        r_tot = stage[:, :, 1].sum(1) + stage[:, :, 3].sum(1)
        perfect = (t_tot == s[:, 0]) & (r_tot == s[:, 1]) & (s[:, 20] == 1)
        frag = np.where(perfect, 0.0, s[:, 20] / ((s[:, 21] + s[:, 22]) / 2))
        score = fmean * (1.0 - GAMMA * np.power(frag, BETA))
    score = np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))
    return score[0] if np.ndim(stats) == 1 else score


def aggregate_stats(stats: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum statistics as the jar's ``addStats`` does (perfect one-chunk pairs add no chunks).

    Args:
        stats: (N, 23) per-pair statistics.
        weights: (N,) or (M, N) multiplicities (e.g. bootstrap counts); None: each pair once.

    Returns:
        (23,) or (M, 23) summed statistics (integers: exact in float64).
    """
    s = np.array(stats, dtype=float)
    stage = s[:, 4:20].reshape(-1, 4, 4)
    perfect = ((stage[:, :, 0].sum(1) + stage[:, :, 2].sum(1) == s[:, 0])
               & (stage[:, :, 1].sum(1) + stage[:, :, 3].sum(1) == s[:, 1]) & (s[:, 20] == 1))
    s[perfect, 20] = 0.0
    if weights is None:
        return s.sum(0)
    return np.asarray(weights, dtype=float) @ s


class MeteorJar:
    """``workers`` pipelined METEOR 1.5 processes; the statistics of distinct (hypothesis, reference) pairs are
    computed once, split across the processes (the jar is single-threaded: two JVMs use two cores).

    The processes start at construction (each loads the paraphrase tables in a few seconds) so they can load while
    the tokenizer runs; use as a context manager or call :meth:`close`.
    """

    def __init__(self, workers: int | None = None) -> None:
        require_java()
        n = max(1, workers or min(2, os.cpu_count() or 1))
        self._procs = [_meteor_proc() for _ in range(n)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.stdin.close()
                p.wait()
        self._procs = []

    def stats(self, hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
        """Per-pair statistics (N, 23), same order as ``hyps`` (one reference per pair)."""
        keys = list(dict.fromkeys(zip(hyps, refs)))
        lines = [_score_line(h, [r]) for h, r in keys]
        n = len(self._procs)
        # longest pairs first, dealt round-robin: the two processes finish at about the same time
        order = sorted(range(len(lines)), key=lambda i: -len(lines[i]))
        chunks = [order[k::n] for k in range(n)]
        answers: dict[int, str] = {}

        def work(k: int) -> None:
            out = _pipelined(self._procs[k], [lines[i] for i in chunks[k]], [1] * len(chunks[k]))
            answers.update(zip(chunks[k], (o[0] for o in out)))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(answers) != len(lines) or any(not answers[i] for i in range(len(lines))):
            raise CTScribeError("the METEOR 1.5 jar stopped answering (out of memory?): rerun with fewer pairs, or "
                                "`ctscribe evaluate --no-meteor`.")
        uniq = parse_stats([answers[i] for i in range(len(lines))])
        pos = {k: i for i, k in enumerate(keys)}
        return uniq[[pos[k] for k in zip(hyps, refs)]].reshape(len(hyps), N_STATS)

    def eval_lines(self, stats_lines: Sequence[str]) -> tuple[float, list[float]]:
        """The jar's own ``EVAL`` of statistics lines (corpus score, per-pair scores); used to check the formula."""
        out = _pipelined(self._procs[0], ["EVAL ||| " + " ||| ".join(stats_lines)], [len(stats_lines) + 1])[0]
        return float(out[-1]), [float(x) for x in out[:-1]]


def format_stats(row: np.ndarray) -> str:
    """A statistics row in the jar's text form (for :meth:`MeteorJar.eval_lines`)."""
    return " ".join(repr(float(x)) for x in row)
