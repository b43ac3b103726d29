"""Admission and deadlines around a shared LLM backend and around the local (CPU) stages.

One ``BackendGate`` per LLM backend, shared by every pipeline and request of a worker:
``llm_concurrency`` requests run their LLM stage at once and ``llm_queue`` more may wait;
beyond that a request is refused up front (``QueueFull`` → ``429``), before any stage runs.
``GatedLLM`` wraps the pipeline's LLM stage: it waits for a slot and runs the stage within
what is left of the request's deadline; past it the stage raises ``StageTimeoutError``, so
the cascade keeps the previous order and marks the result degraded.

The local stages (dense, cross-encoder) share one more gate per worker, the CPU's:
``local_concurrency`` stage runs at once and ``local_queue`` more requests may wait. A
request holds its place from admission until its last local stage is done (``Admission``),
not while it waits for the LLM. ``GatedLocal`` waits for a slot and for the stage within
the request's deadline like ``GatedLLM``; a stage still running at the deadline finishes in
the background and keeps its slot until then, so the CPU is never oversubscribed.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from .._concurrency import available_cores
from ..errors import BackendError, LLMRerankError, StageTimeoutError
from ..rerankers.protocol import Reranker
from ..retry import retried_failures
from ..types import CandidateLike, Ranking

__all__ = [
    "Admission",
    "BackendGate",
    "GatedLLM",
    "GatedLocal",
    "QueueFull",
    "default_local_concurrency",
    "local_admission",
    "request_deadline",
]

#: the running request's deadline on the event loop's clock (None: no deadline)
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "llmrerank_request_deadline", default=None
)


def default_local_concurrency() -> int:
    """The cores this process may use: local stage runs at once per worker by default."""
    return available_cores()


class QueueFull(LLMRerankError):
    """The gate's slots and queue are all taken."""

    def __init__(self, what: str, retry_after_s: int) -> None:
        super().__init__(f"{what} is at capacity; retry after {retry_after_s}s")
        self.what = what
        self.retry_after_s = retry_after_s


class Admission:
    """A request's place at a gate, given back once (``release``) when the request no
    longer needs the gate, or at the latest when the request ends."""

    def __init__(self, gate: BackendGate) -> None:
        self._gate = gate
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.admitted -= 1


#: the running request's place at the local (CPU) gate, released after its last local stage
local_admission: contextvars.ContextVar[Admission | None] = contextvars.ContextVar(
    "llmrerank_local_admission", default=None
)


class BackendGate:
    """A concurrency limit plus a bounded queue, counted in requests. ``what`` names the
    gate in the ``429`` message (default: ``LLM backend <label>``)."""

    def __init__(self, label: str, *, concurrency: int, queue: int, what: str | None = None) -> None:
        self.label = label
        self.what = what or f"LLM backend {label}"
        self.concurrency = concurrency
        self.capacity = concurrency + queue
        self.admitted = 0
        self.running = 0
        self._slots = asyncio.Semaphore(concurrency)
        # a smoothed LLM stage duration, for Retry-After
        self._typical_s = 1.0

    @property
    def queued(self) -> int:
        return max(0, self.admitted - self.running)

    def retry_after_s(self) -> int:
        waves = (self.queued + 1) / self.concurrency
        return max(1, min(60, math.ceil(waves * self._typical_s)))

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[Admission]:
        """Held for a request that will use this gate (released early by ``Admission.release``)."""
        if self.admitted >= self.capacity:
            raise QueueFull(self.what, self.retry_after_s())
        self.admitted += 1
        admission = Admission(self)
        try:
            yield admission
        finally:
            admission.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            self.running += 1
            started = time.perf_counter()
            try:
                yield
            finally:
                self.running -= 1
                self._typical_s = 0.8 * self._typical_s + 0.2 * (time.perf_counter() - started)


