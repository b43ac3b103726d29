"""Batch mode: every query's plan steps in lockstep, and each round's cache misses, across
all queries, go to the provider's batch API as one batch.

Each query steps the same flows as online (``llmrerank.stepping``), each held in a
``Stepper``: the cascade's ``walk`` (local stages run in place); at the LLM stage, the
stage's ``plan``, which yields a round of requests. Cache hits are answered at once
(``Driver.lookup``); misses become one ``Driver.exchange`` each (request → reply → parse →
bounded re-ask), whose next message joins the next batch. A request that comes back
expired or errored is submitted again in the next round, up to ``max_attempts``; past that
its query keeps the earlier order and says so (``degraded``), as online. Answers land in
the response cache, so a re-run is free and a killed run resumes from the cache plus the
batches listed in its state file.

Long because it steps every query's flows round by round, answering many at once, and keeps
each query's books: a reply two queries share is paid once, a failed query keeps what it
paid, and what a killed run paid is booked in its state file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..backends.base import BackendReply, BackendRequest
from ..backends.batch_base import BatchClient, BatchFailure, BatchItem
from ..backends.batch_clients import batch_client_for
from ..driver import Driver
from ..errors import BackendError, CallCancelledError, LLMRerankError
from ..pricing import PriceTable
from ..rerankers.cascade import Cascade, StageTurn
from ..rerankers.llm import LLMReranker
from ..rerankers.protocol import Reranker
from ..stepping import Stepper
from ..strategies.plan import Answer, LLMRequest, Outcome
from ..types import CallRecord, Candidate, Ranking, Usage
from .batch_state import BatchOptions, BatchState, wait_for_batch, with_retries
from .datasets import EvalQuery, GoldenSet
from .records import Checkpoint, query_record

__all__ = ["run_in_batches"]

logger = logging.getLogger("llmrerank")


@dataclass(eq=False)
class _Ask:
    """One outstanding request of a query: its conversation (``Driver.exchange``), whose
    question is the message to send next."""

    job: _Job
    index: int
    key: str
    exchange: Stepper[BackendRequest, BackendReply, Answer]
    failures: int = 0
    # replies this ask paid for; one that only shared another ask's reply is a cache hit
    paid: int = 0


@dataclass(eq=False)
class _Job:
    query: EvalQuery
    walk: Stepper[StageTurn, Ranking, Ranking]
    started: float
    llm: LLMReranker | None = None
    inputs: list[Candidate] = field(default_factory=list)
    top_k: int | None = None  # what the cascade asks of the LLM stage, as online
    plan: Stepper[Sequence[LLMRequest], Sequence[Answer], Outcome] | None = None
    answers: list[Answer | None] = field(default_factory=list)
    plan_round: int = 0
    calls: list[CallRecord] = field(default_factory=list)
    asks: list[_Ask] = field(default_factory=list)
    ranking: Ranking | None = None


def _is_open(ask: _Ask) -> bool:
    """Still waiting for its answer (its query has not failed or moved on meanwhile)."""
    return ask.job.plan is not None and ask in ask.job.asks


def _custom_id(client: BatchClient, request: BackendRequest) -> str:
    material = {"backend": client.backend.identity(), "request": asdict(request)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=list).encode()).hexdigest()[:40]


class _Lockstep:
    def __init__(self, reranker: Cascade, options: BatchOptions, state: BatchState) -> None:
        llm_stages = [s.reranker for s in reranker.stages if isinstance(s.reranker, LLMReranker)]
        self.driver: Driver = llm_stages[0].driver
        self.client = batch_client_for(self.driver.backend)
        self.reranker = reranker
        self.options = options
        self.state = state
        self.ready: dict[str, BackendReply | BatchFailure] = {}

    # -- one query ------------------------------------------------------------------------
    def _advance_walk(self, job: _Job, outcome: Ranking | LLMRerankError | None = None) -> None:
        """Give the cascade's walk the ``outcome`` of its current turn (if any), then run it
        (local stages in place) until its LLM stage, which starts a plan, or its end."""
        walk = job.walk
        if isinstance(outcome, LLMRerankError):
            walk.throw(outcome)
        elif outcome is not None:
            walk.send(outcome)
        while not walk.finished:
            turn = walk.question
            if isinstance(turn.stage.reranker, LLMReranker):
                try:
                    plan = turn.stage.reranker.plan(turn.query, turn.inputs, turn.top_k)
                except LLMRerankError as exc:
                    walk.throw(exc)
                    continue
                job.llm, job.inputs, job.calls, job.plan_round = turn.stage.reranker, turn.inputs, [], 0
                job.top_k = turn.top_k
                job.plan = Stepper(plan)
                if self._plan_asks(job):
                    self._start_round(job)
                return
            try:
                ranking = turn.rerank()
            except LLMRerankError as exc:
                walk.throw(exc)
            else:
                walk.send(ranking)
        job.ranking = walk.result

    def _plan_asks(self, job: _Job) -> bool:
        """Whether the query's plan asks another round; when it has finished, its ranking
        goes to the walk instead."""
        assert job.llm is not None
        assert job.plan is not None
        if not job.plan.finished:
            return True
        ranking = job.llm.ranking(job.query.query, job.inputs, job.plan.result, job.calls, job.top_k)
        job.plan = None
        self._advance_walk(job, ranking)
        return False

    def _start_round(self, job: _Job) -> None:
        """Answer what the cache can of the plan's round; the misses become asks. A fully
        cached round moves the plan on at once."""
        assert job.llm is not None
        assert job.plan is not None
        while True:
            requests = job.plan.question
            job.answers = [None] * len(requests)
            job.asks = []
            for index, request in enumerate(requests):
                key, hit = job.llm.driver.lookup(request)
                if hit is not None:
                    job.answers[index] = hit
                    continue
                exchange = Stepper(job.llm.driver.exchange(request, key))
                job.asks.append(_Ask(job, index, key, exchange))
            if job.asks or not self._finish_round(job):
                return

    def _finish_round(self, job: _Job) -> bool:
        """Send the round's answers to the plan; whether it asks another round."""
        assert job.plan is not None
        answers = [replace(a, record=replace(a.record, round=job.plan_round)) for a in job.answers if a]
        job.calls += [a.record for a in answers]
        job.plan_round += 1
        job.plan.send(answers)
        return self._plan_asks(job)

    def _fail(self, job: _Job, error: LLMRerankError) -> None:
        """The query's LLM stage failed: it keeps its earlier order (degraded), and every call
        it paid for goes with the error to its books: earlier rounds, this round's answers, and
        the paid replies of asks still open (each closed by throwing the error in)."""
        this_round = [*(a.record for a in job.answers if a is not None), *error.calls]
        for ask in job.asks:
            try:
                ask.exchange.throw(CallCancelledError("a sibling request of this query failed"))
            except LLMRerankError as closed:
                this_round += closed.calls if ask.paid else ()
        error.calls = (*job.calls, *(replace(call, round=job.plan_round) for call in this_round))
        job.asks, job.plan = [], None
        self._advance_walk(job, error)

    def _deliver(self, ask: _Ask, outcome: BackendReply | BatchFailure, *, shared: bool = False) -> None:
        """Feed one request's outcome to its conversation. ``shared``: the reply was paid by
        another ask of this round with the same request, so it is a cache hit here."""
        job = ask.job
        if isinstance(outcome, BatchFailure):
            ask.failures += 1
            if ask.failures >= self.options.max_attempts:
                job.asks.remove(ask)
                error = BackendError(f"batch request {outcome.kind} {ask.failures} times")
                with contextlib.suppress(LLMRerankError):
                    ask.exchange.throw(error)  # raised again, carrying this ask's paid replies
                if not ask.paid:
                    error.calls = ()  # any reply it had was another ask's, paid there
                self._fail(job, error)
            return
        if shared:
            outcome = replace(outcome, usage=Usage())
        else:
            ask.paid += 1
        try:
            ask.exchange.send(outcome)  # invalid output: the re-ask goes next round
        except LLMRerankError as exc:
            job.asks.remove(ask)
            if not ask.paid:
                exc.calls = ()  # every reply it had was another ask's, paid there
            self._fail(job, exc)
            return
        if ask.exchange.finished:
            answer = ask.exchange.result
            if not ask.paid:
                answer = replace(answer, record=replace(answer.record, cached=True, attempts=0))
            job.answers[ask.index] = answer
            job.asks.remove(ask)
            if not job.asks and self._finish_round(job):
                self._start_round(job)

    # -- all queries ----------------------------------------------------------------------
    def _resume(self) -> None:
        for batch_id in self.state.pending:
            logger.info("resuming batch %s", batch_id)
            self._collect(batch_id)

    def _collect(self, batch_id: str) -> None:
        wait_for_batch(self.client, batch_id, self.options, self.driver.retry)
        self.ready.update(with_retries(self.driver.retry, lambda: self.client.results(batch_id)))

    def _round(self, asks: list[_Ask]) -> None:
        by_id: dict[str, list[_Ask]] = {}
        for ask in asks:
            by_id.setdefault(_custom_id(self.client, ask.exchange.question), []).append(ask)
        missing = [
            BatchItem(cid, group[0].exchange.question)
            for cid, group in by_id.items()
            if cid not in self.ready
        ]
        consumed = list(self.state.pending)
        if missing:
            batch_id = with_retries(self.driver.retry, lambda: self.client.submit(missing))
            self.state.submitted(batch_id)
            logger.info("batch round %d: %d requests in %s", self.state.rounds, len(missing), batch_id)
            self._collect(batch_id)
            consumed.append(batch_id)
        # each reply is booked to the query that pays it (the first open ask of its request)
        # and saved with the batches consumed, before any answer lands in the cache: a run
        # killed after this point and resumed still prices these answers as its own
        for cid, group in by_id.items():
            outcome = self.ready.get(cid)
            payer = next((ask for ask in group if _is_open(ask)), None)
            if isinstance(outcome, BackendReply) and payer is not None:
                self.state.paid.book(payer.job.query.qid, payer.key, outcome.usage)
        self.state.consumed(consumed)
        for cid, group in by_id.items():
            outcome = self.ready.pop(cid, BatchFailure("missing", "no result for this request"))
            paid = False
            for ask in group:
                if _is_open(ask):
                    self._deliver(ask, outcome, shared=paid)
                    paid = True

    def run(self, queries: list[EvalQuery], on_done: Callable[[_Job], None]) -> None:
        started = time.perf_counter()
        self._resume()
        jobs = [_Job(q, Stepper(self.reranker.walk(q.query, q.candidates)), started) for q in queries]
        for job in jobs:
            self._advance_walk(job)
        active = jobs
        while active:
            for job in [j for j in active if j.ranking is not None]:
                on_done(job)
            active = [j for j in active if j.ranking is None]
            if active:
                self._round([ask for job in active for ask in job.asks])


