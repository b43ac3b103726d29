"""``/readyz`` with ``--workers 2`` through a real ``llmrerank serve``: it answers ``200``
only when every worker has built its pipelines, so once it does, every following
``/readyz`` and rerank request succeeds; while a worker the supervisor restarted is still
loading it answers ``503`` and says how many workers are ready."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llmrerank.serve.process import ServiceProcess

from .conftest import TrecQuery

Dl19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]
WAIT_S = 120.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("serve-workers")
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
        "limits": {"deadline_s": 30},
    }
    with ServiceProcess(config, workdir, workers=2) as running:
        yield running


def _readyz(http: httpx.Client) -> tuple[int, dict[str, Any]] | None:
    try:
        response = http.get("/readyz")
    except httpx.HTTPError:  # a connection the killed worker had accepted
        return None
    return response.status_code, response.json()


def _every_request_succeeds(http: httpx.Client, body: dict[str, Any]) -> None:
    for _ in range(10):
        status, ready = _readyz(http) or (0, {})
        assert status == 200, ready
        assert len(ready["workers"]["ready"]) == 2
    for _ in range(4):
        response = http.post("/v1/rerank", json=body)
        assert response.status_code == 200, response.text


def test_readyz_is_200_only_when_every_worker_is_ready(service: ServiceProcess, dl19: Dl19) -> None:
    query = dl19[0][4]
    body = {"query": query.query, "documents": [c["text"] for c in query.candidates[:10]], "top_n": 3}
    with httpx.Client(base_url=service.url, timeout=60) as http:
        # ServiceProcess.start returned on the first 200
        _every_request_succeeds(http, body)
        before = http.get("/readyz").json()["workers"]
        assert before["expected"] == 2

        victim = before["ready"][0]
        os.kill(victim, signal.SIGKILL)  # the supervisor starts a new worker, which loads its models
        answers: list[tuple[int, dict[str, Any]]] = []
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            answer = _readyz(http)
            if answer is not None:
                answers.append(answer)
                if answer[0] == 200 and victim not in answer[1]["workers"]["ready"]:
                    break
            time.sleep(0.1)
        not_ready = [body for status, body in answers if status == 503]
        assert not_ready, "a worker was loading: /readyz must not say ready"
        assert not_ready[0]["reason"] == "1 of 2 workers ready"
        assert answers[-1][0] == 200, answers[-1]

        after = answers[-1][1]["workers"]["ready"]
        assert len(after) == 2
        assert victim not in after
        _every_request_succeeds(http, body)
