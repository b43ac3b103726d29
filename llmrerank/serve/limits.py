"""Admission and deadlines around a shared LLM backend.

One ``BackendGate`` per LLM backend, shared by every pipeline and request of a worker:
``llm_concurrency`` requests run their LLM stage at once and ``llm_queue`` more may wait;
beyond that a request is refused up front (``QueueFull`` → ``429``), before any stage runs.
``GatedLLM`` wraps the pipeline's LLM stage: it waits for a slot and runs the stage within
what is left of the request's deadline; past it the stage raises ``StageTimeoutError``, so
the cascade keeps the previous order and marks the result degraded.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from ..errors import LLMRerankError, StageTimeoutError
from ..rerankers.protocol import Reranker
from ..types import CandidateLike, Ranking

__all__ = ["BackendGate", "GatedLLM", "QueueFull", "request_deadline"]

#: the running request's deadline on the event loop's clock (None: no deadline)
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "llmrerank_request_deadline", default=None
)


class QueueFull(LLMRerankError):
    """The backend's slots and queue are all taken."""

    def __init__(self, backend: str, retry_after_s: int) -> None:
        super().__init__(f"LLM backend {backend} is at capacity; retry after {retry_after_s}s")
        self.backend = backend
        self.retry_after_s = retry_after_s


class BackendGate:
    """A concurrency limit plus a bounded queue, counted in requests."""

    def __init__(self, label: str, *, concurrency: int, queue: int) -> None:
        self.label = label
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
    async def admit(self) -> AsyncIterator[None]:
        """Held for a whole request that will use this backend."""
        if self.admitted >= self.capacity:
            raise QueueFull(self.label, self.retry_after_s())
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

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
        deadline = request_deadline.get()
        if deadline is None:
            return await self._gated(query, candidates, top_k)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise StageTimeoutError("the request deadline passed before the LLM stage")
        task = asyncio.ensure_future(self._gated(query, candidates, top_k))
        try:
            done, _ = await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:  # the request itself was cancelled (client gone, shutdown)
            task.cancel()
            raise
        if not done:
            # answer now; the stage's cancellation (closing connections, freeing its slot)
            # finishes in the background instead of delaying the response
            task.cancel()
            task.add_done_callback(_consume)
            raise StageTimeoutError(f"request deadline reached ({remaining:.2f}s left for the LLM)")
        return task.result()


def _consume(task: asyncio.Future[Ranking]) -> None:
    if not task.cancelled():
        task.exception()