def run_in_batches(
    reranker: Reranker,
    golden: GoldenSet,
    checkpoint: Checkpoint,
    prices: PriceTable,
    options: BatchOptions,
) -> dict[str, Any]:
    """Rerank every query of ``golden`` not yet in ``checkpoint`` in batch rounds, appending
    each finished query there (at batch prices). Returns the run's batch summary."""
    state = BatchState(checkpoint.beside(".batch.json"), checkpoint.done)
    todo = [q for q in golden.queries if q.qid not in checkpoint.done]

    def finished(query: EvalQuery, ranking: Ranking, started: float) -> None:
        # answers paid in an earlier process of this run come back as cache hits: theirs
        ranking = replace(ranking, calls=state.paid.settle(query.qid, ranking.calls))
        record = query_record(query.qid, ranking, time.perf_counter() - started, prices)
        record["cost_usd"] = prices.cost_of(ranking.calls, batch=True)
        checkpoint.append(record)

    if not isinstance(reranker, Cascade) or not any(
        isinstance(s.reranker, LLMReranker) for s in reranker.stages
    ):
        for query in todo:  # no LLM stage: nothing to batch
            started = time.perf_counter()
            finished(query, reranker.rerank(query.query, query.candidates), started)
        return {"rounds": 0}
    engine = _Lockstep(reranker, options, state)

    def job_done(job: _Job) -> None:
        assert job.ranking is not None
        finished(job.query, job.ranking, job.started)

    engine.run(todo, job_done)
    rounds = state.rounds
    state.finish()
    return {"rounds": rounds, "provider": engine.client.provider}
