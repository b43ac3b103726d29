"""Depth sweep: quality and latency as the reranker sees the top 10, 25, 50, 100 candidates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..pipeline import PipelineSpec
from ..rerankers.protocol import Reranker
from .experiment import DatasetSpec, Experiment
from .runner import run_experiment

__all__ = ["sweep_depths"]


def sweep_depths(
    experiment: Experiment,
    depths: Sequence[int],
    out_dir: str | Path,
    *,
    factory: Callable[[PipelineSpec], Reranker] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``experiment`` once per depth (first-stage candidates given to the pipeline)."""
    rows = []
    for depth in depths:
        datasets = tuple(DatasetSpec(d.name, d.limit, depth) for d in experiment.datasets)
        variant = replace(experiment, datasets=datasets, repeats=1)
        for result in run_experiment(
            variant, Path(out_dir) / f"depth-{depth}", factory=factory, progress=progress
        ):
            data = result.data
            rows.append(
                {
                    "depth": depth,
                    "dataset": data["dataset"],
                    "pipeline": data["pipeline"]["name"],
                    "metrics": data["metrics"],
                    "latency_p50_s": data["latency_p50_s"],
                    "latency_p95_s": data["latency_p95_s"],
                    "calls": data["calls"],
                    "cost_usd": data["cost_usd"],
                }
            )
    return rows
