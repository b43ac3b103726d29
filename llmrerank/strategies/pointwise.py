"""Pointwise: grade every candidate on the rubric's scale, all at once.

With ``use_logprobs=True`` and a backend that returns token log-probabilities, the score is
the expected grade under the model's distribution over the grade tokens, which breaks the
many ties a small integer scale leaves; the grade answered and its probability are kept in
the outcome's ``details`` (``grade``, ``confidence``). Ties that remain keep the input order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..outputs import GradeOutput
from ..types import TokenLogprob
from .base import PlanContext, Strategy
from .plan import LLMRequest, Outcome, Plan

__all__ = ["Pointwise", "expected_grade", "grade_distribution"]


def expected_grade(logprobs: Sequence[TokenLogprob] | None, grades: Sequence[int]) -> float | None:
    """Expected grade from the top log-probabilities at the token that carries the grade."""
    distribution = grade_distribution(logprobs, grades)
    if distribution is None:
        return None
    return sum(g * p for g, p in distribution.items())


def grade_distribution(
    logprobs: Sequence[TokenLogprob] | None, grades: Sequence[int]
) -> dict[int, float] | None:
    """Each grade's probability (normalised over the grades) at the token that carries the grade."""
    if not logprobs:
        return None
    allowed = {str(g) for g in grades}
    for token in logprobs:
        if token.token.strip() not in allowed:
            continue
        probs: dict[int, float] = {}
        for text, logprob in {**token.top, token.token: token.logprob}.items():
            if text.strip() in allowed:
                grade = int(text.strip())
                probs[grade] = probs.get(grade, 0.0) + math.exp(logprob)
        total = sum(probs.values())
        if total > 0:
            return {g: p / total for g, p in probs.items()}
    return None


class Pointwise(Strategy):
    name = "pointwise"
    default_prompt = "pointwise/relevance@latest"

    def __init__(self, *, use_logprobs: bool = False) -> None:
        self.use_logprobs = use_logprobs

    def estimate_calls(self, n_candidates: int, top_k: int | None = None) -> int:
        return n_candidates

    def passages_per_request(self, n_candidates: int) -> int:
        return 1

    def plan(self, context: PlanContext) -> Plan:
        output = GradeOutput(context.rubric.grades)
        texts, truncated = context.passages()
        requests = [
            LLMRequest(
                prompt=context.prompt,
                rendered=context.prompt.render(
                    **context.render_variables(
                        passage={"label": "P", "text": text},
                        output_instruction=output.instruction,
                    )
                ),
                output=output,
                logprobs=self.use_logprobs,
                max_tokens=16,
            )
            for text in texts
        ]
        if not requests:
            return Outcome(order=[], truncated=0)
        answers = yield requests
        scores: dict[int, float] = {}
        answered: dict[int, float] = {}
        confidence: dict[int, float] = {}
        for index, answer in enumerate(answers):
            scores[index] = float(answer.value)
            if self.use_logprobs:
                distribution = grade_distribution(answer.logprobs, output.grades)
                if distribution is not None:
                    scores[index] = sum(g * p for g, p in distribution.items())
                    answered[index] = float(answer.value)
                    confidence[index] = distribution.get(int(answer.value), 0.0)
        order = sorted(scores, key=lambda i: (-scores[i], i))
        details = {"grade": answered, "confidence": confidence} if answered else {}
        return Outcome(order=order, scores=scores, truncated=truncated, details=details)
