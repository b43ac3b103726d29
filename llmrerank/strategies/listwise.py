"""Listwise (RankGPT-style): the model orders a window of passages at once.

A window of ``window`` passages slides from the back of the list to the front by ``step``,
so strong passages bubble up from deep positions; a list that fits one window is one call.
Labels are ``1..n`` within each call. With ``shuffles=r`` the list is also ranked from r
seeded random starting orders and the r+1 results are fused (reciprocal rank or Borda), which
cancels the model's bias for whatever it saw first; the passes run side by side.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..errors import UserError
from ..outputs import PermutationOutput
from .base import PlanContext, Strategy, label_passages
from .plan import Answer, LLMRequest, Outcome, Plan

__all__ = ["Listwise", "sliding_windows"]


def sliding_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each call, back to front: 100/20/10 gives 9 windows."""
    if n <= 0:
        return []
    spans = []
    end = n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


def _fuse(orders: Sequence[Sequence[int]], method: str) -> dict[int, float]:
    scores: dict[int, float] = {}
    for order in orders:
        n = len(order)
        for rank, index in enumerate(order):
            gain = 1.0 / (60 + rank + 1) if method == "rrf" else float(n - rank)
            scores[index] = scores.get(index, 0.0) + gain
    return scores


class Listwise(Strategy):
    name = "listwise"
    default_prompt = "listwise/rankgpt@latest"

    def __init__(
        self,
        *,
        window: int = 20,
        step: int = 10,
        shuffles: int = 0,
        aggregate: str = "rrf",
        seed: int = 0,
    ) -> None:
        if window < 2 or not 1 <= step < window:
            raise UserError(f"listwise needs window >= 2 and 1 <= step < window, got {window}/{step}")
        if aggregate not in ("rrf", "borda"):
            raise UserError("aggregate must be 'rrf' or 'borda'")
        if shuffles < 0:
            raise UserError("shuffles must be >= 0")
        self.window, self.step = window, step
        self.shuffles, self.aggregate, self.seed = shuffles, aggregate, seed

    def estimate_calls(self, n_candidates: int, top_k: int | None = None) -> int:
        return len(sliding_windows(n_candidates, self.window, self.step)) * (self.shuffles + 1)

    def passages_per_request(self, n_candidates: int) -> int:
        return min(n_candidates, self.window)

    def max_output_tokens(self, passages: int) -> int:
        return 8 * passages + 32

    def _request(self, context: PlanContext, texts: Sequence[str], indices: Sequence[int]) -> LLMRequest:
        labels = [str(i + 1) for i in range(len(indices))]
        output = PermutationOutput(labels)
        rendered = context.prompt.render(
            **context.render_variables(
                passages=label_passages(labels, [texts[i] for i in indices]),
                output_instruction=output.instruction,
            )
        )
        return LLMRequest(context.prompt, rendered, output, max_tokens=self.max_output_tokens(len(indices)))

    def plan(self, context: PlanContext) -> Plan:
        texts, truncated = context.passages()
        n = len(texts)
        if n < 2:
            return Outcome(order=list(range(n)), truncated=truncated)
        passes = [list(range(n))]
        rng = random.Random(self.seed)
        for _ in range(self.shuffles):
            shuffled = list(range(n))
            rng.shuffle(shuffled)
            passes.append(shuffled)
        for start, end in sliding_windows(n, self.window, self.step):
            batch = [self._request(context, texts, order[start:end]) for order in passes]
            answers: Sequence[Answer] = yield batch
            for order, answer in zip(passes, answers, strict=True):
                window = order[start:end]
                order[start:end] = [window[i] for i in answer.value]
        if len(passes) == 1:
            return Outcome(order=passes[0], truncated=truncated)
        fused = _fuse(passes, self.aggregate)
        order = sorted(range(n), key=lambda i: (-fused[i], i))
        return Outcome(order=order, scores=fused, truncated=truncated)
