"""Sentence → RadGenome-ChestCT region router, so full reports can be scored region by region.

Each region has anatomical cue words (``_CUES``); a sentence goes to every region whose cues it contains ("mediastinal
vascular structures and heart contour are normal" → mediastinum and heart). A few cues are claimed by a more specific
phrase first (``_CLAIMS``): "air bronchogram" is lung, not airway; "pericardial" is heart, not pleura; "hilar lymph
node" is mediastinum, not lung. Sentences with a finding name but no anatomy go to the finding's region from
:mod:`vision.registry` (e.g. "Cardiomegaly." → heart). Region keys and order are :data:`vision.registry.REGION_KEYS`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from chatapp.evaluation.labeler import split_sentences
from vision.registry import FINDINGS, REGION_KEYS


def _rx(*alts: str) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(alts) + r")", re.IGNORECASE)


# phrases removed before cue matching, with the region they stand for (specific beats generic)
_CLAIMS: list[tuple[re.Pattern, str | None]] = [
    (_rx(r"air bronchograms?"), "lung"),
    (_rx(r"peribronchovascular", r"bronchovascular"), "lung"),
    (_rx(r"(?:effusion|fluid)[\w -]{0,30}pericardi\w*"), "heart"),
    (_rx(r"pericardi\w*(?:[ -](?!and\b|or\b)\w+){0,3}"), "heart"),  # not across "pericardial and pleural"
    (_rx(r"(?:aortic|mitral|tricuspid|pulmonary) valves?"), "heart"),
    (_rx(r"pulmonary arter\w*", r"pulmonary trunk", r"pulmonary veins?"), "mediastinum"),
    (_rx(r"(?:hilar|hilum|hila|paratracheal|subcarinal|prevascular|aortopulmonary|mediastinal)[\w -]{0,40}?"
         r"(?:lymph ?nodes?|lap\b|laps\b|lymphadenopath\w*)"), "mediastinum"),
    (_rx(r"(?:axillary|axilla)[\w -]{0,30}?(?:lymph ?nodes?|lap\b)", r"(?:lymph ?nodes?|lap)[\w -]{0,30}?axill\w*"),
     "breast"),
    (_rx(r"(?:abdominal|paraaortic|paraaortal|retroperitoneal|celiac|periportal|mesenteric)[\w -]{0,30}?"
         r"lymph ?nodes?"), "abdomen"),
    (_rx(r"thoracic (?:ct|examination|study)", r"chest (?:ct|examination)", r"study area", r"examination area",
         r"sections?", r"window"), None),
    (_rx(r"hemithorax", r"thoracic wall", r"chest wall"), None),
]

_CUES: dict[str, re.Pattern] = {
    "lung": _rx(r"lungs?\b", r"pulmonary", r"ground[ -]glass", r"emphysem\w*", r"atelecta\w*", r"consolidat\w*",
                r"mosaic", r"septal", r"interstiti\w*", r"bullae?\b", r"bullous", r"pneumoni\w*", r"infiltrat\w*",
                r"aeration", r"apical segment", r"basal segments?", r"honeycomb\w*", r"hypoventilat\w*",
                r"micronodul\w*", r"tree[ -]in[ -]bud", r"bud[ -]branch", r"crazy paving", r"pneumothorax",
                r"lingul\w*", r"fissures?", r"upper lobes?", r"lower lobes?", r"middle lobe", r"parenchymal bands?"),
    "trachea_and_bronchi": _rx(r"trache\w*", r"bronch\w*", r"peribronch\w*", r"carina\b", r"airways?", r"endobronchial"),
    "mediastinum": _rx(r"mediastin\w*", r"aort\w*", r"vascular structures", r"lymph ?nodes?", r"lymphadenopath\w*",
                       r"lap\b", r"laps\b", r"paratracheal", r"subcarinal", r"prevascular", r"thym\w*",
                       r"vena cava", r"great vessels", r"brachiocephalic", r"subclavian", r"carotid",
                       r"arterial wall", r"atheroscler\w*", r"atherom\w*", r"hil(?:ar|um|a)\b"),
    "heart": _rx(r"heart", r"cardi\w*", r"coronar\w*", r"atri(?:um|al|a)\b", r"ventric\w*", r"valv\w*",
                 r"myocard\w*", r"\bctr\b", r"pacemaker"),
    "esophagus": _rx(r"esophag\w*", r"oesophag\w*", r"hiatal", r"hiatus", r"gastroesophageal", r"nasogastric"),
    "pleura": _rx(r"pleura\w*", r"effusions?", r"hydrothorax", r"hemothorax", r"empyema", r"pneumothorax",
                  r"costophrenic", r"pleuroparenchymal"),
    "bone": _rx(r"bones?\b", r"bony", r"osseous", r"vertebra\w*", r"ribs?\b", r"costal", r"spin(?:e|al)\b",
                r"sternum", r"sternal", r"sternotomy", r"clavic\w*", r"scapula\w*", r"humer\w*", r"scoliosis", r"kyphosis",
                r"osteophyt\w*", r"spondyl\w*", r"fractures?", r"lytic", r"sclerotic", r"degenerative",
                r"osteopeni\w*", r"osteopor\w*", r"schmorl", r"corpus heights?", r"thoracic spine", r"disc\b",
                r"skeletal", r"metastatic bone", r"neural foramin\w*", r"foramin\w*"),
    "thyroid": _rx(r"thyroid\w*", r"goiter", r"goitre"),
    "breast": _rx(r"breasts?\b", r"mammar\w*", r"gynecomastia", r"axill\w*", r"nipple"),
    "abdomen": _rx(r"liver", r"hepat\w*", r"spleen", r"splen\w*", r"kidneys?", r"renal", r"adrenal\w*",
                   r"pancrea\w*", r"gallbladder", r"gall bladder", r"cholecyst\w*", r"chole\w*", r"stomach",
                   r"abdom\w*", r"bowel", r"colon\w*", r"bile", r"biliary", r"portal", r"intestin\w*", r"perirenal",
                   r"periton\w*", r"ascites", r"duoden\w*", r"upper abdominal organs", r"steatosis", r"hepatosteatosis", r"bladder", r"prostat\w*",
                   r"pelvi\w*", r"uter\w*", r"ovar\w*"),
}

# words that point to the lung only when the sentence names no other organ ("thyroid nodule in the left lobe")
_WEAK_LUNG = _rx(r"nodul\w*", r"lob(?:e|es|ar)\b", r"segments?\b", r"parenchym\w*", r"fibro\w*", r"sequela\w*",
                 r"opacit\w*", r"density increases?", r"densities")

_BREAST_PROPER = _rx(r"breasts?\b", r"mammar\w*", r"gynecomastia", r"nipple")

_FINDING_CUES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b" + re.escape(f.name) + r"\b", re.IGNORECASE), f.region) for f in FINDINGS
] + [(_rx(r"cardiomegal\w*"), "heart"), (_rx(r"lymphadenopath\w*"), "mediastinum")]


def route_sentence(sentence: str) -> list[str]:
    """Regions a sentence speaks of, in :data:`REGION_KEYS` order ([] when it names no anatomy or finding).

    Args:
        sentence: one report sentence.
    """
    return list(_route(sentence))


@lru_cache(maxsize=1 << 16)
def _route(sentence: str) -> tuple[str, ...]:  # cached: report sentences repeat a lot
    found: set[str] = set()
    text = sentence
    for pat, reg in _CLAIMS:
        if pat.search(text):
            if reg:
                found.add(reg)
            text = pat.sub(" ", text)
    for reg, pat in _CUES.items():
        if pat.search(text):
            found.add(reg)
    if {"breast", "mediastinum"} <= found and not _BREAST_PROPER.search(text):
        found.discard("breast")  # "hilar-axillary lymph nodes" in the nodal-station sentence is mediastinal
    if not (found - {"lung", "pleura"}) and _WEAK_LUNG.search(text):
        found.add("lung")
    if not found:
        for pat, reg in _FINDING_CUES:
            if pat.search(sentence):
                found.add(reg)
    return tuple(r for r in REGION_KEYS if r in found)


def split_regions(text: str) -> dict[str, list[str]]:
    """Split a report into region sub-reports (sentences verbatim; a sentence may go to several regions).

    Returns:
        a dict with every key of :data:`REGION_KEYS` (empty lists for regions the report does not mention).
    """
    out: dict[str, list[str]] = {k: [] for k in REGION_KEYS}
    for _, sent in split_sentences(text or ""):
        sent = sent.strip()
        for reg in route_sentence(sent):
            out[reg].append(sent)
    return out
