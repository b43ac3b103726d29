"""llmrerank: an LLM precision pass between retrieval and generation.

from llmrerank import LLMReranker, make_backend

ranking = LLMReranker(make_backend("openai:gpt-4o-mini"), strategy="listwise").rerank(query, passages)
"""

from __future__ import annotations

from .backends import Backend, Endpoint, make_backend, register_backend
from .cache import CacheMode, DiskCache
from .driver import RetryPolicy
from .errors import (
    BackendError,
    BackendTimeoutError,
    BudgetError,
    CacheError,
    CallCancelledError,
    CandidateError,
    LLMRerankError,
    LocalServerError,
    MalformedReplyError,
    ParseError,
    PromptError,
    RateLimitError,
    RubricError,
    StageTimeoutError,
    TerminalBackendError,
    TransientBackendError,
    UserError,
)
from .pipeline import PipelineSpec, hybrid
from .prompts import Prompt, PromptLibrary, list_prompts, load_prompt
from .rerankers import Cascade, CrossEncoderReranker, DenseReranker, LLMReranker, Reranker, Stage
from .rerankers.protocol import ranking_from_order, ranking_from_scores
from .rubrics import DEFAULT_RUBRIC, Grade, Rubric
from .strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy, make_strategy
from .types import (
    CallRecord,
    Candidate,
    RankedCandidate,
    Ranking,
    StageReport,
    Usage,
    as_candidates,
    as_request,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RUBRIC",
    "Backend",
    "BackendError",
    "BackendTimeoutError",
    "BudgetError",
    "CacheError",
    "CacheMode",
    "CallCancelledError",
    "CallRecord",
    "Candidate",
    "CandidateError",
    "Cascade",
    "CrossEncoderReranker",
    "DenseReranker",
    "DiskCache",
    "Endpoint",
    "Grade",
    "LLMRerankError",
    "LLMReranker",
    "Listwise",
    "LocalServerError",
    "MalformedReplyError",
    "Pairwise",
    "ParseError",
    "PipelineSpec",
    "Pointwise",
    "Prompt",
    "PromptError",
    "PromptLibrary",
    "RankedCandidate",
    "Ranking",
    "RateLimitError",
    "Reranker",
    "RetryPolicy",
    "Rubric",
    "RubricError",
    "Setwise",
    "Stage",
    "StageReport",
    "StageTimeoutError",
    "Strategy",
    "TerminalBackendError",
    "TransientBackendError",
    "Usage",
    "UserError",
    "as_candidates",
    "as_request",
    "hybrid",
    "list_prompts",
    "load_prompt",
    "make_backend",
    "make_strategy",
    "ranking_from_order",
    "ranking_from_scores",
    "register_backend",
]
