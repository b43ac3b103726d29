"""A LangChain document compressor that reranks with a llmrerank pipeline.

::

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from llmrerank.integrations.langchain import LLMRerankCompressor

    compressor = LLMRerankCompressor("kb.yaml", top_n=5)  # a PipelineSpec, a dict, a path or a Reranker
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)

``compress_documents`` and ``acompress_documents`` (through the reranker's ``arerank``)
return copies of the given ``Document`` objects, best first: same ``page_content`` and
``id``, the metadata every key it had plus ``metadata["llmrerank"]`` (see
``llmrerank.integrations``). Needs ``pip install "llmrerank[langchain]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict

from ..rerankers.protocol import Reranker
from ..types import as_top_k
from ._documents import Passage, PipelineLike, Placement, arank_passages, build_reranker, rank_passages

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as exc:
    raise ImportError(
        'llmrerank.integrations.langchain needs langchain-core: pip install "llmrerank[langchain]"',
        name=exc.name,
    ) from exc

__all__ = ["LLMRerankCompressor"]


def _passages(documents: Sequence[Document]) -> list[Passage]:
    return [Passage(text=d.page_content, id=d.id) for d in documents]


def _placed(documents: Sequence[Document], placements: list[Placement]) -> list[Document]:
    return [
        documents[p.index].model_copy(update={"metadata": p.metadata(documents[p.index].metadata)})
        for p in placements
    ]


class LLMRerankCompressor(BaseDocumentCompressor):
    """Reranks a retriever's documents with a llmrerank pipeline and keeps the ``top_n``
    best (None: the pipeline's own ``top_k``, or all). ``pipeline``: a ``PipelineSpec``, a
    mapping of its fields, the path of a YAML file or a built ``Reranker``; the reranker is
    built once, here."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Reranker
    top_n: int | None = None

    def __init__(self, pipeline: PipelineLike, *, top_n: int | None = None, **kwargs: Any) -> None:
        # keywords by mapping: a type checker knows only the base model's fields
        fields: dict[str, Any] = {"reranker": build_reranker(pipeline), "top_n": as_top_k(top_n)}
        super().__init__(**fields, **kwargs)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` best of ``documents`` for ``query``, best first."""
        return _placed(documents, rank_passages(self.reranker, query, _passages(documents), top_n=self.top_n))

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """``compress_documents`` through the reranker's ``arerank``."""
        placements = await arank_passages(self.reranker, query, _passages(documents), top_n=self.top_n)
        return _placed(documents, placements)
