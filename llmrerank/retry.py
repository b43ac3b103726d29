"""The one retry policy: transient backend failures only, jittered exponential backoff,
the server's Retry-After honoured in every form, and never an attempt after cancellation."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ._concurrency import CancelToken, Limiter
from .errors import BackendError, CallCancelledError, RateLimitError, TransientBackendError

__all__ = ["RetryPolicy"]

logger = logging.getLogger("llmrerank")

T = TypeVar("T")


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

    def _next_wait(self, attempt: int, error: BackendError, attempts: list[int], token: CancelToken) -> float:
        """The wait before the next attempt, or the error to give up with (its ``attempts`` set)."""
        if token.cancelled:
            raise CallCancelledError(f"call stopped: {token.reason}") from error
        if not isinstance(error, TransientBackendError) or attempt >= self.max_attempts:
            error.attempts = attempts[0]
            raise error
        try:
            wait = self.delay(attempt, error)
        except RateLimitError as over:
            over.attempts = attempts[0]
            raise over from error
        logger.warning("attempt %d failed (%s); retrying in %.2fs", attempt, error, wait)
        return wait

    def call(self, send: Callable[[], T], *, limiter: Limiter, token: CancelToken, attempts: list[int]) -> T:
        """``send()`` until it succeeds or fails for good; ``attempts[0]`` counts every
        request made. The limiter is held only while a request is in flight."""
        for attempt in range(1, self.max_attempts + 1):
            limiter.acquire(token)
            try:
                token.check()
                attempts[0] += 1
                return send()
            except BackendError as error:
                wait = self._next_wait(attempt, error, attempts, token)
            finally:
                limiter.release()
            token.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def acall(
        self, send: Callable[[], Awaitable[T]], *, limiter: Limiter, token: CancelToken, attempts: list[int]
    ) -> T:
        for attempt in range(1, self.max_attempts + 1):
            await limiter.aacquire()
            try:
                token.check()
                attempts[0] += 1
                return await send()
            except BackendError as error:
                wait = self._next_wait(attempt, error, attempts, token)
            finally:
                limiter.release()
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")
