"""Local stages on this CPU, per backend: speed, quality, and the cascade end to end.

Configurations: ``torch`` (sentence-transformers, the reference), ``onnx`` (ONNX Runtime,
fp32) and ``onnx-int8`` (dynamic int8 weights), for both stages.

1. Speed, in one run with the configurations interleaved query by query (so load from
   other processes hits all alike; compare ratios): the bi-encoder over 100 DL19 candidates
   (no embedding cache: every passage encoded), the bi-encoder with the passages' embeddings
   given (only the query encoded), the cross-encoder over 50. Per configuration: load time
   (first with an empty export cache: export included; then from the cache), p50/p95 per
   query and passages/s.
2. Quality: nDCG@10 of each configuration reranking BM25's top 100 (dense) and top 50
   (cross-encoder) on DL19 and DL20.
3. The cascade dense 100 → 50 → cross-encoder 50 → 20 → LLM (simulated judge, ``--delay``
   a call) → 5 with each configuration on both stages (and ``auto``, the default: what this
   host's records in ``--export-dir`` make it choose), with every passage encoded in the
   request and with the passages' embeddings indexed beforehand (``llmrerank index``, as a
   service over a fixed corpus runs it): p50 per stage and in total.

    python evals/bench/bench_local_stages.py [--queries 10] [--repeats 3] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any

from llmrerank import Cascade, CrossEncoderReranker, DenseReranker, DiskCache, LLMReranker, Stage
from llmrerank.evaluation.datasets import GoldenSet, load_dataset
from llmrerank.evaluation.metrics import evaluate
from llmrerank.host import host_cpu
from llmrerank.testing import simulated_backend

CONFIGS = {"torch": ("torch", "none"), "onnx": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}
# the defaults: what backend=auto, quantize=auto choose on this host, from the int8-check
# records and host timings in the export folder (--export-dir)
AUTO = {"auto": ("auto", "auto")}
STAGES = {"dense": (DenseReranker, 100), "cross-encoder": (CrossEncoderReranker, 50)}


def build(stage: str, config: str, export_dir: str, cache: DiskCache | None = None) -> Any:
    backend, quantize = {**CONFIGS, **AUTO}[config]
    cls, _ = STAGES[stage]
    options = {"cache": cache} if cache is not None else {}
    return cls(device="cpu", backend=backend, quantize=quantize, onnx_cache_dir=export_dir, **options)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float], passages_per_query: int) -> dict[str, float]:
    return {
        "p50_s": round(statistics.median(latencies), 4),
        "p95_s": round(percentile(latencies, 0.95), 4),
        "passages_per_s": round(passages_per_query * len(latencies) / sum(latencies), 1),
    }


def speed(golden: GoldenSet, repeats: int, export_dir: str) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    loads: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        for config in CONFIGS:
            key = f"{stage}/{config}"
            first = build(stage, config, export_dir)
            cold = first.load()
            again = build(stage, config, export_dir)  # export cached now: load only
            loads[key] = {"first_load_s": round(cold, 2), "cached_load_s": round(again.load(), 2)}
            stages[key] = again
            print(json.dumps({key: loads[key]}), flush=True)
    # the passages' own embeddings, as a vector store would hand them over
    with_embeddings: dict[str, list[list[dict[str, Any]]]] = {}
    for config in CONFIGS:
        encoder = stages[f"dense/{config}"]
        rows = []
        for query in golden.queries:
            texts = [c.text for c in query.candidates[:100]]
            vectors = encoder.embed_passages(texts)
            rows.append(
                [
                    {"id": c.id, "text": c.text, "embedding": v.tolist()}
                    for c, v in zip(query.candidates[:100], vectors, strict=True)
                ]
            )
        with_embeddings[config] = rows
    latencies: dict[str, list[float]] = {}
    for _ in range(repeats):
        for number, query in enumerate(golden.queries):
            for key, stage in stages.items():
                depth = STAGES[key.split("/")[0]][1]
                candidates = [{"id": c.id, "text": c.text} for c in query.candidates[:depth]]
                started = time.perf_counter()
                stage.rerank(query.query, candidates)
                latencies.setdefault(key, []).append(time.perf_counter() - started)
            for config in CONFIGS:
                stage = stages[f"dense/{config}"]
                started = time.perf_counter()
                stage.rerank(query.query, with_embeddings[config][number])
                latencies.setdefault(f"dense+precomputed/{config}", []).append(time.perf_counter() - started)
    result = {}
    for key, values in latencies.items():
        depth = 50 if key.startswith("cross") else 100
        result[key] = {**summary(values, depth), **loads.get(key, {})}
        print(json.dumps({key: result[key]}), flush=True)
    return result


def quality(names: list[str], limit: int | None, configs: list[str], export_dir: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in names:
        golden = load_dataset(name, limit=limit)
        for stage_name, (_, depth) in STAGES.items():
            for config in configs:
                stage = build(stage_name, config, export_dir)
                run = {}
                for query in golden.queries:
                    ranking = stage.rerank(query.query, list(query.candidates[:depth]))
                    run[query.qid] = {item.id: float(len(ranking) - i) for i, item in enumerate(ranking)}
                means, _ = evaluate(golden.qrels, run, ["ndcg@10"], rel_threshold=golden.rel_threshold)
                key = f"{name}/{stage_name}/{config}"
                result[key] = {"ndcg@10": round(means["ndcg@10"], 4), "queries": len(golden.queries)}
                print(json.dumps({key: result[key]}), flush=True)
    return result


def cascade(
    golden: GoldenSet, delay_s: float, configs: dict[str, str], export_dir: str, indexed: bool
) -> dict[str, Any]:
    """The cascade per query; ``indexed``: the passages' embeddings were cached beforehand
    (``llmrerank index`` over the corpus, untimed), so the dense stage encodes the query only."""
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = DiskCache(cache_dir) if indexed else None
        dense = build("dense", configs["dense"], export_dir, cache)
        if indexed:
            dense.embed_passages(sorted({c.text for q in golden.queries for c in q.candidates[:100]}))
        return cascade_run(golden, delay_s, configs, export_dir, dense, indexed)


def cascade_run(
    golden: GoldenSet, delay_s: float, configs: dict[str, str], export_dir: str, dense: Any, indexed: bool
) -> dict[str, Any]:
    cross_encoder = build("cross-encoder", configs["cross-encoder"], export_dir)
    pipeline = Cascade(
        [
            Stage(dense, keep=50),
            Stage(cross_encoder, keep=20),
            Stage(LLMReranker(simulated_backend("dl19", delay_s=delay_s), strategy="listwise"), keep=5),
        ]
    )
    first = golden.queries[0]
    pipeline.rerank(first.query, list(first.candidates[:100]))  # model loads
    per_stage: dict[str, list[float]] = {}
    totals = []
    for query in golden.queries:
        started = time.perf_counter()
        ranking = pipeline.rerank(query.query, list(query.candidates[:100]))
        totals.append(time.perf_counter() - started)
        for report in ranking.stages:
            per_stage.setdefault(report.name, []).append(report.latency_s)
    result = {
        "configs": configs,
        "in_use": {
            stage.label: f"{local.backend_in_use}/{local.quantize_in_use}"
            for stage, local in zip(pipeline.stages, (dense, cross_encoder), strict=False)
        },
        "passage_embeddings": "indexed beforehand" if indexed else "encoded in the request",
        "stages": "dense 100→50, cross-encoder 50→20, LLM listwise 20→5 "
        f"(simulated, {delay_s * 1000:.0f} ms/call)",
        "p50_latency_s": {name: round(statistics.median(v), 4) for name, v in per_stage.items()},
        "p50_total_s": round(statistics.median(totals), 4),
        "p95_total_s": round(percentile(totals, 0.95), 4),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=10, help="DL19 queries for the speed runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality-limit", type=int, default=None, help="queries per dataset (all)")
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--quality-configs", default=",".join(CONFIGS))
    parser.add_argument("--sections", default="speed,quality,cascade")
    parser.add_argument(
        "--cascade-configs", default=",".join([*CONFIGS, *AUTO]), help="configurations for the cascade"
    )
    parser.add_argument(
        "--cascade-embeddings",
        default="encoded,indexed",
        help="encoded: every passage encoded in the request; indexed: embeddings cached beforehand",
    )
    parser.add_argument(
        "--export-dir",
        default=None,
        help="ONNX export folder (default: a fresh temporary one); give the one holding this "
        "host's int8-check records for 'auto' to choose as it would for a user",
    )
    parser.add_argument("--out", default="evals/bench/results/local_stages.json")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    golden = load_dataset("dl19", limit=args.queries)
    result: dict[str, Any] = {
        "machine": {
            "cpu": host_cpu(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "device": "cpu",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "queries": args.queries,
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as fresh_dir:
        export_dir = args.export_dir or fresh_dir
        if "speed" in sections:
            result["speed"] = speed(golden, args.repeats, export_dir)
        if "quality" in sections:
            configs = args.quality_configs.split(",")
            result["quality"] = quality(["dl19", "dl20"], args.quality_limit, configs, export_dir)
        if "cascade" in sections:
            result["cascade"] = {
                f"{config}/{embeddings}": cascade(
                    golden,
                    args.delay,
                    {"dense": config, "cross-encoder": config},
                    export_dir,
                    embeddings == "indexed",
                )
                for embeddings in args.cascade_embeddings.split(",")
                for config in args.cascade_configs.split(",")
            }
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = args.out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as handle:
        handle.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
