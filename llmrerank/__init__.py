"""llmrerank: an LLM precision pass between retrieval and generation.

from llmrerank import LLMReranker, make_backend

ranking = LLMReranker(make_backend("openai:gpt-4o-mini"), strategy="listwise").rerank(query, passages)

The names here are the ones an application imports: the rerankers and the cascade, the
pipeline spec, results, rubrics and prompts, and the errors most callers catch. Everything
else lives in its own module (every error in ``llmrerank.errors``, strategies in
``llmrerank.strategies``, backends and the registry in ``llmrerank.backends``,
``RetryPolicy`` in ``llmrerank.retry``). Each is imported when first read, so a program
that only runs a local stage never loads the LLM stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

if TYPE_CHECKING:
    from .backends import make_backend
    from .cache import DiskCache
    from .errors import BackendError, LLMRerankError, ParseError, UserError
    from .pipeline import PipelineSpec, hybrid
    from .prompts import list_prompts, load_prompt
    from .rerankers import Cascade, CrossEncoderReranker, DenseReranker, LLMReranker, Stage
    from .rubrics import DEFAULT_RUBRIC, Grade, Rubric
    from .types import CallRecord, Candidate, RankedCandidate, Ranking, StageReport, Usage

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RUBRIC",
    "BackendError",
    "CallRecord",
    "Candidate",
    "Cascade",
    "CrossEncoderReranker",
    "DenseReranker",
    "DiskCache",
    "Grade",
    "LLMRerankError",
    "LLMReranker",
    "ParseError",
    "PipelineSpec",
    "RankedCandidate",
    "Ranking",
    "Rubric",
    "Stage",
    "StageReport",
    "Usage",
    "UserError",
    "hybrid",
    "list_prompts",
    "load_prompt",
    "make_backend",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "make_backend": ".backends",
        "DiskCache": ".cache",
        "BackendError": ".errors",
        "LLMRerankError": ".errors",
        "ParseError": ".errors",
        "UserError": ".errors",
        "PipelineSpec": ".pipeline",
        "hybrid": ".pipeline",
        "list_prompts": ".prompts",
        "load_prompt": ".prompts",
        "Cascade": ".rerankers",
        "CrossEncoderReranker": ".rerankers",
        "DenseReranker": ".rerankers",
        "LLMReranker": ".rerankers",
        "Stage": ".rerankers",
        "DEFAULT_RUBRIC": ".rubrics",
        "Grade": ".rubrics",
        "Rubric": ".rubrics",
        "CallRecord": ".types",
        "Candidate": ".types",
        "RankedCandidate": ".types",
        "Ranking": ".types",
        "StageReport": ".types",
        "Usage": ".types",
    },
)
