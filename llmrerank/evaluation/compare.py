"""Compare result files: metric deltas with paired significance corrected for multiple
comparisons, wins/losses, cost and latency deltas, and a regression gate
(``--fail-if-worse ndcg@10:0.01``).

Each candidate is tested against one baseline over the queries both runs share. Tests:
``randomisation`` (paired sign-flip permutation test, the default), ``t-test`` (Student's
paired t-test) and ``tukey`` (Tukey's HSD over all runs at once, which controls the family
error itself). Comparing several runs against one baseline is a family of tests, so the
p-values of the paired tests are corrected per metric across the candidates: ``holm``
(Holm–Bonferroni, the default), ``bonferroni`` or ``none``. A star means the *corrected*
p-value is below ``alpha``; ``Significance.describe()`` says which test and correction.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = [
    "CORRECTIONS",
    "DEFAULT_SIGNIFICANCE",
    "TESTS",
    "Comparison",
    "GateRule",
    "MetricDelta",
    "Significance",
    "adjust_pvalues",
    "compare_many",
    "compare_results",
    "load_result",
    "parse_gate",
]

TESTS = ("randomisation", "t-test", "tukey")
CORRECTIONS = ("holm", "bonferroni", "none")
_TEST_NAMES = {
    "randomisation": "paired randomisation test",
    "t-test": "paired t-test",
    "tukey": "Tukey's HSD over all runs",
}
_CORRECTION_NAMES = {"holm": "Holm–Bonferroni", "bonferroni": "Bonferroni", "none": "no correction"}


@dataclass(frozen=True)
class Significance:
    """Which test gives each p-value and how a family of them is corrected."""

    test: str = "randomisation"
    correction: str = "holm"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise UserError(f"test must be one of {TESTS}, got {self.test!r}")
        if self.correction not in CORRECTIONS:
            raise UserError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")

    def describe(self, family: int) -> str:
        if self.test == "tukey":
            how = f"{_TEST_NAMES['tukey']} (it corrects for the {family} comparisons itself)"
        elif self.correction == "none":
            how = f"{_TEST_NAMES[self.test]}, uncorrected"
        elif family <= 1:
            how = f"{_TEST_NAMES[self.test]}; one comparison, so nothing to correct"
        else:
            correction = _CORRECTION_NAMES[self.correction]
            how = f"{_TEST_NAMES[self.test]}, {correction}-corrected over {family} comparisons per metric"
        return f"p < {self.alpha:g} against the baseline ({how})"


DEFAULT_SIGNIFICANCE = Significance()


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
    p_value: float = 1.0  # the chosen test's p-value, before correction
    p_adjusted: float = 1.0  # after correction over the family: what a star is decided on
    alpha: float = 0.05

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline

    @property
    def significant(self) -> bool:
        return self.p_adjusted < self.alpha

    def mark(self) -> str:
        return "*" if self.significant else ""


@dataclass(frozen=True)
class Comparison:
    baseline: str
    candidate: str
    queries: int
    metrics: tuple[MetricDelta, ...]
    cost_delta_usd: float
    latency_p50_delta_s: float
    calls_delta: int
    significance: Significance = Significance()
    family: int = 1

    def metric(self, name: str) -> MetricDelta:
        for entry in self.metrics:
            if entry.metric == name:
                return entry
        raise UserError(f"metric {name!r} is not in both result files")


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Family-wise corrected p-values, in the order given (Holm's step-down is monotone)."""
    m = len(pvalues)
    if method == "none" or m <= 1:
        return [min(1.0, p) for p in pvalues]
    if method == "bonferroni":
        return [min(1.0, p * m) for p in pvalues]
    if method != "holm":
        raise UserError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def _paired_tests(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    x, y = np.asarray(b, dtype=float), np.asarray(a, dtype=float)
    if len(x) < 2 or np.allclose(x, y):
        return 1.0, 1.0
    with warnings.catch_warnings():
        # identical differences on every query (a constant shift) warn of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        t_p = float(stats.ttest_rel(x, y).pvalue)
    t_p = 1.0 if math.isnan(t_p) else t_p
    permutation = stats.permutation_test(
        (x, y),
        lambda u, v: np.mean(u - v),
        permutation_type="samples",
        n_resamples=10_000,
        random_state=0,
    )
    return t_p, float(permutation.pvalue)


def _shared(results: Sequence[dict[str, Any]], metric: str) -> list[str]:
    qids = set(results[0]["per_query"][metric])
    for result in results[1:]:
        qids &= set(result["per_query"][metric])
    return sorted(qids)


def _tukey(results: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """Tukey's HSD p-value of each candidate against the baseline (``results[0]``)."""
    from scipy import stats

    qids = _shared(results, metric)
    samples = [[r["per_query"][metric][q] for q in qids] for r in results]
    if len(qids) < 2 or all(s == samples[0] for s in samples):
        return [1.0] * (len(results) - 1)
    pvalues = stats.tukey_hsd(*samples).pvalue
    return [float(pvalues[0][i]) for i in range(1, len(results))]


def _delta(metric: str, baseline: dict[str, Any], candidate: dict[str, Any], alpha: float) -> MetricDelta:
    qids = _shared([baseline, candidate], metric)
    a = [baseline["per_query"][metric][q] for q in qids]
    b = [candidate["per_query"][metric][q] for q in qids]
    t_p, perm_p = _paired_tests(a, b)
    return MetricDelta(
        metric=metric,
        baseline=sum(a) / max(1, len(a)),
        candidate=sum(b) / max(1, len(b)),
        p_ttest=t_p,
        p_randomisation=perm_p,
        wins=sum(y > x + 1e-9 for x, y in zip(a, b, strict=True)),
        losses=sum(y < x - 1e-9 for x, y in zip(a, b, strict=True)),
        ties=sum(abs(y - x) <= 1e-9 for x, y in zip(a, b, strict=True)),
        alpha=alpha,
    )


def compare_many(
    baseline: dict[str, Any],
    candidates: Sequence[dict[str, Any]],
    metrics: Sequence[str] | None = None,
    significance: Significance = DEFAULT_SIGNIFICANCE,
) -> list[Comparison]:
    """Every candidate against ``baseline``; p-values corrected per metric over the candidates."""
    if not candidates:
        return []
    names = [m for m in (metrics or baseline["per_query"]) if all(m in c["per_query"] for c in candidates)]
    if not names:
        raise UserError(f"{label(baseline)} and the candidates share no metric")
    table = [[_delta(m, baseline, c, significance.alpha) for m in names] for c in candidates]
    for column, metric in enumerate(names):
        if significance.test == "tukey":
            adjusted = _tukey([baseline, *candidates], metric)
            raw = adjusted
        else:
            field = "p_ttest" if significance.test == "t-test" else "p_randomisation"
            raw = [getattr(row[column], field) for row in table]
            adjusted = adjust_pvalues(raw, significance.correction)
        for row, p, p_adj in zip(table, raw, adjusted, strict=True):
            row[column] = replace(row[column], p_value=p, p_adjusted=p_adj)
    return [
        Comparison(
            baseline=label(baseline),
            candidate=label(candidate),
            queries=len(_shared([baseline, candidate], names[0])),
            metrics=tuple(row),
            cost_delta_usd=candidate["cost_usd"] - baseline["cost_usd"],
            latency_p50_delta_s=candidate["latency_p50_s"] - baseline["latency_p50_s"],
            calls_delta=candidate["calls"] - baseline["calls"],
            significance=significance,
            family=len(candidates),
        )
        for candidate, row in zip(candidates, table, strict=True)
    ]


def compare_results(
    baseline: dict[str, Any],
    candidate: dict[str, Any],
    metrics: Sequence[str] | None = None,
    significance: Significance = DEFAULT_SIGNIFICANCE,
) -> Comparison:
    """One candidate against the baseline (a family of one: nothing to correct)."""
    return compare_many(baseline, [candidate], metrics, significance)[0]


@dataclass(frozen=True)
class GateRule:
    """Fail when the candidate's mean ``metric`` is more than ``tolerance`` below the baseline
    (and, with ``significant_only``, the drop is also significant after correction)."""

    metric: str
    tolerance: float
    significant_only: bool = False

    def failed(self, comparison: Comparison) -> bool:
        entry = comparison.metric(self.metric)
        return entry.delta < -self.tolerance and (entry.significant or not self.significant_only)


def parse_gate(text: str, *, significant_only: bool = False) -> GateRule:
    metric, sep, tolerance = text.partition(":")
    try:
        return GateRule(metric, float(tolerance) if sep else 0.0, significant_only)
    except ValueError:
        raise UserError(f"--fail-if-worse takes METRIC:DELTA like ndcg@10:0.01, got {text!r}") from None


def format_comparison(comparison: Comparison) -> str:
    adjusted = "p(adj)" if comparison.significance.test != "tukey" else "p(HSD)"
    lines = [
        f"{comparison.candidate}  vs  {comparison.baseline}   ({comparison.queries} queries; "
        f"* = {comparison.significance.describe(comparison.family)})",
        f"{'metric':<14}{'baseline':>10}{'candidate':>11}{'delta':>10}{adjusted:>10}"
        f"{'p(rand)':>10}{'p(t)':>9}{'W/L/T':>12}",
    ]
    for m in comparison.metrics:
        lines.append(
            f"{m.metric:<14}{m.baseline:>10.4f}{m.candidate:>11.4f}{m.delta:>+9.4f}{m.mark():1}"
            f"{m.p_adjusted:>10.4f}{m.p_randomisation:>10.4f}{m.p_ttest:>9.4f}"
            f"{f'{m.wins}/{m.losses}/{m.ties}':>12}"
        )
    lines.append(
        f"cost {comparison.cost_delta_usd:+.4f} USD, latency p50 {comparison.latency_p50_delta_s:+.3f} s, "
        f"calls {comparison.calls_delta:+d}"
    )
    return "\n".join(lines)
