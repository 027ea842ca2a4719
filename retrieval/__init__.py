"""ctscribe retrieval: a Chroma knowledge store with offline embeddings, ingestion and the in-house guideline base."""
