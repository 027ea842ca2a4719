"""One self-contained HTML page for an evaluation: tables plus inline-SVG plots (matplotlib, Agg/SVG backend)."""

from __future__ import annotations

import html
import io
import math

from vision.registry import FINDING_NAMES, REGION_KEYS, region

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #d7dbe3}
.note{color:#5a6275;font-size:.9em} table{border-collapse:collapse;font-size:.88em;margin:8px 0}
th,td{border:1px solid #d7dbe3;padding:3px 8px;text-align:right} th{background:#f2f4f8}
td:first-child,th:first-child{text-align:left} .grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d7dbe3;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:1.3em} svg{max-width:100%;height:auto}
"""


def _f(v, nd: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else html.escape(str(v))


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})  # reproducible output
    import matplotlib.pyplot as plt

    plt.close(fig)
    s = buf.getvalue()
    return s[s.index("<svg"):]


def _plots(d: dict, lengths_pred: list[int], lengths_ref: list[int]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller file, searchable
    out = {}
    per = d["ce"]["per_label"]
    names = list(FINDING_NAMES)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 5.2))
    ax.barh(y, [per[n]["f1"] or 0 for n in names], color="#3b6fb6")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (prediction vs reference labels)")
    out["f1"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(7, 5.2))
    ax.barh(y - 0.2, [per[n]["prevalence_ref"] or 0 for n in names], height=0.4, label="reference", color="#9aa4b5")
    ax.barh(y + 0.2, [per[n]["prevalence_pred"] or 0 for n in names], height=0.4, label="prediction", color="#d9822b")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of reports with the finding")
    ax.legend(fontsize=8)
    out["prev"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(7, 2.8))
    hi = max(lengths_pred + lengths_ref + [1])
    bins = np.linspace(0, hi, 30)
    ax.hist(lengths_ref, bins=bins, alpha=0.6, label="reference", color="#9aa4b5")
    ax.hist(lengths_pred, bins=bins, alpha=0.6, label="prediction", color="#d9822b")
    ax.set_xlabel("words per report")
    ax.set_ylabel("reports")
    ax.legend(fontsize=8)
    out["len"] = _svg(fig)

    t = d["templates"]
    keys = ["overall"] + list(REGION_KEYS)
    get = (lambda k, s: t["overall"][s] if k == "overall" else t["regions"][k][s])
    x = np.arange(len(keys))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, metric, lab in ((axes[0], "distinct_ratio", "distinct outputs / outputs"),
                            (axes[1], "top_share", "share of the most frequent output")):
        ax.bar(x - 0.2, [get(k, "ref")[metric] for k in keys], width=0.4, label="reference", color="#9aa4b5")
        ax.bar(x + 0.2, [get(k, "pred")[metric] for k in keys], width=0.4, label="prediction", color="#d9822b")
        ax.set_xticks(x, keys, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(lab, fontsize=9)
    axes[0].legend(fontsize=7)
    out["tmpl"] = _svg(fig)
    return out


def render_html(result, *, title: str = "ctscribe evaluation") -> str:
    """Render an :class:`~chatapp.evaluation.evaluate.EvalResult` as one HTML document (no external resources)."""
    d = result.to_dict()
    plots = _plots(d, result.lengths_pred, result.lengths_ref)
    ce = d["ce"]
    ci = ce.get("ci95", {})
    h = [(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{_CSS}</style></head><body>"), f"<h1>{html.escape(title)}</h1>"]
    miss = d["ids"]
    h.append(f"<p class='note'>{d['n_pairs']} report pairs; {len(miss.get('only_in_pred', []))} prediction ids and "
             f"{len(miss.get('only_in_ref', []))} reference ids without a partner were left out. Reference labels "
             f"come from the {html.escape(ce.get('reference_labels', 'labeler'))} "
             f"({html.escape(ce.get('labeler', ''))}). 95% CIs: bootstrap over report pairs.</p>")
    cards = [(k, v, d["nlg_ci95"].get(k)) for k, v in d["nlg"].items()]
    cards += [("CE micro-F1", ce["micro"]["f1"], ci.get("micro_f1")), ("CE macro-F1", ce["macro"]["f1"],
              ci.get("macro_f1")), ("CRG", ce.get("crg"), ci.get("crg"))]
    h.append("<h2>Headline metrics</h2><div class='grid'>")
    for k, v, c in cards:
        cis = f"<span class='note'>[{_f(c[0], 3)}, {_f(c[1], 3)}]</span>" if c else ""
        h.append(f"<div class='card'>{html.escape(k)}<b>{_f(v)}</b>{cis}</div>")
    h.append("</div>")
    if d.get("nlg_note"):
        h.append(f"<p class='note'>{html.escape(d['nlg_note'])}</p>")
    h.append("<h2>Clinical efficacy per finding</h2><table><tr><th>finding</th><th>P</th><th>R</th><th>F1</th>"
             "<th>support</th><th>prev. ref</th><th>prev. pred</th></tr>")
    for n in FINDING_NAMES:
        r = ce["per_label"][n]
        h.append(f"<tr><td>{html.escape(n)}</td><td>{_f(r['precision'], 3)}</td><td>{_f(r['recall'], 3)}</td>"
                 f"<td>{_f(r['f1'], 3)}</td><td>{r['support']}</td><td>{_f(r['prevalence_ref'], 3)}</td>"
                 f"<td>{_f(r['prevalence_pred'], 3)}</td></tr>")
    h.append(f"<tr><th>micro</th><th>{_f(ce['micro']['precision'], 3)}</th><th>{_f(ce['micro']['recall'], 3)}</th>"
             f"<th>{_f(ce['micro']['f1'], 3)}</th><th colspan=3></th></tr>")
    h.append(f"<tr><th>macro</th><th>{_f(ce['macro']['precision'], 3)}</th><th>{_f(ce['macro']['recall'], 3)}</th>"
             f"<th>{_f(ce['macro']['f1'], 3)}</th><th colspan=3></th></tr></table>")
    h.append(f"<div class='grid'><div>{plots['f1']}</div><div>{plots['prev']}</div></div>")
    h.append("<h2>Regions</h2><table><tr><th>region</th><th>pairs</th><th>BLEU-4</th><th>METEOR</th>"
             "<th>ROUGE-L</th><th>CIDEr</th><th>CE micro-F1</th><th>CE macro-F1</th></tr>")
    for k in REGION_KEYS:
        r = d["regions"][k]
        n, c = r["nlg"] or {}, r["ce"] or {}
        h.append(f"<tr><td>{html.escape(region(k).label)}</td><td>{r['n_pairs']}</td><td>{_f(n.get('BLEU-4'))}</td>"
                 f"<td>{_f(n.get('METEOR'))}</td><td>{_f(n.get('ROUGE-L'))}</td><td>{_f(n.get('CIDEr'))}</td>"
                 f"<td>{_f(c.get('micro', {}).get('f1'), 3)}</td><td>{_f(c.get('macro', {}).get('f1'), 3)}</td></tr>")
    h.append("</table>")
    if d.get("regions_note"):
        h.append(f"<p class='note'>{html.escape(d['regions_note'])}</p>")
    h.append("<h2>Template collapse</h2><table><tr><th>scope</th><th>pred distinct</th><th>ref distinct</th>"
             "<th>pred top share</th><th>ref top share</th><th>most frequent prediction</th></tr>")
    t = d["templates"]
    for k in ["overall"] + list(REGION_KEYS):
        s = t["overall"] if k == "overall" else t["regions"][k]
        h.append(f"<tr><td>{html.escape(k)}</td><td>{_f(s['pred']['distinct_ratio'], 3)}</td>"
                 f"<td>{_f(s['ref']['distinct_ratio'], 3)}</td><td>{_f(s['pred']['top_share'], 3)}</td>"
                 f"<td>{_f(s['ref']['top_share'], 3)}</td><td style='text-align:left'>"
                 f"{html.escape(s['pred']['top_text'][:90])}</td></tr>")
    h.append(f"</table>{plots['tmpl']}<h2>Report lengths</h2>{plots['len']}")
    h.append(f"<p class='note'>Computed in {_f(d['seconds'].get('total'), 1)} s. NLG metrics follow pycocoevalcap "
             "(PTB tokenizer, METEOR 1.5, corpus BLEU).</p></body></html>")
    return "\n".join(h)
