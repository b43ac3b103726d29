"""Local stages on this CPU: cross-encoder throughput, dense encoding with a cold and a warm
embedding cache, and the cascade's latency broken down by stage.

1. Cross-encoder, 50 DL19 candidates a query, ``max_length`` 256 and 512, in one run and
   interleaved: ``CrossEncoderReranker.rerank`` vs a plain ``CrossEncoder.predict`` on the
   same model and pairs, and vs ``predict`` fed one batch at a time (so nothing is sorted
   across batches: what length sorting buys).
2. Bi-encoder (all-MiniLM-L6-v2) over 100 candidates a query: no cache, cold cache, warm
   cache (passages/s; a warm cache encodes only the query).
3. Cascade dense 100 → 50 → cross-encoder 50 → 20 → LLM (simulated judge behind the local
   server, 100 ms a call) → 5: median latency of each stage.

    python evals/bench/bench_local_stages.py [--queries 5] [--repeats 3] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from llmrerank import Cascade, CrossEncoderReranker, DenseReranker, DiskCache, LLMReranker, Stage
from llmrerank.evaluation.datasets import load_dataset
from llmrerank.rerankers.cross_encoder import default_cross_encoder
from llmrerank.testing import simulated_backend


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _rerank_all(reranker: Any, queries: list[tuple[str, list[str]]]) -> None:
    for query, texts in queries:
        reranker.rerank(query, texts)


def _predict_all(
    model: Any, queries: list[tuple[str, list[str]]], batch: int, activation: Any, *, chunked: bool
) -> None:
    """Plain ``CrossEncoder.predict``; ``chunked`` feeds it one batch at a time, so its own
    length sorting cannot act across batches (what an unsorted implementation pays)."""
    for query, texts in queries:
        pairs = [(query, t) for t in texts]
        step = batch if chunked else len(pairs)
        for start in range(0, len(pairs), step):
            model.predict(pairs[start : start + step], batch_size=batch, activation_fn=activation)


def cross_encoder(queries: list[tuple[str, list[str]]], repeats: int) -> list[dict[str, Any]]:
    import torch
    from sentence_transformers import CrossEncoder

    rows = []
    pairs_total = sum(len(texts) for _, texts in queries)
    for max_length in (256, 512):
        ours = CrossEncoderReranker(default_cross_encoder(), device="cpu", max_length=max_length)
        plain = CrossEncoder(default_cross_encoder(), device="cpu", max_length=max_length)
        identity = torch.nn.Identity()
        batch = ours.batch_size

        run_ours = partial(_rerank_all, ours, queries)
        run_plain = partial(_predict_all, plain, queries, batch, identity, chunked=False)
        run_unsorted = partial(_predict_all, plain, queries, batch, identity, chunked=True)

        run_ours()  # warm-up: model load, first allocations
        run_plain()
        times: dict[str, list[float]] = {"ours": [], "plain": [], "unsorted": []}
        for _ in range(repeats):
            times["ours"].append(_timed(run_ours))
            times["plain"].append(_timed(run_plain))
            times["unsorted"].append(_timed(run_unsorted))
        median = {k: statistics.median(v) for k, v in times.items()}
        truncated = sum(ours.rerank(q, t).truncated for q, t in queries)
        rows.append(
            {
                "max_length": max_length,
                "pairs": pairs_total,
                "truncated_pairs": truncated,
                "pairs_per_s_llmrerank": round(pairs_total / median["ours"], 1),
                "pairs_per_s_plain_predict": round(pairs_total / median["plain"], 1),
                "pairs_per_s_unsorted_batches": round(pairs_total / median["unsorted"], 1),
                "ratio_llmrerank_over_plain": round(median["plain"] / median["ours"], 3),
                "ratio_sorted_over_unsorted": round(median["unsorted"] / median["plain"], 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def dense(queries: list[tuple[str, list[str]]], repeats: int) -> dict[str, Any]:
    passages = sum(len(texts) for _, texts in queries)
    encoder = DenseReranker(device="cpu")  # one loaded model; only its cache changes
    encoder.rerank(*queries[0])  # warm-up

    def run() -> None:
        for query, texts in queries:
            encoder.rerank(query, texts)

    no_cache = statistics.median(_timed(run) for _ in range(repeats))
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as directory:
            encoder.cache = DiskCache(directory)
            encoder.cache_hits = encoder.cache_misses = 0
            cold.append(_timed(run))
            warm.append(_timed(run))
            hits, misses = encoder.cache_hits, encoder.cache_misses
            encoder.cache.close()
            encoder.cache = None
    result = {
        "passages": passages,
        "passages_per_s_no_cache": round(passages / no_cache, 1),
        "passages_per_s_cold_cache": round(passages / statistics.median(cold), 1),
        "passages_per_s_warm_cache": round(passages / statistics.median(warm), 1),
        "warm_over_cold": round(statistics.median(cold) / statistics.median(warm), 2),
        "cache_hits_last_repeat": hits,
        "cache_misses_last_repeat": misses,
    }
    print(json.dumps(result), flush=True)
    return result


def cascade(queries: list[tuple[str, list[str]]], delay_s: float) -> dict[str, Any]:
    llm = LLMReranker(simulated_backend("dl19", delay_s=delay_s), strategy="listwise")
    pipeline = Cascade(
        [
            Stage(DenseReranker(device="cpu"), keep=50),
            Stage(CrossEncoderReranker(device="cpu"), keep=20),
            Stage(llm, keep=5),
        ]
    )
    pipeline.rerank(*queries[0])  # warm-up: model loads
    per_stage: dict[str, list[float]] = {}
    totals = []
    for query, texts in queries:
        started = time.perf_counter()
        ranking = pipeline.rerank(query, texts)
        totals.append(time.perf_counter() - started)
        for report in ranking.stages:
            per_stage.setdefault(report.name, []).append(report.latency_s)
    result = {
        "stages": "dense 100→50, cross-encoder 50→20, LLM listwise 20→5 (simulated, "
        f"{delay_s * 1000:.0f} ms/call)",
        "median_latency_s": {name: round(statistics.median(v), 4) for name, v in per_stage.items()},
        "median_total_s": round(statistics.median(totals), 4),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--out", default="evals/bench/results/local_stages.json")
    args = parser.parse_args()
    golden = load_dataset("dl19", limit=args.queries)
    top50 = [(q.query, [c.text for c in q.candidates[:50]]) for q in golden.queries]
    top100 = [(q.query, [c.text for c in q.candidates[:100]]) for q in golden.queries]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "device": "cpu"},
        "queries": args.queries,
        "repeats": args.repeats,
        "cross_encoder": cross_encoder(top50, args.repeats),
        "dense": dense(top100, args.repeats),
        "cascade": cascade(top100, args.delay),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
