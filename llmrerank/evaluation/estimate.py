"""Before a run: the most LLM calls each pipeline can make, and what they would cost.

The calls are each strategy's ``estimate_calls``, a proven upper bound; the prompt tokens and
dollars are estimated from the candidates' word counts (about 1.4 tokens a word plus 250 for
the instructions), so ``--dry-run`` prints a ceiling on calls and an estimate of cost, and
``--max-cost`` refuses a query whose worst case would pass the cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetError
from ..pipeline import PipelineSpec
from ..pricing import PriceTable
from .datasets import EvalQuery, load_dataset
from .experiment import Experiment

__all__ = ["CostCap", "QueryBound", "estimate", "query_bound"]

QueryBound = Callable[[EvalQuery], tuple[int, int]]


def query_bound(spec: PipelineSpec) -> QueryBound | None:
    """For an LLM pipeline, a function giving a query's most LLM calls (the strategy's proven
    ``estimate_calls`` bound) and the prompt tokens those calls would take (an estimate from
    word counts); None when the pipeline makes no LLM call."""
    if not isinstance(spec.llm, str) or spec.bypass_llm:
        return None
    from ..strategies import make_strategy

    strategy = make_strategy(spec.strategy, **spec.strategy_options)
    window = spec.strategy_options.get("window", 20)  # listwise; None: one pass over every candidate

    def bound(query: EvalQuery) -> tuple[int, int]:
        n = min([len(query.candidates), *spec.narrow_to]) if spec.narrow_to else len(query.candidates)
        per_call_passages = {
            "pointwise": 1,
            "pairwise": 2,
            "listwise": n if window is None else int(window),
        }.get(spec.strategy, int(spec.strategy_options.get("set_size", 4)))
        calls = strategy.estimate_calls(n, spec.top_k)
        words = sum(len(c.text.split()) for c in query.candidates[:n]) / max(1, n)
        return calls, int(calls * (250 + 1.4 * words * min(per_call_passages, n)))

    return bound


def estimate(experiment: Experiment) -> list[dict[str, Any]]:
    """The most LLM calls each configuration can make (a proven bound) and the tokens and
    dollars they would take (estimated from word counts), before any call."""
    prices = PriceTable()
    rows = []
    for dataset_spec in experiment.datasets:
        golden = load_dataset(dataset_spec.name, limit=dataset_spec.limit, depth=dataset_spec.depth)
        for spec in experiment.pipelines:
            bound = query_bound(spec)
            if bound is None:
                rows.append(
                    {
                        "dataset": golden.name,
                        "pipeline": spec.name,
                        "calls": 0,
                        "prompt_tokens": 0,
                        "cost_usd": 0.0,
                    }
                )
                continue
            calls = tokens = 0
            for query in golden.queries:
                query_calls, query_tokens = bound(query)
                calls += query_calls
                tokens += query_tokens
            provider, _, model = str(spec.llm).partition(":")
            cost = (
                prices.cost(model, tokens, calls * 30, batch=experiment.batch is not None)
                * experiment.repeats
            )
            rows.append(
                {
                    "dataset": golden.name,
                    "pipeline": spec.name,
                    "calls": calls * experiment.repeats,
                    "prompt_tokens": tokens * experiment.repeats,
                    "cost_usd": round(cost, 4),
                    "priced": provider in ("sim", "local") or prices.known(model),
                }
            )
    return rows


@dataclass
class CostCap:
    """The ``--max-cost`` cap over a whole experiment (``cap`` USD; None: no cap): a query
    starts only when what was ``spent`` so far plus its worst case still fits."""

    cap: float | None
    prices: PriceTable
    spent: float = 0.0

    def worst_case(self, spec: PipelineSpec) -> Callable[[EvalQuery], float]:
        """The most a query through ``spec`` can cost (0 without a cap or an LLM stage)."""
        bound = query_bound(spec) if self.cap is not None else None
        model = str(spec.llm).partition(":")[2]

        def worst(query: EvalQuery) -> float:
            if bound is None:
                return 0.0
            calls, tokens = bound(query)
            return self.prices.cost(model, tokens, calls * 30)

        return worst

    def admit(self, worst: float, saved_in: Path) -> None:
        """Raise ``BudgetError`` when a query costing up to ``worst`` could pass the cap."""
        if self.cap is not None and self.spent + worst > self.cap:
            raise BudgetError(
                f"stopped at ${self.spent:.4f}: the next query could cost up to ${worst:.4f} "
                f"and the --max-cost cap is ${self.cap}; finished queries are "
                f"saved in {saved_in}, re-run to resume"
            )
