"""Ray executor: throughput of the local stages with 1 vs 2 pipeline actors.

The first ``--queries`` TREC DL 2019 queries, BM25 top-``--depth``, reranked by the
offline cross-encoder (a local stage, no LLM) through ``run_on_ray`` on a local Ray
started with ``num_cpus=2`` (this machine). Reported: wall time including actor start and
model load, queries per second over that wall time, and the summed in-actor rerank time
(the part that scales with actors), and the machine's load average. Ratios only mean
something within one run, on an otherwise idle machine.

    python evals/bench/bench_ray.py [--queries 24] [--depth 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

from llmrerank.evaluation.datasets import load_dataset
from llmrerank.evaluation.ray_executor import RayOptions, run_on_ray
from llmrerank.pipeline import PipelineSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ray.json"))
    args, _ = parser.parse_known_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import ray

    golden = load_dataset("dl19", limit=args.queries, depth=args.depth)
    queries = [
        {
            "qid": q.qid,
            "query": q.query,
            "candidates": [{"id": c.id, "text": c.text, "score": c.score} for c in q.candidates],
        }
        for q in golden.queries
    ]
    spec = PipelineSpec(name="cross-encoder", narrow_with=("cross-encoder:",))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    try:
        for workers in (1, 2):
            started = time.perf_counter()
            records = run_on_ray(spec, queries, None, RayOptions(workers=workers, batch_size=2))
            wall = time.perf_counter() - started
            busy = sum(r["latency_s"] for r in records)
            rows.append(
                {
                    "workers": workers,
                    "queries": len(records),
                    "wall_s": round(wall, 2),
                    "queries_per_s": round(len(records) / wall, 3),
                    "in_actor_rerank_s": round(busy, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    result = {
        "args": vars(args),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        # other processes' load matters on a shared machine: read the ratios with it
        "load_average_1m_after": round(os.getloadavg()[0], 1),
        "ray": ray.__version__,
        "rows": rows,
        "speedup_2_vs_1": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
