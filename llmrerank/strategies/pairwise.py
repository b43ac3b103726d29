"""Pairwise ranking prompting (PRP): the model says which of two passages is more relevant.

Every comparison is asked in both orders (A/B and B/A) in one batch; two agreeing answers
are a win, disagreeing answers are a tie and are counted (``inconsistent_pairs``), which
cancels the model's bias for the first-shown passage. Methods:

* ``allpairs``: every pair, all at once; score = wins (ties count half). n·(n−1) prompts.
* ``heapsort``: top-k by heap sort, about n·log n comparisons in sequential rounds.
* ``sliding``: k bubble passes from the bottom up (PRP-Sliding-k), k·(n−1) comparisons.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from ..errors import BudgetError, UserError
from ..outputs import Preference
from ._heap import heap_top_k, heap_top_k_bound
from .base import PlanContext, Strategy, label_passages
from .plan import Answer, LLMRequest, Outcome, Plan

__all__ = ["Pairwise"]

_METHODS = ("allpairs", "heapsort", "sliding")


class Pairwise(Strategy):
    name = "pairwise"
    default_prompt = "pairwise/prp@latest"

    def __init__(self, *, method: str = "heapsort", top_k: int = 10, max_allpairs: int = 50) -> None:
        if method not in _METHODS:
            raise UserError(f"pairwise method must be one of {_METHODS}, got {method!r}")
        self.method = method
        self.top_k = top_k
        self.max_allpairs = max_allpairs

    def _k(self, n: int, top_k: int | None) -> int:
        return min(n, top_k or self.top_k)

    def estimate_calls(self, n_candidates: int, top_k: int | None = None) -> int:
        """A proven upper bound on the prompts ``plan`` sends (a comparison is 2: both orders).

        ``allpairs`` sends exactly n·(n−1) (none when n exceeds ``max_allpairs``: it raises)
        and ``sliding`` exactly 2·Σ_{p<k}(n−1−p). ``heapsort`` is a binary heap sort stopped
        after k pops whose pick over a node and c children makes c comparisons (2c prompts);
        ``heap_top_k_bound`` sums the longest path every sift can take (see its proof sketch).
        """
        n = n_candidates
        if n < 2:
            return 0
        k = self._k(n, top_k)
        if self.method == "allpairs":
            return n * (n - 1)
        if self.method == "sliding":
            return 2 * sum(n - 1 - p for p in range(k))
        return heap_top_k_bound(n, k, 2, lambda children: 2 * children)

    def passages_per_request(self, n_candidates: int) -> int:
        return 2

    def _pair(self, context: PlanContext, texts: Sequence[str], a: int, b: int) -> LLMRequest:
        output = Preference()
        rendered = context.prompt.render(
            **context.render_variables(
                passages=label_passages(["A", "B"], [texts[a], texts[b]]),
                output_instruction=output.instruction,
            )
        )
        return LLMRequest(context.prompt, rendered, output, max_tokens=16)

    @staticmethod
    def _verdict(forward: Answer, backward: Answer) -> int:
        """+1: the first passage wins in both orders, -1: the second does, 0: they disagree."""
        first_in_forward = forward.value == "A"
        first_in_backward = backward.value == "B"
        if first_in_forward and first_in_backward:
            return 1
        if not first_in_forward and not first_in_backward:
            return -1
        return 0

    def plan(self, context: PlanContext) -> Plan:
        texts, truncated = context.passages()
        n = len(texts)
        if n < 2:
            return Outcome(order=list(range(n)), truncated=truncated)
        if self.method == "allpairs":
            if n > self.max_allpairs:
                bound = self.max_allpairs
                raise BudgetError(
                    f"all-pairs on {n} candidates is {n * (n - 1)} LLM calls; the bound is "
                    f"{bound} candidates ({bound * (bound - 1)} calls). Narrow first, raise "
                    "max_allpairs, or use heapsort/sliding."
                )
            pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
            batch = []
            for a, b in pairs:
                batch += [self._pair(context, texts, a, b), self._pair(context, texts, b, a)]
            answers = yield batch
            wins = dict.fromkeys(range(n), 0.0)
            inconsistent = 0
            for position, (a, b) in enumerate(pairs):
                verdict = self._verdict(answers[2 * position], answers[2 * position + 1])
                if verdict > 0:
                    wins[a] += 1
                elif verdict < 0:
                    wins[b] += 1
                else:
                    wins[a] += 0.5
                    wins[b] += 0.5
                    inconsistent += 1
            order = sorted(range(n), key=lambda i: (-wins[i], i))
            repairs = {"inconsistent_pairs": inconsistent} if inconsistent else {}
            return Outcome(order=order, scores=wins, repairs=repairs, truncated=truncated)

        counts = {"inconsistent_pairs": 0}

        def compare(a: int, b: int) -> Generator[Any, Any, int]:
            forward, backward = yield [
                self._pair(context, texts, a, b),
                self._pair(context, texts, b, a),
            ]
            verdict = self._verdict(forward, backward)
            if verdict == 0:
                counts["inconsistent_pairs"] += 1
            return verdict

        k = self._k(n, context.top_k)
        if self.method == "heapsort":

            def pick(group: Sequence[int]) -> Generator[Any, Any, int]:
                verdict = yield from compare(group[0], group[1])
                best = 1 if verdict < 0 else 0
                if len(group) == 3:
                    verdict = yield from compare(group[best], group[2])
                    best = 2 if verdict < 0 else best
                return best

            order = yield from heap_top_k(n, k, 2, pick)
        else:
            order = list(range(n))
            for finished in range(k):
                for i in range(n - 2, finished - 1, -1):
                    verdict = yield from compare(order[i], order[i + 1])
                    if verdict < 0:
                        order[i], order[i + 1] = order[i + 1], order[i]
        repairs = {k_: v for k_, v in counts.items() if v}
        return Outcome(order=order, repairs=repairs, truncated=truncated)
