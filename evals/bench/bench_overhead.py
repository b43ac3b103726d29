"""Toolkit overhead: what llmrerank adds on top of the raw SDK calls.

A 50-candidate pointwise rerank against an in-process server that answers at once, sync
(thread pool) and async, compared in the same run with the same 50 requests made directly
through the OpenAI SDK. Then the same rerank fully cached (cold vs warm cache).

    python evals/bench/bench_overhead.py [--repeats 5] [--out evals/bench/results/overhead.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI, OpenAI

from llmrerank import DiskCache, LLMReranker
from llmrerank.backends import OpenAIBackend
from llmrerank.testing import WireServer, always

N = 50
PASSAGES = [
    f"Passage {i}: " + "memory leaks happen when references outlive their use. " * 4 for i in range(N)
]


def _sdk_sync(client: OpenAI, messages: list[list[dict[str, str]]]) -> float:
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda m: client.chat.completions.create(model="m", messages=m), messages))
    return time.perf_counter() - started


async def _sdk_async(base_url: str, messages: list[list[dict[str, str]]]) -> float:
    """A fresh client per event loop, as the toolkit does: an async client cannot outlive its loop."""
    semaphore = asyncio.Semaphore(8)
    started = time.perf_counter()
    async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:

        async def one(m: list[dict[str, str]]) -> None:
            async with semaphore:
                await client.chat.completions.create(model="m", messages=m)  # type: ignore[arg-type]

        await asyncio.gather(*(one(m) for m in messages))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="evals/bench/results/overhead.json")
    args = parser.parse_args()

    with WireServer(always('{"grade": 2}')) as server:
        backend = OpenAIBackend("bench", base_url=server.openai_base_url)
        reranker = LLMReranker(backend, strategy="pointwise", max_concurrency=8)
        # warm-up run; its recorded requests give the SDK baseline the identical messages
        reranker.rerank("what causes memory leaks?", PASSAGES)
        messages = [request.body["messages"] for request in server.requests]
        client = OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)

        rows: dict[str, list[float]] = {
            k: []
            for k in (
                "sdk_sync",
                "llmrerank_sync",
                "sdk_async",
                "llmrerank_async",
                "cold_cache",
                "warm_cache",
            )
        }
        for _ in range(args.repeats):
            rows["sdk_sync"].append(_sdk_sync(client, messages))
            started = time.perf_counter()
            reranker.rerank("what causes memory leaks?", PASSAGES)
            rows["llmrerank_sync"].append(time.perf_counter() - started)
            rows["sdk_async"].append(asyncio.run(_sdk_async(server.openai_base_url, messages)))
            started = time.perf_counter()
            asyncio.run(reranker.arerank("what causes memory leaks?", PASSAGES))
            rows["llmrerank_async"].append(time.perf_counter() - started)
            with tempfile.TemporaryDirectory() as directory:
                cached = LLMReranker(
                    backend, strategy="pointwise", cache=DiskCache(directory), max_concurrency=8
                )
                started = time.perf_counter()
                cached.rerank("what causes memory leaks?", PASSAGES)
                rows["cold_cache"].append(time.perf_counter() - started)
                started = time.perf_counter()
                ranking = cached.rerank("what causes memory leaks?", PASSAGES)
                rows["warm_cache"].append(time.perf_counter() - started)
                assert all(c.cached for c in ranking.calls)

    median = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "what": "50-candidate pointwise rerank vs the same 50 raw OpenAI SDK calls, instant local server",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "repeats": args.repeats,
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "toolkit_ms_per_call_sync": round((median["llmrerank_sync"] - median["sdk_sync"]) / N * 1000, 3),
        "toolkit_ms_per_call_async": round((median["llmrerank_async"] - median["sdk_async"]) / N * 1000, 3),
        "warm_cache_rerank_ms": round(median["warm_cache"] * 1000, 2),
        "ratio_llmrerank_over_sdk_sync": round(median["llmrerank_sync"] / median["sdk_sync"], 3),
        "ratio_llmrerank_over_sdk_async": round(median["llmrerank_async"] / median["sdk_async"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
