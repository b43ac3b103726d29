"""Reranking on a Ray cluster: the eval harness's ``--executor ray`` and
``rerank_dataset`` for large offline JSONL/Parquet files of (query, candidates).

Rows go through Ray Data ``map_batches`` over ``PipelineWorker`` actors: each actor builds
the pipeline once (one model load per actor; ``num_gpus`` per actor when there are GPUs)
and runs its local stages and LLM stage on its rows. LLM calls from every actor pass one
cluster-wide limit (a named ``ConcurrencyLimit`` actor), not one per worker. Every actor
reads and writes the same response cache directory, so a re-run is served from the cache
(on a multi-node cluster, put ``cache_dir`` on a shared filesystem).

Ray is an optional extra: ``pip install 'llmrerank[ray]'``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend, BackendReply, BackendRequest
from ..cache import DiskCache
from ..errors import UserError
from ..pipeline import PipelineSpec
from ..pricing import PriceTable
from ..rerankers.cascade import Cascade
from ..rerankers.llm import LLMReranker
from ..rerankers.protocol import Reranker
from ..types import Candidate
from .datasets import GoldenSet
from .records import Checkpoint, query_record

__all__ = [
    "ConcurrencyLimit",
    "PipelineWorker",
    "RayOptions",
    "ray_module",
    "rerank_dataset",
    "run_on_ray",
    "run_unfinished_on_ray",
]

LIMIT_NAME = "llmrerank-llm-limit"


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs Ray: pip install 'llmrerank[ray]'") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """``address``: a cluster (``auto``) or None for a local Ray; ``workers``: pipeline
    actors; ``num_gpus``: GPUs per actor; ``llm_concurrency``: LLM calls in flight across
    the whole cluster; ``batch_size``: rows per ``map_batches`` call."""

    address: str | None = None
    workers: int = 2
    num_gpus: float = 0.0
    llm_concurrency: int = 8
    batch_size: int = 4
    num_cpus: int | None = None


class ConcurrencyLimit:
    """A counting semaphore for the whole cluster, as a Ray actor (async: waiting callers
    do not block the actor)."""

    def __init__(self, limit: int) -> None:
        import asyncio

        self._semaphore = asyncio.Semaphore(limit)
        self.peak = self._held = 0

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self._held += 1
        self.peak = max(self.peak, self._held)

    async def release(self) -> None:
        self._held -= 1
        self._semaphore.release()

    async def stats(self) -> dict[str, int]:
        return {"peak": self.peak, "held": self._held}


class _ClusterLimited(Backend):
    """Passes a backend's calls through the cluster-wide limit; same identity, so the same
    cache keys as the backend alone."""

    def __init__(self, inner: Backend, limit: Any) -> None:
        self.inner, self._limit = inner, limit
        self.provider, self.model = inner.provider, inner.model
        self.supports_logprobs = inner.supports_logprobs

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    @contextmanager
    def _slot(self) -> Iterator[None]:
        ray = ray_module()
        ray.get(self._limit.acquire.remote())
        try:
            yield
        finally:
            ray.get(self._limit.release.remote())

    def complete(self, request: BackendRequest) -> BackendReply:
        with self._slot():
            return self.inner.complete(request)

    async def acomplete(self, request: BackendRequest) -> BackendReply:
        await self._limit.acquire.remote()
        try:
            return await self.inner.acomplete(request)
        finally:
            await self._limit.release.remote()

    def close(self) -> None:
        self.inner.close()


def _limit_llm_stages(reranker: Reranker, limit: Any) -> None:
    stages = reranker.stages if isinstance(reranker, Cascade) else []
    for stage in stages:
        if isinstance(stage.reranker, LLMReranker):
            driver = stage.reranker.driver
            driver.backend = _ClusterLimited(driver.backend, limit)


class PipelineWorker:
    """A Ray Data callable class: builds ``spec`` once, then reranks batches of rows with
    columns ``qid``, ``query``, ``candidates`` (JSON list of ``{id, text}``) into ``qid``,
    ``ranking`` (JSON list of ``[id, score]``) and ``record`` (JSON: calls, tokens, cost)."""

    def __init__(self, spec: PipelineSpec, cache_dir: str | None, use_limit: bool = True) -> None:
        self.reranker = spec.build(cache=DiskCache(cache_dir) if cache_dir else None)
        self.prices = PriceTable()
        if use_limit:
            _limit_llm_stages(self.reranker, ray_module().get_actor(LIMIT_NAME))
        self._lock = threading.Lock()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"qid": [], "ranking": [], "record": []}
        for qid, query, candidates in zip(batch["qid"], batch["query"], batch["candidates"], strict=True):
            items = [Candidate(c["id"], c["text"], score=c.get("score")) for c in json.loads(candidates)]
            started = time.perf_counter()
            ranking = self.reranker.rerank(str(query), items)
            record = query_record(str(qid), ranking, time.perf_counter() - started, self.prices)
            out["qid"].append(str(qid))
            out["ranking"].append(json.dumps([[item.id, item.score] for item in ranking]))
            out["record"].append(json.dumps(record))
        return out


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Connect to (or start) Ray and create the cluster-wide LLM limit."""
    ray = ray_module()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=options.address,
            num_cpus=options.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    limit = (
        ray.remote(ConcurrencyLimit)
        .options(name=LIMIT_NAME, get_if_exists=True)
        .remote(options.llm_concurrency)
    )
    try:
        yield limit
    finally:
        ray.kill(limit)
        if started_here:
            ray.shutdown()


