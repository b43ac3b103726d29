"""``LLMReranker``: a strategy, a versioned prompt, a rubric and a backend behind one verb."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..backends.base import Backend
from ..cache import DiskCache
from ..driver import Driver
from ..prompts import Prompt, PromptLibrary
from ..retry import RetryPolicy
from ..rubrics import DEFAULT_RUBRIC, Rubric
from ..strategies import Strategy, make_strategy
from ..strategies.base import PassageBudget, PlanContext, fit_to_context
from ..strategies.plan import Outcome, Plan
from ..types import (
    CallRecord,
    Candidate,
    CandidateLike,
    RankedCandidate,
    Ranking,
    as_count,
    as_request,
)
from .protocol import ranking_from_order

__all__ = ["LLMReranker"]

logger = logging.getLogger("llmrerank")


def _merge_repairs(outcome: Outcome, calls: Sequence[CallRecord]) -> dict[str, int]:
    repairs = dict(outcome.repairs)
    for call in calls:
        for name, count in call.repairs.items():
            repairs[name] = repairs.get(name, 0) + count
    return repairs


class LLMReranker:
    """Rerank with an LLM::

        reranker = LLMReranker(OpenAIBackend("gpt-4o-mini"), strategy="listwise",
                               prompt="listwise/rankgpt@1", rubric=Rubric.load("kb.yaml"),
                               cache=DiskCache("~/.cache/llmrerank"))
        ranking = reranker.rerank("what causes memory leaks?", passages, top_k=5)

    ``strategy`` is a name (``pointwise``, ``listwise``, ``pairwise``, ``setwise``) or a
    configured ``Strategy``; ``prompt`` defaults to the strategy's newest prompt.

    Each item's ``stage_scores[name]`` is the strategy's score (a grade, wins, a fused
    score); strategies that only order (listwise without shuffles, setwise, pairwise
    heapsort/sliding) score an item by its reciprocal rank, 1/position. What a strategy
    reports beside the score is kept under ``name:detail`` (pointwise with logprobs:
    ``llm:grade``, the grade answered, and ``llm:confidence``, its probability).
    """

    uses_llm = True

    def __init__(
        self,
        backend: Backend,
        *,
        strategy: str | Strategy = "pointwise",
        prompt: str | Prompt | None = None,
        rubric: Rubric | None = None,
        cache: DiskCache | None = None,
        max_concurrency: int = 8,
        max_reasks: int = 2,
        retry: RetryPolicy | None = None,
        max_words: int | None = 300,
        max_chars: int | None = 3000,
        temperature: float = 0.0,
        prompt_dirs: Sequence[str] = (),
        variables: dict[str, Any] | None = None,
        name: str = "llm",
    ) -> None:
        as_count(max_concurrency, "max_concurrency")
        as_count(max_reasks, "max_reasks", minimum=0)
        for limit, what in ((max_words, "max_words"), (max_chars, "max_chars")):
            if limit is not None:
                as_count(limit, what)
        self.backend = backend
        self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        if isinstance(prompt, Prompt):
            self.prompt = prompt
        else:
            self.prompt = PromptLibrary(prompt_dirs).load(prompt or self.strategy.default_prompt)
        self.strategy.check_prompt(self.prompt)
        self.rubric = rubric or DEFAULT_RUBRIC
        self.budget = PassageBudget(max_words, max_chars)
        self.variables = tuple((variables or {}).items())
        self.name = name
        self.driver = Driver(
            backend,
            cache=cache,
            retry=retry,
            max_reasks=max_reasks,
            max_concurrency=max_concurrency,
            temperature=temperature,
            rubric=self.rubric,
        )

    def __repr__(self) -> str:
        return (
            f"LLMReranker({self.backend!r}, strategy={self.strategy.name!r}, "
            f"prompt={self.prompt.ref!r}, rubric={self.rubric.name!r})"
        )

    def estimate_calls(self, n_candidates: int, top_k: int | None = None) -> int:
        return self.strategy.estimate_calls(n_candidates, top_k)

    def plan(self, query: str, candidates: list[Candidate], top_k: int | None = None) -> Plan:
        """The strategy's plan for one request, as a flow (see ``llmrerank.stepping``): it
        yields rounds of ``LLMRequest`` (answered by ``driver.lookup`` and
        ``driver.exchange``, or in full by ``driver.run``) and returns the ``Outcome`` that
        ``ranking`` turns into this stage's ``Ranking``. ``query`` and ``candidates`` are
        checked already (``as_request``). Passages are fitted to the model's context window
        when the backend knows it; a request that cannot fit raises here, before any call."""
        context = PlanContext(
            query=query,
            candidates=candidates,
            prompt=self.prompt,
            rubric=self.rubric,
            budget=self.budget,
            top_k=top_k,
            variables=self.variables,
        )
        if self.backend.context_tokens:
            # a request the model would refuse for its length is never sent: passages shrink
            context = fit_to_context(context, self.strategy, self.backend.context_tokens)
        return self.strategy.plan(context)

    def ranking(
        self,
        query: str,
        candidates: list[Candidate],
        outcome: Outcome,
        calls: list[CallRecord],
        top_k: int | None = None,
    ) -> Ranking:
        """This stage's ``Ranking`` of ``candidates`` from a finished plan's ``outcome`` and
        the ``calls`` that answered it (repairs added up, scores and details per item)."""
        ordered = [candidates[i] for i in outcome.order]
        # Strategies that only order (listwise without shuffles, setwise, pairwise heapsort and
        # sliding) give no score; their stage score is then the reciprocal rank 1/(position),
        # so a cascade's stage_scores show what every stage made of each candidate.
        scores = [
            outcome.scores[i] if i in outcome.scores else 1.0 / (position + 1)
            for position, i in enumerate(outcome.order)
        ]
        ranking = ranking_from_order(
            query,
            ordered,
            stage=self.name,
            stage_scores=scores,
            calls=calls,
            repairs=_merge_repairs(outcome, calls),
            truncated=outcome.truncated,
        )
        if outcome.details:
            ranking = replace(ranking, items=tuple(self._with_details(ranking, candidates, outcome)))
        if ranking.repaired:
            logger.info("%s: model output was repaired: %s", self.name, dict(ranking.repairs))
        return ranking.trimmed(top_k)

    def _with_details(
        self, ranking: Ranking, candidates: list[Candidate], outcome: Outcome
    ) -> list[RankedCandidate]:
        index_of = {c.id: i for i, c in enumerate(candidates)}
        items = []
        for item in ranking.items:
            index = index_of[item.id]
            extra = {
                f"{self.name}:{name}": values[index]
                for name, values in outcome.details.items()
                if index in values
            }
            items.append(replace(item, stage_scores={**item.stage_scores, **extra}))
        return items

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        query, items, top_k = as_request(query, candidates, top_k)
        outcome, calls = self.driver.run(self.plan(query, items, top_k))
        return self.ranking(query, items, outcome, calls, top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        query, items, top_k = as_request(query, candidates, top_k)
        outcome, calls = await self.driver.arun(self.plan(query, items, top_k))
        return self.ranking(query, items, outcome, calls, top_k)
