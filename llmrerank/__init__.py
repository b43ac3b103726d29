"""llmrerank: an LLM precision pass between retrieval and generation.

from llmrerank import LLMReranker
from llmrerank.backends import OpenAIBackend

ranking = LLMReranker(OpenAIBackend("gpt-4o-mini"), strategy="listwise").rerank(query, passages)
"""

from __future__ import annotations

from .base import Reranker
from .cache import CacheMode, DiskCache
from .cascade import Cascade, Stage, hybrid
from .crossencoder import CrossEncoderReranker
from .dense import BiEncoderReranker
from .errors import (
    BackendError,
    BackendTimeoutError,
    BudgetError,
    CacheError,
    CandidateError,
    LLMRerankError,
    LocalServerError,
    ParseError,
    PromptError,
    RateLimitError,
    RubricError,
    StageTimeoutError,
    TerminalBackendError,
    TransientBackendError,
    UserError,
)
from .prompts import Prompt, PromptLibrary, list_prompts, load_prompt
from .reranker import LLMReranker
from .rubrics import DEFAULT_RUBRIC, Grade, Rubric
from .types import CallRecord, Candidate, RankedCandidate, Ranking, StageReport, Usage

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RUBRIC",
    "BackendError",
    "BackendTimeoutError",
    "BiEncoderReranker",
    "BudgetError",
    "CacheError",
    "CacheMode",
    "CallRecord",
    "Candidate",
    "CandidateError",
    "Cascade",
    "CrossEncoderReranker",
    "DiskCache",
    "Grade",
    "LLMRerankError",
    "LLMReranker",
    "LocalServerError",
    "ParseError",
    "Prompt",
    "PromptError",
    "PromptLibrary",
    "RankedCandidate",
    "Ranking",
    "RateLimitError",
    "Reranker",
    "Rubric",
    "RubricError",
    "Stage",
    "StageReport",
    "StageTimeoutError",
    "TerminalBackendError",
    "TransientBackendError",
    "Usage",
    "UserError",
    "hybrid",
    "list_prompts",
    "load_prompt",
]
