"""Batch mode against the local test server through the real openai and anthropic SDKs:
same metrics as online, batch prices, partial failures re-asked, a killed run resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmrerank.errors import UserError
from llmrerank.evaluation.batch_state import BatchOptions
from llmrerank.evaluation.experiment import DatasetSpec, Experiment, batch_options
from llmrerank.evaluation.runner import run_experiment
from llmrerank.pipeline import PipelineSpec
from llmrerank.pricing import PriceTable
from llmrerank.settings import TREC_FILES, asset
from llmrerank.testing import Fault, SimulatedJudge, WireRequest, WireResponse
from llmrerank.testing.batch_server import BatchWireServer

from .test_books import state_rounds

FAST = {"poll_s": 0.02, "poll_max_s": 0.1}
MODELS = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-haiku-4-5"}


@pytest.fixture(scope="module")
def judge() -> SimulatedJudge:
    candidates, qrels = (asset(p) for p in TREC_FILES["dl19"])
    return SimulatedJudge.from_trec(candidates, qrels)


@pytest.fixture
def server(judge: SimulatedJudge) -> Iterator[BatchWireServer]:
    with BatchWireServer(judge, turnaround_s=0.05) as running:
        yield running


def experiment(server: BatchWireServer, api: str, cache: Path, *, batch: Any = None) -> Experiment:
    """``batch``: as in a config file (true, or a mapping of options)."""
    base_url = server.openai_base_url if api == "openai" else server.anthropic_base_url
    return Experiment(
        name=f"dl19-{api}",
        datasets=(DatasetSpec("dl19", limit=3, depth=20),),
        pipelines=(
            PipelineSpec(
                name="listwise",
                llm=MODELS[api],
                base_url=base_url,
                strategy="listwise",
                strategy_options={"window": 10, "step": 5},
            ),
        ),
        metrics=("ndcg@10",),
        cache_dir=str(cache),
        batch=batch_options(batch),
    )


def run(exp: Experiment, out: Path) -> dict[str, Any]:
    (result,) = run_experiment(exp, out, progress=False)
    return result.data


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_batch_mode_matches_online_at_the_batch_price(
    server: BatchWireServer, api: str, tmp_path: Path
) -> None:
    online = run(experiment(server, api, tmp_path / "online-cache"), tmp_path / "online")
    asked_online = len(server.requests)
    batched = run(experiment(server, api, tmp_path / "batch-cache", batch=FAST), tmp_path / "batch")

    assert len(server.requests) == asked_online  # batch mode made no online call
    assert batched["metrics"] == online["metrics"]
    assert batched["calls"] == online["calls"] == 3 * 3  # 20 passages, window 10, step 5
    # the three windows of every query are three rounds, each one batch for all queries
    assert batched["batch"]["rounds"] == 3
    assert {api for api, _ in server.submitted} == {api}
    assert len(server.submitted) == online["calls"]
    assert online["cost_usd"] > 0
    assert batched["cost_usd"] == pytest.approx(online["cost_usd"] / 2, rel=1e-3)

    again = run(experiment(server, api, tmp_path / "batch-cache", batch=FAST), tmp_path / "again")
    assert (again["calls"], again["cache_hits"], again["cost_usd"]) == (0, online["calls"], 0.0)
    assert again["batch"]["rounds"] == 0
    assert again["metrics"] == online["metrics"]


def flaky(judge: SimulatedJudge, *, fail_always: str | None = None) -> Any:
    """Every request fails (500) the first time it is seen; one passage's requests expire."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(request: WireRequest) -> WireResponse:
        key = repr(request.body.get("messages"))
        with lock:
            seen[key] += 1
            first = seen[key] == 1
        if first or (fail_always is not None and fail_always in request.user_text):
            return Fault(500, "overloaded")
        return judge(request)

    return handler


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_failed_and_expired_requests_are_asked_again(judge: SimulatedJudge, api: str, tmp_path: Path) -> None:
    expired: set[str] = set()

    def expire_once(request: WireRequest) -> bool:
        key = repr(request.body.get("messages"))
        if "cost" in request.user_text.lower() and key not in expired:
            expired.add(key)
            return True
        return False

    with BatchWireServer(judge) as plain:
        online = run(experiment(plain, api, tmp_path / "online-cache"), tmp_path / "online")
    with BatchWireServer(flaky(judge), expire=expire_once) as server:
        batched = run(experiment(server, api, tmp_path / "batch-cache", batch=FAST), tmp_path / "batch")
    assert batched["metrics"] == online["metrics"]
    assert batched["degraded_queries"] == 0
    # every request failed once (500); requests about costs also expired once before that,
    # so each of the 3 windows took 3 rounds for those queries
    assert expired
    assert batched["batch"]["rounds"] == 3 * 3
    assert len(server.submitted) == 2 * online["calls"] + len(expired)


