"""How far an LLM's judgements under a rubric agree with a team's own labels.

Input: an eval results file (``llmrerank eval run``; it keeps each stage's score per
passage) and the labels of its golden set (TREC qrels, or a labels file of the distillation
work: JSONL of ``query_id``, ``passage_id``, ``label``). Only passages that both the LLM
stage judged and a label covers are compared; the rest are counted, never guessed.

* Pointwise runs give *grades*: a confusion matrix (label × LLM grade), weighted Cohen's
  kappa (scikit-learn, quadratic weights over the sorted union of grades) and Krippendorff's
  alpha (the ``krippendorff`` package, ordinal), and the largest disagreements with the
  grade's probability where the backend returned logprobs (``llm:confidence``).
* Every run gives an *order*: per query, Kendall's tau-b between the LLM's scores and the
  labels (SciPy; a query whose judged passages share one label has none), and the pairs of
  differently labelled passages the LLM put the wrong way round ("inverted"; a tie in the
  LLM's scores is counted apart). Order-only runs list the passages most pushed down:
  those with the most lower-labelled passages ranked above them.

``compare_agreements`` puts several runs side by side (the first is the baseline) with the
harness's paired tests and multiple-comparison correction over the main metric and the
per-query tau, and names the passages that moved in each query a run won or lost.

Long because grades, orders, the side-by-side tests and the moved passages all read the same
per-passage records of a results file; apart, each would re-derive them.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .compare import DEFAULT_SIGNIFICANCE, Comparison, Significance, compare_many, label

__all__ = [
    "LLM_STAGE",
    "Agreement",
    "Disagreement",
    "MovedQuery",
    "agreement",
    "compare_agreements",
    "moved_passages",
    "read_labels_file",
]

LLM_STAGE = "llm"  # the name PipelineSpec gives its LLM stage
TAU = "kendall_tau"


def read_labels_file(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Labels from the distillation work's labels file (JSONL of ``query_id``, ``passage_id``,
    ``label``), as qrels; a fractional label (an expected grade) is rounded to the nearest grade."""
    labels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            labels.setdefault(str(record["query_id"]), {})[str(record["passage_id"])] = round(record["label"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path}:{number}: not a labels record ({exc})") from None
    return labels


@dataclass(frozen=True)
class Disagreement:
    qid: str
    docid: str
    label: int
    grade: float | None  # None for order-only runs
    confidence: float | None
    llm_rank: int  # 1-based among the passages of the query the LLM judged
    judged: int
    lower_above: int  # passages with a lower label the LLM ranked above this one


@dataclass(frozen=True)
class Agreement:
    run: str
    rubrics: tuple[str, ...]
    kind: str  # "grades" or "order"
    pairs: int
    unlabelled: int
    queries: int
    grades: tuple[int, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()  # rows: labels, columns: LLM grades
    kappa: float | None = None
    alpha: float | None = None
    exact: float | None = None
    tau: Mapping[str, float] = field(default_factory=dict)
    ordered_pairs: int = 0
    inverted: int = 0
    llm_ties: int = 0
    disagreements: tuple[Disagreement, ...] = ()

    @property
    def tau_mean(self) -> float | None:
        return sum(self.tau.values()) / len(self.tau) if self.tau else None


@dataclass(frozen=True)
class _Passage:
    docid: str
    label: int
    score: float
    grade: float | None
    confidence: float | None


def _llm_scores(result: Mapping[str, Any], stage: str) -> dict[str, dict[str, dict[str, float]]]:
    per_query: dict[str, dict[str, dict[str, float]]] = result.get("stage_scores") or {}
    if not any(stage in scores for scores in per_query.values()):
        raise UserError(
            f"{label(dict(result))} has no scores of an LLM stage {stage!r}: agreement needs a run with an "
            "LLM stage, from an `llmrerank eval run` that keeps stage scores"
        )
    return per_query


def _passages(
    result: Mapping[str, Any], qrels: Mapping[str, Mapping[str, int]], stage: str, grades: bool
) -> tuple[dict[str, list[_Passage]], int]:
    found: dict[str, list[_Passage]] = {}
    unlabelled = 0
    for qid, scores in _llm_scores(result, stage).items():
        llm = scores.get(stage, {})
        answered = scores.get(f"{stage}:grade", {})
        confidence = scores.get(f"{stage}:confidence", {})
        labels = qrels.get(qid, {})
        for docid, score in llm.items():
            if docid not in labels:
                unlabelled += 1
                continue
            grade = answered.get(docid, score) if grades else None
            found.setdefault(qid, []).append(
                _Passage(docid, int(labels[docid]), float(score), grade, confidence.get(docid))
            )
    return found, unlabelled


def _order_counts(passages: Sequence[_Passage]) -> tuple[int, int, int, dict[str, int]]:
    """Differently labelled pairs, those the LLM inverted, those it tied; per passage, how many
    lower-labelled passages it has above it."""
    ordered = inverted = ties = 0
    lower_above = {p.docid: 0 for p in passages}
    for i, a in enumerate(passages):
        for b in passages[i + 1 :]:
            if a.label == b.label:
                continue
            ordered += 1
            high, low = (a, b) if a.label > b.label else (b, a)
            if high.score == low.score:
                ties += 1
            elif high.score < low.score:
                inverted += 1
                lower_above[high.docid] += 1
    return ordered, inverted, ties, lower_above


def _tau(passages: Sequence[_Passage]) -> float | None:
    from scipy import stats

    if len(passages) < 2 or len({p.label for p in passages}) < 2 or len({p.score for p in passages}) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(stats.kendalltau([p.score for p in passages], [p.label for p in passages]).statistic)
    return None if math.isnan(value) else value


def _grade_statistics(
    pairs: Sequence[tuple[int, int]],
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], float | None, float | None, float]:
    import krippendorff
    import numpy as np
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    labels = [a for a, _ in pairs]
    grades = [b for _, b in pairs]
    scale = sorted(set(labels) | set(grades))
    matrix = confusion_matrix(labels, grades, labels=scale)
    kappa = alpha = None
    if len(scale) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # one rater constant: kappa is undefined
            value = float(cohen_kappa_score(labels, grades, labels=scale, weights="quadratic"))
            kappa = None if math.isnan(value) else value
            reliability = np.array([labels, grades], dtype=float)
            value = float(
                krippendorff.alpha(
                    reliability_data=reliability,
                    level_of_measurement="ordinal",
                    value_domain=np.array(scale, dtype=float),
                )
            )
            alpha = None if math.isnan(value) else value
    exact = sum(a == b for a, b in pairs) / len(pairs)
    return tuple(scale), tuple(tuple(int(x) for x in row) for row in matrix), kappa, alpha, exact


def agreement(
    result: Mapping[str, Any],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    stage: str = LLM_STAGE,
    top: int = 10,
) -> Agreement:
    """The agreement of one run's LLM stage with ``qrels``; ``top`` largest disagreements."""
    grades = result["pipeline"].get("strategy") == "pointwise"
    by_query, unlabelled = _passages(result, qrels, stage, grades)
    pairs = [p for passages in by_query.values() for p in passages]
    if not pairs:
        raise UserError(f"{label(dict(result))}: no passage the LLM judged has a label")
    tau: dict[str, float] = {}
    ordered = inverted = ties = 0
    rows: list[Disagreement] = []
    for qid, passages in by_query.items():
        value = _tau(passages)
        if value is not None:
            tau[qid] = value
        o, i, t, lower_above = _order_counts(passages)
        ordered, inverted, ties = ordered + o, inverted + i, ties + t
        ranked = sorted(passages, key=lambda p: -p.score)
        for rank, p in enumerate(ranked, start=1):
            rows.append(
                Disagreement(
                    qid, p.docid, p.label, p.grade, p.confidence, rank, len(passages), lower_above[p.docid]
                )
            )
    kappa_fields: dict[str, Any] = {}
    if grades:
        scale, matrix, kappa, alpha, exact = _grade_statistics(
            [(p.label, round(p.grade if p.grade is not None else p.score)) for p in pairs]
        )
        kappa_fields = {"grades": scale, "confusion": matrix, "kappa": kappa, "alpha": alpha, "exact": exact}
        rows = [r for r in rows if r.grade is not None and round(r.grade) != r.label]
        rows.sort(key=lambda r: (-abs(r.label - (r.grade or 0)), -(r.confidence or 0), r.qid, r.docid))
    else:
        rows = [r for r in rows if r.lower_above]
        rows.sort(key=lambda r: (-r.lower_above, -r.label, r.qid, r.docid))
    return Agreement(
        run=label(dict(result)),
        rubrics=tuple(f"{r['ref']} {r['sha256'][:8]}" for r in result.get("rubrics", ())),
        kind="grades" if grades else "order",
        pairs=len(pairs),
        unlabelled=unlabelled,
        queries=len(by_query),
        tau=tau,
        ordered_pairs=ordered,
        inverted=inverted,
        llm_ties=ties,
        disagreements=tuple(rows[:top]),
        **kappa_fields,
    )


@dataclass(frozen=True)
class MovedQuery:
    """One query a run won or lost against the baseline, and the passages that moved."""

    qid: str
    delta: float
    moved: tuple[tuple[str, int, int | None, int | None, float | None, float | None], ...]
    # (docid, label, rank in baseline, rank in run, LLM grade in baseline, in run)


def _ranks(result: Mapping[str, Any], qid: str) -> dict[str, int]:
    run = result["run"][qid] if "run" in result else {}
    return {docid: rank for rank, docid in enumerate(sorted(run, key=lambda d: -run[d]), start=1)}


def _grades(result: Mapping[str, Any], qid: str, stage: str) -> dict[str, float]:
    """The LLM's grade per passage of a pointwise run (none for runs that only order)."""
    if result["pipeline"].get("strategy") != "pointwise":
        return {}
    scores = (result.get("stage_scores") or {}).get(qid, {})
    return {**scores.get(stage, {}), **scores.get(f"{stage}:grade", {})}


def moved_passages(
    baseline: Mapping[str, Any],
    candidate: Mapping[str, Any],
    qrels: Mapping[str, Mapping[str, int]],
    metric: str,
    *,
    depth: int = 10,
    per_query: int = 3,
    stage: str = LLM_STAGE,
) -> list[MovedQuery]:
    """Queries whose ``metric`` changed, largest change first, each with the labelled passages
    that moved most within the top ``depth`` of either run (higher labels first)."""
    before, after = baseline["per_query"][metric], candidate["per_query"][metric]
    out = []
    for qid in sorted(set(before) & set(after), key=lambda q: -abs(after[q] - before[q])):
        delta = after[qid] - before[qid]
        if abs(delta) <= 1e-9:
            continue
        ranks_a, ranks_b = _ranks(baseline, qid), _ranks(candidate, qid)
        grades_a, grades_b = _grades(baseline, qid, stage), _grades(candidate, qid, stage)
        labels = qrels.get(qid, {})
        moved = []
        for docid in set(ranks_a) | set(ranks_b):
            a, b = ranks_a.get(docid), ranks_b.get(docid)
            if a == b or min(a or depth + 1, b or depth + 1) > depth:
                continue
            moved.append((docid, int(labels.get(docid, 0)), a, b, grades_a.get(docid), grades_b.get(docid)))
        moved.sort(key=lambda m: (-m[1], -abs((m[2] or 0) - (m[3] or 0)), m[0]))
        out.append(MovedQuery(qid, delta, tuple(moved[:per_query])))
    return out


def compare_agreements(
    results: Sequence[dict[str, Any]],
    agreements: Sequence[Agreement],
    metric: str,
    significance: Significance = DEFAULT_SIGNIFICANCE,
) -> list[Comparison]:
    """Every run against the first on ``metric`` and on per-query tau, paired, corrected
    over the runs (the harness's ``compare_many``)."""
    with_tau = [
        {**result, "per_query": {**result["per_query"], TAU: dict(found.tau)}}
        for result, found in zip(results, agreements, strict=True)
    ]
    return compare_many(with_tau[0], with_tau[1:], [metric, TAU], significance)
