"""Stages in sequence: cheap local models narrow, the LLM orders the survivors.

``Cascade([Stage(BiEncoderReranker(), keep=20), Stage(llm, keep=5, timeout_s=10)])``
reranks with each stage the survivors of the one before; what a stage did not keep stays
below in its previous order, so the result is always a full ranking. An LLM stage that
fails — time budget, exhausted retries, unparseable output — never fails the request: its
input order is kept and the ranking says ``degraded`` and why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .base import Reranker
from .errors import LLMRerankError, StageTimeoutError, UserError
from .pricing import PriceTable
from .types import (
    CallRecord,
    Candidate,
    CandidateLike,
    RankedCandidate,
    Ranking,
    StageReport,
    Usage,
    as_candidates,
)

__all__ = ["Cascade", "Stage", "hybrid", "parse_stage_spec"]

logger = logging.getLogger("llmrerank")

BYPASS_ENV = "LLMRERANK_BYPASS_LLM"


@dataclass(frozen=True)
class Stage:
    """One step of a cascade. ``keep``: how many of its ranking go on to the next stage
    (None: all). ``timeout_s``: the stage's time budget. ``fallback``: on failure keep the
    previous order instead of raising."""

    reranker: Reranker
    keep: int | None = None
    timeout_s: float | None = None
    name: str | None = None
    fallback: bool = True

    @property
    def label(self) -> str:
        return self.name or self.reranker.name

    @property
    def is_llm(self) -> bool:
        return bool(getattr(self.reranker, "is_llm", False))


def _margin(ranking: Ranking, stage: str) -> float | None:
    """Top-1 minus top-2 of the stage's normalised score (probability, else raw)."""
    if len(ranking) < 2:
        return None
    first, second = ranking[0].stage_scores, ranking[1].stage_scores
    key = f"{stage}:prob" if f"{stage}:prob" in first else stage
    if key not in first or key not in second:
        return None
    return first[key] - second[key]


