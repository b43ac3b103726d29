"""Cohere's rerank request and response (v1 and v2 share them), plus llmrerank's optional
extensions: request fields ``prompt``, ``rubric``, ``trace``; ``meta`` keys for stages,
LLM calls, tokens, cost, cache hits, degradation and the prompt used.

``relevance_score`` is rank-derived: ``1 - (rank - 1) / n`` for ``n`` documents, so it is
in ``(0, 1]``, strictly decreasing, and 1.0 for the top document. It orders documents
within one response and is **not** comparable across queries or pipelines: the cascade's
stages score on different scales (cosine, cross-encoder logit, LLM grade, or only an
order for listwise), and a degraded response is ordered by an earlier stage. Each stage's
own score is returned under ``stage_scores`` when the request sets ``trace: true``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["RerankRequest", "RerankResponse", "RerankResult"]


class _Document(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(BaseModel):
    # unknown Cohere fields (rank_fields, priority, ...) are accepted and ignored
    model_config = ConfigDict(extra="ignore")

    model: str = "default"
    query: str
    documents: list[str | _Document]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool | None = None
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    max_chunks_per_doc: int | None = None
    # llmrerank extensions
    prompt: str | None = None
    rubric: str | None = None
    trace: bool = False

    @field_validator("model", mode="before")
    @classmethod
    def _default_model(cls, value: Any) -> Any:
        return "default" if value is None else value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None
    stage_scores: dict[str, float] | None = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: dict[str, Any]
