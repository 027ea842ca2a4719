"""LangChain face of the knowledge store: a ``BaseRetriever`` whose documents carry citation metadata."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


class KnowledgeRetriever(BaseRetriever):
    """Retrieves the ``k`` best passages from a ``KnowledgeStore``.

    Each ``Document.metadata`` holds the stored metadata plus ``key``, ``title``, ``source``, ``section``, ``url``
    and ``score`` (cosine similarity in [0, 1]), so a chain can cite it.
    """

    store: Any
    k: int = 5
    where: dict | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun
                                ) -> list[Document]:
        docs = []
        for h in self.store.search(query, k=self.k, where=self.where):
            meta = {**h.metadata, "key": h.key, "title": h.title, "source": h.source, "section": h.section,
                    "url": h.url, "score": h.score, "id": h.id}
            docs.append(Document(page_content=h.text, metadata=meta, id=h.id))
        return docs
