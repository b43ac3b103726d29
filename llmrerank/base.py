"""The one verb every stage shares: ``rerank(query, candidates) -> Ranking``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .types import CandidateLike, Ranking

__all__ = ["Reranker"]


@runtime_checkable
class Reranker(Protocol):
    """Anything that reorders candidates: LLM, cross-encoder, bi-encoder, a whole cascade.

    ``rerank`` returns every candidate (a full ranking); ``top_k`` only trims the result.
    ``name`` labels the stage in ``RankedCandidate.stage`` and in traces.
    """

    name: str

    def rerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking: ...

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking: ...
