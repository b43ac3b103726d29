"""The local llama.cpp server on this CPU: per-call latency and tokens/s per strategy.

20 DL19 candidates of one query, the default local model (Qwen2.5 0.5B instruct, Q4),
JSON-schema constrained output, no response cache. Each strategy runs against a server
with 1 slot and ``max_concurrency=1`` (sequential), then against a fresh server with
``--slots`` slots and as many requests in flight (parallel). Token counts are the server's
own (its tokenizer). Pairwise and setwise ask for the top 3 to keep the run short.

    python evals/bench/bench_local_llm.py [--slots 4] [--out evals/bench/results/local_llm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from llmrerank import LLMReranker
from llmrerank.backends import OpenAIBackend
from llmrerank.backends.llama_server import LocalLLMServer, default_model_path
from llmrerank.evaluation.datasets import load_dataset
from llmrerank.strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy

CANDIDATES = 20
TOP_K = 3
CONTEXT_PER_SLOT = 4096


def strategies() -> dict[str, Strategy]:
    return {
        "pointwise": Pointwise(),
        "listwise (one window of 20)": Listwise(window=20, step=10),
        "pairwise heapsort top-3": Pairwise(method="heapsort", top_k=TOP_K),
        "setwise heapsort top-3 (c=4)": Setwise(set_size=4, top_k=TOP_K),
    }


def measure(
    server: LocalLLMServer, strategy: Strategy, query: str, texts: list[str], concurrency: int
) -> dict[str, Any]:
    with OpenAIBackend("qwen", base_url=server.openai_base_url, timeout_s=600) as backend:
        reranker = LLMReranker(backend, strategy=strategy, max_concurrency=concurrency)
        started = time.perf_counter()
        ranking = reranker.rerank(query, texts, top_k=TOP_K)
        wall = time.perf_counter() - started
    latencies = [call.latency_s for call in ranking.calls]
    usage = ranking.usage
    return {
        "calls": len(ranking.calls),
        "rounds": ranking.rounds,
        "wall_s": round(wall, 2),
        "per_call_latency_median_s": round(statistics.median(latencies), 3),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "prompt_tokens_per_s": round(usage.prompt_tokens / wall, 1),
        "completion_tokens_per_s": round(usage.completion_tokens / wall, 1),
        "repairs": dict(ranking.repairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--out", default="evals/bench/results/local_llm.json")
    args = parser.parse_args()
    golden = load_dataset("dl19", limit=1)
    query = golden.queries[0]
    texts = [c.text for c in query.candidates[:CANDIDATES]]
    model = default_model_path()
    rows: dict[str, dict[str, Any]] = {name: {} for name in strategies()}
    for mode, slots in (("sequential", 1), ("parallel", args.slots)):
        with LocalLLMServer(model, parallel=slots, ctx_per_slot=CONTEXT_PER_SLOT) as server:
            for name, strategy in strategies().items():
                rows[name][mode] = measure(server, strategy, query.query, texts, concurrency=slots)
                print(name, mode, json.dumps(rows[name][mode]), flush=True)
    result = {
        "what": f"{CANDIDATES} DL19 candidates of query {query.qid}, top-{TOP_K}",
        "model": model.name,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "parallel_slots": args.slots,
        "strategies": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
