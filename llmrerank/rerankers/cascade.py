"""Stages in sequence: cheap local models narrow, the LLM orders the survivors.

``Cascade([Stage(DenseReranker(), keep=20), Stage(llm, keep=5, timeout_s=10)])``
reranks with each stage the survivors of the one before; what a stage did not keep stays
below in its previous order, so the result is always a full ranking. An LLM stage that
fails — time budget, exhausted retries, unparseable output — never fails the request: its
input order is kept and the ranking says ``degraded`` and why. A caller's mistake (a
``UserError`` such as a bad ``top_k`` or candidate) is never such a failure: it raises, as
the same call would on the stage alone (``stage_failure_degrades``).

The cascade's logic is one flow, ``Cascade.walk`` (see ``llmrerank.stepping``): it asks for
one ``StageTurn`` at a time, and ``rerank``, ``arerank`` and batch mode answer it.

Long because the walk, the per-request state that merges each stage's result and the books
of what each stage paid sit together.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Sequence, Sized
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from ..errors import BudgetError, LLMRerankError, UserError
from ..stepping import adrive, drive
from ..telemetry import StageSpan, request_span, start_stage
from ..types import (
    CallRecord,
    Candidate,
    CandidateLike,
    RankedCandidate,
    Ranking,
    StageReport,
    Usage,
    as_count,
    as_request,
    as_seconds,
    as_top_k,
)
from ._budget import await_with_budget, run_with_budget
from ._trace import TraceWriter
from .protocol import Reranker
from .routing import Router

if TYPE_CHECKING:
    from ..pricing import PriceTable

__all__ = ["Cascade", "Stage", "StageTurn", "Walk", "stage_failure_degrades"]

logger = logging.getLogger("llmrerank")


def stage_failure_degrades(error: LLMRerankError) -> bool:
    """Whether a stage's ``error`` leaves the earlier order in place (a degraded ranking)
    rather than failing the call: the backend, its parsing and the budgets (time, calls,
    context) fail that way; a caller's mistake (any other ``UserError``) never does, since
    a degraded result would hide it."""
    return isinstance(error, BudgetError) or not isinstance(error, UserError)


@dataclass(frozen=True)
class Stage:
    """One step of a cascade. ``keep``: how many of its ranking go on to the next stage
    (None: all). ``timeout_s``: the stage's time budget. ``fallback``: on a failure that
    degrades (``stage_failure_degrades``) keep the previous order instead of raising."""

    reranker: Reranker
    keep: int | None = None
    timeout_s: float | None = None
    name: str | None = None
    fallback: bool = True

    def __post_init__(self) -> None:
        if self.keep is not None:
            as_count(self.keep, f"stage {self.label!r}: keep")
        if self.timeout_s is not None:
            as_seconds(self.timeout_s, f"stage {self.label!r}: timeout_s")

    @property
    def label(self) -> str:
        return self.name or self.reranker.name

    @property
    def uses_llm(self) -> bool:
        return self.reranker.uses_llm

    def asked_top_k(self, request_top_k: int | None = None, *, last: bool = False) -> int | None:
        """How many of its ranking a stage is asked for: an LLM stage only its ``keep``, or
        fewer when it is the ``last`` stage and the request wants only ``request_top_k``
        (adaptive strategies stop once they know that head; the rest keep their earlier
        order). A local stage orders everything it is given."""
        if not self.uses_llm:
            return None
        if not last or request_top_k is None:
            return self.keep
        return request_top_k if self.keep is None else min(self.keep, request_top_k)


@dataclass(frozen=True)
class StageTurn:
    """What ``Cascade.walk`` asks for: ``stage``'s ranking of ``inputs`` (the survivors of
    the stages before it) for ``query``. ``rerank``/``arerank`` answer it as the cascade
    does, asking for the head of ``top_k`` (``Stage.asked_top_k``) within the stage's time
    budget."""

    stage: Stage
    query: str
    inputs: list[Candidate]
    top_k: int | None = None
    span: StageSpan = field(default_factory=lambda: StageSpan(None))

    def rerank(self) -> Ranking:
        reranker, budget = self.stage.reranker, self.stage.timeout_s
        work = partial(reranker.rerank, self.query, self.inputs, top_k=self.top_k)
        with self.span.active():
            return work() if budget is None else run_with_budget(work, budget)

    async def arerank(self) -> Ranking:
        work = self.stage.reranker.arerank(self.query, self.inputs, top_k=self.top_k)
        with self.span.active():
            return await await_with_budget(work, self.stage.timeout_s)


Walk = Generator[StageTurn, Ranking, Ranking]
"""The cascade's logic as a flow (``Cascade.walk``; see ``llmrerank.stepping``)."""


