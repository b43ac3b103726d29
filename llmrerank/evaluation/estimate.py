"""Before a run: the most LLM calls each pipeline can make, and what they would cost.

The calls are each strategy's ``estimate_calls``, a proven upper bound; the prompt tokens and
dollars are estimated from the candidates' word counts (about 1.4 tokens a word plus 250 for
the instructions), so ``--dry-run`` prints a ceiling on calls and an estimate of cost, and
``--max-cost`` refuses a query whose worst case would pass the cap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..pricing import PriceTable
from .datasets import EvalQuery, load_dataset
from .pipelines import PipelineSpec

if TYPE_CHECKING:
    from .runner import Experiment

__all__ = ["QueryBound", "estimate", "query_bound"]

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
            cost = prices.cost(model, tokens, calls * 30, batch=bool(experiment.batch)) * experiment.repeats
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
