"""Evaluation toolkit: pycocoevalcap-parity NLG metrics, an open 18-finding labeler, CE/CRG, a sentence→region
router, template-collapse statistics and a self-contained HTML report.

Importing this package is light (numpy only); pycocoevalcap and matplotlib load when used.
"""

from chatapp.evaluation.evaluate import EvalResult, evaluate_reports, write_outputs
from chatapp.evaluation.labeler import Mention, find_mentions, label_report, label_reports
from chatapp.evaluation.router import route_sentence, split_regions

__all__ = [
           "EvalResult",
           "Mention",
           "evaluate_reports",
           "find_mentions",
           "label_report",
           "label_reports",
           "route_sentence",
           "split_regions",
           "write_outputs",
]
