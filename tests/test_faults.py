"""Fault injection over real HTTP: the real OpenAI and Anthropic SDKs against
``FaultServer``. Each fault asserts how many requests were made, what the caller sees (the
error type, or the cascade's ``degraded`` flag) and that nothing else is lost."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmrerank import DiskCache, LLMReranker
from llmrerank.backends.anthropic import AnthropicBackend
from llmrerank.backends.base import Backend
from llmrerank.backends.openai import OpenAIBackend
from llmrerank.errors import (
    BackendTimeoutError,
    MalformedReplyError,
    ParseError,
    RateLimitError,
    StageTimeoutError,
    TerminalBackendError,
    TransientBackendError,
)
from llmrerank.rerankers.cascade import Cascade, Stage
from llmrerank.retry import RetryPolicy
from llmrerank.testing.faults import Drip, FaultResponse, FaultServer, RawBody, Refusal, ResetMidBody
from llmrerank.testing.server import Fault, Hang, Reply, WireRequest

FAST = RetryPolicy(max_attempts=3, base_s=0.01, max_wait_s=1.0)
GOOD = Reply('{"grade": 3}')
APIS = ["openai", "anthropic"]
BAD_BODIES = {
    "truncated": RawBody(b'{"id": "chatcmpl-1", "choi'),
    "html": RawBody(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
    "empty": RawBody(b""),
}


def make_backend(api: str, server: FaultServer, timeout_s: float = 2.0) -> Backend:
    if api == "openai":
        return OpenAIBackend("m", base_url=server.openai_base_url, timeout_s=timeout_s)
    return AnthropicBackend("m", base_url=server.anthropic_base_url, timeout_s=timeout_s)


def llm(api: str, server: FaultServer, *, timeout_s: float = 2.0, **options: object) -> LLMReranker:
    options.setdefault("retry", FAST)
    return LLMReranker(make_backend(api, server, timeout_s), strategy="pointwise", **options)  # type: ignore[arg-type]


def rerank(reranker: LLMReranker | Cascade, mode: str, candidates: list[str]) -> object:
    if mode == "sync":
        return reranker.rerank("q", candidates)
    return asyncio.run(reranker.arerank("q", candidates))


def sequence(*responses: FaultResponse) -> Callable[[WireRequest], FaultResponse]:
    queue = list(responses)
    lock = threading.Lock()

    def handler(_: WireRequest) -> FaultResponse:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


# -- 1: a 200 whose body is not the API's JSON ----------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("body", list(BAD_BODIES))
def test_an_unreadable_200_is_retried_then_a_malformed_reply_error(body: str, api: str, mode: str) -> None:
    with FaultServer(sequence(BAD_BODIES[body], GOOD)) as server:
        ranking = rerank(llm(api, server), mode, ["p"])
        assert ranking.calls[0].attempts == 2  # type: ignore[attr-defined]
        assert server.count == 2
    with FaultServer(lambda _: BAD_BODIES[body]) as server:
        with pytest.raises(MalformedReplyError) as info:
            rerank(llm(api, server), mode, ["p"])
        assert server.count == 3
    error = info.value
    assert (error.status_code, error.attempts) == (200, 3)
    assert error.provider in ("openai-compatible", "anthropic")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_cascade_degrades_on_an_unreadable_reply(mode: str) -> None:
    with FaultServer(lambda _: BAD_BODIES["html"]) as server:
        cascade = Cascade([Stage(llm("openai", server, max_concurrency=1))])
        ranking = rerank(cascade, mode, ["a", "b", "c"])
        assert 3 <= server.count < 9  # the first call's third failure stops the others
    assert ranking.degraded  # type: ignore[attr-defined]
    assert "not the API's JSON" in (ranking.degraded_reason or "")  # type: ignore[attr-defined]
    assert [item.text for item in ranking] == ["a", "b", "c"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("api", APIS)
def test_a_connection_reset_mid_body_is_retried(api: str) -> None:
    with FaultServer(sequence(ResetMidBody(), GOOD)) as server:
        assert llm(api, server).rerank("q", ["p"]).calls[0].attempts == 2
    with FaultServer(lambda _: ResetMidBody()) as server:
        with pytest.raises(TransientBackendError, match="connection failed") as info:
            llm(api, server).rerank("q", ["p"])
        assert (server.count, info.value.attempts) == (3, 3)


# -- 11: a total deadline per attempt ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("api", APIS)
def test_a_dripping_body_fails_at_the_attempt_deadline(api: str, mode: str) -> None:
    retry = RetryPolicy(max_attempts=2, base_s=0.01)
    with FaultServer(lambda _: Drip(interval_s=0.2)) as server:
        with pytest.raises(BackendTimeoutError) as info:
            rerank(llm(api, server, timeout_s=0.5, retry=retry), mode, ["p"])
        assert server.count == 2
    assert info.value.attempts == 2


@pytest.mark.parametrize("api", APIS)
def test_a_hung_server_fails_at_the_deadline_each_attempt(api: str) -> None:
    with FaultServer(lambda _: Hang(30)) as server:
        with pytest.raises(BackendTimeoutError, match="timed out"):
            llm(api, server, timeout_s=0.3, retry=RetryPolicy(max_attempts=2, base_s=0.01)).rerank("q", ["p"])
        assert server.count == 2


# -- rate limits: every Retry-After form, on 429 and 503 ------------------------------------
def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


@pytest.mark.parametrize(
    ("status", "headers", "at_least"),
    [
        (429, {"Retry-After": "0.3"}, 0.3),
        (429, {"retry-after-ms": "300"}, 0.3),
        (503, {"Retry-After": "0.3"}, 0.3),
        (429, {"Retry-After": "HTTP-DATE"}, 0.9),
    ],
)
def test_retry_after_is_honoured_in_every_form(status: int, headers: dict[str, str], at_least: float) -> None:
    def handler(_: WireRequest) -> FaultResponse:
        if server.count > 1:
            return GOOD
        sent = {k: (_http_date(2.0) if v == "HTTP-DATE" else v) for k, v in headers.items()}
        return Fault(status, "busy", headers=sent)

    retry = RetryPolicy(max_attempts=3, base_s=0.001, max_wait_s=3.0)
    with FaultServer(handler) as server:
        ranking = llm("openai", server, retry=retry).rerank("q", ["p"])
        assert server.count == 2
        assert server.arrivals[1] - server.arrivals[0] >= at_least
    assert ranking.calls[0].attempts == 2


@pytest.mark.parametrize("header", ["120", "HTTP-DATE"])
def test_a_retry_after_over_the_bound_fails_and_says_so(header: str) -> None:
    value = _http_date(120) if header == "HTTP-DATE" else header
    with FaultServer(lambda _: Fault(429, "busy", headers={"Retry-After": value})) as server:
        with pytest.raises(
            RateLimitError, match=r"asked to wait 1[12]\d\.\ds .* over the retry bound of 1s"
        ) as info:
            llm("openai", server).rerank("q", ["p"])
        assert server.count == 1
    assert (info.value.status_code, info.value.attempts) == (429, 1)


# -- refusals keep their text ----------------------------------------------------------------
@pytest.mark.parametrize("api", APIS)
def test_a_refusal_is_reasked_then_kept_in_the_parse_error(api: str) -> None:
    with FaultServer(lambda _: Refusal("I can't help with that request.")) as server:
        with pytest.raises(ParseError, match="can't help") as info:
            llm(api, server).rerank("q", ["p"])
        assert server.count == 3  # the question and two re-asks
    assert "I can't help" in info.value.raw


# -- 2: a failing call stops its siblings -------------------------------------------------------
def _one_bad_of_many(bad: str) -> Callable[[WireRequest], FaultResponse]:
    def handler(request: WireRequest) -> FaultResponse:
        if f"\n{bad}\n" in request.user_text:
            return Fault(400, "bad request")
        return Hang(0.3, then=GOOD)

    return handler


def _passages(n: int) -> list[str]:
    return [f"passage number {i}" for i in range(n)]


def test_async_a_failing_call_cancels_its_siblings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "llmrerank")
    handler = _one_bad_of_many("passage number 3")

    async def scenario(server: FaultServer) -> tuple[int, int, int]:
        reranker = llm("openai", server, max_concurrency=8)
        with pytest.raises(TerminalBackendError, match="HTTP 400"):
            await reranker.arerank("q", _passages(20))
        left = len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])
        await asyncio.sleep(0.8)  # requests already on the wire may still be counted by the server
        settled = server.count
        await asyncio.sleep(0.8)
        return settled, server.count, left

    with FaultServer(handler) as server:
        settled, later, pending = asyncio.run(scenario(server))
    # nothing new is sent once the error is raised: the limit, plus the one let in as the
    # failure freed its slot (before the fix: 25 requests for 20 passages, tasks left running)
    assert settled == later <= 9
    assert pending == 0
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_sync_a_failing_call_stops_the_pool() -> None:
    """Siblings that would retry (503s) stop before their next attempt once one call fails."""

    def handler(request: WireRequest) -> FaultResponse:
        if "\npassage number 3\n" in request.user_text:
            return Fault(400, "bad request", delay_s=0.05)
        return Fault(503, "overloaded", delay_s=0.2)

    retry = RetryPolicy(max_attempts=5, base_s=0.01, max_wait_s=0.05)
    with FaultServer(handler) as server:
        with pytest.raises(TerminalBackendError, match="HTTP 400"):
            llm("openai", server, max_concurrency=4, retry=retry).rerank("q", _passages(20))
        at_raise = server.count
        time.sleep(0.8)
        assert server.count == at_raise <= 8


# -- 3: one concurrency limit per backend, across calls, threads and loops --------------------------
def test_the_limit_holds_across_concurrent_async_calls() -> None:
    with FaultServer(lambda _: Hang(0.05, then=GOOD)) as server:
        reranker = llm("openai", server, max_concurrency=4)

        async def many() -> None:
            await asyncio.gather(*(reranker.arerank("q", _passages(5)) for _ in range(10)))

        asyncio.run(many())
        assert server.count == 50
        assert 2 <= server.max_in_flight <= 4


def test_the_limit_holds_across_threads_and_event_loops() -> None:
    with FaultServer(lambda _: Hang(0.05, then=GOOD)) as server:
        reranker = llm("openai", server, max_concurrency=4)
        errors: list[BaseException] = []

        def sync_user() -> None:
            try:
                reranker.rerank("q", _passages(6))
            except BaseException as exc:
                errors.append(exc)

        def loop_user() -> None:  # 4: one backend, a thread per event loop
            try:
                asyncio.run(reranker.arerank("q", _passages(6)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in [sync_user] * 5 + [loop_user] * 3]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert server.count == 48
        assert 2 <= server.max_in_flight <= 4


# -- 5: a stage budget stops its work ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stage_budget_stops_all_further_requests(mode: str) -> None:
    patient = RetryPolicy(max_attempts=50, base_s=0.05, max_wait_s=0.1)
    with FaultServer(lambda _: Fault(503, "overloaded", delay_s=0.1)) as server:
        cascade = Cascade([Stage(llm("openai", server, retry=patient), timeout_s=0.6)])
        ranking = rerank(cascade, mode, ["a", "b"])
        at_return = server.count
        time.sleep(1.0)
        assert server.count == at_return
    assert ranking.degraded  # type: ignore[attr-defined]
    assert "timeout after 0.6s" in (ranking.degraded_reason or "")  # type: ignore[attr-defined]


def test_the_budget_error_is_a_stage_timeout() -> None:
    from llmrerank.rerankers._budget import run_with_budget

    with pytest.raises(StageTimeoutError):
        run_with_budget(lambda: time.sleep(1), 0.05)


# -- 13: the endpoint is in the cache key; an environment key stays on its host --------------------
def test_env_base_urls_never_receive_the_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    with FaultServer(lambda _: GOOD) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        LLMReranker(OpenAIBackend("m"), retry=FAST).rerank("q", ["p"])
        LLMReranker(AnthropicBackend("m"), retry=FAST).rerank("q", ["p"])
        sent = [r.headers for r in server.requests]
    assert "sk-openai-secret" not in sent[0].get("authorization", "")
    assert "sk-ant-secret" not in sent[1].get("x-api-key", "")
    assert all("secret" not in value for headers in sent for value in headers.values())


def test_the_endpoint_used_is_part_of_the_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DiskCache(tmp_path / "cache")
    with FaultServer(lambda _: GOOD) as first, FaultServer(lambda _: Reply('{"grade": 1}')) as second:
        monkeypatch.setenv("OPENAI_BASE_URL", first.openai_base_url)
        LLMReranker(OpenAIBackend("m"), cache=cache, retry=FAST).rerank("q", ["p"])
        monkeypatch.setenv("OPENAI_BASE_URL", second.openai_base_url)
        ranking = LLMReranker(OpenAIBackend("m"), cache=cache, retry=FAST).rerank("q", ["p"])
        monkeypatch.setenv("OPENAI_BASE_URL", first.openai_base_url)
        again = LLMReranker(OpenAIBackend("m"), cache=cache, retry=FAST).rerank("q", ["p"])
        assert (first.count, second.count) == (1, 1)
    assert ranking[0].stage_scores == {"llm": 1.0}
    assert not ranking.calls[0].cached
    assert again.calls[0].cached
    assert again[0].stage_scores == {"llm": 3.0}


# -- the CLI against every fault: a clean exit, no traceback, every line answered --------------------
CLI_FAULTS: dict[str, FaultResponse] = {
    **BAD_BODIES,
    "reset": ResetMidBody(),
    "drip": Drip(interval_s=0.2),
    "hang": Hang(60),
    "429-over-bound": Fault(429, "busy", headers={"Retry-After": "3600"}),
    "503": Fault(503, "overloaded"),
    "400": Fault(400, "bad request"),
    "refusal": Refusal(),
}


CLI = [sys.executable, "-c", "from llmrerank.cli import main; main()", "rerank", "--model", "openai:m"]
CLI += ["--no-cache", "--llm-timeout", "1"]


def _fault_named_by_the_query(request: WireRequest) -> FaultResponse:
    query = request.user_text.split("<query>", 1)[1].split("</query>", 1)[0]
    return CLI_FAULTS[query.strip()]


def test_the_cli_survives_every_fault() -> None:
    """One CLI run, one input line per fault (the query names it): every line gets its
    ranking in input order, degraded, and the process exits cleanly once it is done."""
    candidates = [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}]
    lines = "".join(json.dumps({"query": name, "candidates": candidates}) + "\n" for name in CLI_FAULTS)
    with FaultServer(_fault_named_by_the_query) as server:
        run = subprocess.run(
            [*CLI, "--base-url", server.openai_base_url],
            input=lines,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,  # a process held up by abandoned calls would take minutes
        )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    rankings = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["query"] for r in rankings] == list(CLI_FAULTS)
    for ranking in rankings:
        assert ranking["degraded"], ranking["query"]
        assert [item["id"] for item in ranking["ranking"]] == ["a", "b"], ranking["query"]
