"""The one retry policy: transient backend failures only, jittered exponential backoff,
the server's Retry-After honoured in every form, and never an attempt after cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ._concurrency import CancelToken, Limiter
from .errors import BackendError, CallCancelledError, RateLimitError, TransientBackendError

__all__ = ["Attempting", "RetryPolicy", "retried_failures"]

logger = logging.getLogger("llmrerank")

#: set a list here and every failure a call is retried after is appended to it, in order
#: (the service names the first one when its deadline stops the retries)
retried_failures: contextvars.ContextVar[list[BackendError] | None] = contextvars.ContextVar(
    "llmrerank_retried_failures", default=None
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempting:
    """What one call's attempts share: the backend's ``limiter`` (held only while a request
    is in flight), the call's cancel ``token``, the running count of requests made
    (``attempts[0]``) and the ``provider`` named on errors."""

    limiter: Limiter
    token: CancelToken
    attempts: list[int]
    provider: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transient failures only: ``max_attempts`` tries in all, jittered exponential backoff
    from ``base_s`` up to ``max_wait_s``. A server's Retry-After (429 or 503) is waited for
    in full when it is within ``max_wait_s``; a longer one is not shortened: the call fails
    with a ``RateLimitError`` saying how long the server asked for."""

    max_attempts: int = 4
    base_s: float = 0.5
    max_wait_s: float = 30.0

    def delay(self, attempt: int, error: TransientBackendError) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        backoff = random.uniform(0, min(self.max_wait_s, self.base_s * 2 ** (attempt - 1)))
        asked = error.retry_after
        if asked is None:
            return backoff
        if asked > self.max_wait_s:
            raise RateLimitError(
                f"{error}; the server asked to wait {asked:.1f}s before retrying, over the "
                f"retry bound of {self.max_wait_s:g}s (RetryPolicy.max_wait_s)",
                status_code=error.status_code,
                provider=error.provider,
                retry_after=asked,
            ) from error
        return max(asked, backoff)

    def _next_wait(self, attempt: int, error: BackendError, state: Attempting) -> float:
        """The wait before the next attempt, or the error to give up with (``attempts`` set)."""
        error.provider = error.provider or state.provider
        if state.token.cancelled:
            raise CallCancelledError(f"call stopped: {state.token.reason}") from error
        if not isinstance(error, TransientBackendError) or attempt >= self.max_attempts:
            error.attempts = state.attempts[0]
            raise error
        try:
            wait = self.delay(attempt, error)
        except RateLimitError as over:
            over.attempts = state.attempts[0]
            raise over from error
        logger.warning("attempt %d failed (%s); retrying in %.2fs", attempt, error, wait)
        seen = retried_failures.get()
        if seen is not None:
            seen.append(error)
        return wait

    def call(self, send: Callable[[], T], state: Attempting) -> T:
        """``send()`` until it succeeds or fails for good; no attempt starts once the token
        is cancelled, and a backoff sleep wakes when it is."""
        for attempt in range(1, self.max_attempts + 1):
            state.limiter.acquire(state.token)
            try:
                state.token.check()
                state.attempts[0] += 1
                return send()
            except BackendError as error:
                wait = self._next_wait(attempt, error, state)
            finally:
                state.limiter.release()
            state.token.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def acall(self, send: Callable[[], Awaitable[T]], state: Attempting) -> T:
        for attempt in range(1, self.max_attempts + 1):
            await state.limiter.aacquire()
            try:
                state.token.check()
                state.attempts[0] += 1
                return await send()
            except BackendError as error:
                wait = self._next_wait(attempt, error, state)
            finally:
                state.limiter.release()
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")
