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
    from conftest import SHARED_DATA
    from chatapp.evaluation.metrics import NLG_KEYS, nlg_scores

    hyps, refs = list(OWN_HYPS), list(OWN_REFS)
    csv_path = SHARED_DATA / "ct-rate_ctclip-text-classifier" / "train.csv"
    if csv_path.exists():  # real reports when ../shared is there (CI); own sentences alone otherwise
        import csv

        rng = random.Random(0)
        with csv_path.open(newline="", encoding="utf-8") as f:
            texts = [r["report_text"] for r in csv.DictReader(f)][:24]
        refs += texts
        hyps += [noisy(t, rng) for t in texts]
    ours = nlg_scores(hyps, refs, n_boot=20, workers=1)
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
