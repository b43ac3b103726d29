"""The drain before a graceful shutdown: its timing rule, and its place in front of the
server's SIGTERM handler (a real signal to this process). The service process around it is
in test_serve_shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from llmrerank.serve.drain import Drain, drain_on_sigterm


def test_the_drain_ends_quiet_s_after_the_last_arrival() -> None:
    drain = Drain(max_s=5.0, quiet_s=0.2)
    assert not drain.draining
    drain.arrived(1.0)  # before the signal: not counted
    drain.begin(10.0)
    assert drain.draining
    assert drain.remaining_s(10.0) == pytest.approx(0.2)
    drain.arrived(10.15)
    assert drain.remaining_s(10.2) == pytest.approx(0.15)
    drain.arrived(10.1)  # an arrival seen late does not move the end back
    assert drain.remaining_s(10.2) == pytest.approx(0.15)
    assert drain.remaining_s(10.35) == 0.0
    drain.begin(20.0)  # a second begin keeps the first
    assert drain.began == 10.0


def test_arrivals_cannot_keep_the_listener_open_past_max_s() -> None:
    drain = Drain(max_s=1.0, quiet_s=0.2)
    drain.begin(0.0)
    for tick in range(1, 10):
        drain.arrived(tick * 0.1)
    assert drain.remaining_s(0.9) == pytest.approx(0.1)
    assert drain.remaining_s(1.0) == 0.0


def test_a_loop_that_wakes_the_drain_late_counts_as_an_arrival() -> None:
    drain = Drain(max_s=5.0, quiet_s=0.2)
    assert drain.tick_s == pytest.approx(0.05)
    drain.begin(0.0)
    drain.woke(0.05, 0.09, now=0.09)  # 40 ms late: within a tick, the loop is keeping up
    assert drain.remaining_s(0.09) == pytest.approx(0.11)
    drain.woke(0.05, 0.8, now=0.89)  # 750 ms late: the loop was busy, maybe reading a burst
    assert drain.remaining_s(0.89) == pytest.approx(0.2)


def test_no_drain_and_bad_durations() -> None:
    drain = Drain(max_s=0.0)
    drain.begin(3.0)
    assert drain.remaining_s(3.0) == 0.0
    with pytest.raises(ValueError, match="not negative"):
        Drain(max_s=-1.0)
    with pytest.raises(RuntimeError, match="not begun"):
        Drain(max_s=1.0).remaining_s(0.0)


class ServerHandler:
    """A stand-in for the server's SIGTERM handler (uvicorn's sets ``should_exit``): it
    records when it ran, on the event loop's clock."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.calls.append((sig, asyncio.get_running_loop().time()))

    async def until_called(self, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not self.calls:
                await asyncio.sleep(0.01)


@pytest.fixture
def server_handler() -> Iterator[ServerHandler]:
    """Installed as the process's SIGTERM handler; the previous one is put back after."""
    handler = ServerHandler()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_reaches_the_server_once_no_request_arrived_for_quiet_s(
    server_handler: ServerHandler,
) -> None:
    drain = Drain(max_s=30.0, quiet_s=0.3)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        restore = drain_on_sigterm(drain)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0)
            assert drain.draining
            assert not server_handler.calls  # the server still accepts
            await asyncio.sleep(0.2)
            drain.arrived(loop.time())  # a request arrives: the quiet time starts again
            last_arrival = loop.time()
            await server_handler.until_called()
            return last_arrival
        finally:
            restore()

    last_arrival = asyncio.run(scenario())
    ((sig, handed_over_at),) = server_handler.calls
    assert sig == signal.SIGTERM
    assert handed_over_at >= last_arrival + 0.3 - 0.01
    assert signal.getsignal(signal.SIGTERM) is server_handler  # put back


def test_a_second_sigterm_skips_the_rest_of_the_drain(
    server_handler: ServerHandler,
) -> None:
    drain = Drain(max_s=5.0, quiet_s=2.0)

    async def scenario() -> None:
        restore = drain_on_sigterm(drain)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0)
            assert drain.draining
            assert not server_handler.calls
            os.kill(os.getpid(), signal.SIGTERM)
            await server_handler.until_called()
            await asyncio.sleep(drain.quiet_s + drain.tick_s)  # past the drain's own end
        finally:
            restore()

    asyncio.run(scenario())
    ((_, handed_over_at),) = server_handler.calls  # told once, by the second signal
    assert drain.began is not None
    assert handed_over_at < drain.began + drain.quiet_s


def test_without_a_server_handler_sigterm_is_left_alone() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:

        async def scenario() -> None:
            restore = drain_on_sigterm(Drain(max_s=1.0))
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            restore()

        asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, previous)