class GatedLLM:
    """The pipeline's LLM stage behind its backend's gate and the request deadline."""

    uses_llm = True

    def __init__(self, inner: Reranker, gate: BackendGate) -> None:
        self.inner = inner
        self.gate = gate
        self.name = inner.name

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        return self.inner.rerank(query, candidates, top_k=top_k)

    async def _gated(self, query: str, candidates: Sequence[CandidateLike], top_k: int | None) -> Ranking:
        async with self.gate.slot():
            return await self.inner.arerank(query, candidates, top_k=top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        remaining = _time_left("the LLM stage")
        if remaining is None:
            return await self._gated(query, candidates, top_k)
        failures: list[BackendError] = []
        token = retried_failures.set(failures)  # the stage's task runs in a copy of this context
        try:
            task = asyncio.ensure_future(self._gated(query, candidates, top_k))
        finally:
            retried_failures.reset(token)
        if not await _finished_within(task, remaining):
            # answer now; the stage's cancellation (closing connections, freeing its slot)
            # finishes in the background instead of delaying the response
            task.cancel()
            if failures:  # the LLM failed and was being retried: that is the reason, not the clock
                first = failures[0]
                raise StageTimeoutError(
                    f"the LLM failed ({type(first).__name__}: {first}); "
                    "retrying it ran past the request deadline"
                )
            raise StageTimeoutError(f"request deadline reached ({remaining:.2f}s left for the LLM)")
        return task.result()


class GatedLocal:
    """A local stage behind the worker's CPU gate and the request deadline. ``last``: the
    pipeline's last local stage, after which the request gives back its place at the gate."""

    uses_llm = False

    def __init__(self, inner: Reranker, gate: BackendGate, *, last: bool) -> None:
        self.inner = inner
        self.gate = gate
        self.last = last
        self.name = inner.name

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        return self.inner.rerank(query, candidates, top_k=top_k)

    async def _gated(
        self, query: str, candidates: Sequence[CandidateLike], top_k: int | None, started: asyncio.Event
    ) -> Ranking:
        async with self.gate.slot():
            started.set()
            # the stage runs in a thread, which cancelling cannot stop: the slot is held
            # until the thread is done, whoever stopped waiting for it
            run = asyncio.ensure_future(self.inner.arerank(query, candidates, top_k=top_k))
            try:
                return await asyncio.shield(run)
            except asyncio.CancelledError:
                await asyncio.wait({run})
                raise

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        try:
            return await self._within_deadline(query, candidates, top_k)
        finally:
            if self.last:
                admission = local_admission.get()
                if admission is not None:
                    admission.release()

    async def _within_deadline(
        self, query: str, candidates: Sequence[CandidateLike], top_k: int | None
    ) -> Ranking:
        started = asyncio.Event()
        remaining = _time_left(f"the {self.name} stage")
        if remaining is None:
            return await self._gated(query, candidates, top_k, started)
        task = asyncio.ensure_future(self._gated(query, candidates, top_k, started))
        if await _finished_within(task, remaining):
            return task.result()
        if not started.is_set():
            task.cancel()  # still queued for a slot: it will not run at all
            raise StageTimeoutError(
                f"request deadline reached while the {self.name} stage waited for a CPU slot"
            )
        raise StageTimeoutError(f"request deadline reached during the {self.name} stage")


def _time_left(stage: str) -> float | None:
    """Seconds left of the running request's deadline (None: no deadline); a deadline
    already passed raises ``StageTimeoutError`` before ``stage`` starts."""
    deadline = request_deadline.get()
    if deadline is None:
        return None
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise StageTimeoutError(f"the request deadline passed before {stage}")
    return remaining


async def _finished_within(task: asyncio.Future[Ranking], seconds: float) -> bool:
    """Whether ``task`` finished within ``seconds``. If not, it is left running (the caller
    cancels it or lets it finish) and its outcome is consumed whenever it comes; if the
    request itself is cancelled while waiting (client gone, shutdown), so is the task."""
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.add_done_callback(_consume)
    return bool(done)


def _consume(task: asyncio.Future[Ranking]) -> None:
    if not task.cancelled():
        task.exception()