def _map(dataset: Any, spec: PipelineSpec, cache_dir: str | None, options: RayOptions) -> Any:
    ray = ray_module()
    return dataset.map_batches(
        PipelineWorker,
        fn_constructor_args=(spec, cache_dir),
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=options.workers),
        num_gpus=options.num_gpus or None,
        batch_format="numpy",
    )


def run_on_ray(
    spec: PipelineSpec, queries: list[dict[str, Any]], cache_dir: str | None, options: RayOptions
) -> list[dict[str, Any]]:
    """Rerank ``queries`` (``qid``, ``query``, ``candidates``) on Ray; the per-query records
    of the eval harness, in input order."""
    ray = ray_module()
    rows = [
        {"qid": q["qid"], "query": q["query"], "candidates": json.dumps(q["candidates"])} for q in queries
    ]
    with ray_session(options):
        results = _map(ray.data.from_items(rows), spec, cache_dir, options).take_all()
    by_qid = {r["qid"]: json.loads(r["record"]) for r in results}
    return [by_qid[q["qid"]] for q in queries]


def rerank_dataset(
    spec: PipelineSpec,
    source: str,
    destination: str,
    *,
    cache_dir: str | None = None,
    options: RayOptions | None = None,
) -> None:
    """Rerank a JSONL or Parquet file (or folder) of rows ``qid``, ``query``, ``candidates``
    (a list of ``{id, text}``, or its JSON) into ``destination`` (Parquet, or JSONL when it
    ends in ``.jsonl``): columns ``qid``, ``ranking``, ``record``."""
    ray = ray_module()
    options = options or RayOptions()
    with ray_session(options):
        reader = ray.data.read_parquet if ".parquet" in source else ray.data.read_json
        dataset = reader(source).map(_candidates_as_json)
        ranked = _map(dataset, spec, cache_dir, options)
        if destination.endswith(".jsonl"):
            ranked.write_json(destination)
        else:
            ranked.write_parquet(destination)


def run_unfinished_on_ray(
    spec: PipelineSpec, golden: GoldenSet, checkpoint: Checkpoint, cache_dir: str | None, options: RayOptions
) -> None:
    """The eval runner's Ray executor: rerank every query of ``golden`` not yet in
    ``checkpoint`` on Ray and append its record there."""
    todo = [
        {
            "qid": q.qid,
            "query": q.query,
            "candidates": [{"id": c.id, "text": c.text, "score": c.score} for c in q.candidates],
        }
        for q in golden.queries
        if q.qid not in checkpoint.done
    ]
    if not todo:
        return
    for record in run_on_ray(spec, todo, cache_dir, options):
        checkpoint.append(record)


def _candidates_as_json(row: dict[str, Any]) -> dict[str, Any]:
    candidates = row["candidates"]
    if not isinstance(candidates, str):
        candidates = json.dumps(
            [{"id": str(c["id"]), "text": str(c["text"]), "score": c.get("score")} for c in candidates]
        )
    return {"qid": str(row["qid"]), "query": str(row["query"]), "candidates": candidates}
