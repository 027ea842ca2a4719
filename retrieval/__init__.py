"""ctscribe retrieval: a Chroma knowledge store with offline embeddings, ingestion and the in-house guideline base.

Public API (import the submodules; this package imports nothing heavy itself):

- ``retrieval.store.KnowledgeStore.from_config(config)`` → ``search(query, k, where) -> list[Hit]``,
  ``search_batch(queries, k)``, ``ensure_builtin()``, ``as_retriever(k)``, ``as_vectorstore()``, ``stats()``,
  ``delete_source(source)``; ``Hit.to_citation(n) -> chatapp.schema.Citation``.
- ``retrieval.embed.get_embedder("minilm")``: the offline all-MiniLM-L6-v2 (``.langchain()``, ``.chroma()`` adapters).
- ``retrieval.ingest.ingest_paths(store, paths, progress=True) -> IngestStats``.
- ``retrieval.kb.load_entries()``: the entries of ``retrieval/knowledge/*.md`` (stable citation keys).
"""
