"""VQA: RadGenome template questions answered from the Study's findings; follow-ups; out-of-scope answers."""

from __future__ import annotations

import json

import pytest
from conftest import shared_path
from test_report import make_study

from chatapp.pipeline import Pipeline
from chatapp.schema import Answer
from chatapp.vqa import match_findings, parse_question
from vision.registry import FINDING_NAMES


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_config(model=False, store=False)


@pytest.fixture(scope="module")
def study():
    probs = {n: 0.05 for n in FINDING_NAMES} | {"Consolidation": 0.999}
    return make_study(probs=probs)  # nodule 7.2 mm RUL, emphysema 12.3 %, left effusion 150 mL, consolidation P=0.999 (above any configured threshold)


def _templates(kind: str) -> list[str]:
    p = shared_path("radgenome-chestct_vqa-subset2000", f"qa_template_{kind}_template.json")
    return sorted(set(json.loads(p.read_text())[kind]))


@pytest.mark.data
def test_presence_templates(pipe, study):
    n = ok = 0
    cases = [("pulmonary nodules", "lung", "Yes"), ("ground glass opacity", "lung", "No"),
             ("pleural effusion", "pleura", "Yes"), ("cardiomegaly", "heart", "No"),
             ("consolidation", "lung", "Yes"), ("bronchiectasis", "trachea and bronchie", "No")]
    for t in _templates("presence"):
        for abn, reg, expect in cases:
            q = t.format(abnormality=abn, region=reg)
            a = pipe.ask(study, q)
            n += 1
            ok += a.kind == "presence" and a.text.startswith(expect)
    assert ok / n >= 0.95, f"{ok}/{n}"


@pytest.mark.data
def test_location_size_abnormality_templates(pipe, study):
    res = []
    for t in _templates("location"):
        a = pipe.ask(study, t.format(abnormality="lung nodule"))
        res.append(a.kind == "location" and "right upper lobe" in a.text)
        a = pipe.ask(study, t.format(abnormality="pleural effusion"))
        res.append(a.kind == "location" and "left" in a.text)
    for t in _templates("size"):
        a = pipe.ask(study, t.format(abnormality="nodule", region="right lung upper lobe"))
        res.append(a.kind == "size" and "7 mm" in a.text)
        a = pipe.ask(study, t.format(abnormality="pleural effusion", region="pleura"))
        res.append(a.kind == "size" and "150 mL" in a.text)
    for t in _templates("abnormality"):
        a = pipe.ask(study, t.format(region="lung"))
        res.append(a.kind == "abnormality" and "lung nodule" in a.text and "emphysema" in a.text)
        a = pipe.ask(study, t.format(region="heart"))
        res.append(a.kind == "abnormality" and a.text.startswith("No abnormality"))
    assert sum(res) / len(res) >= 0.95, f"{sum(res)}/{len(res)}"


def test_follow_ups_resolve_against_history(pipe, study):
    h = []
    for q, expect in [("Is there a nodule?", "Yes"), ("How big is it?", "7 mm"), ("Which lobe?", "right upper lobe")]:
        a = pipe.ask(study, q, h)
        assert expect in a.text, (q, a.text)
        h += [{"role": "user", "content": q}, {"role": "assistant", "content": a.text}]
    a = pipe.ask(study, "And is there a pleural effusion?", h)
    assert a.text.startswith("Yes")
    a = pipe.ask(study, "How much fluid is it?", h + [{"role": "user", "content": "And is there a pleural effusion?"}])
    assert "150 mL" in a.text


def test_side_and_lobe_specific_presence(pipe, study):
    assert pipe.ask(study, "Can a nodule be seen in the left lung?").text.startswith("No")
    assert pipe.ask(study, "Is there a nodule in the right upper lobe?").text.startswith("Yes")
    assert pipe.ask(study, "Is there a nodule in the right lower lobe?").text.startswith("No")


@pytest.mark.parametrize("q", ["What is the patient's name?", "When was the patient born?",
                               "What's the weather in Paris?", "Is there a fracture in the bone?"])
def test_out_of_scope_questions_say_so(pipe, study, q):
    a = pipe.ask(study, q)
    assert a.kind == "out_of_scope" and "can't answer" in a.text


def test_absent_region_and_unassessed_findings(pipe, study):
    a = pipe.ask(study, "What abnormalities are present in the thyroid?")
    assert "not in the field of view" in a.text
    a = pipe.ask(study, "Is there a hiatal hernia?")
    assert a.text.startswith("No")
    a = pipe.ask(make_study(probs={}), "Is there a hiatal hernia?")  # no model, no measurement → not assessed
    assert "not assessed" in a.text


def test_free_question_without_model_uses_facts_and_streams(pipe, study):
    parts = list(pipe.ask_stream(study, "What does emphysema mean for this patient?"))
    assert isinstance(parts[-1], Answer) and parts[-1].kind == "free"
    assert all(isinstance(p, str) for p in parts[:-1]) and "".join(parts[:-1]) == parts[-1].text
    assert "12.3%" in parts[-1].text and "emphysema" in parts[-1].text  # the grounded composer, no LLM
    assert "No knowledge-base passage" in parts[-1].text and parts[-1].citations == []  # store=False


def test_parser_units():
    assert match_findings("pericardial effusion and pleural effusion") == ["Pericardial effusion", "Pleural effusion"]
    assert match_findings("ground glass areas") == ["Lung opacity"]
    p = parse_question("Can pulmonary nodules be identified in the right lung upper lobe?")
    assert (p.kind, p.findings, p.region, p.side, p.lobe) == ("presence", ["Lung nodule"], "lung", "right", "upper")
    assert parse_question("What is the size of the nodule in the lung?").kind == "size"
    assert parse_question("Where in the image is the consolidation located?").kind == "location"
    assert parse_question("What abnormalities are present in the scan?").kind == "abnormality"


def test_presence_question_without_region_respects_the_field_of_view():
    """'Is there a lung nodule?' on a scan without lungs must not answer 'No' (seen in the real-pipeline browser run)."""
    from chatapp.report import call_findings
    from chatapp.schema import Study
    from chatapp.vqa import answer_structured

    study = Study(study_id="x", volume=None, absent_regions=["lung", "heart"])
    ans = answer_structured(parse_question("Is there a lung nodule?"), study, call_findings(study, {}))
    assert ans is not None
    assert not ans.text.lower().startswith("no"), ans.text
    assert "field of view" in ans.text.lower()


def test_every_radgenome_location_and_size_template_parses():
    """All RadGenome location/size templates (or the built-in fallbacks) are read as that question type about the
    nodule ('What is the precise region of the lung nodule in the image?' used to fall through to the LLM)."""
    import importlib.util

    from conftest import ROOT

    from chatapp.vqa import parse_question

    spec = importlib.util.spec_from_file_location("eval_phantom_reports", ROOT / "tools" / "eval_phantom_reports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tpl = mod.load_templates()
    for kind in ("location", "size"):
        for q in tpl[kind]:
            p = parse_question(q.format(abnormality="lung nodule", region="lung"))
            assert (p.kind, p.findings) == (kind, ["Lung nodule"]), q
    for q in ("What is the precise region of the lung nodule in the image?",
              "What is the specific region of the lung nodule within the image?"):
        assert parse_question(q).kind == "location"
