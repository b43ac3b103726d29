"""A graceful shutdown of a real ``llmrerank serve`` with requests in flight: a dense-first
cascade whose LLM hangs, a burst of concurrent clients, SIGTERM while they wait or while
they are still arriving. Every client whose request reached the service gets a JSON answer
(a degraded ``200`` at the deadline, or a ``503`` with ``Retry-After``), never the server's
plain-text ``500`` nor a reset connection, and every answer is in the access log with the
status the client saw."""

from __future__ import annotations

import json
import re
import socket
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


def _in_flight(service: ServiceProcess) -> int:
    metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    found = re.search(r"^llmrerank_requests_in_flight (\S+)$", metrics, re.MULTILINE)
    assert found, metrics
    return int(float(found.group(1)))


def _config(llm: WireServer) -> dict[str, object]:
    return {
        "default": "dense-hanging",
        "pipelines": {
            "dense-hanging": {
                "narrow_with": ["dense:"],
                "narrow_to": 20,
                "llm": "openai:m",
                "base_url": llm.openai_base_url,
                "call_timeout_s": 60,
            }
        },
        # every client is admitted: all of them are in flight at SIGTERM, most still waiting
        # for a CPU slot
        "limits": {"deadline_s": DEADLINE_S, "local_queue": CLIENTS},
    }


class Burst:
    """``CLIENTS`` threads, set up when this returns, each posting one rerank request once
    ``release()`` is called."""

    def __init__(self, service: ServiceProcess, query: TrecQuery) -> None:
        self.url = f"{service.url}/v1/rerank"
        self.body = {"query": query.query, "documents": [c["text"] for c in query.candidates[:100]]}
        self.responses: dict[str, httpx.Response] = {}
        self.failures: dict[str, httpx.HTTPError] = {}
        self._ready = threading.Barrier(CLIENTS + 1)
        self._threads = [
            threading.Thread(target=self._client, args=(f"shutdown-{i}",)) for i in range(CLIENTS)
        ]
        for thread in self._threads:
            thread.start()
        while self._ready.n_waiting < CLIENTS:  # every client is set up (an httpx client is slow to make)
            time.sleep(0.01)

    def _client(self, request_id: str) -> None:
        with httpx.Client(timeout=120) as http:
            self._ready.wait()
            try:
                self.responses[request_id] = http.post(
                    self.url, json=self.body, headers={"x-request-id": request_id}
                )
            except httpx.HTTPError as exc:
                self.failures[request_id] = exc

    def release(self) -> None:
        self._ready.wait()

    def wait_reached(self, service: ServiceProcess, timeout_s: float = 60.0) -> None:
        """Until every request has reached the service: in flight there, or answered."""
        deadline = time.monotonic() + timeout_s
        while (reached := _in_flight(service) + len(self.responses)) < CLIENTS:
            assert time.monotonic() < deadline, f"{reached} of {CLIENTS} requests reached the service"
            time.sleep(0.05)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


def _check_answers(burst: Burst, log: str) -> dict[str, int]:
    """Every answer is JSON (a degraded 200 or a 503 with Retry-After) and in the access log
    with the status the client saw; the statuses by request id."""
    statuses = {rid: r.status_code for rid, r in burst.responses.items()}
    assert set(statuses.values()) <= {200, 503}, statuses
    for response in burst.responses.values():
        assert response.headers["content-type"] == "application/json", response.text
        answer = response.json()
        if response.status_code == 200:
            assert answer["meta"]["degraded"] is True  # the LLM hangs: degraded at the deadline
            assert sorted(r["index"] for r in answer["results"]) == list(range(100))
        else:
            assert answer["message"]
            assert int(response.headers["Retry-After"]) >= 1
    assert "Internal Server Error" not in log
    logged = _access_lines(log)
    assert {rid: logged.get(rid) for rid in statuses} == statuses
    return statuses


def test_sigterm_answers_every_in_flight_request_with_json(
    tmp_path: Path, hanging_llm: WireServer, dl19: Dl19
) -> None:
    with ServiceProcess(_config(hanging_llm), tmp_path) as service:
        burst = Burst(service, dl19[0][3])
        burst.release()
        burst.wait_reached(service)
        service.terminate()
        burst.join()
        service.wait_exit(120)
        log = service.log()

    assert not burst.failures, burst.failures
    assert len(burst.responses) == CLIENTS
    statuses = _check_answers(burst, log)
    assert 200 in statuses.values(), "the requests in flight at SIGTERM were answered"


class Prober:
    """``GET /readyz`` every 50 ms on a thread until stopped, recording each answer's status
    and reason; after SIGTERM every probe is a request arriving, which keeps the drain open."""

    def __init__(self, service: ServiceProcess) -> None:
        self.url = f"{service.url}/readyz"
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe)
        self._thread.start()

    def _probe(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.wait(0.05):
                try:
                    response = http.get(self.url)
                except httpx.HTTPError:
                    continue  # the listener has closed
                self.answers.append((response.status_code, response.json().get("reason")))

    def wait_answered(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.answers:
            assert time.monotonic() < deadline, "no probe was answered"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _raw_request(query: TrecQuery, request_id: str) -> tuple[bytes, bytes]:
    """A rerank request as bytes, split inside its headers: the part a slow client has sent."""
    body = json.dumps(
        {"query": query.query, "documents": [c["text"] for c in query.candidates[:10]]}
    ).encode()
    head = (
        "POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"x-request-id: {request_id}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    split = head.index(b"x-request-id")
    return head[:split], head[split:] + body


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    received = b""
    while chunk := sock.recv(65536):  # the service closes the connection after its answer
        received += chunk
    assert received, "the service closed the connection without answering the request"
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_a_request_still_arriving_at_sigterm_is_answered_not_reset(
    tmp_path: Path, hanging_llm: WireServer, dl19: Dl19
) -> None:
    """A client has connected and sent half its headers when SIGTERM lands, and the rest
    0.5 s later. Without the drain the server had closed that connection by then (it had no
    request yet): the client saw its request vanish. With it, the request is served (a
    degraded 200 at its deadline: the LLM hangs) and the connection closed after it;
    /readyz says why meanwhile."""
    config = _config(hanging_llm)
    # the drain outlasts a stalled test host: it ends 2 s after the last probe
    config["limits"] = {"deadline_s": DEADLINE_S, "drain_s": 10, "drain_quiet_s": 2}
    first, rest = _raw_request(dl19[0][3], "slow-client")
    with ServiceProcess(config, tmp_path) as service:
        prober = Prober(service)
        try:
            with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
                sock.sendall(first)
                prober.wait_answered()
                service.terminate()
                time.sleep(0.5)
                sock.sendall(rest)
                status, headers, body = _read_response(sock)
        finally:
            prober.stop()
        service.wait_exit(120)
        log = service.log()

    assert status == 200, body
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["meta"]["degraded"] is True
    assert sorted(r["index"] for r in answer["results"]) == list(range(10))
    assert headers["connection"] == "close"
    assert _access_lines(log)["slow-client"] == 200
    assert (200, None) in prober.answers  # before the signal
    assert (503, "shutting down") in prober.answers  # during the drain
