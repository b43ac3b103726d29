"""A finished run's results JSON (schema ``llmrerank.eval/1``): metrics over its queries'
records, with calls, tokens, cost, latency percentiles, repairs, and the prompts, rubrics and
models that answered."""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..pricing import PriceTable
from .datasets import GoldenSet
from .experiment import Experiment
from .metrics import evaluate

__all__ = ["SCHEMA", "summarise"]

SCHEMA = "llmrerank.eval/1"


def _git_commit() -> str | None:
    """The commit of the repository the experiment runs in (the current directory), if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


def summarise(
    experiment: Experiment,
    golden: GoldenSet,
    done: Mapping[str, Mapping[str, Any]],
    prices: PriceTable,
) -> dict[str, Any]:
    """The results of one run, from the records (``done``, by qid) of every query of ``golden``."""
    records = [done[q.qid] for q in golden.queries]
    run = {r["qid"]: r["run"] for r in records}
    means, per_query = evaluate(golden.qrels, run, experiment.metrics, rel_threshold=golden.rel_threshold)
    latencies = [r["latency_s"] for r in records]
    repairs: dict[str, int] = {}
    for record in records:
        for key, count in record["repairs"].items():
            repairs[key] = repairs.get(key, 0) + count
    prompts = sorted({tuple(p) for r in records for p in r["prompts"]})
    rubrics = sorted({tuple(p) for r in records for p in r.get("rubrics", ())})
    return {
        "schema": SCHEMA,
        "experiment": experiment.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "queries": len(records),
        "rel_threshold": golden.rel_threshold,
        "metrics": means,
        "per_query": {m: per_query[m] for m in experiment.metrics},
        "calls": sum(r["calls"] for r in records),
        "cache_hits": sum(r["cached_calls"] for r in records),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "completion_tokens": sum(r["completion_tokens"] for r in records),
        "cost_usd": round(sum(r["cost_usd"] for r in records), 6),
        "price_table_date": prices.date,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "reasks": sum(r["reasks"] for r in records),
        "repairs": repairs,
        "degraded_queries": sum(1 for r in records if r["degraded"]),
        "prompts": [{"ref": ref, "sha256": sha} for ref, sha in prompts],
        "rubrics": [{"ref": ref, "sha256": sha} for ref, sha in rubrics],
        # the final order and each stage's own scores per query, for agreement and moved passages
        "run": run,
        "stage_scores": {r["qid"]: r["stage_scores"] for r in records if r.get("stage_scores")},
        "models": sorted({m for r in records for m in r["models"]}),
    }
