"""Retrieval: the in-house knowledge base (parsing, coverage, recall on the question set), the store adapter, its
LangChain/Chroma faces and the ``ctscribe kb`` command. The MiniLM embedder is loaded once per process
(``get_embedder`` caches it), so all retrieval test files share it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from retrieval.kb import KNOWLEDGE_DIR, load_entries, parse_markdown
from vision.errors import StoreError
from vision.registry import FINDING_NAMES

QUESTIONS = Path(__file__).with_name("kb_questions.jsonl")


def _client():
    import chromadb
    from chromadb.config import Settings

    return chromadb.EphemeralClient(Settings(anonymized_telemetry=False))


@pytest.fixture(scope="session")
def kb_store():
    from retrieval.embed import get_embedder
    from retrieval.store import KnowledgeStore

    store = KnowledgeStore(_client(), get_embedder(), collection=f"kb-{uuid.uuid4().hex[:8]}")
    assert store.ensure_builtin() == len(load_entries())
    return store


# ---------------------------------------------------------------------------------------------- knowledge base
def test_knowledge_base_covers_topics_and_findings():
    entries = load_entries()
    assert len(entries) >= 40
    keys = [e.key for e in entries]
    assert len(set(keys)) == len(keys)
    # every one of the 18 CT-RATE findings has its own entry and is tagged with registry names only
    tagged = {f for e in entries for f in e.findings}
    assert tagged <= set(FINDING_NAMES)
    for name in FINDING_NAMES:
        assert f"finding-{name.lower().replace(' ', '-')}" in keys, name
    for required in ("fleischner-2017-solid-single", "fleischner-2017-solid-multiple", "fleischner-2017-subsolid-single",
                     "fleischner-2017-subsolid-multiple", "lungrads-2022-category-4a", "emphysema-laa950-threshold",
                     "cac-agatston-categories", "thoracic-aorta-diameter-thresholds", "mediastinal-node-short-axis",
                     "cardiothoracic-ratio", "pleural-effusion-ct-size", "pericardial-effusion-size",
                     "hiatal-hernia-types", "bronchiectasis-bronchoarterial-ratio", "consolidation-vs-ground-glass",
                     "atelectasis-types", "devices-lines-tubes"):
        assert required in keys, required
    for e in entries:
        assert e.source and e.title and len(e.body) > 150, e.key
        assert any(ch.isdigit() for ch in e.source), f"{e.key}: source must state a year"
    cac = next(e for e in entries if e.key == "cac-agatston-categories").body
    assert all(s in cac for s in ("1-99", "100-399", "400 or more"))


def test_parse_markdown_convention_and_errors():
    md = ("# File title\nignored\n\n## abc-1: Title one\n- source: Someone 2020, J 1:2\n- doi: 10.1/x\n\nBody one.\n"
          "- a list line in the body stays body\n\n## abc-2: Title two\n- source: Other 2021\n- url: http://u\n\nBody.\n")
    a, b = parse_markdown(md)
    assert (a.key, a.title, a.url) == ("abc-1", "Title one", "https://doi.org/10.1/x")
    assert "list line" in a.body and b.url == "http://u"
    with pytest.raises(StoreError, match="source"):
        parse_markdown("## k-1: T\n\nno source\n")
    with pytest.raises(StoreError, match="key-in-kebab-case"):
        parse_markdown("## Bad Heading\n- source: x 2020\n\nbody\n")
    with pytest.raises(StoreError, match="unknown field"):
        parse_markdown("## k-1: T\n- sauce: x\n\nbody\n")


def test_duplicate_keys_are_rejected(tmp_path):
    text = "## same-key: T\n- source: S 2020\n\nbody text\n"
    (tmp_path / "a.md").write_text(text)
    (tmp_path / "b.md").write_text(text)
    with pytest.raises(StoreError, match="unique"):
        load_entries(tmp_path)


# ---------------------------------------------------------------------------------------------- retrieval quality
def test_question_set_recall_at_5(kb_store):
    """>= 50 in-house questions, each with the entry that answers it: recall@5 >= 0.90 (MRR printed)."""
    qs = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    assert len(qs) >= 50
    known = {e.key for e in load_entries()}
    assert {q["key"] for q in qs} <= known
    hits5 = rr = 0.0
    misses = []
    for q, hits in zip(qs, kb_store.search_batch([q["q"] for q in qs], k=5)):
        keys = [h.key for h in hits]
        if q["key"] in keys:
            hits5 += 1
            rr += 1.0 / (keys.index(q["key"]) + 1)
        else:
            misses.append(q["q"])
    recall, mrr = hits5 / len(qs), rr / len(qs)
    print(f"\nKB question set: n={len(qs)} recall@5={recall:.3f} MRR={mrr:.3f} misses={misses}")
    assert recall >= 0.90, misses
    assert mrr >= 0.75


def test_report_engine_queries_cite_the_right_entries(kb_store):
    top = kb_store.search("follow-up of a 7 mm solid nodule low risk", k=3)
    assert top[0].key == "fleischner-2017-solid-single"
    assert kb_store.search("emphysema LAA-950 threshold", k=1)[0].key == "emphysema-laa950-threshold"
    scores = [h.score for h in top]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    c = top[0].to_citation(1)
    assert (c.n, c.key) == (1, "fleischner-2017-solid-single")
    assert "Radiology 2017" in c.source and c.url.startswith("https://doi.org/10.1148/")
    assert "6 mm" in c.text and "Keywords:" not in c.text
    assert len({h.key for h in kb_store.search("pleural effusion", k=5)}) == 5  # one hit per citation key


def test_where_filter_and_bad_queries(kb_store):
    hits = kb_store.search("effusion", k=5, where={"key": "finding-pericardial-effusion"})
    assert [h.key for h in hits] == ["finding-pericardial-effusion"]
    with pytest.raises(StoreError):
        kb_store.search("   ")
    with pytest.raises(StoreError):
        kb_store.search("nodule", k=0)


def test_ensure_builtin_is_idempotent_and_drops_stale_entries(tmp_path):
    from retrieval.embed import get_embedder
    from retrieval.store import KnowledgeStore

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("## alpha-1: Alpha\n- source: A 2020\n\nAlpha text about aortic size.\n\n"
                             "## beta-1: Beta\n- source: B 2021\n\nBeta text about pleural fluid.\n")
    store = KnowledgeStore(_client(), get_embedder(), collection=f"t-{uuid.uuid4().hex[:8]}")
    assert store.ensure_builtin(kb) == 2
    assert store.ensure_builtin(kb) == 0  # memoised
    fresh = KnowledgeStore(store.client, store.embedder, collection=store.collection_name)
    assert fresh.ensure_builtin(kb) == 0  # already stored: nothing re-embedded
    (kb / "a.md").write_text("## alpha-1: Alpha\n- source: A 2020\n\nAlpha text, edited.\n\n"
                             "## beta-1: Beta\n- source: B 2021\n\nBeta text about pleural fluid.\n")
    edited = KnowledgeStore(store.client, store.embedder, collection=store.collection_name)
    assert edited.ensure_builtin(kb) == 1
    assert edited.count() == 2
    assert "edited" in edited.search("alpha", k=1)[0].text
    assert edited.delete_source("builtin") == 2 and edited.count() == 0


def test_langchain_retriever_vectorstore_and_chroma_embedding_function(kb_store):
    docs = kb_store.as_retriever(k=2).invoke("ascending aorta 46 mm")
    assert len(docs) == 2 and docs[0].metadata["key"] == "thoracic-aorta-diameter-thresholds"
    assert 0 < docs[0].metadata["score"] <= 1 and docs[0].metadata["source"]
    vs = kb_store.as_vectorstore()
    assert vs.similarity_search("hiatal hernia types", k=1)[0].metadata["key"] == "hiatal-hernia-types"
    # a raw Chroma text query embeds with OUR function (never Chroma's downloading default)
    res = kb_store.collection.query(query_texts=["bronchoarterial ratio"], n_results=3)
    assert "bronchiectasis-bronchoarterial-ratio" in [m["key"] for m in res["metadatas"][0]]
    ef = kb_store.collection._embedding_function
    assert type(ef).name() == "ctscribe-sentence-transformer"


def test_embedder_shapes_and_unknown_model():
    import numpy as np

    from retrieval.embed import Embedder, get_embedder

    emb = get_embedder()
    assert emb is get_embedder("minilm") and emb.dim == 384
    v = np.array(emb.embed_documents(["a", "pleural effusion"]))
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert len(emb.langchain().embed_query("x")) == 384
    from vision.errors import ConfigError

    with pytest.raises(ConfigError, match="local sentence-transformers"):
        Embedder("/nonexistent/model/dir").embed_query("x")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kb-data")


def test_from_config_persists_under_data_dir(data_dir):
    from chatapp.config import load_config
    from retrieval.store import KnowledgeStore

    cfg = load_config(overrides=[f"data_dir={data_dir}"])
    store = KnowledgeStore.from_config(cfg)
    n = store.ensure_builtin()
    assert n > 40 and (data_dir / "chroma").is_dir()
    again = KnowledgeStore.from_config(cfg)
    assert again.ensure_builtin() == 0 and again.count() == store.count()
    stats = again.stats()
    assert stats["by_kind"] == {"builtin": n} and stats["collection"] == "ctscribe-kb"


def test_cli_kb_search_and_stats(data_dir, capsys):
    from chatapp.cli import main

    base = ["--set", f"data_dir={data_dir}"]
    assert main(base + ["kb", "search", "coronary calcium score 250", "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["key"] == "cac-agatston-categories"
    assert {"key", "title", "source", "score", "text", "url", "section"} <= set(hits[0])
    assert main(base + ["kb", "search", "pleural effusion size"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1] ") and "score" in out
    assert main(base + ["kb", "stats"]) == 0
    assert "builtin" in capsys.readouterr().out
    assert main(base + ["kb", "search", "x", "--k", "0"]) == 2
    assert "--k must be >= 1" in capsys.readouterr().err


def test_cli_ingest_user_errors(tmp_path, capsys):
    from chatapp.cli import main

    base = ["--set", f"data_dir={tmp_path}"]
    assert main(base + ["ingest", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "x.docx"
    bad.write_text("x")
    assert main(base + ["ingest", str(bad)]) == 2
    assert "supported" in capsys.readouterr().err
    assert main(base + ["ingest"]) == 2
    assert KNOWLEDGE_DIR.is_dir()


def test_cli_ingest_then_delete(data_dir, tmp_path, capsys):
    from chatapp.cli import main

    base = ["--set", f"data_dir={data_dir}"]
    doc = tmp_path / "local-note.md"
    doc.write_text("# Local note\n\nOur department reports the azygos vein diameter on every chest CT.\n")
    assert main(base + ["ingest", str(doc), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == 1 and out["files"] == 1
    assert main(base + ["ingest", str(doc), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 0
    assert main(base + ["kb", "search", "azygos vein diameter", "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["title"] == "Local note"
    assert main(base + ["ingest", "--delete", str(doc), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deleted"] == {str(doc): 1}