class Cascade:
    """A ``Reranker`` made of stages. ``stats`` counts requests, degraded results and how
    often confidence routing (``skip_margin``) skipped the LLM; ``prices`` turns each
    stage's tokens into ``StageReport.cost_usd``; ``top_k`` trims results when ``rerank``
    is given none (the trace always records the full ranking)."""

    is_llm = False

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
        self.trace = Path(trace) if trace else None
        self._bypass = bypass_llm
        self.skip_margin = skip_margin
        self.prices = prices or PriceTable()
        self.top_k = top_k
        self.name = name
        self.stats = {"requests": 0, "degraded": 0, "llm_skipped_by_margin": 0, "llm_bypassed": 0}
        self._trace_lock = threading.Lock()

    @property
    def bypass_llm(self) -> bool:
        if self._bypass is not None:
            return self._bypass
        return os.environ.get(BYPASS_ENV, "").lower() in ("1", "true", "yes")

    def __repr__(self) -> str:
        return f"Cascade({[s.label for s in self.stages]})"

    # -- the pure part: merge a stage's result into the running order -------------------
    @staticmethod
    def _merge(current: list[RankedCandidate], stage_ranking: Ranking, n_input: int) -> list[RankedCandidate]:
        previous = {item.id: item for item in current[:n_input]}
        merged = [
            replace(
                item,
                stage_scores={**previous[item.id].stage_scores, **item.stage_scores},
            )
            for item in stage_ranking.items
        ]
        return merged + current[n_input:]

    def _skip_reason(
        self, stage: Stage, current: list[RankedCandidate], previous_stage: str | None
    ) -> str | None:
        if not stage.is_llm:
            return None
        if self.bypass_llm:
            self.stats["llm_bypassed"] += 1
            return "bypassed"
        if self.skip_margin is not None and previous_stage is not None:
            margin = _margin(Ranking(query="", items=tuple(current)), previous_stage)
            if margin is not None and margin >= self.skip_margin:
                self.stats["llm_skipped_by_margin"] += 1
                return f"margin {margin:.3f} >= {self.skip_margin}"
        return None

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
            self._write_trace(ranking)
        return ranking.trimmed(top_k if top_k is not None else self.top_k)

    def _start(self, query: str, candidates: Sequence[CandidateLike]) -> list[RankedCandidate]:
        items = as_candidates(candidates)
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

    def _walk(
        self, query: str, candidates: Sequence[CandidateLike], top_k: int | None
    ) -> Generator[tuple[Stage, list[Candidate]], Ranking, Ranking]:
        """The cascade's logic, shared by sync and async: yields each stage to run with its
        inputs and receives its ranking, or the error it raised (thrown in)."""
        current = self._start(query, candidates)
        state = _RunState()
        previous: str | None = None
        for stage in self.stages:
            inputs = [item.candidate for item in current]
            skip = self._skip_reason(stage, current, previous)
            started = time.perf_counter()
            result: Ranking | None = None
            error: str | None = None
            if skip is None and inputs:
                try:
                    result = yield stage, inputs
                except LLMRerankError as exc:
                    if not stage.fallback:
                        raise
                    error = f"stage {stage.label!r}: {exc}"
            current = state.record(self, stage, current, inputs, result, skip, error, started)
            previous = stage.label
        return self._finish(query, *state.totals(current), top_k)

    # -- sync ------------------------------------------------------------------------
    def _run_stage_sync(self, stage: Stage, query: str, inputs: list[Candidate]) -> Ranking:
        if stage.timeout_s is None:
            return stage.reranker.rerank(query, inputs)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(stage.reranker.rerank, query, inputs)
        try:
            return future.result(timeout=stage.timeout_s)
        except concurrent.futures.TimeoutError:
            raise StageTimeoutError(f"timeout after {stage.timeout_s}s") from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        walk = self._walk(query, candidates, top_k)
        try:
            stage, inputs = next(walk)
            while True:
                try:
                    result = self._run_stage_sync(stage, query, inputs)
                except LLMRerankError as exc:
                    stage, inputs = walk.throw(exc)
                else:
                    stage, inputs = walk.send(result)
        except StopIteration as done:
            ranking: Ranking = done.value
            return ranking

    # -- async -----------------------------------------------------------------------
    async def _run_stage_async(self, stage: Stage, query: str, inputs: list[Candidate]) -> Ranking:
        try:
            return await asyncio.wait_for(stage.reranker.arerank(query, inputs), stage.timeout_s)
        except asyncio.TimeoutError:
            raise StageTimeoutError(f"timeout after {stage.timeout_s}s") from None

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        walk = self._walk(query, candidates, top_k)
        try:
            stage, inputs = next(walk)
            while True:
                try:
                    result = await self._run_stage_async(stage, query, inputs)
                except LLMRerankError as exc:
                    stage, inputs = walk.throw(exc)
                else:
                    stage, inputs = walk.send(result)
        except StopIteration as done:
            ranking: Ranking = done.value
            return ranking

    # -- trace -----------------------------------------------------------------------
    def _write_trace(self, ranking: Ranking) -> None:
        assert self.trace is not None
        stage_scores: dict[str, dict[str, float]] = {}
        for item in ranking.items:
            for stage, value in item.stage_scores.items():
                stage_scores.setdefault(stage, {})[item.id] = value
        record: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(),
            "query": ranking.query,
            "candidate_ids": sorted(item.id for item in ranking.items),
            "stage_scores": stage_scores,
            "final_ids": ranking.ids(),
            "stages": ranking.to_dict()["stages"],
            "prompts": sorted({f"{c.prompt_ref} {c.prompt_sha256}" for c in ranking.calls}),
            "models": sorted({f"{c.backend}:{c.model}" for c in ranking.calls}),
            "prompt_tokens": ranking.usage.prompt_tokens,
            "completion_tokens": ranking.usage.completion_tokens,
            "degraded_reason": ranking.degraded_reason,
        }
        line = json.dumps(record, ensure_ascii=False)
        with self._trace_lock:
            self.trace.parent.mkdir(parents=True, exist_ok=True)
            with self.trace.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")


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
    ) -> list[RankedCandidate]:
        latency = time.perf_counter() - started
        if error is not None:
            logger.warning("%s; keeping the previous order", error)
            self.degraded.append(error)
        if result is not None:
            current = cascade._merge(current, result, len(inputs))
            self.calls += result.calls
            self.truncated += result.truncated
            for key, count in result.repairs.items():
                self.repairs[key] = self.repairs.get(key, 0) + count
        stage_calls = list(result.calls) if result is not None else []
        kept = len(inputs) if stage.keep is None else min(stage.keep, len(inputs))
        self.reports.append(
            StageReport(
                name=stage.label,
                kept=kept,
                latency_s=latency,
                usage=result.usage if result is not None else Usage(),
                cost_usd=cascade.prices.cost_of(stage_calls),
                calls=len(stage_calls),
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


def parse_stage_spec(spec: str, **options: Any) -> Reranker:
    """``dense:[MODEL]`` or ``cross-encoder:[MODEL]`` (empty MODEL: the offline default)."""
    kind, _, model = spec.partition(":")
    if kind == "dense":
        from .dense import BiEncoderReranker

        return BiEncoderReranker(model or None, **options)
    if kind in ("cross-encoder", "crossencoder", "ce"):
        from .crossencoder import CrossEncoderReranker

        return CrossEncoderReranker(model or None, **options)
    raise UserError(f"unknown stage {spec!r}; use dense:[MODEL] or cross-encoder:[MODEL]")


def hybrid(
    llm: Reranker,
    *,
    narrow_with: Reranker | str | Sequence[Reranker | str] = "dense:",
    narrow_to: int | Sequence[int] = 20,
    top_k: int | None = 5,
    llm_timeout_s: float | None = None,
    trace: str | os.PathLike[str] | None = None,
    bypass_llm: bool | None = None,
    skip_margin: float | None = None,
) -> Cascade:
    """The common case in one line: local stage(s) narrow, the LLM orders the survivors.

    ``hybrid(llm, narrow_with=["dense:", "cross-encoder:"], narrow_to=[50, 20])`` is
    dense 100 → 50, cross-encoder 50 → 20, LLM 20 → ``top_k``.
    """
    narrowers = [narrow_with] if isinstance(narrow_with, (str, Reranker)) else list(narrow_with)
    keeps = [narrow_to] * len(narrowers) if isinstance(narrow_to, int) else list(narrow_to)
    if len(keeps) != len(narrowers):
        raise UserError(f"{len(narrowers)} narrowing stages but {len(keeps)} narrow_to values")
    stages = [
        Stage(parse_stage_spec(n) if isinstance(n, str) else n, keep=keep)
        for n, keep in zip(narrowers, keeps, strict=True)
    ]
    stages.append(Stage(llm, timeout_s=llm_timeout_s))
    return Cascade(stages, trace=trace, bypass_llm=bypass_llm, skip_margin=skip_margin, top_k=top_k)