def test_a_request_that_keeps_failing_is_reported_not_dropped(judge: SimulatedJudge, tmp_path: Path) -> None:
    with BatchWireServer(flaky(judge, fail_always="declaratory judgment")) as server:
        exp = experiment(server, "openai", tmp_path / "cache", batch={**FAST, "max_attempts": 2})
        exp = replace(exp, datasets=(DatasetSpec("dl19", limit=6, depth=20),))
        batched = run(exp, tmp_path / "batch")
    assert batched["queries"] == 6
    assert batched["degraded_queries"] == 1  # that query kept its first-stage order


def test_a_plan_that_asks_nothing_finishes_in_batch_mode(server: BatchWireServer, tmp_path: Path) -> None:
    """One candidate per query: listwise has nothing to order and asks no question."""
    exp = experiment(server, "openai", tmp_path / "cache", batch=FAST)
    exp = replace(exp, datasets=(DatasetSpec("dl19", limit=2, depth=1),))
    batched = run(exp, tmp_path / "batch")
    online = run(replace(exp, batch=None), tmp_path / "online")
    assert (batched["queries"], batched["calls"], batched["degraded_queries"]) == (2, 0, 0)
    assert server.submitted == []
    assert batched["metrics"] == online["metrics"]


def test_a_killed_run_resumes_without_paying_twice(judge: SimulatedJudge, tmp_path: Path) -> None:
    with BatchWireServer(judge, turnaround_s=1.0) as server:
        exp = experiment(server, "openai", tmp_path / "cache")
        pipeline = {
            "name": "listwise",
            "llm": MODELS["openai"],
            "base_url": server.openai_base_url,
            "strategy": "listwise",
            "strategy_options": {"window": 10, "step": 5},
        }
        config = {
            "name": "killed",
            "datasets": [{"name": "dl19", "limit": 3, "depth": 20}],
            "cache_dir": str(tmp_path / "cache"),
            "metrics": ["ndcg@10"],
            "pipelines": [pipeline],
            "batch": FAST,
        }
        path = tmp_path / "killed.yaml"
        path.write_text(yaml.safe_dump(config))
        out = tmp_path / "out"
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from llmrerank.cli import main; main()",
                "eval",
                "run",
                str(path),
                "--out",
                str(out),
                "--batch",
            ],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        deadline = time.monotonic() + 180  # generous: CI machines may be loaded
        # killed once the second batch is in the run's state file: a kill between the submit
        # and that write would leave the batch unknown to the resumed run (it is paid again)
        while state_rounds(out) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert len(server.batches) >= 2  # killed while a later round was in flight
        assert list(out.glob("*.batch.json"))

        resumed = run(replace(exp, name="killed", batch=batch_options(FAST)), out)
    assert Counter(server.submitted).most_common(1)[0][1] == 1  # nothing was submitted twice
    assert len(server.submitted) == resumed["calls"] == 9
    assert resumed["batch"]["rounds"] == 3
    assert not list(out.glob("*.batch.json"))


def test_batch_options_and_prices() -> None:
    assert batch_options(None) is None
    assert batch_options(False) is None
    assert batch_options(True) == BatchOptions()
    assert batch_options({"poll_s": 1}) == BatchOptions(poll_s=1)
    with pytest.raises(UserError, match="unknown keys"):
        batch_options({"poll": 1})
    prices = PriceTable()
    assert prices.cost("gpt-4o-mini", 1_000_000, 0, batch=True) == pytest.approx(0.075)
    assert prices.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
