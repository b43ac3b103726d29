"""Stage kinds come from an open registry, and ``rerank-api`` narrows through a rerank server
over real HTTP: ``llmrerank serve`` (the Cohere wire, a dense-only pipeline: the same order
as the local dense stage), a TEI test server (batching, Retry-After, exhausted retries and
timeouts that degrade the cascade, the score cache, the key rule) and, where installed,
Infinity serving the shipped cross-encoder. Long because each server's cases sit together."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrerank import DiskCache, PipelineSpec, UserError
from llmrerank.errors import BackendError, RateLimitError, TerminalBackendError
from llmrerank.pipeline import build_stage
from llmrerank.rerankers.cross_encoder import CrossEncoderReranker
from llmrerank.rerankers.dense import DenseReranker
from llmrerank.rerankers.protocol import FirstStage
from llmrerank.rerankers.remote import RemoteReranker, rerank_endpoint
from llmrerank.retry import RetryPolicy, retried_failures
from llmrerank.serve.process import ServiceProcess, free_port
from llmrerank.stages import register_stage, stage_kinds
from llmrerank.testing.server import Fault, Hang
from llmrerank.testing.tei_server import Scores, TEIServer, in_order, word_overlap

from .conftest import TrecQuery

Dl19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]

QUERY = "how do solar panels make electricity"
PASSAGES = [
    "Solar panels make electricity from sunlight with photovoltaic cells.",
    "A recipe for lemon cake with butter and sugar.",
    "How panels are installed on a roof.",
    "Electricity prices rose this winter.",
    "Photovoltaic cells in solar panels make electricity when light hits them: how it works.",
    "The history of the bicycle.",
    "Do solar farms make money?",
    "Wind turbines make electricity too.",
    "Cats sleep most of the day.",
    "How solar panels make electricity, explained for kids.",
]
CANDIDATES = [{"id": f"p{i}", "text": text} for i, text in enumerate(PASSAGES)]


def expected_order(query: str = QUERY) -> list[str]:
    scores = [word_overlap(query, text) for text in PASSAGES]
    return [f"p{i}" for i in sorted(range(len(PASSAGES)), key=lambda i: (-scores[i], i))]


# -- the registry ------------------------------------------------------------------------
class Reverse:
    """A stage kind a package might add: the candidates in reverse order."""

    uses_llm = False
    name = "reverse"

    def rerank(self, query: str, candidates: Any, *, top_k: int | None = None) -> Any:
        return FirstStage().rerank(query, list(reversed(list(candidates))), top_k=top_k)

    async def arerank(self, query: str, candidates: Any, *, top_k: int | None = None) -> Any:
        return self.rerank(query, candidates, top_k=top_k)


def reverse_stage(model: str, /, *, cache: DiskCache | None = None, **options: Any) -> Reverse:
    return Reverse()


def test_an_unknown_kind_names_every_registered_kind() -> None:
    with pytest.raises(UserError, match=r"unknown stage kind 'bm25'.*ce, cross-encoder, dense, rerank-api"):
        build_stage("bm25:")
    with pytest.raises(UserError, match="needs a colon"):
        build_stage("dense")


def test_a_registered_kind_builds_in_a_pipeline() -> None:
    register_stage("reverse-test", reverse_stage, replace=True)
    assert "reverse-test" in stage_kinds()
    ranking = PipelineSpec(narrow_with=("reverse-test:",)).build().rerank("q", ["a", "b", "c"])
    assert [item.candidate.text for item in ranking.items] == ["c", "b", "a"]
    with pytest.raises(UserError, match="already registered"):
        register_stage("reverse-test", lambda model, **options: Reverse())
    with pytest.raises(UserError, match="non-empty name"):
        register_stage("bad:kind", reverse_stage)


def test_an_installed_package_adds_a_kind_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reverse_stage_pkg.py").write_text(
        "from llmrerank.rerankers.protocol import FirstStage\n"
        "class Reverse(FirstStage):\n"
        "    name = 'reverse'\n"
        "    def rerank(self, query, candidates, *, top_k=None):\n"
        "        return super().rerank(query, list(reversed(list(candidates))), top_k=top_k)\n"
        "def factory(model, /, *, cache=None, **options):\n"
        "    return Reverse()\n"
    )
    info = tmp_path / "reverse_stage_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: reverse-stage-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[llmrerank.stages]\nreverse-ep = reverse_stage_pkg:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "reverse-ep" in stage_kinds()
    ranking = build_stage("reverse-ep:").rerank("q", ["a", "b"])
    assert [item.candidate.text for item in ranking.items] == ["b", "a"]


def test_the_built_in_kinds_still_build() -> None:
    assert isinstance(build_stage("dense:?batch_size=8"), DenseReranker)
    assert build_stage("ce:").name == "cross-encoder"
    with pytest.raises(UserError, match="unexpected keyword argument 'nope'"):
        build_stage("dense:?nope=1")


# -- the spec and its options --------------------------------------------------------------
def test_endpoints_by_wire() -> None:
    assert rerank_endpoint("http://h:1", "cohere") == "http://h:1/v1/rerank"
    assert rerank_endpoint("https://api.jina.ai/v1/", "cohere") == "https://api.jina.ai/v1/rerank"
    assert rerank_endpoint("https://api.cohere.com/v2/rerank", "cohere") == "https://api.cohere.com/v2/rerank"
    assert rerank_endpoint("http://h:1", "tei") == "http://h:1/rerank"
    with pytest.raises(UserError, match="wire must be one of"):
        rerank_endpoint("http://h:1", "grpc")
    with pytest.raises(UserError, match="not an http"):
        build_stage("rerank-api:ftp://h?model=m")
    with pytest.raises(UserError, match="needs a model"):
        build_stage("rerank-api:http://h:1")


def test_a_key_never_rides_a_spec_nor_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="api_key_env=NAME"):
        build_stage("rerank-api:https://h?model=m&api_key=sk-secret")
    monkeypatch.setenv("RERANK_TEST_KEY", "sk-secret")
    with pytest.raises(UserError, match=r"only over https or to 127\.0\.0\.1") as refused:
        build_stage("rerank-api:http://rerank.internal:8080?model=m&api_key_env=RERANK_TEST_KEY")
    assert "sk-secret" not in str(refused.value)
    assert isinstance(build_stage("rerank-api:https://h?model=m&api_key_env=RERANK_TEST_KEY"), RemoteReranker)
    monkeypatch.delenv("RERANK_TEST_KEY")
    with pytest.raises(UserError, match="RERANK_TEST_KEY is not set"):
        build_stage("rerank-api:https://h?model=m&api_key_env=RERANK_TEST_KEY")


# -- the TEI wire --------------------------------------------------------------------------
@pytest.fixture
def tei() -> Iterator[TEIServer]:
    with TEIServer(max_client_batch_size=4) as server:
        yield server


def test_tei_batches_within_the_servers_limit_and_merges_the_scores(tei: TEIServer) -> None:
    stage = build_stage(f"rerank-api:{tei.url}?wire=tei&max_batch=4&raw_scores=true")
    ranking = stage.rerank(QUERY, CANDIDATES)
    assert [item.id for item in ranking.items] == expected_order()
    assert sorted(len(r.texts) for r in tei.requests) == [2, 4, 4]  # sent concurrently
    assert all(r.body["raw_scores"] is True and r.query == QUERY for r in tei.requests)
    by_id = {item.id: item.stage_scores["rerank-api"] for item in ranking.items}
    assert by_id["p0"] == pytest.approx(word_overlap(QUERY, PASSAGES[0]))


async def test_tei_async_gives_the_same_ranking(tei: TEIServer) -> None:
    stage = build_stage(f"rerank-api:{tei.url}?wire=tei&max_batch=3&max_concurrency=2")
    ranking = await stage.arerank(QUERY, CANDIDATES, top_k=3)
    assert [item.id for item in ranking.items] == expected_order()[:3]
    assert tei.count == 4


def test_a_batch_over_the_servers_limit_is_a_terminal_error_naming_max_batch(tei: TEIServer) -> None:
    stage = RemoteReranker(tei.url, wire="tei", max_batch=10)
    with pytest.raises(TerminalBackendError, match=r"413.*maximum allowed batch size 4.*max_batch") as failed:
        stage.rerank(QUERY, CANDIDATES)
    assert failed.value.attempts == 1


def test_a_429_with_retry_after_is_waited_for_then_succeeds() -> None:
    handler = in_order(Fault(429, "Model is overloaded", headers={"Retry-After": "1"}), Scores())
    seen: list[BackendError] = []
    with TEIServer(handler) as server:
        stage = RemoteReranker(server.url, wire="tei", retry=RetryPolicy(base_s=0.01))
        context = retried_failures.set(seen)
        try:
            ranking = stage.rerank(QUERY, CANDIDATES)
        finally:
            retried_failures.reset(context)
        assert server.count == 2
    assert [item.id for item in ranking.items] == expected_order()
    assert len(seen) == 1
    assert isinstance(seen[0], RateLimitError)
    assert seen[0].retry_after == 1.0


def test_a_500_that_exhausts_the_retries_degrades_the_cascade_with_its_reason() -> None:
    with TEIServer(lambda request: Fault(500, "inference failed")) as server:
        spec = PipelineSpec(
            narrow_with=(f"rerank-api:{server.url}?wire=tei&max_attempts=2", "dense:"), narrow_to=(5, 3)
        )
        ranking = spec.build().rerank(QUERY, CANDIDATES)
        assert server.count == 2
    assert ranking.degraded
    assert ranking.degraded_reason is not None
    assert "stage 'rerank-api'" in ranking.degraded_reason
    assert "HTTP 500: inference failed (after 2 attempts)" in ranking.degraded_reason
    assert ranking.stages[0].degraded_reason == ranking.degraded_reason
    # the failed stage kept the input order; the dense stage after it still ran on its head
    assert not ranking.stages[1].degraded_reason
    assert {item.id for item in ranking.items[:3]} <= {f"p{i}" for i in range(5)}


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_slow_server_times_out_and_degrades(use_async: bool) -> None:
    with TEIServer(lambda request: Hang(30)) as server:
        cascade = PipelineSpec(
            narrow_with=(f"rerank-api:{server.url}?wire=tei&timeout_s=0.5&max_attempts=2",)
        ).build()
        if use_async:
            ranking = await cascade.arerank(QUERY, CANDIDATES)
        else:
            ranking = cascade.rerank(QUERY, CANDIDATES)
        assert server.count == 2
    assert ranking.degraded
    assert "within 0.5s" in (ranking.degraded_reason or "")
    assert [item.id for item in ranking.items] == [c["id"] for c in CANDIDATES]


def test_scores_are_cached_by_content(tei: TEIServer, tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache")
    spec = f"rerank-api:{tei.url}?wire=tei&max_batch=4"
    first = build_stage(spec, cache=cache).rerank(QUERY, CANDIDATES)
    sent = tei.count
    again = build_stage(spec, cache=cache)
    assert isinstance(again, RemoteReranker)
    second = again.rerank(QUERY, CANDIDATES)
    assert tei.count == sent, "a second call makes no HTTP request"
    assert again.cache_hits == len(CANDIDATES)
    assert [i.id for i in second.items] == [i.id for i in first.items]
    assert [i.stage_scores for i in second.items] == [i.stage_scores for i in first.items]
    # a new passage is the only text sent; another query or raw_scores is another key
    again.rerank(QUERY, [*CANDIDATES, {"id": "new", "text": "solar panels"}])
    assert tei.count == sent + 1
    assert tei.requests[-1].texts == ["solar panels"]
    again.rerank("another query", CANDIDATES[:2])
    build_stage(spec + "&raw_scores=true", cache=cache).rerank(QUERY, CANDIDATES[:2])
    assert tei.count == sent + 3


def test_the_key_goes_to_a_loopback_server_as_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEI_TEST_KEY", "tei-key-81f3")
    with TEIServer(api_key="tei-key-81f3") as server:
        ranking = build_stage(f"rerank-api:{server.url}?wire=tei&api_key_env=TEI_TEST_KEY").rerank(
            QUERY, CANDIDATES
        )
        assert [item.id for item in ranking.items] == expected_order()
        unkeyed = PipelineSpec(narrow_with=(f"rerank-api:{server.url}?wire=tei",)).build()
        refused = unkeyed.rerank(QUERY, CANDIDATES)
        assert server.count == 2, "a 401 is terminal: not retried"
    assert refused.degraded
    assert "HTTP 401" in (refused.degraded_reason or "")


# -- the Cohere wire against llmrerank serve ------------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("remote-serve")
    config = {
        "default": "dense-only",
        "cache_dir": str(workdir / "cache"),
        "pipelines": {"dense-only": {"narrow_with": ["dense:"]}},
    }
    with ServiceProcess(config, workdir) as running:
        yield running


def test_serve_as_a_remote_stage_orders_as_the_local_dense_stage(service: ServiceProcess, dl19: Dl19) -> None:
    query = dl19[0][0]
    candidates = query.candidates[:30]
    local = DenseReranker().rerank(query.query, candidates)
    remote = build_stage(f"rerank-api:{service.url}?model=dense-only").rerank(query.query, candidates)
    assert [item.id for item in remote.items] == [item.id for item in local.items]
    scores = [item.stage_scores["rerank-api"] for item in remote.items]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == 1.0


async def test_serve_narrows_a_cascade_like_the_local_stage(service: ServiceProcess, dl19: Dl19) -> None:
    query = dl19[0][1]
    candidates = query.candidates[:40]
    remote = PipelineSpec(
        narrow_with=(f"rerank-api:{service.url}/v2?model=dense-only",), narrow_to=(10,)
    ).build()
    local = PipelineSpec(narrow_with=("dense:",), narrow_to=(10,)).build()
    got = await remote.arerank(query.query, candidates)
    want = local.rerank(query.query, candidates)
    assert not got.degraded
    assert [item.id for item in got.items] == [item.id for item in want.items]


def test_a_second_service_narrows_through_the_first(
    service: ServiceProcess, dl19: Dl19, tmp_path: Path
) -> None:
    """The service config path: ``llmrerank serve`` whose pipeline's stage is another one."""
    config = {
        "default": "via-remote",
        "pipelines": {"via-remote": {"narrow_with": [f"rerank-api:{service.url}?model=dense-only"]}},
    }
    query = dl19[0][3]
    docs = [c["text"] for c in query.candidates[:25]]
    body = {"model": "default", "query": query.query, "documents": docs}
    with ServiceProcess(config, tmp_path) as gateway:
        through = httpx.post(f"{gateway.url}/v1/rerank", json=body, timeout=60).json()
    direct = httpx.post(f"{service.url}/v1/rerank", json={**body, "model": "dense-only"}, timeout=60).json()
    assert through["meta"]["degraded"] is False
    assert [r["index"] for r in through["results"]] == [r["index"] for r in direct["results"]]


