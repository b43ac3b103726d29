"""Batch mode vs online: LLM calls, batch rounds, wall time and cost, per strategy.

One eval config (TREC DL 2019 and 2020, BM25 top-``--depth``, the first ``--queries``
queries each; pointwise, listwise, setwise and pairwise heapsort to top-10) runs twice
against the local test server with the simulated judge, through the real OpenAI SDK and
a priced model name (gpt-4o-mini):

* online: every call answered after ``--delay`` s (a fast hosted model), 8 in flight;
* batch: every batch ends ``--turnaround`` s after it is created (real providers take
  minutes to hours: multiply the rounds by your provider's turnaround).

Costs use the test server's token counts (whitespace words, not a tokenizer) at the
price table's list and batch prices. Each mode starts from an empty cache.

    python evals/bench/bench_batch.py [--queries 8] [--depth 50] [--turnaround 0.5]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from llmrerank.evaluation.batch_state import BatchOptions
from llmrerank.evaluation.experiment import DatasetSpec, Experiment
from llmrerank.evaluation.runner import run_experiment
from llmrerank.pipeline import PipelineSpec
from llmrerank.settings import TREC_FILES, asset
from llmrerank.testing import SimulatedJudge
from llmrerank.testing.batch_server import BatchWireServer

STRATEGIES: dict[str, dict[str, Any]] = {
    "pointwise": {},
    "listwise": {"window": 20, "step": 10},
    "setwise": {"set_size": 4, "top_k": 10},
    "pairwise": {"method": "heapsort", "top_k": 10},
}


def run_mode(dataset: str, args: argparse.Namespace, batch: bool) -> list[dict[str, Any]]:
    candidates, qrels = (asset(p) for p in TREC_FILES[dataset])
    judge = SimulatedJudge.from_trec(candidates, qrels, sigma=1.0)
    server = BatchWireServer(judge, delay_s=0.0 if batch else args.delay, turnaround_s=args.turnaround)
    rows = []
    with server, tempfile.TemporaryDirectory() as scratch:
        for name, options in STRATEGIES.items():
            experiment = Experiment(
                name=f"bench-batch-{dataset}",
                datasets=(DatasetSpec(dataset, limit=args.queries, depth=args.depth),),
                pipelines=(
                    PipelineSpec(
                        name=name,
                        llm="openai:gpt-4o-mini",
                        base_url=server.openai_base_url,
                        strategy=name,
                        strategy_options=options,
                    ),
                ),
                metrics=("ndcg@10",),
                cache_dir=str(Path(scratch) / f"cache-{name}"),
                batch=BatchOptions(poll_s=0.05, poll_max_s=0.2) if batch else None,
            )
            started = time.perf_counter()
            (result,) = run_experiment(experiment, Path(scratch) / name, progress=False)
            wall = time.perf_counter() - started
            data = result.data
            rows.append(
                {
                    "dataset": dataset,
                    "strategy": name,
                    "mode": "batch" if batch else "online",
                    "queries": data["queries"],
                    "ndcg@10": round(data["metrics"]["ndcg@10"], 4),
                    "calls": data["calls"],
                    "batch_rounds": data["batch"]["rounds"] if batch else None,
                    "wall_s": round(wall, 2),
                    "cost_usd": data["cost_usd"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Batch vs online, {args.queries} queries per set, BM25 top-{args.depth} → top-10, "
        f"online delay {args.delay}s ×8 in flight, batch turnaround {args.turnaround}s.",
        "",
        "| set | strategy | nDCG@10 online / batch | calls | batch rounds | wall online | "
        "wall batch | cost list price | cost batch price |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    online = {(r["dataset"], r["strategy"]): r for r in rows if r["mode"] == "online"}
    for row in (r for r in rows if r["mode"] == "batch"):
        base = online[(row["dataset"], row["strategy"])]
        lines.append(
            f"| {row['dataset']} | {row['strategy']} | {base['ndcg@10']:.4f} / {row['ndcg@10']:.4f} | "
            f"{row['calls']} | {row['batch_rounds']} | {base['wall_s']:.1f}s | {row['wall_s']:.1f}s | "
            f"${base['cost_usd']:.4f} | ${row['cost_usd']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--turnaround", type=float, default=0.5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "batch.json"))
    args, _ = parser.parse_known_args()
    rows = [
        row
        for dataset in ("dl19", "dl20")
        for batch in (False, True)
        for row in run_mode(dataset, args, batch)
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args), "machine": platform.platform(), "rows": rows}, indent=1) + "\n"
    )
    out.with_suffix(".md").write_text(table(rows, args))
    print(table(rows, args))


if __name__ == "__main__":
    main()
