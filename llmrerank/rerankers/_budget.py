"""A time budget for synchronous work: the work runs in a daemon thread under a cancel
token whose deadline is the budget, so when the budget is spent the caller returns at once,
the driver starts no further request or retry, and the process can still exit promptly
(a daemon thread never holds up interpreter exit, unlike a ``ThreadPoolExecutor`` worker)."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .._concurrency import CancelToken, current_token, set_current_token
from ..errors import StageTimeoutError

__all__ = ["run_with_budget"]

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

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), daemon=True, name="llmrerank-stage").start()
    if not finished.wait(budget_s):
        token.cancel("stage time budget spent")
        raise StageTimeoutError(f"timeout after {budget_s}s")
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value
