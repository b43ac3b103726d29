"""The one retry policy: transient backend failures only, jittered exponential backoff."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from .errors import RateLimitError, TransientBackendError

__all__ = ["RetryPolicy"]

logger = logging.getLogger("llmrerank")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transient failures only: ``max_attempts`` tries in all, jittered exponential backoff
    from ``base_s`` up to ``max_wait_s``; a 429's Retry-After is honoured up to ``max_wait_s``."""

    max_attempts: int = 4
    base_s: float = 0.5
    max_wait_s: float = 30.0

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = random.uniform(0, min(self.max_wait_s, self.base_s * 2 ** (state.attempt_number - 1)))
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return min(self.max_wait_s, max(exc.retry_after, backoff))
        return backoff

    def _log(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning("attempt %d failed (%s); retrying", state.attempt_number, exc)

    def _arguments(self) -> dict[str, Any]:
        return {
            "retry": retry_if_exception_type(TransientBackendError),
            "stop": stop_after_attempt(self.max_attempts),
            "wait": self.wait,
            "reraise": True,
            "before_sleep": self._log,
        }

    def sync(self) -> Retrying:
        return Retrying(**self._arguments())

    def asynchronous(self) -> AsyncRetrying:
        return AsyncRetrying(**self._arguments())
