"""Concurrency primitives shared by the driver, the backends and the cascade.

* ``Limiter``: a counting limit that threads and tasks of any event loop share.
* ``CancelToken``: a flag (with an optional deadline) that stops work before the next
  attempt or request; ``current_token`` carries it across layers without new arguments.
* ``run_in_daemon_threads``: a fan-out that stops on the first error and never keeps the
  process alive at exit (unlike ``ThreadPoolExecutor``, whose workers are joined at exit).
* ``available_cores``: the cores this process may use (its affinity, not the machine's).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .errors import CallCancelledError
from .types import as_count

__all__ = [
    "CancelToken",
    "Limiter",
    "all_or_nothing",
    "available_cores",
    "current_token",
    "limiter_for",
    "run_in_daemon_threads",
]

T = TypeVar("T")
R = TypeVar("R")


class CancelToken:
    """Set once; ``deadline`` (``time.monotonic()`` seconds) cancels it when reached.
    A token made with ``parent`` is cancelled when its parent is."""

    def __init__(self, deadline: float | None = None, parent: CancelToken | None = None) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"
        self.deadline = deadline
        self.parent = parent
        if parent is not None and parent.deadline is not None:
            self.deadline = parent.deadline if deadline is None else min(deadline, parent.deadline)

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self.parent is not None and self.parent.cancelled:
            self.cancel(self.parent.reason)
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.cancel("time budget spent")
            return True
        return False

    def check(self) -> None:
        if self.cancelled:
            raise CallCancelledError(f"call stopped: {self.reason}")

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake and raise as soon as the token is cancelled."""
        end = time.monotonic() + seconds
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._event.wait(min(left, 0.05))


_current: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar(
    "llmrerank_cancel", default=None
)


def current_token() -> CancelToken | None:
    """The token of the work this thread or task is doing for a caller with a budget."""
    return _current.get()


def set_current_token(token: CancelToken | None) -> contextvars.Token[CancelToken | None]:
    return _current.set(token)


class Limiter:
    """At most ``capacity`` holders at once, across threads and event loops; waiters are
    served first come, first served. Async waiters wait on their own loop's future."""

    def __init__(self, capacity: int) -> None:
        self.capacity = as_count(capacity, "max_concurrency")
        self._lock = threading.Lock()
        self._in_use = 0
        self._waiters: deque[threading.Event | tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            deque()
        )

    @property
    def in_use(self) -> int:
        return self._in_use

    def acquire(self, token: CancelToken | None = None) -> None:
        with self._lock:
            if self._in_use < self.capacity and not self._waiters:
                self._in_use += 1
                return
            granted = threading.Event()
            self._waiters.append(granted)
        while not granted.wait(0.05):
            if token is not None and token.cancelled:
                with self._lock:
                    queued = granted in self._waiters
                    if queued:
                        self._waiters.remove(granted)
                if not queued:  # granted meanwhile: hand the slot on
                    self.release()
                token.check()

    async def aacquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._in_use < self.capacity and not self._waiters:
                self._in_use += 1
                return
            future: asyncio.Future[None] = loop.create_future()
            waiter = (loop, future)
            self._waiters.append(waiter)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            if not queued and future.done() and not future.cancelled():
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters and self._in_use <= self.capacity:
                waiter = self._waiters.popleft()
                if isinstance(waiter, threading.Event):
                    waiter.set()
                    return
                loop, future = waiter
                try:
                    loop.call_soon_threadsafe(self._grant, future)
                    return
                except RuntimeError:  # that loop is closed: nobody waits there any more
                    continue
            self._in_use -= 1

    def _grant(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            self.release()
        else:
            future.set_result(None)


_limiters: weakref.WeakKeyDictionary[Any, Limiter] = weakref.WeakKeyDictionary()
_limiters_lock = threading.Lock()


def limiter_for(owner: Any, capacity: int) -> Limiter:
    """The one limiter of ``owner`` (a backend): every driver using it shares it, and its
    capacity is the smallest any of them asked for."""
    with _limiters_lock:
        limiter = _limiters.get(owner)
        if limiter is None:
            limiter = _limiters[owner] = Limiter(capacity)
        else:
            limiter.capacity = min(limiter.capacity, as_count(capacity, "max_concurrency"))
        return limiter


def run_in_daemon_threads(
    function: Callable[[T], R], items: Sequence[T], workers: int, token: CancelToken
) -> list[R]:
    """``[function(item) ...]`` in up to ``workers`` daemon threads, each running in a copy
    of the caller's context. The first error cancels ``token`` (no new item starts, and
    running items stop before their next attempt); the caller waits for the running items
    to stop, then that first error is raised."""
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    pending = deque(range(len(items)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if errors or token.cancelled or not pending:
                    return
                index = pending.popleft()
            try:
                results[index] = function(items[index])
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                token.cancel("a sibling call failed")
                return

    threads = [
        threading.Thread(
            target=contextvars.copy_context().run, args=(work,), daemon=True, name="llmrerank-call"
        )
        for _ in range(max(1, min(workers, len(items))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        first = next((e for e in errors if not isinstance(e, CallCancelledError)), errors[0])
        raise first
    token.check()
    return results


async def all_or_nothing(calls: Sequence[Coroutine[Any, Any, R]]) -> list[R]:
    """Await ``calls`` as tasks; the first failure, or the caller's cancellation, cancels the
    rest and waits for them to finish before raising, so no task outlives this call. A task
    that fails while being stopped (its reply landed first) is read too, so asyncio never
    logs "Task exception was never retrieved" for it: the first failure is the one raised."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        return [t.result() for t in tasks]
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
