"""Admission control for the local (CPU) stages, through a real ``llmrerank serve``: with a
tiny CPU queue, a burst of concurrent requests against a dense-first pipeline gets ``429``
with ``Retry-After`` for what does not fit, never a ``5xx``, and the queue's places are
given back (requests after the burst are all served)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from llmrerank.serve.process import ServiceProcess

from .conftest import TrecQuery

Dl19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]
CLIENTS = 12


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("serve-admission")
    config = {
        "default": "dense-sim",
        "pipelines": {
            "dense-sim": {
                "narrow_with": ["dense:"],
                "narrow_to": 5,
                "llm": "sim:dl19",
                "strategy": "pointwise",
            }
        },
        # one local stage at a time, one more request waiting: the rest of a burst is refused
        "limits": {"deadline_s": 30, "local_concurrency": 1, "local_queue": 1},
    }
    with ServiceProcess(config, workdir) as running:
        yield running


def _burst(url: str, body: dict[str, object], clients: int) -> list[httpx.Response]:
    responses: list[httpx.Response | None] = [None] * clients
    ready = threading.Barrier(clients)

    def client(index: int) -> None:
        with httpx.Client(timeout=120) as http:
            ready.wait()
            responses[index] = http.post(f"{url}/v1/rerank", json=body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in responses)
    return [r for r in responses if r is not None]


def test_a_full_cpu_queue_answers_429_with_retry_after_and_never_5xx(
    service: ServiceProcess, dl19: Dl19
) -> None:
    query = dl19[0][0]
    body = {"query": query.query, "documents": [c["text"] for c in query.candidates[:60]], "top_n": 3}
    responses = _burst(service.url, body, CLIENTS)

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    refused = [r for r in responses if r.status_code == 429]
    served = [r for r in responses if r.status_code == 200]
    # 1 running + 1 waiting fit at once; a burst of 12 cannot all fit
    assert refused, statuses
    assert len(served) >= 2, statuses
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        assert "local (CPU) stages" in response.json()["message"]
    for response in served:
        assert len(response.json()["results"]) == 3

    # the places were given back: one request at a time is always admitted
    with httpx.Client(timeout=120) as http:
        for _ in range(3):
            assert http.post(f"{service.url}/v1/rerank", json=body).status_code == 200
        metrics = http.get(f"{service.url}/metrics").text
    assert 'llmrerank_rejected_total{reason="local_queue_full"}' in metrics
