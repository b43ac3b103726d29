"""Setwise (Zhuang et al., SIGIR 2024): the model picks the best of a small set.

A heap sort for the top-k in which each sift step shows a node and its children together
(``set_size`` passages, labels A, B, C, …) and asks for the most relevant one: far fewer
calls than pairwise comparisons for a similar ordering.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

from ..errors import UserError
from ..outputs import BestChoice
from ._heap import heap_top_k
from .base import PlanContext, Strategy, label_passages
from .plan import LLMRequest, Outcome, Plan

__all__ = ["Setwise"]

_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Setwise(Strategy):
    name = "setwise"
    default_prompt = "setwise/best@latest"

    def __init__(self, *, set_size: int = 4, top_k: int = 10) -> None:
        if not 2 <= set_size <= len(_LABELS):
            raise UserError(f"set_size must be between 2 and {len(_LABELS)}, got {set_size}")
        self.set_size = set_size
        self.top_k = top_k

    def estimate_calls(self, n_candidates: int, top_k: int | None = None) -> int:
        n = n_candidates
        if n < 2:
            return 0
        arity = self.set_size - 1
        depth = math.ceil(math.log(n, arity)) if arity > 1 else n
        k = min(n, top_k or self.top_k)
        internal = (n - 2) // arity + 1
        return internal + k * depth  # Floyd's build is linear; each pop sifts one path

    def passages_per_request(self, n_candidates: int) -> int:
        return min(n_candidates, self.set_size)

    def _request(self, context: PlanContext, texts: Sequence[str], group: Sequence[int]) -> LLMRequest:
        labels = list(_LABELS[: len(group)])
        output = BestChoice(labels)
        rendered = context.prompt.render(
            **context.render_variables(
                passages=label_passages(labels, [texts[i] for i in group]),
                output_instruction=output.instruction,
            )
        )
        return LLMRequest(context.prompt, rendered, output, max_tokens=16)

    def plan(self, context: PlanContext) -> Plan:
        texts, truncated = context.passages()
        n = len(texts)
        if n < 2:
            return Outcome(order=list(range(n)), truncated=truncated)

        def pick(group: Sequence[int]) -> Generator[Any, Any, int]:
            (answer,) = yield [self._request(context, texts, group)]
            return int(answer.value)

        k = min(n, context.top_k or self.top_k)
        order = yield from heap_top_k(n, k, self.set_size - 1, pick)
        return Outcome(order=order, truncated=truncated)
