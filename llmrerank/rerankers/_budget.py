"""A time budget for synchronous work: the work runs in a daemon thread under a cancel
token whose deadline is the budget, so when the budget is spent the caller returns at once,
the driver starts no further request or retry, and the process can still exit promptly
(a daemon thread never holds up interpreter exit, unlike a ``ThreadPoolExecutor`` worker).
Sync or async, the ``StageTimeoutError`` carries the calls the work had finished (paid)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._calls import call_log
from .._concurrency import CancelToken, current_token, set_current_token
from ..errors import StageTimeoutError

__all__ = ["await_with_budget", "run_with_budget"]

T = TypeVar("T")


def run_with_budget(work: Callable[[], T], budget_s: float) -> T:
    """``work()`` within ``budget_s`` seconds, else ``StageTimeoutError`` (and the work is
    told to stop: it makes no new request after the deadline)."""
    token = CancelToken(deadline=time.monotonic() + budget_s, parent=current_token())
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        set_current_token(token)
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            finished.set()

    with call_log() as log:  # the thread runs in this copy of the context: its calls reach log
        context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), daemon=True, name="llmrerank-stage").start()
    if not finished.wait(budget_s):
        token.cancel("stage time budget spent")
        error = StageTimeoutError(f"timeout after {budget_s}s")
        error.calls = tuple(log)
        raise error
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


async def await_with_budget(work: Awaitable[T], budget_s: float | None) -> T:
    """``await work`` within ``budget_s`` seconds (None: no limit), else it is cancelled and
    ``StageTimeoutError`` raised."""
    with call_log() as log:
        try:
            return await asyncio.wait_for(work, budget_s)
        except asyncio.TimeoutError:
            error = StageTimeoutError(f"timeout after {budget_s}s")
            error.calls = tuple(log)
            raise error from None
