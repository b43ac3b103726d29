"""The driver's contract, with a scripted in-memory backend (SDK wire tests: test_backends.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmrerank import DiskCache, LLMReranker, ParseError
from llmrerank.backends.base import Backend, BackendReply, BackendRequest
from llmrerank.errors import RateLimitError, TerminalBackendError, TransientBackendError
from llmrerank.retry import RetryPolicy
from llmrerank.types import Usage

FAST = RetryPolicy(max_attempts=3, base_s=0.001, max_wait_s=0.01)


class Scripted(Backend):
    provider = "scripted"

    def __init__(self, *outcomes: str | Exception) -> None:
        self.model = "scripted-1"
        self._outcomes: Iterator[str | Exception] = iter(outcomes)
        self.requests: list[BackendRequest] = []

    def complete(self, request: BackendRequest) -> BackendReply:
        self.requests.append(request)
        outcome = next(self._outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return BackendReply(text=outcome, usage=Usage(10, 2), model=self.model)

    async def acomplete(self, request: BackendRequest) -> BackendReply:
        return self.complete(request)


def reranker(backend: Backend, **options: object) -> LLMReranker:
    return LLMReranker(backend, strategy="pointwise", retry=FAST, **options)  # type: ignore[arg-type]


def test_invalid_output_is_reasked_with_the_error_then_accepted() -> None:
    backend = Scripted("relevant!", '{"grade": 9}', '{"grade": 2}')
    ranking = reranker(backend).rerank("q", ["only passage"])
    (call,) = ranking.calls
    assert (call.reasks, call.attempts, call.usage.prompt_tokens) == (2, 3, 30)
    reask = backend.requests[2].messages
    assert reask[-2] == {"role": "assistant", "content": '{"grade": 9}'}
    assert "not on the scale [0, 1, 2, 3]" in reask[-1]["content"]
    assert ranking[0].stage_scores == {"llm": 2.0}


def test_output_that_stays_invalid_raises_parse_error_with_the_raw_text() -> None:
    backend = Scripted("no", "still no", "never")
    with pytest.raises(ParseError, match="after 2 re-asks") as info:
        reranker(backend).rerank("q", ["p"])
    assert info.value.raw == "never"
    assert info.value.attempts == 3


def test_transient_errors_are_retried_within_the_bound() -> None:
    backend = Scripted(RateLimitError("slow down", retry_after=0.0), '{"grade": 1}')
    (call,) = reranker(backend).rerank("q", ["p"]).calls
    assert call.attempts == 2
    backend = Scripted(*(TransientBackendError("503", status_code=503) for _ in range(3)))
    with pytest.raises(TransientBackendError) as info:
        reranker(backend).rerank("q", ["p"])
    assert len(backend.requests) == 3
    error = info.value
    assert (error.provider, error.status_code, error.attempts) == ("scripted", 503, 3)
    assert "after 3 attempts" in str(error)


def test_terminal_errors_raise_at_once() -> None:
    backend = Scripted(TerminalBackendError("HTTP 401: bad key", status_code=401))
    with pytest.raises(TerminalBackendError, match="bad key"):
        reranker(backend).rerank("q", ["p"])
    assert len(backend.requests) == 1


def test_retry_after_is_honoured_in_full_and_never_silently_shortened() -> None:
    policy = RetryPolicy(max_wait_s=5)
    assert policy.delay(1, RateLimitError("429", retry_after=3.0)) == 3.0
    assert policy.delay(1, TransientBackendError("503", status_code=503, retry_after=4.5)) == 4.5
    with pytest.raises(RateLimitError, match=r"asked to wait 60.0s .* over the retry bound of 5s") as info:
        policy.delay(1, RateLimitError("429", retry_after=60))
    assert info.value.retry_after == 60


def test_cache_hits_are_free_and_revalidated(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    first = reranker(Scripted('{"grade": 3}', '{"grade": 0}'), cache=cache).rerank("q", ["a", "b"])
    assert not any(c.cached for c in first.calls)
    again = reranker(Scripted(), cache=cache).rerank("q", ["a", "b"])
    assert all(c.cached for c in again.calls)
    assert again.usage == Usage(0, 0)
    assert again.ids() == first.ids()

    # an entry that no longer validates is a miss, not an answer
    key = first.calls[0].cache_key
    cache.set("responses", key, '{"text": "{\\"grade\\": 99}"}')
    backend = Scripted('{"grade": 3}')
    third = reranker(backend, cache=cache).rerank("q", ["a", "b"])
    assert [c.cached for c in third.calls] == [False, True]
    assert len(backend.requests) == 1


def test_a_changed_prompt_version_or_model_misses_the_cache(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    reranker(Scripted('{"grade": 3}'), cache=cache).rerank("q", ["a"])
    other = Scripted('{"grade": 3}')
    other.model = "scripted-2"
    (call,) = reranker(other, cache=cache).rerank("q", ["a"]).calls
    assert not call.cached


def test_a_broken_cache_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = DiskCache(tmp_path)
    cache.close()
    (tmp_path / "cache.db").unlink()
    (tmp_path / "cache.db").mkdir()  # the store is now unusable
    ranking = reranker(Scripted('{"grade": 2}'), cache=cache).rerank("q", ["a"])
    assert ranking[0].stage_scores == {"llm": 2.0}
    assert "cache is paused" in caplog.text


def test_async_runs_a_step_concurrently_under_the_limit() -> None:
    class Slow(Scripted):
        def __init__(self) -> None:
            super().__init__()
            self.active = self.peak = 0

        async def acomplete(self, request: BackendRequest) -> BackendReply:
            self.active += 1
            self.peak = max(self.peak, self.active)
            await asyncio.sleep(0.01)
            self.active -= 1
            grade = len(request.messages[1]["content"]) % 4
            return BackendReply(text=f'{{"grade": {grade}}}', usage=Usage(1, 1), model="m")

    backend = Slow()
    passages = [f"passage {'x' * i}" for i in range(12)]
    ranking = asyncio.run(reranker(backend, max_concurrency=3).arerank("q", passages, top_k=5))
    assert backend.peak == 3
    assert len(ranking) == 5
    assert len(ranking.calls) == 12


def test_a_call_latency_excludes_time_spent_queued() -> None:
    class Slow(Scripted):
        def complete(self, request: BackendRequest) -> BackendReply:
            time.sleep(0.1)
            return BackendReply(text='{"grade": 1}', usage=Usage(1, 1), model="m")

    ranking = reranker(Slow(), max_concurrency=1).rerank("q", [f"passage {i}" for i in range(4)])
    latencies = sorted(call.latency_s for call in ranking.calls)
    # one at a time: queued, the last call would report about four times the first
    assert latencies[-1] < 2 * latencies[0]


def test_the_limiter_never_leaks_a_slot_to_a_cancelled_waiter() -> None:
    from llmrerank._concurrency import CancelToken, Limiter
    from llmrerank.errors import CallCancelledError

    limiter = Limiter(1)
    limiter.acquire()
    token = CancelToken(deadline=time.monotonic() + 0.1)
    with pytest.raises(CallCancelledError):
        limiter.acquire(token)  # waits, then gives up at the token's deadline

    async def cancelled_waiter() -> None:
        waiter = asyncio.ensure_future(limiter.aacquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(cancelled_waiter())
    limiter.release()
    assert limiter.in_use == 0
    limiter.acquire()  # the slot is free again
    assert limiter.in_use == 1


def test_a_call_failing_while_its_round_stops_leaves_no_unread_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a round's calls fail one after another (an invalid key: every reply is a 401); the one
    # whose reply lands while the round stops must not reach asyncio's "never retrieved" log
    import gc

    from llmrerank._concurrency import all_or_nothing

    async def fails_now() -> int:
        raise TerminalBackendError("HTTP 401: first")

    async def fails_while_stopped() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise TerminalBackendError("HTTP 401: landed while stopping") from None
        return 1

    async def round_of_two() -> None:
        with pytest.raises(TerminalBackendError, match="first"):
            await all_or_nothing([fails_now(), fails_while_stopped()])

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(round_of_two())
        gc.collect()  # an unread task error is logged when the task is collected
    assert "never retrieved" not in caplog.text


def test_two_rerankers_on_one_backend_share_the_smaller_limit() -> None:
    backend = Scripted()
    first, second = reranker(backend, max_concurrency=6), reranker(backend, max_concurrency=3)
    assert first.driver.limiter is second.driver.limiter
    assert first.driver.limiter.capacity == 3
