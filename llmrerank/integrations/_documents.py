"""What the framework adapters share: building the reranker from a pipeline, turning a
framework's documents into candidates, and the annotation each ranked document gets.

An adapter reads each of its documents as a ``Passage`` (text, id, first-stage score), asks
``rank_passages`` (or ``arank_passages``) for the ``Placement`` of each kept document, best
first, and rebuilds its own document objects from them: ``Placement.index`` is the
document's position in the input and ``Placement.metadata`` the copy of its metadata with
the ``RESULT_KEY`` entry added.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..errors import UserError
from ..pipeline import PipelineSpec
from ..rerankers.protocol import Reranker
from ..types import Candidate, Ranking, as_top_k

__all__ = [
    "RESULT_KEY",
    "Passage",
    "PipelineLike",
    "Placement",
    "arank_passages",
    "build_reranker",
    "rank_passages",
]

# the one metadata key every adapter adds to a ranked document
RESULT_KEY = "llmrerank"

PipelineLike: TypeAlias = PipelineSpec | Mapping[str, Any] | str | os.PathLike[str] | Reranker


def build_reranker(pipeline: PipelineLike) -> Reranker:
    """The reranker of ``pipeline``: a ``PipelineSpec`` (built), a mapping of its fields
    (``PipelineSpec.from_dict``), the path of a YAML file holding one
    (``PipelineSpec.from_yaml``) or a built ``Reranker`` (used as it is)."""
    if isinstance(pipeline, PipelineSpec):
        return pipeline.build()
    if isinstance(pipeline, Mapping):
        return PipelineSpec.from_dict(pipeline).build()
    if isinstance(pipeline, (str, os.PathLike)):
        return PipelineSpec.from_yaml(pipeline).build()
    if isinstance(pipeline, Reranker):
        return pipeline
    raise UserError(
        "a framework component needs a pipeline: a PipelineSpec, a mapping of its fields, "
        f"the path of a YAML file or a built Reranker, not a {type(pipeline).__name__}"
    )


@dataclass(frozen=True)
class Passage:
    """One framework document as the reranker reads it: its text, its id in the framework
    (None when it has none) and its first-stage score (None when it has none)."""

    text: str
    id: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class Placement:
    """Where one input document ended up. ``index``: its position in the input; ``score``:
    its final score (strictly decreasing down the ranking); ``annotation``: what goes under
    ``RESULT_KEY`` in its metadata::

        {"rank": 1, "score": 20.0, "stage": "llm",
         "stage_scores": {"dense": 0.83, "llm": 3.0},
         "degraded": False, "degraded_reason": None, "pipeline": "hybrid"}

    ``stage`` is the stage that placed the document, ``stage_scores`` each stage's own score
    of it (a stage that cut it gave none after it), ``degraded`` and ``degraded_reason`` the
    ranking's (a stage failed and the earlier order was kept), ``pipeline`` the reranker's
    name."""

    index: int
    score: float
    annotation: Mapping[str, Any]

    def metadata(self, original: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``original`` with this annotation added under ``RESULT_KEY`` (every
        other key as it was; an earlier ``RESULT_KEY`` entry, from a rerank before, replaced)."""
        return {**original, RESULT_KEY: dict(self.annotation)}


def _candidates(passages: Sequence[Passage]) -> list[Candidate]:
    """The framework's ids when every document has one and they differ (so traces name
    them), else positions; the reranker needs unique ids, frameworks do not promise them."""
    own = [p.id for p in passages if p.id]
    unique = len(own) == len(passages) and len(set(own)) == len(own)
    ids = own if unique else [str(index) for index in range(len(passages))]
    return [Candidate(id=i, text=p.text, score=p.score) for i, p in zip(ids, passages, strict=True)]


def _placements(ranking: Ranking, candidates: Sequence[Candidate], pipeline: str) -> list[Placement]:
    position = {c.id: index for index, c in enumerate(candidates)}
    return [
        Placement(
            index=position[item.id],
            score=item.score,
            annotation={
                "rank": item.rank,
                "score": item.score,
                "stage": item.stage,
                "stage_scores": dict(item.stage_scores),
                "degraded": ranking.degraded,
                "degraded_reason": ranking.degraded_reason,
                "pipeline": pipeline,
            },
        )
        for item in ranking
    ]


def rank_passages(
    reranker: Reranker, query: str, passages: Sequence[Passage], *, top_n: int | None
) -> list[Placement]:
    """Rank ``passages`` for ``query``: the ``top_n`` best placements, best first (None: the
    reranker's own ``top_k``, or all)."""
    candidates = _candidates(passages)
    ranking = reranker.rerank(query, candidates, top_k=as_top_k(top_n))
    return _placements(ranking, candidates, reranker.name)


async def arank_passages(
    reranker: Reranker, query: str, passages: Sequence[Passage], *, top_n: int | None
) -> list[Placement]:
    """``rank_passages`` through the reranker's ``arerank``."""
    candidates = _candidates(passages)
    ranking = await reranker.arerank(query, candidates, top_k=as_top_k(top_n))
    return _placements(ranking, candidates, reranker.name)