class Cascade:
    """A ``Reranker`` made of stages. ``stats`` counts requests, degraded results and how
    often confidence routing (``skip_margin``) skipped the LLM; ``prices`` turns each
    stage's tokens into ``StageReport.cost_usd``; ``top_k`` trims results when ``rerank``
    is given none (the trace always records the full ranking)."""

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        trace: str | os.PathLike[str] | None = None,
        bypass_llm: bool | None = None,
        skip_margin: float | None = None,
        prices: PriceTable | None = None,
        top_k: int | None = None,
        name: str = "cascade",
    ) -> None:
        if not stages:
            raise UserError("a cascade needs at least one stage")
        self.stages = list(stages)
        self.trace = TraceWriter(trace) if trace else None
        self.router = Router(bypass_llm=bypass_llm, skip_margin=skip_margin)
        self._prices: PriceTable | None = prices
        if self.uses_llm:  # a bad price table is the builder's error, not the first request's
            self._prices = self.prices
        self.top_k = as_top_k(top_k)
        self.name = name
        self.stats = {"requests": 0, "degraded": 0, "llm_skipped_by_margin": 0, "llm_bypassed": 0}

    @property
    def prices(self) -> PriceTable:
        """The price table (the default one is read when first needed: a local-only cascade
        never loads it)."""
        if self._prices is None:
            from ..pricing import PriceTable

            self._prices = PriceTable()
        return self._prices

    @property
    def uses_llm(self) -> bool:
        return any(stage.uses_llm for stage in self.stages)

    def __repr__(self) -> str:
        return f"Cascade({[s.label for s in self.stages]})"

    def _skip_reason(
        self, stage: Stage, current: list[RankedCandidate], previous_stage: str | None
    ) -> str | None:
        reason = self.router.skip_reason(stage.uses_llm, current, previous_stage)
        if reason == "bypassed":
            self.stats["llm_bypassed"] += 1
        elif reason is not None:
            self.stats["llm_skipped_by_margin"] += 1
        return reason

    def _finish(
        self,
        query: str,
        current: list[RankedCandidate],
        calls: list[CallRecord],
        reports: list[StageReport],
        degraded: list[str],
        truncated: int,
        repairs: dict[str, int],
        top_k: int | None,
    ) -> Ranking:
        n = len(current)
        items = tuple(replace(item, rank=i + 1, score=float(n - i)) for i, item in enumerate(current))
        self.stats["requests"] += 1
        if degraded:
            self.stats["degraded"] += 1
        ranking = Ranking(
            query=query,
            items=items,
            calls=tuple(calls),
            degraded=bool(degraded),
            degraded_reason="; ".join(degraded) or None,
            repairs=repairs,
            truncated=truncated,
            stages=tuple(reports),
        )
        if self.trace is not None:
            self.trace.write(ranking)
        return ranking.trimmed(top_k if top_k is not None else self.top_k)

    @staticmethod
    def _start(items: list[Candidate]) -> list[RankedCandidate]:
        n = len(items)
        return [
            RankedCandidate(
                candidate=c,
                rank=i + 1,
                score=float(n - i),
                stage="input",
                stage_scores={} if c.score is None else {"input": c.score},
            )
            for i, c in enumerate(items)
        ]

    def walk(self, query: str, candidates: Sequence[CandidateLike], top_k: int | None = None) -> Walk:
        """The cascade's logic as a flow (``llmrerank.stepping``), shared by ``rerank``,
        ``arerank`` and batch mode: it yields a ``StageTurn`` for each stage that runs (a
        skipped stage, or one left with no candidates, asks nothing) and is sent its
        ``Ranking``, or has the ``LLMRerankError`` the stage raised thrown in: with
        ``fallback`` and an error that degrades (``stage_failure_degrades``) the earlier order
        stays and the ranking says why; any other error leaves with every call paid so far.
        Returns the full ranking (trimmed to ``top_k``), written to the trace."""
        query, items, top_k = as_request(query, candidates, top_k)
        current = self._start(items)
        state = _RunState()
        previous: str | None = None
        wanted = top_k if top_k is not None else self.top_k
        for index, stage in enumerate(self.stages):
            asked = stage.asked_top_k(wanted, last=index == len(self.stages) - 1)
            inputs = [item.candidate for item in current]
            skip = self._skip_reason(stage, current, previous)
            started = time.perf_counter()
            result: Ranking | None = None
            error: str | None = None
            failed_calls: tuple[CallRecord, ...] = ()
            span = start_stage(stage.label, stage.reranker, stage.keep, len(inputs))
            if skip is None and inputs:
                try:
                    result = yield StageTurn(stage, query, inputs, asked, span)
                except LLMRerankError as exc:
                    if not stage.fallback or not stage_failure_degrades(exc):
                        exc.calls = (*state.calls, *exc.calls)
                        span.failed(exc)
                        raise
                    error = f"stage {stage.label!r}: {exc}"
                    failed_calls = exc.calls  # paid before the stage failed: still booked
            current = state.record(self, stage, current, inputs, result, skip, error, started, failed_calls)
            span.finished(state.reports[-1], len(inputs))
            previous = stage.label
        return self._finish(query, *state.totals(current), top_k)

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        with request_span(self.name, query, _count(candidates), top_k) as span:
            ranking = drive(self.walk(query, candidates, top_k), StageTurn.rerank)
            span.finished(ranking)
        return ranking

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        with request_span(self.name, query, _count(candidates), top_k) as span:
            ranking = await adrive(self.walk(query, candidates, top_k), StageTurn.arerank)
            span.finished(ranking)
        return ranking


