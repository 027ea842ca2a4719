"""NLG parity: the project's evaluator equals pycocoevalcap run directly (PTB tokenizer, METEOR 1.5, BLEU, ROUGE-L,
CIDEr) to 1e-4, on the project's own sentences and on noisy variants of the real CT-RATE reports."""

from __future__ import annotations

import random
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Java is needed by pycocoevalcap")


def pycoco_reference(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """The COCO caption evaluation recipe, straight from pycocoevalcap."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    out = {}
    b, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"BLEU-{k + 1}": b[k] for k in range(4)})
    m = Meteor()
    out["METEOR"], _ = m.compute_score(gts, res)
    del m
    out["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    out["CIDEr"], _ = Cider().compute_score(gts, res)
    return out


def noisy(text: str, rng: random.Random) -> str:
    words = [w for w in text.split() if rng.random() > 0.2]
    for _ in range(max(1, len(words) // 15)):
        i = rng.randrange(len(words))
        words.insert(i, rng.choice(["normal", "no", "effusion", "lobe", "mm", "bilateral"]))
    return " ".join(words)


OWN_REFS = [
    "Trachea and both main bronchi are patent. No pleural effusion. Heart size is normal.",
    "A 8 mm solid nodule in the right upper lobe. Mild centrilobular emphysema in both upper lobes.",
    "Calcified atheromatous plaques in the thoracic aorta. No mediastinal lymphadenopathy.",
    "Bilateral small pleural effusions with compressive atelectasis in the lower lobes.",
    "Small sliding hiatal hernia. Degenerative changes of the thoracic spine.",
    "Ground-glass opacities in both lungs, more prominent on the left; consolidation in the right lower lobe.",
]
OWN_HYPS = [
    "Trachea and main bronchi are patent. No pleural effusion. The heart is normal in size.",
    "A 6 mm nodule in the right upper lobe. Emphysema.",
    "Atherosclerotic calcification of the aorta. No lymphadenopathy.",
    "Small pleural effusions on both sides.",
    "Hiatal hernia.",
    "Ground glass opacities in both lungs and consolidation in the right lower lobe.",
]


@pytest.mark.slow
def test_parity_with_pycocoevalcap_on_own_and_real_reports():
    """Every metric equals pycocoevalcap run directly; METEOR's Python aggregation equals the jar's EVAL."""
    from conftest import SHARED_DATA

    from chatapp.evaluation.meteor import MeteorJar, aggregate_stats, format_stats, meteor_from_stats
    from chatapp.evaluation.metrics import NLG_KEYS, nlg_grouped, ptb_tokenize

    hyps, refs = list(OWN_HYPS), list(OWN_REFS)
    csv_path = SHARED_DATA / "ct-rate_ctclip-text-classifier" / "train.csv"
    if csv_path.exists():  # real reports when ../shared is there (CI); own sentences alone otherwise
        import csv

        rng = random.Random(0)
        with csv_path.open(newline="", encoding="utf-8") as f:
            texts = [r["report_text"] for r in csv.DictReader(f)][:24]
        refs += texts
        hyps += [noisy(t, rng) for t in texts]
    with MeteorJar(1) as jar:  # one JVM for our scores and for the check of the aggregation against the jar's EVAL
        ours = nlg_grouped(hyps, refs, {"all": range(len(hyps))}, n_boot=20, jar=jar)["all"]
        toks = ptb_tokenize(hyps + refs)
        th, tr = toks[:len(hyps)] + [toks[len(hyps)]], toks[len(hyps):] + [toks[len(hyps)]]  # + a perfect pair
        th[1] = ""  # + an empty hypothesis
        st = jar.stats(th, tr)
        lines = [format_stats(r) for r in st]
        total, seg = jar.eval_lines(lines)
        sub_total, _ = jar.eval_lines(lines[3:17])
    # METEOR aggregated in Python (corpus, per pair, a subset) equals the jar's own EVAL of the same statistics
    assert meteor_from_stats(aggregate_stats(st)) == pytest.approx(total, abs=1e-12)
    assert meteor_from_stats(st) == pytest.approx(seg, abs=1e-12)
    assert meteor_from_stats(aggregate_stats(st[3:17])) == pytest.approx(sub_total, abs=1e-12)
    theirs = pycoco_reference(hyps, refs)
    assert list(ours.scores) == list(NLG_KEYS)
    for k in NLG_KEYS:
        assert ours.scores[k] == pytest.approx(theirs[k], abs=1e-4), k
    for k in NLG_KEYS:  # the bootstrap interval brackets the point estimate
        lo, hi = ours.ci95[k]
        assert lo <= ours.scores[k] + 1e-9 and ours.scores[k] - 1e-9 <= hi, k


def test_bleu_from_counts_equals_pycocoevalcap_bleu():
    """The bootstrap recomputes corpus BLEU from per-pair counts; it must equal pycocoevalcap's BLEU."""
    from pycocoevalcap.bleu.bleu import Bleu

    from chatapp.evaluation.metrics import _bleu_counts, _bleu_from_counts

    hyps = [h.lower().replace(".", "") for h in OWN_HYPS]
    refs = [r.lower().replace(".", "") for r in OWN_REFS]
    ref, _ = Bleu(4).compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)},
                                   verbose=0)
    ours = _bleu_from_counts(_bleu_counts(hyps, refs).sum(0))
    assert ours == pytest.approx(ref, abs=1e-12)


