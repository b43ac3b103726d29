"""The degraded reason names the LLM's real failure, through a real ``llmrerank serve``
with a 1 s deadline: an LLM answering ``500`` or an HTML page is retried (both are
transient) until the deadline stops the retries, and the answer says what failed, not
only that the deadline was reached."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from llmrerank.serve.process import ServiceProcess
from llmrerank.testing import Fault
from llmrerank.testing.faults import FaultServer, RawBody

HTML = b"<html><body><h1>502 Bad Gateway</h1>upstream proxy page</body></html>"


@pytest.fixture(scope="module")
def failing_llm() -> Iterator[FaultServer]:
    with FaultServer(lambda request: Fault(500, "the model is down")) as server:
        yield server


@pytest.fixture(scope="module")
def html_llm() -> Iterator[FaultServer]:
    with FaultServer(lambda request: RawBody(HTML, content_type="text/html")) as server:
        yield server


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, failing_llm: FaultServer, html_llm: FaultServer
) -> Iterator[ServiceProcess]:
    config = {
        "default": "failing",
        "pipelines": {
            "failing": {"llm": "openai:m", "base_url": failing_llm.openai_base_url},
            "html": {"llm": "openai:m", "base_url": html_llm.openai_base_url},
        },
        # short enough that the backoff between retries reaches it
        "limits": {"deadline_s": 1},
    }
    with ServiceProcess(config, tmp_path_factory.mktemp("serve-degraded")) as running:
        yield running


@pytest.mark.parametrize(("model", "cause"), [("failing", "the model is down"), ("html", "502 Bad Gateway")])
def test_the_first_real_failure_is_the_degraded_reason(
    service: ServiceProcess, failing_llm: FaultServer, html_llm: FaultServer, model: str, cause: str
) -> None:
    server = failing_llm if model == "failing" else html_llm
    before = len(server.requests)
    reply = httpx.post(
        f"{service.url}/v1/rerank",
        json={"model": model, "query": "q", "documents": ["first passage", "second passage"]},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    meta = reply.json()["meta"]
    assert meta["degraded"] is True
    assert len(server.requests) > before, "the LLM was called"
    assert cause in meta["degraded_reason"], meta["degraded_reason"]
    assert [r["index"] for r in reply.json()["results"]] == [0, 1], "the input order is kept"
