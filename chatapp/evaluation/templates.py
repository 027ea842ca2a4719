"""Template-collapse statistics: how many distinct texts a generator writes, and how dominant the commonest one is."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def collapse_stats(texts: Iterable[str]) -> dict:
    """Distinct-output ratio and share of the most frequent output (texts compared after lower-casing and
    whitespace normalisation; empty texts are skipped).

    Returns:
        ``{"n", "distinct", "distinct_ratio", "top_share", "top_text"}`` (ratios are NaN-free: 0 when n == 0).
    """
    c = Counter(_norm(t) for t in texts if t and t.strip())
    n = sum(c.values())
    if not n:
        return {"n": 0, "distinct": 0, "distinct_ratio": 0.0, "top_share": 0.0, "top_text": ""}
    top, k = c.most_common(1)[0]
    return {"n": n, "distinct": len(c), "distinct_ratio": len(c) / n, "top_share": k / n, "top_text": top[:200]}
