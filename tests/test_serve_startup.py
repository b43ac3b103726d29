"""``llmrerank serve`` when a pipeline cannot be built, as a real process on a free port: it
exits at once with the reason on stderr (one worker or several), or with
``--allow-partial`` serves the other pipelines and names the failed one on ``/readyz``.

A managed LLM that crashes at start is a real one: ``LLMRERANK_LLAMA_SERVER`` points at a
script that kills itself with SIGILL, as a llama.cpp build using instructions the CPU
does not run does."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrerank.serve.process import ServiceProcess

STARTUP_FAILURE_EXIT = 3  # uvicorn's code for a failed startup
# the brief of issue 23: a broken service says so in under 10 s
FAIL_FAST_S = 10.0
GOOD = {"llm": "sim:dl19", "strategy": "pointwise"}


@pytest.fixture
def crashing_llama(tmp_path: Path) -> dict[str, Any]:
    """A local: pipeline whose llama-server dies by SIGILL as it starts, and its env."""
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\nkill -ILL $$\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF not a real model")
    return {
        "pipeline": {"llm": f"local:{model}", "strategy": "listwise"},
        "env": {"LLMRERANK_LLAMA_SERVER": str(binary), "LLMRERANK_LOCAL_URL": ""},
    }


def _run_to_exit(service: ServiceProcess, within_s: float = FAIL_FAST_S) -> int:
    """Launch, wait for the exit (at most ``within_s``), always stop what is left."""
    try:
        service.launch()
        return service.wait_exit(within_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"llmrerank serve still runs after {within_s}s:\n{service.log()}")
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ("crashing-llm", ["LocalServerError", "llama-server was killed by SIGILL"]),
        ({**GOOD, "rubric": "no/such/rubric.yaml"}, ["cannot read rubric", "no/such/rubric.yaml"]),
        ({"narrow_with": ["bm99:"]}, ["unknown stage kind 'bm99' in 'bm99:'"]),
        ({**GOOD, "strategy": "zigzag"}, ["unknown strategy 'zigzag'"]),
        ({"llm": "nope:model"}, ["unknown backend prefix 'nope'"]),
    ],
    ids=["crashing-llm", "missing-rubric", "unknown-stage", "unknown-strategy", "unknown-provider"],
)
def test_a_pipeline_that_cannot_be_built_stops_the_service_saying_why(
    tmp_path: Path, crashing_llama: dict[str, Any], broken: Any, says: list[str]
) -> None:
    env = crashing_llama["env"] if broken == "crashing-llm" else {}
    spec = crashing_llama["pipeline"] if broken == "crashing-llm" else broken
    config = {"default": "good", "pipelines": {"good": GOOD, "broken": spec}}
    service = ServiceProcess(config, tmp_path, env=env)
    code = _run_to_exit(service)
    assert code == STARTUP_FAILURE_EXIT, service.log()
    stderr = service.log()
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: llmrerank serve cannot start: pipeline 'broken' could not be built"), (
        stderr
    )
    for words in says:
        assert words in stderr
    assert "Traceback" not in stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.url}/healthz", timeout=2)


def test_with_several_workers_the_service_stops_too(tmp_path: Path, crashing_llama: dict[str, Any]) -> None:
    config = {"pipelines": {"good": GOOD, "broken": crashing_llama["pipeline"]}}
    service = ServiceProcess(config, tmp_path, env=crashing_llama["env"], workers=2)
    # uvicorn's supervisor notices a worker that ended within its health-check interval (5 s)
    code = _run_to_exit(service, within_s=FAIL_FAST_S + 20)
    assert code == STARTUP_FAILURE_EXIT, service.log()
    assert "error: llmrerank serve cannot start: pipeline 'broken'" in service.log()
    assert "llama-server" in service.log()


def test_allow_partial_serves_the_others_and_names_the_failed_ones(
    tmp_path: Path, crashing_llama: dict[str, Any]
) -> None:
    config = {
        "default": "good",
        "pipelines": {
            "good": GOOD,
            "crashed": crashing_llama["pipeline"],
            "no-rubric": {**GOOD, "rubric": "no/such/rubric.yaml"},
        },
    }
    service = ServiceProcess(config, tmp_path, env=crashing_llama["env"], args=("--allow-partial",))
    with service, httpx.Client(base_url=service.url, timeout=30) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["ready"] is True
        assert body["pipelines"] == ["good"]
        assert set(body["failed"]) == {"crashed", "no-rubric"}
        assert "llama-server" in body["failed"]["crashed"]
        assert "no/such/rubric.yaml" in body["failed"]["no-rubric"]

        refused = client.post("/v1/rerank", json={"model": "crashed", "query": "q", "documents": ["a"]})
        assert refused.status_code == 400
        assert "retry-after" not in refused.headers
        message = refused.json()["message"]
        assert "pipeline 'crashed' is unavailable: it failed to start" in message
        assert "llama-server" in message

        served = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert served.status_code == 200
        assert served.json()["meta"]["pipeline"] == "good"

        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["good"]["available"] is True
        assert models["crashed"]["available"] is False
        assert "llama-server" in models["crashed"]["error"]


def test_allow_partial_with_nothing_to_serve_stops_the_service(tmp_path: Path) -> None:
    config = {"pipelines": {"broken": {"llm": "nope:model"}}, "allow_partial": True}
    service = ServiceProcess(config, tmp_path)
    code = _run_to_exit(service)
    assert code == STARTUP_FAILURE_EXIT
    assert "unknown backend prefix 'nope'" in service.log()


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_a_readiness_timeout_stops_the_service_and_what_it_started(tmp_path: Path) -> None:
    """The helper stops the service on every way out of ``start()``: here ``/readyz`` is not
    ready in time (the service waits for a llama-server that never answers), so ``start()``
    raises, and neither the service nor the server it started is left running."""
    pid_file = tmp_path / "llama.pid"
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF not a real model")

    class SlowToStart(ServiceProcess):
        def wait_ready(self) -> None:
            # the readiness timeout starts once the service has started its llama-server
            deadline = time.monotonic() + 60
            while not pid_file.exists() and time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
            super().wait_ready()

    config = {"pipelines": {"hangs": {"llm": f"local:{model}", "strategy": "listwise"}}}
    env = {"LLMRERANK_LLAMA_SERVER": str(binary), "LLMRERANK_LOCAL_URL": ""}
    service = SlowToStart(config, tmp_path, env=env, ready_timeout_s=0.5)
    with pytest.raises(RuntimeError, match=r"not ready in 0\.5s"):
        service.start()
    assert service.process is not None
    assert service.process.poll() is not None, "start() stopped the service"
    assert _gone(int(pid_file.read_text())), "and the llama-server it started"
