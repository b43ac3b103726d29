"""A Haystack ranker component that reranks with a llmrerank pipeline.

::

    from llmrerank.integrations.haystack import LLMRerankRanker

    pipe.add_component("ranker", LLMRerankRanker("kb.yaml", top_k=5))  # a spec, a dict, a path or a Reranker
    pipe.connect("retriever.documents", "ranker.documents")

``run`` and ``run_async`` (through the reranker's ``arerank``; ``Pipeline.run_async`` uses
it) return ``{"documents": [...]}``: copies of the given ``Document`` objects, best first,
whose ``score`` is the final score: same id and content, the ``meta`` every key it had plus
``meta["llmrerank"]`` (see ``llmrerank.integrations``). ``top_k`` is Haystack's name for how
many to keep. Needs ``pip install "llmrerank[haystack]"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..types import as_top_k
from ._documents import Passage, PipelineLike, Placement, arank_passages, build_reranker, rank_passages

try:
    from haystack import Document, component
except ImportError as exc:
    raise ImportError(
        'llmrerank.integrations.haystack needs haystack-ai: pip install "llmrerank[haystack]"',
        name=exc.name,
    ) from exc

__all__ = ["LLMRerankRanker"]


def _passages(documents: Sequence[Document]) -> list[Passage]:
    return [Passage(text=d.content or "", id=d.id, score=d.score) for d in documents]


def _placed(documents: Sequence[Document], placements: list[Placement]) -> dict[str, list[Document]]:
    return {
        "documents": [
            dataclasses.replace(documents[p.index], meta=p.metadata(documents[p.index].meta), score=p.score)
            for p in placements
        ]
    }


@component
class LLMRerankRanker:
    """Reranks documents with a llmrerank pipeline and keeps the ``top_k`` best (None: the
    pipeline's own ``top_k``, or all; a call's ``top_k`` overrides it). ``pipeline``: a
    ``PipelineSpec``, a mapping of its fields, the path of a YAML file or a built
    ``Reranker``; the reranker is built once, here."""

    def __init__(self, pipeline: PipelineLike, top_k: int | None = None) -> None:
        self.reranker = build_reranker(pipeline)
        self.top_k = as_top_k(top_k)

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, documents: list[Document], top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """The ``top_k`` best of ``documents`` for ``query``, best first."""
        keep = self.top_k if top_k is None else top_k
        return _placed(documents, rank_passages(self.reranker, query, _passages(documents), top_n=keep))

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """``run`` through the reranker's ``arerank``."""
        keep = self.top_k if top_k is None else top_k
        placements = await arank_passages(self.reranker, query, _passages(documents), top_n=keep)
        return _placed(documents, placements)
