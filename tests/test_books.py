"""Every paid call is counted and priced once, cache hits apart, whatever happened to its
query: a run killed and resumed, a query that degraded, a stage that failed or ran out of
time, a question asked twice inside one run."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from llmrerank import Cascade, LLMReranker, ParseError, Stage
from llmrerank.backends.base import BackendRequest
from llmrerank.cli import main
from llmrerank.errors import TerminalBackendError
from llmrerank.evaluation.datasets import load_dataset
from llmrerank.retry import RetryPolicy
from llmrerank.settings import TREC_FILES, asset
from llmrerank.strategies import Listwise
from llmrerank.testing import (
    Fault,
    FunctionBackend,
    Hang,
    SimulatedJudge,
    WireRequest,
    WireResponse,
    WireServer,
)
from llmrerank.testing.batch_server import BatchWireServer
from llmrerank.types import Ranking, Usage

FAST = {"poll_s": 0.02, "poll_max_s": 0.1}
PASSAGES = [{"id": f"d{i}", "text": f"passage number {i}"} for i in range(8)]
WINDOW = '{"ranking": ["1", "2", "3", "4"]}'


@pytest.fixture(scope="module")
def judge() -> SimulatedJudge:
    candidates, qrels = (asset(p) for p in TREC_FILES["dl19"])
    return SimulatedJudge.from_trec(candidates, qrels)


def write_config(
    path: Path, base_url: str, cache: Path, *, dataset: str = "dl19", batch: bool = True
) -> Path:
    config = {
        "name": path.stem,
        "datasets": [{"name": dataset, "limit": 3, "depth": 20}],
        "cache_dir": str(cache),
        "metrics": ["ndcg@10"],
        "pipelines": [
            {
                "name": "listwise",
                "llm": "openai:gpt-4o-mini",
                "base_url": base_url,
                "strategy": "listwise",
                "strategy_options": {"window": 10, "step": 5},
            }
        ],
        "batch": FAST if batch else False,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def eval_run(config: Path, out: Path, *flags: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["eval", "run", str(config), "--out", str(out), *flags])
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*__listwise__r0.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def answered(server: BatchWireServer) -> list[dict[str, Any]]:
    """The bodies of every request the batch server answered (the lines a provider bills)."""
    return [line["response"]["body"] for batch in server.batches.values() for line in batch.results or []]


def cli_process(config: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from llmrerank.cli import main; main()",
            "eval",
            "run",
            str(config),
            "--out",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def state_rounds(out: Path) -> int:
    """How many batches the run's state file says were submitted (0 before it exists)."""
    for path in out.glob("*.batch.json"):
        try:
            return int(json.loads(path.read_text())["rounds"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def kill_when(child: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    try:
        deadline = time.monotonic() + 180  # generous: CI machines may be loaded
        while not ready() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_a_killed_and_resumed_batch_run_costs_what_an_uninterrupted_one_does(
    judge: SimulatedJudge, tmp_path: Path
) -> None:
    with BatchWireServer(judge) as server:
        config = write_config(tmp_path / "whole.yaml", server.openai_base_url, tmp_path / "c1")
        whole = eval_run(config, tmp_path / "whole", "--batch")
    with BatchWireServer(judge, turnaround_s=1.0) as server:
        config = write_config(tmp_path / "killed.yaml", server.openai_base_url, tmp_path / "c2")
        out = tmp_path / "out"
        kill_when(cli_process(config, out), lambda: state_rounds(out) >= 2)
        # killed while its second round was in flight: the first round's answers are in the cache
        assert len(server.batches) == 2
        resumed = eval_run(config, out, "--batch")
        lines = answered(server)
    assert whole["calls"] == 9
    assert whole["cost_usd"] > 0
    assert resumed["calls"] == len(lines) == 9
    assert resumed["cache_hits"] == 0
    assert resumed["prompt_tokens"] == sum(body["usage"]["prompt_tokens"] for body in lines)
    assert resumed["cost_usd"] == pytest.approx(whole["cost_usd"])
    assert resumed["metrics"] == whole["metrics"]


def hang_at(judge: SimulatedJudge, number: int) -> Callable[[WireRequest], WireResponse]:
    """The judge, except that request ``number`` (1-based) is never answered."""
    count = itertools.count(1)

    def handler(request: WireRequest) -> WireResponse:
        return Hang(600) if next(count) == number else judge(request)

    return handler


def test_an_online_run_killed_mid_query_and_resumed_costs_what_an_uninterrupted_one_does(
    judge: SimulatedJudge, tmp_path: Path
) -> None:
    with WireServer(judge) as server:
        whole = eval_run(
            write_config(tmp_path / "w.yaml", server.openai_base_url, tmp_path / "c1", batch=False),
            tmp_path / "w",
        )
    with WireServer(hang_at(judge, 5)) as server:
        config = write_config(tmp_path / "killed.yaml", server.openai_base_url, tmp_path / "c2", batch=False)
        out = tmp_path / "out"
        # 3 windows a query, one query after the other: killed during the second query's
        # second window, after its first was paid for and cached
        kill_when(cli_process(config, out), lambda: len(server.requests) >= 5)
        assert len(server.requests) == 5
        resumed = eval_run(config, out)
        asked = len(server.requests)
    assert whole["calls"] == 9
    assert resumed["calls"] == asked - 1 == 9  # the request that never got an answer apart
    assert resumed["cache_hits"] == 0
    assert resumed["cost_usd"] == pytest.approx(whole["cost_usd"])


def fail_after_first(judge: SimulatedJudge, query: str) -> Callable[[WireRequest], WireResponse]:
    """Answers one request about ``query``; every other request about it fails (500)."""
    first: list[str] = []
    lock = threading.Lock()

    def handler(request: WireRequest) -> WireResponse:
        if query in request.user_text:
            key = repr(request.body.get("messages"))
            with lock:
                if not first:
                    first.append(key)
            if key != first[0]:
                return Fault(500, "overloaded")
        return judge(request)

    return handler


def test_a_degraded_batch_query_keeps_the_calls_it_paid_for(judge: SimulatedJudge, tmp_path: Path) -> None:
    doomed = load_dataset("dl19", limit=3, depth=20).queries[1]
    with BatchWireServer(fail_after_first(judge, doomed.query)) as server:
        config = write_config(tmp_path / "c.yaml", server.openai_base_url, tmp_path / "cache")
        result = eval_run(config, tmp_path / "out", "--batch")
        lines = answered(server)
    assert result["degraded_queries"] == 1
    # 3 windows for each of the two others, and the doomed query's first window (paid)
    assert result["calls"] == len(lines) == 7
    assert result["prompt_tokens"] == sum(body["usage"]["prompt_tokens"] for body in lines)
    assert result["completion_tokens"] == sum(body["usage"]["completion_tokens"] for body in lines)


def twice(tmp_path: Path) -> Path:
    """A golden set holding one DL19 query twice, under two ids: the same questions twice."""
    query = load_dataset("dl19", limit=1, depth=20).queries[0]
    folder = tmp_path / "twice"
    folder.mkdir()
    candidates = [{"docid": c.id, "text": c.text} for c in query.candidates]
    (folder / "candidates.jsonl").write_text(
        "".join(
            json.dumps({"qid": qid, "query": query.query, "candidates": candidates}) + "\n" for qid in "ab"
        )
    )
    (folder / "qrels.txt").write_text(f"a 0 {query.candidates[0].id} 1\nb 0 {query.candidates[0].id} 1\n")
    return folder


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_a_runs_calls_are_what_the_server_answered_and_its_cache_hits_apart(
    judge: SimulatedJudge, mode: str, tmp_path: Path
) -> None:
    dataset = str(twice(tmp_path))
    with BatchWireServer(judge) as server:
        config = write_config(
            tmp_path / "c.yaml",
            server.openai_base_url,
            tmp_path / "cache",
            dataset=dataset,
            batch=mode == "batch",
        )
        first = eval_run(config, tmp_path / "first")
        if mode == "batch":
            served = len(answered(server))
            assert first["prompt_tokens"] == sum(body["usage"]["prompt_tokens"] for body in answered(server))
        else:
            served = len(server.requests)
        again = eval_run(config, tmp_path / "again")
    assert served == 3  # the second copy of the query was answered from the first one's replies
    assert first["calls"] == served
    assert first["cache_hits"] == 3
    # a cache filled by an earlier, different run: every answer is a hit, at $0
    assert (again["calls"], again["cache_hits"], again["cost_usd"]) == (0, 6, 0.0)


# -- the online cascade -----------------------------------------------------------------------


def windows_then(failure: Callable[[], str]) -> Callable[[BackendRequest], str]:
    """Answers the first two listwise windows; from the third request on, ``failure()``."""
    count = itertools.count(1)

    def answer(request: BackendRequest) -> str:
        return WINDOW if next(count) <= 2 else failure()

    return answer


def unavailable() -> str:
    raise TerminalBackendError("the model is gone", status_code=404, provider="function")


def listwise(backend: FunctionBackend) -> LLMReranker:
    return LLMReranker(backend, strategy=Listwise(window=4, step=2), retry=RetryPolicy(max_attempts=1))


def rerank(cascade: Cascade, mode: str) -> Ranking:
    if mode == "async":
        return asyncio.run(cascade.arerank("q", PASSAGES))
    return cascade.rerank("q", PASSAGES)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_cascade_stage_that_fails_keeps_the_calls_it_paid_for(mode: str) -> None:
    backend = FunctionBackend(windows_then(unavailable))
    ranking = rerank(Cascade([Stage(listwise(backend))]), mode)
    assert ranking.degraded
    assert len(backend.requests) == 3  # windows of 4 over 8 passages, step 2: the third fails
    assert [c.cached for c in ranking.calls] == [False, False]
    assert ranking.usage == Usage(2, 2)  # FunctionBackend: one token in, one out per reply
    (stage,) = ranking.stages
    assert (stage.calls, stage.usage) == (2, Usage(2, 2))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_invalid_replies_before_a_parse_error_are_booked(mode: str) -> None:
    backend = FunctionBackend(windows_then(lambda: "no ranking here"))
    ranking = rerank(Cascade([Stage(listwise(backend))]), mode)
    assert ranking.degraded
    assert "no valid" in (ranking.degraded_reason or "")
    assert len(backend.requests) == 5  # 2 answers, then an answer and 2 re-asks, all invalid
    assert len(ranking.calls) + sum(c.reasks for c in ranking.calls) == 5
    assert ranking.usage == Usage(5, 5)
    assert ranking.stages[0].calls == 3

    with pytest.raises(ParseError) as caught:  # the stage alone: the error carries them
        listwise(FunctionBackend(windows_then(lambda: "no ranking here"))).rerank("q", PASSAGES)
    assert sum((c.usage for c in caught.value.calls), Usage()) == Usage(5, 5)


@pytest.fixture
def released() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stage_over_its_time_budget_keeps_the_calls_it_paid_for(
    mode: str, released: threading.Event
) -> None:
    def stuck() -> Any:
        if mode == "async":
            return asyncio.sleep(60, WINDOW)  # cancelled at the budget
        released.wait(60)
        return WINDOW

    backend = FunctionBackend(windows_then(stuck))
    ranking = rerank(Cascade([Stage(listwise(backend), timeout_s=1.0)]), mode)
    assert ranking.degraded
    assert "timeout" in (ranking.degraded_reason or "")
    assert len(ranking.calls) == ranking.stages[0].calls == 2
    assert ranking.usage == Usage(2, 2)


def two_llm_stages(*, fallback: bool) -> Cascade:
    """Two LLM stages; the second fails at its third window."""
    first = listwise(FunctionBackend(lambda request: WINDOW))
    second = listwise(FunctionBackend(windows_then(unavailable)))
    return Cascade([Stage(first, name="one"), Stage(second, name="two", fallback=fallback)])


def test_a_later_stage_failing_keeps_every_stages_paid_calls() -> None:
    ranking = two_llm_stages(fallback=True).rerank("q", PASSAGES)
    assert ranking.degraded
    assert [s.calls for s in ranking.stages] == [3, 2]
    assert len(ranking.calls) == 5
    with pytest.raises(TerminalBackendError) as caught:  # without a fallback, the error has them
        two_llm_stages(fallback=False).rerank("q", PASSAGES)
    assert len(caught.value.calls) == 3 + 2
