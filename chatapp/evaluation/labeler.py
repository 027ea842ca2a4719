"""An open, rule-based labeler for the 18 CT-RATE findings (no gated weights, ~thousands of reports/s).

How a report is read:

1. The text is split into sentences (``.``, ``;``, quotes and new lines) and each sentence into clauses (``,``/``:``
   and contrastive words such as *but*, *however*, *whereas*).
2. Each finding has a list of regular expressions for the ways reports word it (``_PATTERNS``); a few findings have
   extra context rules (a calcified plaque is *coronary* when the sentence names the coronaries, *arterial* when it
   names the aorta or other arteries).
3. A mention is **negated** when a negation cue precedes it in its clause (*no*, *without*, *free of*, ...) or a
   negative predicate follows it (*was not observed*, *did not reach pathological size*, ...), unless an
   affirmative verb (*observed*, *seen*, *detected*, ...) stands between cue and mention. It is **uncertain** when the
   clause carries a hedge (``?``, *suspicious for*, *cannot be excluded*, *possible*, ...).
4. A finding is positive when at least one mention is not negated. Uncertain mentions count as positive by default
   (that is how the CT-RATE radiologist labels treat them; ``uncertain_positive=False`` changes it).

Names and order come from :data:`vision.registry.FINDING_NAMES`. The patterns are the author's own wording rules;
they were tuned with cross-validation on the CT-CLIP 800-report training set (see :mod:`chatapp.evaluation.labeler_cv`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from vision.registry import FINDING_NAMES


@dataclass(frozen=True)
class Mention:
    finding: str  # CT-RATE finding name
    sentence: str  # the sentence the mention is in (verbatim)
    negated: bool
    uncertain: bool
    span: tuple[int, int]  # character offsets of the matched words in the report text


def _rx(*alts: str) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(alts) + r")", re.IGNORECASE)


_PATTERNS: dict[str, list[re.Pattern]] = {
    "Medical material": [_rx(
        r"catheters?\b", r"port\b", r"pace ?makers?", r"stents?\b", r"prosthe(?:sis|ses|tic)", r"sternotomy",
        r"(?:sternal |surgical |metallic |cerclage |vascular )?(?:wires?|clips?)\b", r"sutures?\b",
        r"(?:nasogastric|endotracheal|tracheostomy|chest|drainage|thoracostomy|feeding|gastrostomy|ng) tubes?",
        r"cannula", r"(?:valve|aortic valve) replacement", r"(?:mechanical|prosthetic|metallic) valve",
        r"electrodes?\b", r"leads?\b(?= of| extending| of the)", r"screws?\b", r"(?:fixation|metal(?:lic)?) (?:plates?|materials?|implants?|devices?)",
        r"drains?\b", r"coils?\b", r"embolization material", r"defibrillator", r"icd\b",
        r"(?:endo)?graft\b", r"cardiac device", r"tracheostomy", r"osteosynthesis", r"staples?\b",
        r"orthopedic material", r"surgical material", r"medical materials?", r"(?:breast|silicone|mammary|intrapectoral) (?:\w+ )?implants?", r"expander", r"reservoir",
    )],
    "Arterial wall calcification": [],  # context rule in _plaques()
    "Cardiomegaly": [_rx(
        r"cardiomegal", r"(?:heart|cardiac) (?:size |contour |silhouette |dimensions? )?(?:is |was |are |were )?"
                         r"(?:\w+ )?(?:enlarged|increased|large)", r"enlarged heart", r"increased (?:heart|cardiac) (?:size|diameter|dimensions)",
        r"enlargement of the heart", r"(?:heart|cardiac) enlargement", r"cardiothoracic ratio (?:is |was )?increased",
        r"heart size increased", r"(?:cardiothoracic|cardio-thoracic) (?:index|ratio) (?:\w+ ){0,2}increase",
        r"increase\w* (?:\w+ ){0,3}(?:cardiothoracic|cardio-thoracic) (?:index|ratio)", r"ctr (?:\w+ ){0,1}increase",
        r"increase\w* in (?:the )?(?:heart|cardiac) (?:size|dimensions|diameter)",
    )],
    "Pericardial effusion": [_rx(
        r"pericardial (?:effusion|fluid|thickening)", r"pericardial effusion-thickening", r"effusion in the pericard",
        r"fluid in the pericard", r"pericardial (?:space|recess)\w* (?:\w+ )?fluid", r"pericardial [\w-]*effusion",
        r"pericardial (?:minimal |mild |slight )?(?:effusion|fluid)", r"hydropericard",
        r"(?:effusion|fluid) (?:\w+ ){0,8}(?:in|of) the (?:\w+ ){0,3}pericardi(?:al|um)",
        r"(?:effusion|fluid) (?:\w+ ){0,8}(?:in|at) the (?:deepest|thickest|widest) part of the pericardi(?:al|um)",
        # "an effusion of 15 mm in both hemithorax and 12 mm in depth in the pericardial area": a measured share
        r"(?:effusion|fluid)\b[^.;]{0,100}?\band \d+(?:\.\d+)? mm (?:\w+ ){0,3}in the pericardial (?:area|space|cavity)",
        r"pericardial (?:and|or|,) (?:\w+ ){0,2}(?:effusion|fluid)",  # "pericardial and pleural effusions"
        # "an effusion of 17 mm ... in the deepest part of the pericardial area" (no other organ, comma or negation between)
        r"(?:effusion|fluid)\b(?:(?!\bno\b|\bnot\b|\bwithout\b|pleura|hemithora)[^.;,]){0,100}?\bpericardial "
        r"(?:area|space|cavity|recess)",
    )],
    "Coronary artery wall calcification": [],  # context rule in _plaques()
    "Hiatal hernia": [_rx(r"hiatal? hernia", r"hiatus hernia", r"hernia (?:\w+ ){0,3}hiat", r"hiatal", r"hiatus")],
    # CT-RATE radiologists label any described lymph node (even sub-centimetric) as positive; "no ... lymph node" is 0
    # ("lymph node stations" names the place, not a node)
    "Lymphadenopathy": [_rx(r"lymphadenopath", r"adenopath", r"laps?\b", r"lymph ?nodes?(?! station)",
                            r"lymph node\w*(?! station)",
                            r"conglomerat\w* (?:\w+ ){0,2}nodes?")],
    "Emphysema": [_rx(r"emphysem", r"bullae?\b", r"bullous", r"blebs?\b")],
    "Atelectasis": [_rx(r"(?<!fibro)(?<!fibro-)(?<!fibro )atelecta", r"hypoventilat", r"collapsed? (?:lung|lobe|segment)",
                        r"(?:lobe|segment|lung) collapse")],
    "Lung nodule": [_rx(r"nodules?\b", r"micronodul", r"nodular (?!ground|consolidat|densit|thicken|calcif|opacit|"
                        r"infiltrat|appearance|contour|pattern|septal|pleural)",
                        r"(?:lung|pulmonary|parenchymal) mass", r"mass lesion in the lung")],
    # "pneumonic infiltration" is an interpretation, "active infiltration or mass ... detected" a translated negative;
    # "crazy paving" on its own is not labelled an opacity (nor septal thickening) in the CT-RATE annotations
    "Lung opacity": [_rx(r"opacit", r"ground[ -]glass", r"(?<!pneumonic )(?<!active )(?<!nodular )(?<!terms of )"
                         r"(?<!consolidation-)infiltrat", r"density increase", r"increased density",
                         r"increase in density", r"densit(?:y|ies) (?:\w+ ){0,3}(?:lung|parenchyma)",
                         r"haziness", r"frosted glass")],
    # apical/peripheral pleuroparenchymal densities and subpleural bands are scar (sequela) wording
    "Pulmonary fibrotic sequela": [_rx(r"fibro", r"sequela", r"parenchymal bands?", r"scar\b", r"scarring",
                                       r"fibrous", r"sequel\b", r"pleur[ao]-?parenchymal (?:\w+ ){0,2}(?:densit|bands?)",
                                       r"subpleural (?:\w+ )?bands?")],
    "Pleural effusion": [_rx(r"pleural (?:\w+ ){0,2}(?:effusion|fluid)", r"effusion", r"hydro ?(?:pneumo|pnomo)?thorax",
                             r"hemothorax", r"fluid (?:\w+ ){0,3}pleural", r"pleural space (?:\w+ ){0,3}fluid")],
    "Mosaic attenuation pattern": [_rx(r"mosaic")],
    # "peribronchovascular" density is airspace disease, and thickening of the peribronchovascular *interstitium*
    # is interstitial; thickening/thickness of the peribronchovascular sheath/bundle is labelled peribronchial
    "Peribronchial thickening": [_rx(r"peribronchial (?:\w+ ){0,3}thick", r"bronchial wall thicken",
                                     r"thicken\w* (?:\w+ ){0,3}(?:of |in |along )?the (?:\w+ )?(?:peri)?bronch(?!ovasc)",
                                     r"peribronchial cuff", r"thickened bronch", r"bronchial thickening",
                                     r"thickness (?:\w+ ){0,3}peribronch(?!ovasc)", r"peribronchial sheath",
                                     r"peribronchial (?:\w+ )?density", r"density (?:\w+ ){0,6}peribronch(?!ovasc)",
                                     r"(?:thicken\w*|thickness) (?:\w+ ){0,3}peribronchovascular (?!interstiti)",
                                     r"peribronchovascular (?:sheath |bundle )?(?:thicken|thickness)")],
    "Consolidation": [_rx(r"consolidat")],
    "Bronchiectasis": [_rx(r"bronchiecta", r"dilated bronch", r"bronchial dilat", r"dilatation of the bronch")],
    "Interlobular septal thickening": [_rx(r"septal thicken", r"thicken\w* (?:\w+ ){0,5}(?:interlobular )?sept", r"septal thickness",
                                           r"sept\w* (?:\w+ ){0,2}thickness",
                                           r"interlobular sept\w* (?:\w+ ){0,2}thicken", r"septal (?:\w+ ){0,2}thicken",
                                           # any described interlobular septa ("prominence in the interlobular
                                           # septa", "septal clarifications") and "intra- and interseptal thickening"
                                           r"interlobular septa", r"interseptal thicken")],
}

# Cheap substring triggers (lower case): a finding's regexes only run on sentences that contain one of these.
# Every pattern above can only match text that contains one of its finding's triggers.
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "Medical material": ("catheter", "port", "pace", "stent", "prosthe", "sternotomy", "wire", "clip", "suture", "tube",
                         "cannula", "replacement", "valve", "electrode", "lead", "screw", "plate", "material", "implant",
                         "drain", "coil", "defibrillator", "icd", "graft", "device", "tracheostomy", "osteosynthesis",
                         "staple", "expander", "reservoir"),
    "Cardiomegaly": ("cardiomegal", "heart", "cardiac", "cardiothoracic", "cardio-thoracic", "ctr"),
    "Pericardial effusion": ("pericard",),
    "Hiatal hernia": ("hiat",),
    "Lymphadenopathy": ("lymph", "adenopath", "lap", "conglomerat"),
    "Emphysema": ("emphysem", "bulla", "bullous", "bleb"),
    "Atelectasis": ("atelecta", "hypoventilat", "collaps"),
    "Lung nodule": ("nodul", "mass"),
    "Lung opacity": ("opacit", "glass", "infiltrat", "densit", "crazy", "haziness"),
    "Pulmonary fibrotic sequela": ("fibro", "sequel", "band", "scar", "parenchymal"),
    "Pleural effusion": ("effusion", "fluid", "thorax"),
    "Mosaic attenuation pattern": ("mosaic",),
    "Peribronchial thickening": ("bronch",),
    "Consolidation": ("consolidat", "bronchogram"),
    "Bronchiectasis": ("bronch",),
    "Interlobular septal thickening": ("sept",),
}
# Wordings that name the finding even in a sentence that an exclusion above would drop: CT-RATE radiologists label
# described *linear density increases* as opacity also when attributed to sequelae, and ground glass also next to
# sequelae or fibrosis in the same sentence; "icy" (ground-glass) and dependent densities are opacities.
_UNEXCLUDED: dict[str, re.Pattern] = {
    "Lung opacity": _rx(r"linear (?:\w+ )?densit\w* increase", r"linear increase\w* (?:in|of) (?:\w+ )?densit",
                        r"icy densit", r"dependent densit", r"(?:ground|frosted)[ -]glass(?![ -]nodul)"),
}
_ATTRIBUTED = re.compile(r"[^.;]{0,80}?\b(?:consistent with|compatible with|in favou?r of|secondary to) "
                         r"(?:\w+ ){0,3}?(?:consolidat)", re.IGNORECASE)
_PLAQUE_TRIGGERS = ("atherom", "plaque", "calcif", "atheroscl")

# A mention is dropped when its sentence matches the finding's exclusion (another organ or another finding is meant)
# and does not name the organ of the finding.
_OTHER_ORGAN = r"liver|hepat|kidney|renal|spleen|splen|pancrea|vertebra|bone|osseous|fatty tissue|thyroid|adrenal|breast|muscle|subcutaneous|soft tissue|scapula|sternum|rib\b|bowel|gall"
_EXCLUDE: dict[str, list[tuple[re.Pattern, re.Pattern | None]]] = {
    "Pleural effusion": [(re.compile(r"pericard|perirenal|perinephric|perihepatic|periton|ascit|joint|perisplenic|"
                                     r"subcapsular|spleen", re.IGNORECASE),
                          re.compile(r"pleura|hemithora|hydrothorax|hemothorax|thorax(?! ct| computed| scan)", re.IGNORECASE))],
    "Lung opacity": [(re.compile(r"sequela|fibrotic|fibrosis|pleuroparenchymal|pleural parenchymal|parenchymal band|"
                                 r"ground[ -]glass nodul|leukemic", re.IGNORECASE), None),
                     (re.compile(_OTHER_ORGAN + r"|mediastin|thym|\bfat\b|fatty|adipose|chest wall|pericolic|"
                                 r"pericolonic|perigastric|mesenter|omentum|colon|trachea", re.IGNORECASE),
                      re.compile(r"\blungs?\b|pulmonary|\blobe|ground", re.IGNORECASE)),
                     # mosaic density differences (their own finding), a decrease in density
                     (re.compile(r"mosaic|decrease\w* (?:\w+ ){0,3}densit", re.IGNORECASE),
                      re.compile(r"ground|opacit|infiltrat", re.IGNORECASE))],
    # atelectasis named as a sequela (fibro-atelectatic scar) is the sequela finding
    "Atelectasis": [(re.compile(r"sequela\w* (?:of )?(?:\w+ )?atelecta|atelecta\w* (?:\w+ )?sequela", re.IGNORECASE),
                     None)],
    # "hypodense" is solid-organ wording (liver, thyroid), not how lung nodules are described
    "Lung nodule": [(re.compile(r"thyroid|liver|hepat|adrenal|kidney|renal|breast|spleen|pleural nodul|"
                                r"nodular (?:thickening|calcif)|lymph node|hypodense|schmorl|vertebra|subcutaneous|"
                                r"mesenter|colon|calcul", re.IGNORECASE),
                     re.compile(r"\blungs?\b|pulmonary|parenchym", re.IGNORECASE))],
    # a fibrosing interstitial lung disease is not a *sequela* (scar of a past insult)
    "Pulmonary fibrotic sequela": [(re.compile(r"fibroadenom|fibroid|fibrous dysplasia", re.IGNORECASE), None),
                                   (re.compile(r"idiopathic|\bipf\b|\buip\b|\bnsip\b|interstitial lung disease|"
                                               r"interstitial pneumonia", re.IGNORECASE),
                                    re.compile(r"sequel", re.IGNORECASE)),
                                   (re.compile(_OTHER_ORGAN + r"|humer|fracture|perirenal", re.IGNORECASE),
                                    re.compile(r"\blungs?\b|pulmonary|\blobe|pleur|parenchym", re.IGNORECASE))],
    "Medical material": [(re.compile(r"omental|periton|metasta|suture compression", re.IGNORECASE), None)],
    # an "(intrapulmonary lymph node?)" is a lung nodule; "(lymph node?)" in the spleen hilum/abdomen/breast is not
    # thoracic lymphadenopathy
    "Lymphadenopathy": [(re.compile(r"intrapulmonary lymph|intraparenchymal lymph|perifissural lymph", re.IGNORECASE), None),
                        (re.compile(r"spleen|splenic|breast|abdom|inguinal|mesenter|periton", re.IGNORECASE),
                         re.compile(r"mediastin|paratracheal|subcarinal|prevascular|aortopulmonary|axill|"
                                    r"supraclavicular", re.IGNORECASE))],
}

_PLAQUE = _rx(r"atherom", r"plaques?\b", r"calcif", r"atheroscleros", r"atherosclerotic")
_CORONARY = _rx(r"coronar", r"\blad\b", r"circumflex", r"\brca\b", r"anterior descending")
_ARTERIAL = _rx(r"aort(?!ic valve)", r"arter", r"vascular", r"carotid", r"subclavian", r"brachiocephalic", r"iliac",
                r"vessel", r"truncus", r"celiac", r"arch\b")
_NOT_VESSEL = _rx(r"pleura", r"valv", r"nodul", r"lymph", r"granulom", r"costal", r"cartilag", r"liver", r"spleen",
                  r"thyroid", r"pericard", r"kidney", r"renal")
# coronary artery names and the aortopulmonary window (a nodal station) are not "other arteries"
_COMMA = re.compile(r",|;")
_CORONARY_ARTERY = re.compile(r"coronary arter\w*|coronary vessels?|(?:left )?anterior descending(?: arter\w*)?|"
                              r"circumflex(?: arter\w*)?|aort\w*[ -]?pulmonary window|aortopulmonary", re.IGNORECASE)

_NEG_PRE = _rx(r"no\b", r"not\b", r"without", r"absence of", r"free of", r"neither", r"nor\b", r"negative for",
               r"no evidence of", r"nothing", r"none\b")
_NEG_POST = _rx(
    r"(?:was|were|is|are|has been|have been)? ?(?:not|never) (?:\w+ )?(?:observed|detected|seen|found|identified|"
    r"noted|present|visualized|evident|determined|monitored|shown|encountered|reached|reach)",
    r"did not (?:show|have)", r"(?:were|was|is|are) (?:not|no longer)\b", r"(?:is|was|are|were) absent", r"(?:has |have )?disappeared", r"(?:\w+ )?regressed", r"(?:was|were|has been|have been) removed",
    r"(?:show|showed|shows) (?:\w+ )?regression",
    r"(?:is|are|was|were) (?:within )?normal",
)
_GONE = _rx(r"(?:was|were|is|are) not (?:\w+ )?(?:detected|observed|seen) (?:\w+ )?in (?:the|this) (?:current|present|"
            r"last|recent|control|examination)", r"(?:has|have) (?:completely )?(?:regressed|resolved|disappeared)",
            r"(?:completely|totally|fully) (?:regressed|resolved|disappeared)", r"disappeared",
            r"(?:show\w*|with) (?:a )?(?:full|complete|total) (?:regression|resolution)")
# "the catheter, which was observed in the previous examination, was removed": the relative clause is skipped
_REMOVED_AFTER_WHICH = re.compile(r"^[^.;]*?\bwhich\b[^.;]*?,\s*(?:was|were|is|are|has been|have been) (?:removed|"
                                  r"extracted|no longer|not (?:\w+ )?(?:observed|detected|seen)|(?:completely )?"
                                  r"(?:regressed|resolved|disappeared))", re.IGNORECASE)
_AFFIRM = _rx(r"observed", r"seen", r"detected", r"noted", r"present", r"identified", r"monitored", r"there (?:is|are)",
              r"evaluated", r"appear", r"considered", r"compatible", r"consistent", r"shows?", r"showed", r"contains?")
_BREAK = re.compile(_AFFIRM.pattern + r"[^,;]*?(?:\band\b|,|;)|(?:,|\band\b)\s*(?:and )?there (?:is|are)",
                    re.IGNORECASE)
_UNCERTAIN = re.compile(r"\?|\b(?:suspicious|suspected|suspicion|cannot be (?:excluded|ruled out)|can ?not be "
                        r"(?:excluded|ruled out)|not (?:be )?ruled out|possible|possibly|probabl[ey]|may\b|might|"
                        r"likely|questionable|equivocal|differential|suggest|doubtful|rule out)", re.IGNORECASE)
_SENT_SPLIT = re.compile(r"(?<=[.;!?])\s+|\s*[\"\n\r]+\s*|(?<=[a-z]\.)(?=[A-Z])")
_STRONG_SPLIT = re.compile(r"\bbut\b|\bhowever\b|\bwhereas\b|\balthough\b|\bexcept\b|\bapart from\b|"
                           r"\bother than\b|\bwhich\b|:", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r",|:|\bbut\b|\bhowever\b|\bwhereas\b|\balthough\b|\bwhile\b|\bexcept\b|\bapart from\b"
                           r"|\bother than\b|\bwhich\b", re.IGNORECASE)


def split_sentences(text: str) -> list[tuple[int, str]]:
    """Sentences of a report with their character offsets (quotes and new lines end sentences too)."""
    out, pos = [], 0
    for part in _SENT_SPLIT.split(text):
        start = text.find(part, pos) if part else pos
        if part and part.strip(" .\"'"):
            out.append((start, part))
        pos = start + len(part)
    return out


def _clause_bounds(sentence: str, start: int, end: int, splitter: re.Pattern = _CLAUSE_SPLIT) -> tuple[int, int]:
    lo, hi = 0, len(sentence)
    for m in splitter.finditer(sentence):
        if m.end() <= start:
            lo = m.end()
        elif m.start() >= end:
            hi = m.start()
            break
    return lo, hi


# CT-RATE labels any described mediastinal lymph node as lymphadenopathy, also "lymph nodes that did not reach
# pathological dimensions were observed": these size qualifiers are not negations of the node itself ...
_NODE_SIZE_QUALIFIER = re.compile(
    r"(?:(?:that|which) )?(?:did|do|does|that do|were|was|are|is)? ?not (?:reach\w*|in|of)? ?(?:\w+ ){0,2}?"
    r"(?:pathologic(?:al)?|significant) (?:\w+ )?(?:size|dimensions?|sizes)(?: and (?:appearance|configuration))?|"
    r"not reaching (?:\w+ )?(?:pathologic(?:al)?|significant) (?:\w+ )?(?:size|dimensions?)", re.IGNORECASE)
# (also "millimetric"/"small" nodes: mostly labelled 1, the few 0s are not a wording rule)


def _node_negated(sentence: str, start: int, end: int) -> bool:
    rest = _NODE_SIZE_QUALIFIER.sub(" ", sentence[end:])
    cut = len(sentence) - len(rest)
    return _negated(sentence[:start] + sentence[start:end] + rest, start, end) if cut else _negated(sentence, start, end)


def _negated(sentence: str, start: int, end: int) -> bool:
    lo, hi = _clause_bounds(sentence, start, end, _STRONG_SPLIT)
    before, after = sentence[lo:start], sentence[end:hi]
    for m in reversed(list(_NEG_PRE.finditer(before))):
        if not _BREAK.search(before[m.end():]):
            return True
        break
    m = _NEG_POST.search(after)
    if m and not _AFFIRM.search(after[:m.start()]):
        return True
    return bool(_GONE.search(after)) or bool(_REMOVED_AFTER_WHICH.search(sentence[end:]))


def _uncertain(sentence: str, start: int, end: int) -> bool:
    lo, hi = _clause_bounds(sentence, start, end)
    return bool(_UNCERTAIN.search(sentence[lo:hi])) or sentence.rstrip().endswith("?")


def _excluded(name: str, sentence: str, skip_first: bool = False) -> bool:
    for bad, rescue in _EXCLUDE.get(name, ())[1 if skip_first else 0:]:
        if bad.search(sentence) and (rescue is None or not rescue.search(sentence)):
            return True
    return False


def _plaques(sentence: str) -> list[tuple[str, int, int]]:
    """Calcified-plaque mentions → coronary and/or arterial wall calcification, decided by the vessels named."""
    out = []
    # other arteries: those named in the plaque's own comma clause decide ("dilated aorta, plaques in the coronary
    # arteries" is coronary only); when that clause names no vessel ("in the aorta, plaques were observed"), those
    # of the whole sentence do. Coronary: anywhere in the sentence.
    coronary = bool(_CORONARY.search(sentence))
    first = _PLAQUE.search(sentence)
    lo, hi = _clause_bounds(sentence, first.start(), first.end(), _COMMA) if first else (0, len(sentence))
    scope = sentence[lo:hi]
    if not (_CORONARY.search(scope) or _ARTERIAL.search(_CORONARY_ARTERY.sub(" ", scope))):
        scope = sentence
    other_vessel = bool(_ARTERIAL.search(_CORONARY_ARTERY.sub(" ", scope)))
    for m in _PLAQUE.finditer(sentence):
        word = m.group(0).lower()
        if word.startswith("calcif") and not re.search(r"plaque|atherom|wall|vascular|arter|aort|coronar|vessel",
                                                       sentence, re.IGNORECASE):
            continue  # calcified nodule/lymph node/valve, not a vessel wall
        if coronary:
            out.append(("Coronary artery wall calcification", m.start(), m.end()))
        if other_vessel or (not coronary and not _NOT_VESSEL.search(sentence) and word.startswith(("atherom", "plaque"))):
            out.append(("Arterial wall calcification", m.start(), m.end()))
        if out:
            break  # one plaque mention per sentence is enough; the vessel words decided the findings
    return out


def find_mentions(text: str) -> list[Mention]:
    """Every finding mention in a report, with negation and uncertainty.

    Args:
        text: a free-text report (findings and/or impression), any length.

    Returns:
        mentions in text order; a phrase may yield mentions of several findings.
    """
    out: list[Mention] = []
    for offset, sent in split_sentences(text):
        for name, s, e, neg, unc in _sentence_mentions(sent):
            out.append(Mention(name, sent, neg, unc, (offset + s, offset + e)))
    return out


@lru_cache(maxsize=1 << 16)
def _sentence_mentions(sent: str) -> tuple[tuple[str, int, int, bool, bool], ...]:
    """(finding, start, end, negated, uncertain) of one sentence; cached: report sentences repeat a lot."""
    low = sent.lower()
    hits: list[tuple[str, int, int]] = []
    for name, pats in _PATTERNS.items():
        if not any(t in low for t in _TRIGGERS.get(name, ())):
            continue
        for pat in pats:
            for m in pat.finditer(sent):
                hits.append((name, m.start(), m.end()))
    excluded = {name: _excluded(name, sent) for name in {h[0] for h in hits}}
    hits = [h for h in hits if not excluded[h[0]]]
    if "densit" in low or "glass" in low:  # every _UNEXCLUDED wording names a density or ground glass
        for name, pat in _UNEXCLUDED.items():
            if not _excluded(name, sent, skip_first=True):
                hits += [(name, m.start(), m.end()) for m in pat.finditer(sent)]
    # a density the radiologist attributes to consolidation is labelled as that finding, not as an opacity
    hits = [h for h in hits if not (h[0] == "Lung opacity" and "densit" in sent[h[1]:h[2]].lower()
                                    and _ATTRIBUTED.match(sent, h[2]))]
    if any(t in low for t in _PLAQUE_TRIGGERS):
        hits += _plaques(sent)
    last_end: dict[str, int] = {}
    out = []
    for name, s, e in sorted(hits, key=lambda h: (h[1], FINDING_NAMES.index(h[0]))):
        if s < last_end.get(name, -1):
            continue  # overlaps a mention of the same finding (two patterns matched the same words)
        last_end[name] = e
        neg = _node_negated(sent, s, e) if name == "Lymphadenopathy" else _negated(sent, s, e)
        out.append((name, s, e, neg, _uncertain(sent, s, e)))
    return tuple(out)


def label_report(text: str, *, uncertain_positive: bool = True) -> dict[str, int]:
    """The 18 CT-RATE labels (0/1, CT-RATE names and order) of one report."""
    labels = dict.fromkeys(FINDING_NAMES, 0)
    for m in find_mentions(text or ""):
        if not m.negated and (uncertain_positive or not m.uncertain):
            labels[m.finding] = 1
    return labels


def label_reports(texts: Iterable[str], *, uncertain_positive: bool = True) -> list[dict[str, int]]:
    """:func:`label_report` for many reports."""
    return [label_report(t, uncertain_positive=uncertain_positive) for t in texts]
