"""A LlamaIndex node postprocessor that reranks with a llmrerank pipeline.

::

    from llmrerank.integrations.llamaindex import LLMRerankPostprocessor

    rerank = LLMRerankPostprocessor("kb.yaml", top_n=5)  # a PipelineSpec, a dict, a path or a Reranker
    engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[rerank])

``postprocess_nodes`` and ``apostprocess_nodes`` (through the reranker's ``arerank``)
return new ``NodeWithScore`` objects, best first, whose ``score`` is the final score and
whose node is a copy of the given one: same id and text, the metadata every key it had plus
``metadata["llmrerank"]`` (see ``llmrerank.integrations``). That key is added to the node's
``excluded_llm_metadata_keys`` and ``excluded_embed_metadata_keys``, so the annotation never
reaches the prompt that answers or an embedding. The text ranked is the node's content with
``metadata_mode`` (default ``MetadataMode.NONE``: the text alone). Needs
``pip install "llmrerank[llamaindex]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from ..rerankers.protocol import Reranker
from ..types import as_top_k
from ._documents import (
    RESULT_KEY,
    Passage,
    PipelineLike,
    Placement,
    arank_passages,
    build_reranker,
    rank_passages,
)

try:
    from llama_index.core.bridge.pydantic import Field
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:
    raise ImportError(
        'llmrerank.integrations.llamaindex needs llama-index-core: pip install "llmrerank[llamaindex]"',
        name=exc.name,
    ) from exc

__all__ = ["LLMRerankPostprocessor"]


def _excluding(keys: list[str]) -> list[str]:
    return keys if RESULT_KEY in keys else [*keys, RESULT_KEY]


def _placed(nodes: Sequence[NodeWithScore], placements: list[Placement]) -> list[NodeWithScore]:
    placed = []
    for p in placements:
        node = nodes[p.index].node
        copy = node.model_copy(
            update={
                "metadata": p.metadata(node.metadata),
                "excluded_llm_metadata_keys": _excluding(node.excluded_llm_metadata_keys),
                "excluded_embed_metadata_keys": _excluding(node.excluded_embed_metadata_keys),
            }
        )
        placed.append(NodeWithScore(node=copy, score=p.score))
    return placed


def _query(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None:
        raise UserError("LLMRerankPostprocessor needs the query: pass query_str or query_bundle")
    return query_bundle.query_str


class LLMRerankPostprocessor(BaseNodePostprocessor):
    """Reranks a retriever's nodes with a llmrerank pipeline and keeps the ``top_n`` best
    (None: the pipeline's own ``top_k``, or all). ``pipeline``: a ``PipelineSpec``, a
    mapping of its fields, the path of a YAML file or a built ``Reranker``; the reranker is
    built once, here."""

    reranker: Reranker = Field(exclude=True, description="The llmrerank pipeline, built.")
    top_n: int | None = Field(default=None, description="How many nodes to keep (None: the pipeline's).")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="Which metadata the ranked text includes."
    )

    def __init__(
        self,
        pipeline: PipelineLike,
        *,
        top_n: int | None = None,
        metadata_mode: MetadataMode = MetadataMode.NONE,
        **kwargs: Any,
    ) -> None:
        # keywords by mapping: a type checker knows only the base model's fields
        fields: dict[str, Any] = {
            "reranker": build_reranker(pipeline),
            "top_n": as_top_k(top_n),
            "metadata_mode": metadata_mode,
        }
        super().__init__(**fields, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "LLMRerankPostprocessor"

    def _passages(self, nodes: Sequence[NodeWithScore]) -> list[Passage]:
        return [
            Passage(
                text=n.node.get_content(metadata_mode=self.metadata_mode), id=n.node.node_id, score=n.score
            )
            for n in nodes
        ]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        placements = rank_passages(
            self.reranker, _query(query_bundle), self._passages(nodes), top_n=self.top_n
        )
        return _placed(nodes, placements)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        placements = await arank_passages(
            self.reranker, _query(query_bundle), self._passages(nodes), top_n=self.top_n
        )
        return _placed(nodes, placements)
