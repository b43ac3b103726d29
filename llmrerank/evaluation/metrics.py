"""IR metrics through ranx (trec_eval conventions: linear gain, log2 discount)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_METRICS", "evaluate"]

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@20", "map@100", "precision@5")


def _ranx_name(metric: str, rel_threshold: int) -> str:
    # graded metrics use the grades; binary ones count grade >= threshold as relevant
    if metric.startswith("ndcg") or rel_threshold <= 1:
        return metric
    return f"{metric}-l{rel_threshold}"


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    rel_threshold: int = 1,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean per metric, and per metric the score of every query in ``run``."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    judged = {qid: dict(docs) for qid, docs in qrels.items() if qid in run}
    scored = {qid: dict(docs) for qid, docs in run.items() if qid in judged}
    if not scored:
        return {m: 0.0 for m in metrics}, {m: {} for m in metrics}
    names = {m: _ranx_name(m, rel_threshold) for m in metrics}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety chatter inside ranx
        qrels_obj, run_obj = Qrels(judged), Run(scored)
        ranx_evaluate(qrels_obj, run_obj, list(names.values()), return_mean=False, make_comparable=True)
    per_query: dict[str, dict[str, float]] = {}
    means: dict[str, float] = {}
    for metric, name in names.items():
        scores = run_obj.scores[name]
        per_query[metric] = {qid: float(scores[qid]) for qid in scored}
        means[metric] = sum(per_query[metric].values()) / len(per_query[metric])
    return means, per_query