def test_tokenizer_keeps_alignment_with_empty_texts():
    from chatapp.evaluation.metrics import ptb_tokenize

    out = ptb_tokenize(["No effusion.", "", "Heart, normal!", "   "])
    assert out == ["no effusion", "", "heart normal", ""]


def test_length_mismatch_is_a_user_error():
    from chatapp.evaluation.metrics import nlg_scores
    from vision.errors import CTScribeError

    with pytest.raises(CTScribeError):
        nlg_scores(["a"], ["a", "b"], meteor=False)


# ------------------------------------------------------------------------------------------------------------------
# The fast re-implementations (chatapp.evaluation.ngram / .meteor) against pycocoevalcap's own scorers.
def _random_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = ["no", "pleural", "effusion", "nodule", "lobe", "right", "left", "mm", "the", "of", "in", "lung", "normal", "is", "are", "both", "small"]
    base = [" ".join(s.lower().replace(".", " .").replace(",", " ,").replace(";", " ;").split())
            for s in OWN_REFS + OWN_HYPS]
    refs, hyps = [], []
    for i in range(n):
        r = rng.choice(base) if i % 3 == 0 else " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 40)))
        h = r if i % 7 == 0 else " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 40)))
        refs.append(r)
        hyps.append(h)
    return hyps, refs


def test_bleu_rouge_cider_equal_pycocoevalcap_pair_by_pair():
    import numpy as np
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from chatapp.evaluation.ngram import bleu_from_stats, bleu_stats, cider_d, rouge_l

    hyps, refs = _random_corpus(120, 1)
    gts, res = {i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    b, b_per = Bleu(4).compute_score(gts, res, verbose=0)
    st = bleu_stats(hyps, refs)
    assert bleu_from_stats(st.sum(0)) == pytest.approx(b, abs=1e-12)
    assert bleu_from_stats(st) == pytest.approx(np.array(b_per).T, abs=1e-12)
    r, r_per = Rouge().compute_score(gts, res)
    assert rouge_l(hyps, refs) == pytest.approx(r_per, abs=1e-12) and rouge_l(hyps, refs).mean() == pytest.approx(r)
    c, c_per = Cider().compute_score(gts, res)
    assert cider_d(hyps, refs) == pytest.approx(c_per, abs=1e-9) and cider_d(hyps, refs).mean() == pytest.approx(c)


def test_bit_parallel_lcs_equals_the_dynamic_programme():
    from pycocoevalcap.rouge.rouge import my_lcs

    from chatapp.evaluation.ngram import lcs_length

    rng = random.Random(2)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 90))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == my_lcs(a, b)


def test_meteor_aggregation_formula_on_known_statistics():
    """Two hand-checked rows: a perfect one-chunk match scores fMean = 1 and adds no chunks to a corpus; a pair
    without matches scores 0 (the jar's NaN → 0)."""
    import numpy as np

    from chatapp.evaluation.meteor import aggregate_stats, meteor_from_stats

    perfect = np.zeros(23)
    perfect[[0, 1, 2, 3]] = [4, 4, 1, 1]
    perfect[[4, 5, 6, 7]] = [3, 3, 1, 1]  # exact stage: 3 content + 1 function word on both sides
    perfect[[20, 21, 22]] = [1, 4, 4]
    none = np.zeros(23)
    none[[0, 1]] = [5, 6]
    assert meteor_from_stats(perfect) == pytest.approx(1.0)
    assert meteor_from_stats(none) == 0.0
    agg = aggregate_stats(np.stack([perfect, perfect]))
    assert agg[20] == 0 and agg[0] == 8  # chunks of perfect pairs are not summed
    assert meteor_from_stats(agg) == pytest.approx(1.0)
    w = np.array([[2, 0], [1, 1]])  # bootstrap weights
    assert aggregate_stats(np.stack([perfect, none]), w)[:, 0] == pytest.approx([8, 9])
