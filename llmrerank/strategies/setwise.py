"""Setwise (Zhuang et al., SIGIR 2024): the model picks the best of a small set.

A heap sort for the top-k in which each sift step shows a node and its children together
(``set_size`` passages, labels A, B, C, …) and asks for the most relevant one: far fewer
calls than pairwise comparisons for a similar ordering.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from ..errors import UserError
from ..outputs import BestChoice
from ._heap import heap_top_k, heap_top_k_bound
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
        """A proven upper bound on the questions ``plan`` asks (one per pick, whatever the set).

        The plan is a ``set_size - 1``-ary heap sort stopped after ``k`` pops; every sift
        step is one question. ``heap_top_k_bound`` sums, over Floyd's build and the ``k - 1``
        sifts after pops, the longest path each sift can take (see its proof sketch). A
        re-ask after an unparseable answer is part of the same call, not a new one.
        """
        k = min(n_candidates, top_k or self.top_k)
        return heap_top_k_bound(n_candidates, k, self.set_size - 1, lambda children: 1)

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
