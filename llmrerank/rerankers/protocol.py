"""The one verb every stage shares, ``rerank(query, candidates) -> Ranking``, and the
helpers a stage uses to build its ranking from scores or an order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..types import CallRecord, Candidate, CandidateLike, RankedCandidate, Ranking, as_request

__all__ = ["FirstStage", "Reranker", "ranking_from_order", "ranking_from_scores"]


@runtime_checkable
class Reranker(Protocol):
    """Anything that reorders candidates: an LLM, a cross-encoder, a dense model, a cascade.

    ``rerank`` returns every candidate (a full ranking); ``top_k`` only trims the result.
    ``name`` labels the stage in ``RankedCandidate.stage`` and in traces. ``uses_llm`` says
    whether the stage asks an LLM: a cascade may bypass or skip such a stage, and budgets
    and fallbacks are about them.
    """

    name: str

    @property
    def uses_llm(self) -> bool: ...

    def rerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking: ...

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking: ...


def ranking_from_scores(
    query: str,
    candidates: Sequence[Candidate],
    scores: Sequence[float],
    *,
    stage: str,
    calls: Sequence[CallRecord] = (),
    repairs: Mapping[str, int] | None = None,
    truncated: int = 0,
) -> Ranking:
    """Order by score (ties keep input order) and make final scores strictly decreasing."""
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
    return ranking_from_order(
        query,
        [candidates[i] for i in order],
        stage=stage,
        stage_scores=[scores[i] for i in order],
        calls=calls,
        repairs=repairs,
        truncated=truncated,
    )


def ranking_from_order(
    query: str,
    ordered: Sequence[Candidate],
    *,
    stage: str,
    stage_scores: Sequence[float | None] | None = None,
    calls: Sequence[CallRecord] = (),
    repairs: Mapping[str, int] | None = None,
    truncated: int = 0,
) -> Ranking:
    """Build a ranking from an order; final score is ``n - index`` so it strictly decreases."""
    n = len(ordered)
    items = []
    for index, candidate in enumerate(ordered):
        raw = None if stage_scores is None else stage_scores[index]
        items.append(
            RankedCandidate(
                candidate=candidate,
                rank=index + 1,
                score=float(n - index),
                stage=stage,
                stage_scores={} if raw is None else {stage: float(raw)},
            )
        )
    return Ranking(
        query=query,
        items=tuple(items),
        calls=tuple(calls),
        repairs=dict(repairs or {}),
        truncated=truncated,
    )


class FirstStage:
    """Keeps the first-stage order: the pipeline with no stages, and every eval's baseline."""

    uses_llm = False
    name = "first-stage"

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        query, items, top_k = as_request(query, candidates, top_k)
        return ranking_from_order(query, items, stage=self.name).trimmed(top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        return self.rerank(query, candidates, top_k=top_k)