def test_rank_derived_scores_are_never_merged_across_calls(service: ServiceProcess, dl19: Dl19) -> None:
    query = dl19[0][2]
    cascade = PipelineSpec(narrow_with=(f"rerank-api:{service.url}?model=dense-only&max_batch=5",)).build()
    ranking = cascade.rerank(query.query, query.candidates[:12])
    assert ranking.degraded
    assert "rank-derived scores" in (ranking.degraded_reason or "")
    assert [item.id for item in ranking.items] == [c["id"] for c in query.candidates[:12]]


def test_a_dead_server_degrades_the_cascade() -> None:
    cascade = PipelineSpec(
        narrow_with=(f"rerank-api:http://127.0.0.1:{free_port()}?model=m&max_attempts=2",)
    ).build()
    ranking = cascade.rerank(QUERY, CANDIDATES)
    assert ranking.degraded
    assert "connection failed" in (ranking.degraded_reason or "")


# -- a real self-hosted engine: Infinity ------------------------------------------------------
def infinity_executable() -> str | None:
    """``LLMRERANK_INFINITY`` (the ``infinity_emb`` command of its own venv), else one on PATH.
    infinity-emb 0.0.78 pins sentence-transformers<4, numpy<2, uvicorn<0.33 and click<8.2,
    so it cannot share a venv with ``llmrerank[local,serve]``."""
    configured = os.environ.get("LLMRERANK_INFINITY")
    return configured if configured and Path(configured).is_file() else shutil.which("infinity_emb")


