"""The eval harness: golden sets, ranx metrics, experiments, comparisons, sweeps, reports."""

from __future__ import annotations

from .compare import (
    Comparison,
    GateRule,
    Significance,
    adjust_pvalues,
    compare_many,
    compare_results,
    load_result,
    parse_gate,
)
from .datasets import (
    EvalQuery,
    GoldenSet,
    load_beir,
    load_candidates_jsonl,
    load_dataset,
    read_qrels,
)
from .experiment import DatasetSpec, Experiment, load_experiment
from .metrics import DEFAULT_METRICS, evaluate
from .pipelines import expand_pipelines
from .report import write_report
from .runner import RunResult, run_experiment
from .sweep import sweep_depths

__all__ = [
    "DEFAULT_METRICS",
    "Comparison",
    "DatasetSpec",
    "EvalQuery",
    "Experiment",
    "GateRule",
    "GoldenSet",
    "RunResult",
    "Significance",
    "adjust_pvalues",
    "compare_many",
    "compare_results",
    "evaluate",
    "expand_pipelines",
    "load_beir",
    "load_candidates_jsonl",
    "load_dataset",
    "load_experiment",
    "load_result",
    "parse_gate",
    "read_qrels",
    "run_experiment",
    "sweep_depths",
    "write_report",
]
