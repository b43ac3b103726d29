"""Compare result files: metric deltas with paired significance, wins/losses, cost and
latency deltas, and a regression gate (``--fail-if-worse ndcg@10:0.01``).

Significance is paired over the queries both runs share: Student's paired t-test and a
paired randomisation (sign-flip permutation) test, both from SciPy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["Comparison", "GateRule", "compare_results", "load_result", "parse_gate"]


def load_result(path: str | Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read results {path}: {exc}") from exc
    if not str(data.get("schema", "")).startswith("llmrerank.eval/"):
        raise UserError(f"{path} is not an llmrerank results file")
    data["_path"] = str(path)
    return data


def label(result: dict[str, Any]) -> str:
    return f"{result['dataset']}:{result['pipeline']['name']}"


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    baseline: float
    candidate: float
    p_ttest: float
    p_randomisation: float
    wins: int
    losses: int
    ties: int

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline

    def mark(self, alpha: float = 0.05) -> str:
        return "*" if self.p_randomisation < alpha else ""


@dataclass(frozen=True)
class Comparison:
    baseline: str
    candidate: str
    queries: int
    metrics: tuple[MetricDelta, ...]
    cost_delta_usd: float
    latency_p50_delta_s: float
    calls_delta: int

    def metric(self, name: str) -> MetricDelta:
        for entry in self.metrics:
            if entry.metric == name:
                return entry
        raise UserError(f"metric {name!r} is not in both result files")


def _paired_tests(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    x, y = np.asarray(b, dtype=float), np.asarray(a, dtype=float)
    if len(x) < 2 or np.allclose(x, y):
        return 1.0, 1.0
    t_p = float(stats.ttest_rel(x, y).pvalue)
    permutation = stats.permutation_test(
        (x, y),
        lambda u, v: np.mean(u - v),
        permutation_type="samples",
        n_resamples=10_000,
        random_state=0,
    )
    return t_p, float(permutation.pvalue)


def compare_results(
    baseline: dict[str, Any], candidate: dict[str, Any], metrics: Sequence[str] | None = None
) -> Comparison:
    shared_metrics = [m for m in (metrics or baseline["per_query"]) if m in candidate["per_query"]]
    if not shared_metrics:
        raise UserError(f"{label(baseline)} and {label(candidate)} share no metric")
    deltas = []
    queries = 0
    for metric in shared_metrics:
        base_scores, cand_scores = baseline["per_query"][metric], candidate["per_query"][metric]
        qids = sorted(set(base_scores) & set(cand_scores))
        queries = len(qids)
        a = [base_scores[q] for q in qids]
        b = [cand_scores[q] for q in qids]
        t_p, perm_p = _paired_tests(a, b)
        deltas.append(
            MetricDelta(
                metric=metric,
                baseline=sum(a) / max(1, len(a)),
                candidate=sum(b) / max(1, len(b)),
                p_ttest=t_p,
                p_randomisation=perm_p,
                wins=sum(y > x + 1e-9 for x, y in zip(a, b, strict=True)),
                losses=sum(y < x - 1e-9 for x, y in zip(a, b, strict=True)),
                ties=sum(abs(y - x) <= 1e-9 for x, y in zip(a, b, strict=True)),
            )
        )
    return Comparison(
        baseline=label(baseline),
        candidate=label(candidate),
        queries=queries,
        metrics=tuple(deltas),
        cost_delta_usd=candidate["cost_usd"] - baseline["cost_usd"],
        latency_p50_delta_s=candidate["latency_p50_s"] - baseline["latency_p50_s"],
        calls_delta=candidate["calls"] - baseline["calls"],
    )


@dataclass(frozen=True)
class GateRule:
    """Fail when the candidate's mean ``metric`` is more than ``tolerance`` below the baseline."""

    metric: str
    tolerance: float

    def failed(self, comparison: Comparison) -> bool:
        return comparison.metric(self.metric).delta < -self.tolerance


def parse_gate(text: str) -> GateRule:
    metric, sep, tolerance = text.partition(":")
    try:
        return GateRule(metric, float(tolerance) if sep else 0.0)
    except ValueError:
        raise UserError(f"--fail-if-worse takes METRIC:DELTA like ndcg@10:0.01, got {text!r}") from None


def format_comparison(comparison: Comparison) -> str:
    lines = [
        f"{comparison.candidate}  vs  {comparison.baseline}   ({comparison.queries} queries; "
        "* = p < 0.05, paired randomisation test)",
        f"{'metric':<14}{'baseline':>10}{'candidate':>11}{'delta':>10}{'p(rand)':>10}{'p(t)':>9}{'W/L/T':>12}",
    ]
    for m in comparison.metrics:
        lines.append(
            f"{m.metric:<14}{m.baseline:>10.4f}{m.candidate:>11.4f}{m.delta:>+9.4f}{m.mark():1}"
            f"{m.p_randomisation:>10.4f}{m.p_ttest:>9.4f}{f'{m.wins}/{m.losses}/{m.ties}':>12}"
        )
    lines.append(
        f"cost {comparison.cost_delta_usd:+.4f} USD, latency p50 {comparison.latency_p50_delta_s:+.3f} s, "
        f"calls {comparison.calls_delta:+d}"
    )
    return "\n".join(lines)
