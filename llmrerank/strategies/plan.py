"""The questions a strategy asks and the answers it gets back.

A strategy's ``plan`` is a generator: it yields a batch of ``LLMRequest`` that may run
concurrently, receives the matching ``Answer`` list, and finally returns an ``Outcome``.
It does no I/O, so the same plan runs under the sync and the async driver.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..outputs import OutputSpec
from ..prompts import Prompt, RenderedPrompt
from ..types import CallRecord, TokenLogprob

__all__ = ["Answer", "LLMRequest", "Outcome", "Plan"]


@dataclass(frozen=True, slots=True)
class LLMRequest:
    prompt: Prompt
    rendered: RenderedPrompt
    output: OutputSpec[Any]
    logprobs: bool = False
    max_tokens: int = 64


@dataclass(frozen=True, slots=True)
class Answer:
    value: Any
    record: CallRecord
    repairs: Mapping[str, int] = field(default_factory=dict)
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """``order``: a full permutation of candidate indices, best first.
    ``scores``: the strategy's own score per candidate index (grades, win counts), if any.
    ``repairs``: what the strategy itself counted (e.g. inconsistent pairs); per-call output
    repairs live on the call records and are added up by the reranker.
    ``details``: further per-candidate values beside the score, by name (pointwise with
    logprobs: the ``grade`` answered and its ``confidence``, the probability of that grade)."""

    order: Sequence[int]
    scores: Mapping[int, float] = field(default_factory=dict)
    repairs: Mapping[str, int] = field(default_factory=dict)
    truncated: int = 0
    details: Mapping[str, Mapping[int, float]] = field(default_factory=dict)


Plan = Generator[Sequence[LLMRequest], Sequence[Answer], Outcome]
