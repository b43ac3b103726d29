"""The real OpenAI and Anthropic SDKs over real HTTP, against the local wire-format server."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from llmrerank import DiskCache, LLMReranker, ParseError, UserError
from llmrerank.backends import AnthropicBackend, Endpoint, OpenAIBackend, make_backend
from llmrerank.backends.base import BackendRequest
from llmrerank.errors import BackendTimeoutError, RateLimitError, TerminalBackendError, TransientBackendError
from llmrerank.retry import RetryPolicy
from llmrerank.testing import Fault, Hang, Reply, WireServer, always, scripted

FAST = RetryPolicy(max_attempts=3, base_s=0.01, max_wait_s=2.0)
GRADE_REQUEST = BackendRequest(
    messages=[{"role": "system", "content": "judge"}, {"role": "user", "content": "grade it"}],
    schema_name="relevance_grade",
    schema={
        "type": "object",
        "properties": {"grade": {"type": "integer", "enum": [0, 1, 2, 3]}},
        "required": ["grade"],
        "additionalProperties": False,
    },
    max_tokens=16,
)


def test_openai_request_shape_structured_output_and_usage() -> None:
    with WireServer(always('{"grade": 2}')) as server:
        backend = OpenAIBackend("gpt-test", base_url=server.openai_base_url)
        reply = backend.complete(GRADE_REQUEST)
        (request,) = server.requests
    assert reply.text == '{"grade": 2}'
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    body = request.body
    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0.0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "relevance_grade"
    assert body["messages"][0] == {"role": "system", "content": "judge"}


def test_a_custom_base_url_never_receives_the_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-do-not-send")
    with WireServer(always('{"grade": 1}')) as server:
        OpenAIBackend("m", base_url=server.openai_base_url).complete(GRADE_REQUEST)
        (request,) = server.requests
    assert "sk-secret-do-not-send" not in str(request.headers)


@pytest.fixture
def provider_hosts_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """api.openai.com and api.anthropic.com resolve to 127.0.0.1 in this process, so the real
    SDKs reach the local wire server under the providers' own host names."""
    resolve = socket.getaddrinfo

    def to_loopback(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower() in ("api.openai.com", "api.anthropic.com"):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", to_loopback)


@pytest.mark.parametrize("via", ["base_url", "environment"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_an_environment_key_never_travels_over_plain_http_even_to_its_provider(
    api: str, via: str, monkeypatch: pytest.MonkeyPatch, provider_hosts_on_loopback: None
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-secret")
    backend_class = OpenAIBackend if api == "openai" else AnthropicBackend
    with WireServer(always('{"grade": 1}')) as server:
        port = urlsplit(server.url).port
        url = f"http://api.openai.com:{port}/v1" if api == "openai" else f"http://API.Anthropic.com:{port}"
        if via == "environment":
            monkeypatch.setenv(f"{api.upper()}_BASE_URL", url)
        backend = backend_class("m", base_url=url if via == "base_url" else None)
        backend.complete(GRADE_REQUEST)
        # a key the caller passes goes where the caller sends it, over any scheme
        backend_class("m", base_url=url, api_key="sk-explicit").complete(GRADE_REQUEST)
        plain, explicit = server.requests
    assert plain.headers["host"].lower().startswith(f"api.{api}.com:")  # the provider's host name
    assert "env-secret" not in str(plain.headers)
    assert backend.provider == ("openai-compatible" if api == "openai" else "anthropic")
    assert "sk-explicit" in str(explicit.headers)


def test_an_environment_key_goes_over_https_to_its_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-secret")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    assert Endpoint.for_api("openai").api_key == "sk-openai-env-secret"
    assert Endpoint.for_api("openai", base_url="HTTPS://api.openai.com/v1").api_key == "sk-openai-env-secret"
    assert Endpoint.for_api("anthropic").api_key == "sk-ant-env-secret"
    assert Endpoint.for_api("openai", base_url="https://api.openai.com.evil.test/v1").api_key == "not-needed"


def test_official_openai_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")
    with pytest.raises(UserError, match="unknown backend prefix"):
        make_backend("cohere:rerank")
    with pytest.raises(UserError, match="must look like"):
        make_backend("gpt-4o-mini")


def test_anthropic_forced_tool_and_temperature_in_body() -> None:
    with WireServer(always('{"grade": 3}')) as server:
        backend = AnthropicBackend("claude-test", base_url=server.anthropic_base_url)
        reply = backend.complete(GRADE_REQUEST)
        (request,) = server.requests
    assert reply.text == '{"grade": 3}'
    assert reply.usage.prompt_tokens > 0
    body = request.body
    assert body["system"] == "judge"
    assert body["temperature"] == 0.0
    assert body["tool_choice"] == {"type": "tool", "name": "relevance_grade"}
    assert body["tools"][0]["input_schema"]["properties"]["grade"]["enum"] == [0, 1, 2, 3]
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_anthropic_native_json_schema_mode() -> None:
    with WireServer(always('{"grade": 0}')) as server:
        backend = AnthropicBackend(
            "claude-test", base_url=server.anthropic_base_url, structured_output="json_schema"
        )
        assert backend.complete(GRADE_REQUEST).text == '{"grade": 0}'
        (request,) = server.requests
    assert request.body["output_config"]["format"]["type"] == "json_schema"
    assert "tools" not in request.body


@pytest.mark.parametrize("backend_class", [OpenAIBackend, AnthropicBackend])
def test_429_with_retry_after_then_success(backend_class: type) -> None:
    handler = scripted(Fault(429, "slow down", headers={"Retry-After": "0.2"}), Reply('{"grade": 2}'))
    with WireServer(handler) as server:
        url = server.openai_base_url if backend_class is OpenAIBackend else server.anthropic_base_url
        retry = RetryPolicy(max_attempts=3, base_s=0.001, max_wait_s=1.0)
        ranking = LLMReranker(backend_class("m", base_url=url), retry=retry).rerank("q", ["p"])
    (call,) = ranking.calls
    assert call.attempts == 2
    assert ranking[0].stage_scores == {"llm": 2.0}


def test_rate_limit_error_carries_retry_after() -> None:
    with WireServer(scripted(Fault(429, "busy", headers={"Retry-After": "7"}))) as server:
        backend = OpenAIBackend("m", base_url=server.openai_base_url)
        with pytest.raises(RateLimitError) as info:
            backend.complete(GRADE_REQUEST)
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize("backend_class", [OpenAIBackend, AnthropicBackend])
def test_server_errors_are_retried_then_raised(backend_class: type) -> None:
    with WireServer(scripted(Fault(500, "boom"))) as server:
        url = server.openai_base_url if backend_class is OpenAIBackend else server.anthropic_base_url
        reranker = LLMReranker(backend_class("m", base_url=url), retry=FAST)
        with pytest.raises(TransientBackendError, match="HTTP 500"):
            reranker.rerank("q", ["p"])
        assert len(server.requests) == 3


@pytest.mark.parametrize(("status", "word"), [(400, "bad"), (401, "unauthorized"), (404, "no such")])
def test_terminal_errors_raise_at_once_with_the_provider_message(status: int, word: str) -> None:
    with WireServer(scripted(Fault(status, f"{word} thing"))) as server:
        reranker = LLMReranker(OpenAIBackend("m", base_url=server.openai_base_url), retry=FAST)
        with pytest.raises(TerminalBackendError, match=f"HTTP {status}: .*{word} thing"):
            reranker.rerank("q", ["p"])
        assert len(server.requests) == 1


def test_a_hung_server_times_out_per_call() -> None:
    with WireServer(scripted(Hang(5.0))) as server:
        backend = OpenAIBackend("m", base_url=server.openai_base_url, timeout_s=0.3)
        reranker = LLMReranker(backend, retry=RetryPolicy(max_attempts=2, base_s=0.01))
        with pytest.raises(BackendTimeoutError, match="timed out"):
            reranker.rerank("q", ["p"])
        assert len(server.requests) == 2


def test_malformed_then_reask_then_success_over_http() -> None:
    handler = scripted(Reply("It is quite relevant."), Reply('{"grade": 3}'))
    with WireServer(handler) as server:
        reranker = LLMReranker(OpenAIBackend("m", base_url=server.openai_base_url))
        ranking = reranker.rerank("q", ["p"])
        second = server.requests[1].body["messages"]
    assert ranking.calls[0].reasks == 1
    assert second[-2] == {"role": "assistant", "content": "It is quite relevant."}
    assert "no JSON object" in second[-1]["content"]


def test_malformed_forever_is_a_parse_error_over_http() -> None:
    with WireServer(always("no idea")) as server:
        reranker = LLMReranker(OpenAIBackend("m", base_url=server.openai_base_url), max_reasks=1)
        with pytest.raises(ParseError) as info:
            reranker.rerank("q", ["p"])
    assert info.value.raw == "no idea"


def test_pointwise_logprobs_give_expected_grades() -> None:
    def top(grade_probs: dict[str, float]) -> list[dict[str, object]]:
        import math

        best = max(grade_probs, key=grade_probs.__getitem__)
        return [
            {"token": '{"grade": ', "logprob": 0.0, "top_logprobs": []},
            {
                "token": best,
                "logprob": math.log(grade_probs[best]),
                "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in grade_probs.items()],
            },
            {"token": "}", "logprob": 0.0, "top_logprobs": []},
        ]

    replies = {
        "alpha": Reply('{"grade": 2}', logprobs=top({"2": 0.6, "3": 0.4})),
        "beta": Reply('{"grade": 2}', logprobs=top({"2": 0.9, "1": 0.1})),
    }

    def handler(request: object) -> Reply:
        text = request.user_text  # type: ignore[attr-defined]
        return replies["alpha" if "alpha" in text else "beta"]

    from llmrerank.strategies import Pointwise

    with WireServer(handler) as server:
        backend = OpenAIBackend("m", base_url=server.openai_base_url)
        ranking = LLMReranker(backend, strategy=Pointwise(use_logprobs=True)).rerank(
            "q", ["beta passage", "alpha passage"]
        )
        assert server.requests[0].body["logprobs"] is True
    assert [item.text for item in ranking] == ["alpha passage", "beta passage"]
    assert ranking[0].stage_scores["llm"] == pytest.approx(2.4)
    assert ranking[1].stage_scores["llm"] == pytest.approx(1.9)


def test_cache_makes_the_second_run_free_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    with WireServer(always('{"grade": 2}')) as server:
        code = (
            "import sys; from llmrerank import LLMReranker, DiskCache; "
            "from llmrerank.backends import OpenAIBackend; "
            "b = OpenAIBackend('m', base_url=sys.argv[1]); "
            "r = LLMReranker(b, cache=DiskCache(sys.argv[2])); "
            "print(sum(c.usage.total_tokens for c in r.rerank('q', ['a', 'b']).calls))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, server.openai_base_url, str(tmp_path)],
            check=True,
            capture_output=True,
            text=True,
        )
        assert int(out.stdout) > 0
        assert len(server.requests) == 2
        backend = OpenAIBackend("m", base_url=server.openai_base_url)
        ranking = LLMReranker(backend, cache=DiskCache(tmp_path)).rerank("q", ["a", "b"])
        assert len(server.requests) == 2
    assert all(call.cached for call in ranking.calls)
    assert ranking.usage.total_tokens == 0


def test_async_path_over_http() -> None:
    with WireServer(always('{"grade": 1}')) as server:
        reranker = LLMReranker(OpenAIBackend("m", base_url=server.openai_base_url), max_concurrency=4)
        ranking = asyncio.run(reranker.arerank("q", [f"p{i}" for i in range(10)], top_k=3))
        assert len(server.requests) == 10
    assert len(ranking) == 3


@pytest.mark.parametrize("backend_class", [OpenAIBackend, AnthropicBackend])
def test_a_runtime_error_from_the_sdk_is_a_backend_error(backend_class: type) -> None:
    """E.g. a client bound to another event loop: the cascade can fall back on it."""

    async def foreign_loop(**_: object) -> None:
        raise RuntimeError("<Queue> is bound to a different event loop")

    backend = backend_class("m", base_url="http://127.0.0.1:9")

    async def call() -> None:
        client = backend.clients.for_running_loop()
        if backend_class is OpenAIBackend:
            client.chat.completions.create = foreign_loop
        else:
            client.messages.create = foreign_loop
        await backend.acomplete(GRADE_REQUEST)

    with pytest.raises(TerminalBackendError, match="different event loop") as info:
        asyncio.run(call())
    assert info.value.provider == backend.provider
