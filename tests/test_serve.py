"""``llmrerank serve`` as a real process: the official Cohere SDK against it, and plain
httpx for every error path (400, 401, 404, 405, 413, 429, deadline → degraded, LLM failure
→ degraded). Long because one running service (started once, it takes seconds) serves
every case."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest

from llmrerank.serve.process import ServiceProcess
from llmrerank.testing import Fault, Hang, WireServer

from .conftest import TrecQuery

TOKEN = "serve-test-token-5f1c"
DEADLINE_S = 2.0
MAX_BODY_BYTES = 100_000
Dl19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]


@pytest.fixture(scope="module")
def hanging_llm() -> Iterator[WireServer]:
    with WireServer(lambda request: Hang(60)) as server:
        yield server


@pytest.fixture(scope="module")
def failing_llm() -> Iterator[WireServer]:
    with WireServer(lambda request: Fault(500, "the model is down")) as server:
        yield server


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, hanging_llm: WireServer, failing_llm: WireServer
) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("serve")
    config = {
        "default": "sim-pointwise",
        "cache_dir": str(workdir / "cache"),
        "pipelines": {
            "sim-pointwise": {"llm": "sim:dl19", "strategy": "pointwise"},
            "dense-sim": {
                "narrow_with": ["dense:"],
                "narrow_to": 5,
                "llm": "sim:dl19",
                "strategy": "listwise",
            },
            "dense-only": {"narrow_with": ["dense:"]},
            "dense-heapsort": {
                "narrow_with": ["dense:"],
                "narrow_to": 10,
                "llm": "sim:dl19",
                "strategy": "pairwise",
                "strategy_options": {"method": "heapsort"},
            },
            "hanging": {"llm": "openai:m", "base_url": hanging_llm.openai_base_url, "call_timeout_s": 30},
            "failing": {"llm": "openai:m", "base_url": failing_llm.openai_base_url},
        },
        "limits": {
            "deadline_s": DEADLINE_S,
            "llm_concurrency": 1,
            "llm_queue": 0,
            "max_documents": 40,
            "max_document_chars": 5000,
            "max_total_chars": 60_000,
            "max_body_bytes": MAX_BODY_BYTES,
        },
        "auth": {"tokens_env": "SERVE_TEST_TOKENS"},
    }
    with ServiceProcess(config, workdir, env={"SERVE_TEST_TOKENS": f"other-token,{TOKEN}"}) as running:
        yield running


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def _docs(query: TrecQuery, n: int = 12) -> list[str]:
    return [c["text"] for c in query.candidates[:n]]


def _best_grade(dl19: Dl19, query: TrecQuery, docs: list[str], index: int) -> tuple[int, int]:
    qrels = dl19[1][query.qid]
    grades = [qrels.get(c["id"], 0) for c in query.candidates[: len(docs)]]
    return grades[index], max(grades)


def test_cohere_sdk_v1_reranks_a_dl19_query(service: ServiceProcess, dl19: Dl19) -> None:
    query = dl19[0][0]
    docs = _docs(query)
    with httpx.Client(timeout=30) as http:
        co = cohere.Client(api_key=TOKEN, base_url=service.url, httpx_client=http)
        response = co.rerank(
            model="sim-pointwise", query=query.query, documents=docs, top_n=3, return_documents=True
        )
    assert len(response.results) == 3
    top = response.results[0]
    assert top.relevance_score == 1.0
    assert top.document is not None
    assert top.document.text == docs[top.index]
    grade, best = _best_grade(dl19, query, docs, top.index)
    assert grade == best, "the simulated judge is perfect: the top document has the best grade"
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True)


def test_cohere_sdk_v2_default_model_full_ranking(service: ServiceProcess, dl19: Dl19) -> None:
    query = dl19[0][1]
    docs = _docs(query, 8)
    with httpx.Client(timeout=30) as http:
        co = cohere.ClientV2(api_key=TOKEN, base_url=service.url, httpx_client=http)
        response = co.rerank(model="default", query=query.query, documents=docs)
    assert sorted(r.index for r in response.results) == list(range(len(docs)))
    assert response.id


def test_meta_reports_stages_calls_prompt_and_cache(client: httpx.Client, dl19: Dl19) -> None:
    query = dl19[0][2]
    body = {"model": "dense-sim", "query": query.query, "documents": _docs(query, 10), "trace": True}
    first = client.post("/v2/rerank", json=body).json()
    again = client.post("/v2/rerank", json=body).json()
    meta = first["meta"]
    assert [s["name"] for s in meta["stages"]] == ["dense", "llm"]
    assert meta["stages"][0]["kept"] == 5
    assert meta["llm_calls"] >= 1
    assert meta["tokens"]["prompt"] > 0
    assert meta["prompt"]["ref"].startswith("listwise/")
    assert len(meta["prompt"]["sha256"]) == 64
    assert meta["degraded"] is False
    assert "trace" in meta
    assert all("stage_scores" in r for r in first["results"])
    # the second request pays nothing: every call is a cache hit, counted apart
    assert again["meta"]["cached_calls"] == meta["llm_calls"] >= 1
    assert again["meta"]["llm_calls"] == 0
    assert again["meta"]["cost_usd"] == 0
    assert [r["index"] for r in again["results"]] == [r["index"] for r in first["results"]]


def test_documents_as_objects_and_a_local_stage_only(client: httpx.Client) -> None:
    docs = [{"text": "Paris is the capital of France."}, {"text": "Bananas are yellow."}]
    reply = client.post(
        "/v1/rerank", json={"model": "dense-only", "query": "capital of France", "documents": docs}
    )
    assert reply.status_code == 200
    results = reply.json()["results"]
    assert results[0]["index"] == 0
    assert "document" not in results[0]
    assert reply.json()["meta"]["llm_calls"] == 0


def test_models_lists_the_pipelines(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert [m["name"] for m in models["models"]] == [
        "sim-pointwise",
        "dense-sim",
        "dense-only",
        "dense-heapsort",
        "hanging",
        "failing",
    ]
    assert models["default"] == "sim-pointwise"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "nope", "query": "q", "documents": ["a"]}, "sim-pointwise, dense-sim, dense-only"),
        ({"query": "q", "documents": ["a"] * 41}, "max_documents is 40"),
        ({"query": "q", "documents": ["x" * 5001]}, "documents[0] has 5001 characters"),
        ({"query": "q", "documents": ["x" * 4000] * 16}, "max_total_chars"),
        ({"query": "q" * 4001, "documents": ["a"]}, "max_query_chars"),
        ({"query": "q", "documents": []}, "documents is empty"),
        ({"query": "q", "documents": ["a", "  "]}, "documents[1] is empty"),
        ({"documents": ["a"]}, "query: Field required"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": "q", "documents": ["a"], "rubric": "nope"}, "unknown rubric 'nope'"),
        (
            {"model": "dense-only", "query": "q", "documents": ["a"], "prompt": "pointwise/x@1"},
            "no LLM stage",
        ),
        ({"query": "q", "documents": ["a"], "prompt": "no/such@9"}, "no/such"),
        ({"query": "q", "documents": ["a"], "prompt": "../../etc/passwd"}, "is not a prompt ref"),
    ],
)
def test_bad_requests_are_400_saying_why(client: httpx.Client, body: dict[str, Any], says: str) -> None:
    reply = client.post("/v1/rerank", json=body)
    assert reply.status_code == 400, reply.text
    assert says in reply.json()["message"]


def test_invalid_json_is_400(client: httpx.Client) -> None:
    reply = client.post("/v1/rerank", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert "JSON" in reply.json()["message"]


def test_a_body_nested_too_deeply_is_400_not_a_crash(client: httpx.Client) -> None:
    # 2.2 KB of brackets: deeper than Python's recursion limit lets json decode
    nested = b"[" * 1100 + b"]" * 1100
    body = b'{"query": "q", "documents": ' + nested + b"}"
    reply = client.post("/v1/rerank", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"] == "the body is nested too deeply"
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("POST", "/v3/rerank", 404, "no route /v3/rerank; this service has /v1/rerank, /v2/rerank"),
        ("GET", "/nowhere", 404, "no route /nowhere"),
        ("GET", "/v1/rerank", 405, "GET is not allowed on /v1/rerank; use POST"),
        ("DELETE", "/readyz", 405, "DELETE is not allowed on /readyz"),
    ],
)
def test_unknown_routes_and_methods_answer_json(
    client: httpx.Client, method: str, path: str, status: int, says: str
) -> None:
    reply = client.request(method, path)
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    assert says in reply.json()["message"]
    if status == 405:
        assert "POST" in reply.headers["allow"] or "GET" in reply.headers["allow"]


def test_a_body_over_max_body_bytes_is_413_before_it_is_read(client: httpx.Client) -> None:
    oversized = b'{"query": "q", "documents": ["' + b"x" * MAX_BODY_BYTES + b'"]}'
    reply = client.post("/v1/rerank", content=oversized, headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert reply.json()["message"] == (
        f"the body has {len(oversized)} bytes; max_body_bytes is {MAX_BODY_BYTES}"
    )


def test_a_streamed_body_over_max_body_bytes_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"query": "q", "documents": ["'
        for _ in range(MAX_BODY_BYTES // 10_000 + 1):
            yield b"x" * 10_000
        yield b'"]}'

    reply = client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert f"over {MAX_BODY_BYTES} bytes" in reply.json()["message"]
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
def test_auth_refuses_missing_or_wrong_tokens(service: ServiceProcess, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    reply = httpx.post(f"{service.url}/v1/rerank", json={"query": "q", "documents": ["a"]}, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{service.url}/v1/models", headers=headers).status_code == 401


def test_probes_need_no_token(service: ServiceProcess) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["ready"] is True
    assert all(ready["llm_reachable"].values())


def test_a_hanging_llm_degrades_at_the_deadline(client: httpx.Client) -> None:
    docs = ["first passage", "second passage", "third passage"]
    started = time.monotonic()
    reply = client.post(
        "/v1/rerank", json={"model": "hanging", "query": "q", "documents": docs}, timeout=DEADLINE_S + 10
    )
    elapsed = time.monotonic() - started
    assert reply.status_code == 200
    meta = reply.json()["meta"]
    assert meta["degraded"] is True
    assert "deadline" in meta["degraded_reason"]
    assert [r["index"] for r in reply.json()["results"]] == [0, 1, 2], "the previous (input) order is kept"
    assert elapsed < DEADLINE_S + 10


def test_a_failing_llm_degrades_instead_of_a_5xx(client: httpx.Client) -> None:
    reply = client.post("/v2/rerank", json={"model": "failing", "query": "q", "documents": ["a b", "c d"]})
    assert reply.status_code == 200
    assert reply.json()["meta"]["degraded"] is True
    assert reply.json()["meta"]["degraded_reason"]


def test_a_full_backend_queue_is_429_with_retry_after(
    service: ServiceProcess, client: httpx.Client, hanging_llm: WireServer
) -> None:
    seen = len(hanging_llm.requests)
    first: dict[str, httpx.Response] = {}
    body = {"model": "hanging", "query": "q", "documents": ["a", "b"]}

    def occupy() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as other:
            first["reply"] = other.post(f"{service.url}/v1/rerank", json=body)

    holder = threading.Thread(target=occupy)
    holder.start()
    while len(hanging_llm.requests) == seen:  # the first request now holds the only slot
        time.sleep(0.02)
    refused = client.post("/v1/rerank", json=body)
    holder.join()
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "capacity" in refused.json()["message"]
    assert first["reply"].status_code == 200
    assert first["reply"].json()["meta"]["degraded"] is True
    # other backends have their own gate: the sim pipeline was never blocked
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200


def test_metrics_and_the_access_log(service: ServiceProcess, client: httpx.Client) -> None:
    reply = client.post(
        "/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, headers={"X-Request-Id": "req-42"}
    )
    assert reply.headers["x-request-id"] == "req-42"
    text = httpx.get(f"{service.url}/metrics").text
    for name in (
        "llmrerank_requests_total",
        "llmrerank_request_seconds_bucket",
        "llmrerank_stage_seconds_bucket",
        "llmrerank_llm_calls_total",
        "llmrerank_llm_tokens_total",
        "llmrerank_degraded_total",
        "llmrerank_llm_queue_depth",
        "llmrerank_rejected_total",
    ):
        assert name in text, name
    time.sleep(0.2)
    lines = [json.loads(line) for line in service.log().splitlines() if line.startswith('{"ts"')]
    mine = [line for line in lines if line["request_id"] == "req-42"]
    assert mine
    assert mine[0]["status"] == 200
    assert mine[0]["pipeline"] == "sim-pointwise"
    assert TOKEN not in service.log()


def test_two_workers_share_one_cache_and_finish_in_flight_requests_on_shutdown(
    tmp_path: Path, dl19: Dl19
) -> None:
    query = dl19[0][3]
    with WireServer(_judge(), delay_s=1.0) as slow_llm:
        config = {
            "cache_dir": str(tmp_path / "cache"),
            "pipelines": {
                "slow": {"llm": "openai:m", "base_url": slow_llm.openai_base_url, "strategy": "listwise"}
            },
            "limits": {"deadline_s": 20},
        }
        service = ServiceProcess(config, tmp_path, workers=2).start()
        try:
            body = {"query": query.query, "documents": _docs(query, 6)}
            with httpx.Client(base_url=service.url, timeout=30) as c:
                first = c.post("/v1/rerank", json=body).json()["meta"]
                repeats = [c.post("/v1/rerank", json=body).json()["meta"] for _ in range(6)]
                total = _metric_sum(c.get("/metrics").text, "llmrerank_requests_total")
            assert first["cached_calls"] == 0
            assert first["llm_calls"] >= 1
            assert all(m["cached_calls"] == first["llm_calls"] for m in repeats)
            assert all(m["llm_calls"] == 0 for m in repeats)
            assert total == 7, "the workers' metrics are aggregated"
            pids = {line["pid"] for line in _access_lines(service)}
            assert len(pids) >= 1

            in_flight: dict[str, httpx.Response] = {}
            uncached = {"query": query.query, "documents": _docs(query, 5)}
            sender = threading.Thread(
                target=lambda: in_flight.update(
                    reply=httpx.post(f"{service.url}/v1/rerank", json=uncached, timeout=30)
                )
            )
            seen = len(slow_llm.requests)
            sender.start()
            while len(slow_llm.requests) == seen:
                time.sleep(0.02)
            service.terminate()
            sender.join()
            assert in_flight["reply"].status_code == 200
            assert in_flight["reply"].json()["meta"]["degraded"] is False
        finally:
            assert service.stop() == 0


def _judge() -> Any:
    from llmrerank.settings import TREC_FILES, asset
    from llmrerank.testing import SimulatedJudge

    return SimulatedJudge.from_trec(*(asset(p) for p in TREC_FILES["dl19"]))


def _metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _access_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in service.log().splitlines() if line.startswith('{"ts"')]


def test_top_n_reaches_the_llm_stage_so_heapsort_stops_early(client: httpx.Client, dl19: Dl19) -> None:
    query = dl19[0][1]
    body = {"model": "dense-heapsort", "query": query.query, "documents": _docs(query)}
    calls = {}
    for top_n in (1, None):
        response = client.post("/v1/rerank", json={**body, "top_n": top_n} if top_n else body)
        assert response.status_code == 200, response.text
        meta = response.json()["meta"]
        assert not meta["degraded"]
        calls[top_n] = meta["llm_calls"] + meta["cached_calls"]
        assert len(response.json()["results"]) == (top_n or len(body["documents"]))
    # the cascade asks its LLM stage for the head the request wants: heapsort finds the best of
    # the dense stage's 10 with far fewer comparisons than it takes to order all 10
    assert 0 < calls[1] < calls[None] / 2, calls
