"""The Ray executor on a local Ray (2 CPUs, small data): same metrics as the local
executor, one cluster-wide LLM limit, and offline reranking of a JSONL file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmrerank.evaluation.experiment import DatasetSpec, Experiment, executor_options
from llmrerank.evaluation.runner import run_experiment
from llmrerank.pipeline import PipelineSpec

ray = pytest.importorskip("ray")
# Ray Data's own DataContext sets options it deprecated itself
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

from llmrerank.evaluation.ray_executor import RayOptions, rerank_dataset  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def small_experiment(cache: Path, executor: Any = None) -> Experiment:
    """``executor``: as in a config file (local, ray, or a mapping of options)."""
    return Experiment(
        name="ray-dl19",
        datasets=(DatasetSpec("dl19", limit=4, depth=20),),
        pipelines=(
            PipelineSpec(
                name="listwise",
                llm="sim:dl19@0.1",
                strategy="listwise",
                strategy_options={"window": 10, "step": 5},
            ),
        ),
        metrics=("ndcg@10", "mrr@10"),
        cache_dir=str(cache),
        executor=executor_options(executor),
    )


def test_ray_executor_gives_the_local_metrics(local_ray: Any, tmp_path: Path) -> None:
    local = [
        r.data for r in run_experiment(small_experiment(tmp_path / "local"), tmp_path / "a", progress=False)
    ]
    on_ray = [
        r.data
        for r in run_experiment(
            small_experiment(tmp_path / "ray", {"workers": 2, "llm_concurrency": 2}),
            tmp_path / "b",
            progress=False,
        )
    ]
    assert [r["metrics"] for r in on_ray] == [r["metrics"] for r in local]
    assert [r["calls"] for r in on_ray] == [r["calls"] for r in local]
    assert all(r["cache_hits"] == 0 for r in on_ray)

    # the workers wrote the shared response cache: a re-run on Ray is served from it
    again = [
        r.data
        for r in run_experiment(
            replace(small_experiment(tmp_path / "ray", "ray")), tmp_path / "c", progress=False
        )
    ]
    assert [r["cache_hits"] for r in again] == [r["calls"] for r in local]
    assert all(r["calls"] == 0 for r in again)
    assert [r["metrics"] for r in again] == [r["metrics"] for r in local]


def test_rerank_dataset_reads_and_writes_jsonl(local_ray: Any, tmp_path: Path) -> None:
    rows = [
        {
            "qid": "q1",
            "query": "what is a cat",
            "candidates": [
                {"id": "a", "text": "Cars have four wheels."},
                {"id": "b", "text": "A cat is a small feline pet."},
            ],
        },
        {
            "qid": "q2",
            "query": "what is rust",
            "candidates": [
                {"id": "c", "text": "Rust is iron oxide, formed when iron corrodes."},
                {"id": "d", "text": "Bread."},
            ],
        },
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = PipelineSpec(name="ce", narrow_with=("cross-encoder:",))
    rerank_dataset(spec, str(source), str(tmp_path / "out.jsonl"), options=RayOptions(workers=1))
    written = [
        json.loads(line)
        for f in sorted((tmp_path / "out.jsonl").glob("*.json*"))
        for line in f.read_text().splitlines()
    ]
    top = {r["qid"]: json.loads(r["ranking"])[0][0] for r in written}
    assert top == {"q1": "b", "q2": "c"}


def test_llm_calls_share_one_cluster_wide_limit(local_ray: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from llmrerank.backends import BackendRequest
    from llmrerank.evaluation.ray_executor import ConcurrencyLimit, _ClusterLimited
    from llmrerank.testing import FunctionBackend

    in_flight = peak = 0
    lock = threading.Lock()

    def slow(_: BackendRequest) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return "{}"

    limit = ray.remote(ConcurrencyLimit).remote(2)
    inner = FunctionBackend(slow)
    limited = [_ClusterLimited(inner, limit) for _ in range(3)]  # three "workers", one limit
    assert limited[0].identity() == inner.identity()  # the same cache keys as without Ray
    request = BackendRequest(messages=[{"role": "user", "content": "hi"}])
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda i: limited[i % 3].complete(request), range(12)))
    assert peak == 2
    assert ray.get(limit.stats.remote()) == {"peak": 2, "held": 0}
    ray.kill(limit)
