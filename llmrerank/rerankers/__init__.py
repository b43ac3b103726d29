"""Rerankers: the ``Reranker`` protocol and every stage that implements it.

* ``LLMReranker``: a strategy, a versioned prompt, a rubric and a backend.
* ``CrossEncoderReranker`` and ``DenseReranker``: local encoder stages (sentence-transformers).
* ``Cascade``: stages in sequence, with routing (bypass, confidence skip), fallbacks and a trace.

Pipelines of these are assembled in one place, ``llmrerank.pipeline``. Each is imported
when first read: a local stage does not load the LLM stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .cascade import Cascade, Stage
    from .cross_encoder import CrossEncoderReranker
    from .dense import DenseReranker
    from .llm import LLMReranker
    from .protocol import Reranker

__all__ = ["Cascade", "CrossEncoderReranker", "DenseReranker", "LLMReranker", "Reranker", "Stage"]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "Cascade": ".cascade",
        "Stage": ".cascade",
        "CrossEncoderReranker": ".cross_encoder",
        "DenseReranker": ".dense",
        "LLMReranker": ".llm",
        "Reranker": ".protocol",
    },
)
