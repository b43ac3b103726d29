"""A graceful shutdown of a real ``llmrerank serve`` with requests in flight: a dense-first
cascade whose LLM hangs, a burst of concurrent clients, SIGTERM while they wait. Every
client gets a JSON answer (a degraded ``200`` at the deadline, or a ``503`` with
``Retry-After``), never the server's plain-text ``500``, and every answer is in the access
log with the status the client saw."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmrerank.serve.process import ServiceProcess
from llmrerank.testing import Hang, WireServer

from .conftest import TrecQuery

Dl19 = tuple[list[TrecQuery], dict[str, dict[str, int]]]
CLIENTS = 24
DEADLINE_S = 4.0


@pytest.fixture
def hanging_llm() -> Iterator[WireServer]:
    with WireServer(lambda request: Hang(60)) as server:
        yield server


def _access_lines(log: str) -> dict[str, int]:
    statuses = {}
    for line in log.splitlines():
        if line.startswith("{") and '"event":"request"' in line:
            record = json.loads(line)
            statuses[record["request_id"]] = record["status"]
    return statuses


def test_sigterm_answers_every_in_flight_request_with_json(
    tmp_path: Path, hanging_llm: WireServer, dl19: Dl19
) -> None:
    config = {
        "default": "dense-hanging",
        "pipelines": {
            "dense-hanging": {
                "narrow_with": ["dense:"],
                "narrow_to": 20,
                "llm": "openai:m",
                "base_url": hanging_llm.openai_base_url,
                "call_timeout_s": 60,
            }
        },
        # every client is admitted: all of them are in flight at SIGTERM, most still waiting
        # for a CPU slot
        "limits": {"deadline_s": DEADLINE_S, "local_queue": CLIENTS},
    }
    query = dl19[0][3]
    body = {"query": query.query, "documents": [c["text"] for c in query.candidates[:100]]}
    responses: dict[str, httpx.Response] = {}
    failures: dict[str, str] = {}
    ready = threading.Barrier(CLIENTS + 1)

    with ServiceProcess(config, tmp_path) as service:

        def client(request_id: str) -> None:
            with httpx.Client(timeout=120) as http:
                ready.wait()
                try:
                    responses[request_id] = http.post(
                        f"{service.url}/v1/rerank", json=body, headers={"x-request-id": request_id}
                    )
                except httpx.HTTPError as exc:
                    failures[request_id] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=client, args=(f"shutdown-{i}",)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        ready.wait()
        time.sleep(1.0)  # the requests reach the server, well before their deadline
        service.terminate()
        for thread in threads:
            thread.join()
        service.wait_exit(120)
        log = service.log()

    assert not failures, failures
    assert len(responses) == CLIENTS
    statuses = {rid: r.status_code for rid, r in responses.items()}
    assert set(statuses.values()) <= {200, 503}, statuses
    for response in responses.values():
        assert response.headers["content-type"] == "application/json", response.text
        answer = response.json()
        if response.status_code == 200:
            assert answer["meta"]["degraded"] is True  # the LLM hangs: degraded at the deadline
            assert sorted(r["index"] for r in answer["results"]) == list(range(100))
        else:
            assert answer["message"]
            assert int(response.headers["Retry-After"]) >= 1
    assert 200 in statuses.values(), "the requests in flight at SIGTERM were answered"
    assert "Internal Server Error" not in log
    logged = _access_lines(log)
    assert {rid: logged.get(rid) for rid in statuses} == statuses