@pytest.fixture(scope="module")
def infinity() -> Iterator[str]:
    executable = infinity_executable()
    if executable is None:
        pytest.skip(
            "infinity-emb is not installed (its pins conflict with llmrerank[local,serve]: install it "
            "in a venv of its own and set LLMRERANK_INFINITY to its infinity_emb command)"
        )
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    env.pop("PYTHONPATH", None)
    model = str(Path(CrossEncoderReranker().model_name))
    args = [executable, "v2", "--model-id", model, "--served-model-name", "minilm-l6-ce", "--host"]
    args += ["127.0.0.1", "--port", str(port), "--engine", "torch", "--device", "cpu"]
    process = subprocess.Popen(
        [*args, "--no-bettertransformer"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"infinity did not start (exit code {process.poll()})")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_infinity_serves_the_shipped_cross_encoder_as_a_remote_stage(infinity: str, dl19: Dl19) -> None:
    query = dl19[0][0]
    candidates = query.candidates[:20]
    local = CrossEncoderReranker(device="cpu", backend="torch").rerank(query.query, candidates)
    stage = build_stage(f"rerank-api:{infinity}/rerank?model=minilm-l6-ce&max_batch=8")
    remote = stage.rerank(query.query, candidates)
    local_prob = {item.id: item.stage_scores["cross-encoder:prob"] for item in local.items}
    remote_score = {item.id: item.stage_scores["rerank-api"] for item in remote.items}
    assert remote_score == pytest.approx(local_prob, abs=1e-3)
    assert [item.id for item in remote.items[:5]] == [item.id for item in local.items[:5]]


def test_a_reply_without_finite_scores_is_malformed_and_degrades() -> None:
    with TEIServer(score=lambda query, text: float("nan")) as server:
        cascade = PipelineSpec(narrow_with=(f"rerank-api:{server.url}?wire=tei&max_attempts=2",)).build()
        ranking = cascade.rerank(QUERY, CANDIDATES)
        assert server.count == 2, "a malformed reply is retried like any transient fault"
    assert ranking.degraded
    assert "not a finite number" in (ranking.degraded_reason or "")
