"""The call logs open in this context: where a driver reports each call as it finishes.

Its own module so that a stage budget (``rerankers._budget``) can open a log without
importing the driver and the LLM stack behind it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .types import CallRecord

__all__ = ["call_log", "open_call_logs"]

_call_logs: contextvars.ContextVar[tuple[Callable[[CallRecord], None], ...]] = contextvars.ContextVar(
    "llmrerank_call_logs", default=()
)


def open_call_logs() -> tuple[Callable[[CallRecord], None], ...]:
    """What a call finished now, in this context, must be reported to."""
    return _call_logs.get()


@contextmanager
def call_log(on_call: Callable[[CallRecord], None] | None = None) -> Iterator[list[CallRecord]]:
    """A list that every call finished by a driver in this context (and in the threads and
    tasks it starts) is appended to as it finishes, paid or cached; ``on_call`` also gets each
    one. For work that may be abandoned before it returns (a stage over its time budget) or
    killed (an eval run): what it paid until then is still known. Logs nest: a call reaches
    every log open around it. ``on_call`` may be called from several threads at once."""
    log: list[CallRecord] = []

    def note(record: CallRecord) -> None:
        log.append(record)
        if on_call is not None:
            on_call(record)

    token = _call_logs.set((*_call_logs.get(), note))
    try:
        yield log
    finally:
        _call_logs.reset(token)