def _count(candidates: object) -> int | None:
    """How many candidates came in, for the request span; the walk refuses what has no length."""
    return len(candidates) if isinstance(candidates, Sized) else None


def _merge(current: list[RankedCandidate], stage_ranking: Ranking) -> list[RankedCandidate]:
    """The stage's order first (it may have been trimmed to the stage's ``keep``), then the
    candidates it did not return, in their previous order."""
    previous = {item.id: item for item in current}
    merged = [
        replace(item, stage_scores={**previous[item.id].stage_scores, **item.stage_scores})
        for item in stage_ranking.items
        if item.id in previous
    ]
    returned = {item.id for item in merged}
    return merged + [item for item in current if item.id not in returned]


class _RunState:
    """What one request through the cascade has gathered so far."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self.reports: list[StageReport] = []
        self.degraded: list[str] = []
        self.truncated = 0
        self.repairs: dict[str, int] = {}
        # candidates a stage did not keep, newest cut first: they stay below the survivors
        self.below: list[RankedCandidate] = []

    def record(
        self,
        cascade: Cascade,
        stage: Stage,
        current: list[RankedCandidate],
        inputs: list[Candidate],
        result: Ranking | None,
        skip: str | None,
        error: str | None,
        started: float,
        failed_calls: tuple[CallRecord, ...] = (),
    ) -> list[RankedCandidate]:
        latency = time.perf_counter() - started
        if error is not None:
            logger.warning("%s; keeping the previous order", error)
            self.degraded.append(error)
        stage_calls = list(result.calls) if result is not None else list(failed_calls)
        self.calls += stage_calls
        if result is not None:
            current = _merge(current, result)
            self.truncated += result.truncated
            for key, count in result.repairs.items():
                self.repairs[key] = self.repairs.get(key, 0) + count
        kept = len(inputs) if stage.keep is None else min(stage.keep, len(inputs))
        usage = sum((call.usage for call in stage_calls), Usage())
        self.reports.append(
            StageReport(
                name=stage.label,
                kept=kept,
                latency_s=latency,
                usage=usage,
                cost_usd=cascade.prices.cost_of(stage_calls) if stage_calls else 0.0,
                calls=sum(not call.cached for call in stage_calls),
                cached_calls=sum(call.cached for call in stage_calls),
                skipped=skip is not None,
                degraded_reason=error or skip,
            )
        )
        # only the kept head goes on to the next stage; the tail keeps its place below
        self.below = current[kept:] + self.below
        return current[:kept]

    def totals(
        self, survivors: list[RankedCandidate]
    ) -> tuple[list[RankedCandidate], list[CallRecord], list[StageReport], list[str], int, dict[str, int]]:
        return (
            survivors + self.below,
            self.calls,
            self.reports,
            self.degraded,
            self.truncated,
            self.repairs,
        )
