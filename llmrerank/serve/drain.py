"""Draining before a graceful shutdown: SIGTERM first stops inviting requests, then closes
the listener.

A server that closes its listening socket as soon as SIGTERM arrives resets every
connection the kernel had already accepted for it but it had not yet read: the listen
backlog, and requests still arriving. Those clients sent a request and get
``ECONNRESET`` instead of an answer, so they cannot tell whether it was served; on a busy
or starved host a whole burst can be in that state. So ``llmrerank serve`` drains first:
after SIGTERM it goes on accepting and serving as usual, but ``/readyz`` answers ``503``
(a load balancer stops sending) and every answer carries ``Connection: close`` (a client
reconnects, elsewhere). Once no request has arrived for ``limits.drain_quiet_s``
(``DRAIN_QUIET_S``), or ``limits.drain_s`` after the signal at the latest, it hands the
signal to the server, whose own graceful shutdown closes the listener and waits for the
requests in flight. A second SIGTERM skips what is left of the drain.

The rule counts requests, which is all an ASGI app sees, and a busy event loop: a loop
that wakes the drain late may hold connections it accepted but has not read yet, so it
counts as an arrival, and a starved loop drains for ``limits.drain_s``. A client that has
connected but not yet sent its whole request when the drain ends is closed by the server,
as without a drain. With ``--workers N`` each worker drains on its own arrivals.

``Drain`` is the timing rule and does no I/O; ``drain_on_sigterm`` puts it in front of
the SIGTERM handler the server installed (uvicorn installs its handlers with
``signal.signal`` before the app's startup, where ``llmrerank serve`` calls this).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["DRAIN_QUIET_S", "Drain", "drain_on_sigterm"]

#: by default the drain ends once no request has arrived for this long: the backlog is empty
DRAIN_QUIET_S = 0.2
logger = logging.getLogger("llmrerank")


class Drain:
    """When a server told to stop may close its listener: ``quiet_s`` after the last request
    that arrived since ``begin``, and ``max_s`` after ``begin`` at the latest. Times are any
    one monotonic clock's (the event loop's in the service)."""

    def __init__(self, max_s: float, quiet_s: float = DRAIN_QUIET_S) -> None:
        if max_s < 0 or quiet_s < 0:
            raise ValueError("a drain's max_s and quiet_s are seconds, not negative")
        self.max_s = max_s
        self.quiet_s = quiet_s
        self.began: float | None = None
        self.last_arrival: float | None = None

    @property
    def draining(self) -> bool:
        return self.began is not None

    def begin(self, now: float) -> None:
        if self.began is None:
            self.began = now
            self.last_arrival = now

    def arrived(self, now: float) -> None:
        """A request arrived (counted only while draining)."""
        if self.last_arrival is not None:
            self.last_arrival = max(self.last_arrival, now)

    @property
    def tick_s(self) -> float:
        """How often the drain looks at the clock: a quarter of ``quiet_s``."""
        return max(self.quiet_s / 4, 0.005)

    def woke(self, asked_s: float, slept_s: float, now: float) -> None:
        """The drain slept ``slept_s`` for an ``asked_s`` nap: woken over a tick late, the
        event loop was busy, maybe with connections it has accepted and not yet read, so
        that counts as an arrival. A starved loop drains for ``max_s``."""
        if slept_s - asked_s > self.tick_s:
            self.arrived(now)

    def remaining_s(self, now: float) -> float:
        """Seconds until the listener may close; ``0.0`` once it may."""
        if self.began is None or self.last_arrival is None:
            raise RuntimeError("the drain has not begun")
        ends = min(self.began + self.max_s, self.last_arrival + self.quiet_s)
        return max(0.0, ends - now)


def drain_on_sigterm(drain: Drain) -> Callable[[], None]:
    """Put ``drain`` in front of the process's SIGTERM handler (the server's): the signal
    begins the drain, and the server's handler runs when the drain ends. Call it in the
    running event loop, on the main thread; it returns the function that puts the server's
    handler back. Without a server handler to defer to (none installed, or not on the main
    thread), it changes nothing."""
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler) or threading.current_thread() is not threading.main_thread():
        logger.debug("no server SIGTERM handler to drain in front of; SIGTERM is left as it is")
        return lambda: None
    hand_over_task: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
    handed_over = False

    def to_server(sig: int, frame: FrameType | None) -> None:
        nonlocal handed_over
        if not handed_over:
            handed_over = True
            server_handler(sig, frame)

    async def hand_over(sig: int, began: float) -> None:
        while not handed_over and (left := drain.remaining_s(loop.time())) > 0:
            nap = min(left, drain.tick_s)
            asleep_at = loop.time()
            await asyncio.sleep(nap)
            now = loop.time()
            drain.woke(nap, now - asleep_at, now)
        logger.info("drained for %.2fs after SIGTERM; shutting down", loop.time() - began)
        to_server(sig, None)

    def start_hand_over(sig: int, began: float) -> None:
        nonlocal hand_over_task
        hand_over_task = loop.create_task(hand_over(sig, began))

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if drain.draining:  # a second SIGTERM: stop waiting
            to_server(sig, frame)
            return
        now = loop.time()
        drain.begin(now)
        # a signal handler runs between any two bytecodes of the loop's thread: only schedule
        loop.call_soon_threadsafe(start_hand_over, sig, now)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, server_handler)

    return restore
