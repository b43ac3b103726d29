"""When a cascade skips its LLM stage: an operator's bypass switch, or a confident earlier stage."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..types import RankedCandidate

__all__ = ["BYPASS_ENV", "Router", "top_margin"]

BYPASS_ENV = "LLMRERANK_BYPASS_LLM"


def top_margin(items: Sequence[RankedCandidate], stage: str) -> float | None:
    """Top-1 minus top-2 of ``stage``'s normalised score (its probability, else its raw score)."""
    if len(items) < 2:
        return None
    first, second = items[0].stage_scores, items[1].stage_scores
    key = f"{stage}:prob" if f"{stage}:prob" in first else stage
    if key not in first or key not in second:
        return None
    return first[key] - second[key]


class Router:
    """``bypass_llm`` (None: read ``LLMRERANK_BYPASS_LLM`` at each request) skips every LLM
    stage; ``skip_margin`` skips one when the previous stage's top-1 leads its top-2 by at
    least that much. ``skip_reason`` says why a stage is skipped, or None to run it."""

    def __init__(self, *, bypass_llm: bool | None = None, skip_margin: float | None = None) -> None:
        self._bypass = bypass_llm
        self.skip_margin = skip_margin

    @property
    def bypass_llm(self) -> bool:
        if self._bypass is not None:
            return self._bypass
        return os.environ.get(BYPASS_ENV, "").lower() in ("1", "true", "yes")

    def skip_reason(
        self, uses_llm: bool, current: Sequence[RankedCandidate], previous_stage: str | None
    ) -> str | None:
        if not uses_llm:
            return None
        if self.bypass_llm:
            return "bypassed"
        if self.skip_margin is not None and previous_stage is not None:
            margin = top_margin(current, previous_stage)
            if margin is not None and margin >= self.skip_margin:
                return f"margin {margin:.3f} >= {self.skip_margin}"
        return None
