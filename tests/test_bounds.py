"""Every strategy's ``estimate_calls`` is an upper bound: no plan over DL19 ever exceeds it.

The plans are stepped by ``drive_plan`` (no sockets) over the 43 DL19 queries × BM25 top-100
with three judges: a perfect one reading the qrels, an adversarial one answering the reverse
(which drives every heap sift as deep as it goes), and a seeded random one.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import pytest

from llmrerank.outputs import BestChoice, GradeOutput, PermutationOutput, Preference
from llmrerank.prompts import load_prompt
from llmrerank.strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy
from llmrerank.strategies.base import PassageBudget, PlanContext
from llmrerank.strategies.plan import LLMRequest
from llmrerank.testing import drive_plan
from llmrerank.types import Candidate

from .conftest import TrecQuery

DOCID = re.compile(r"\[\[(\S+?)\]\]")
Judge = Callable[[LLMRequest], Any]


def make_judge(grades: dict[str, int], mode: str, seed: int = 0) -> Judge:
    """Answers any strategy's request from the qrels (``perfect``), against them
    (``adversarial``), or at random (``random``)."""
    rng = random.Random(seed)

    def answer(request: LLMRequest) -> Any:
        rels = [grades.get(docid, 0) for docid in DOCID.findall(request.rendered.user)]
        if mode == "adversarial":
            rels = [-r for r in rels]
        output = request.output
        if isinstance(output, GradeOutput):
            top = max(output.grades)
            return rng.randint(0, top) if mode == "random" else max(0, min(top, rels[0]))
        order = sorted(range(len(rels)), key=lambda i: (-rels[i], i))
        if mode == "random":
            rng.shuffle(order)
        if isinstance(output, PermutationOutput):
            return order
        if isinstance(output, Preference):
            return "AB"[order[0]]
        if isinstance(output, BestChoice):
            return order[0]
        raise AssertionError(f"unexpected output {type(output).__name__}")

    return answer


def asked(strategy: Strategy, query: TrecQuery, depth: int, top_k: int, judge: Judge) -> int:
    items = [Candidate(id=c["id"], text=f"[[{c['id']}]] {c['text']}") for c in query.candidates[:depth]]
    context = PlanContext(
        query=query.query,
        candidates=items,
        prompt=load_prompt(strategy.default_prompt),
        budget=PassageBudget(max_words=20),  # the docid marker leads; shorter prompts render faster
        top_k=top_k,
    )
    return drive_plan(strategy.plan(context), judge).calls


STRATEGIES = [
    Pointwise(),
    Listwise(),
    Listwise(window=10, step=3, shuffles=1),
    Pairwise(method="heapsort"),
    Pairwise(method="sliding"),
    *(Setwise(set_size=s) for s in (3, 4, 5, 8)),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{s.name}-{vars(s)}")
def test_no_strategy_exceeds_its_bound_on_dl19(
    strategy: Strategy, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    queries, qrels = dl19
    assert len(queries) == 43
    adaptive = isinstance(strategy, Setwise) or getattr(strategy, "method", "") == "heapsort"
    top_ks = (1, 10, 100) if adaptive else (10,)
    modes = ("perfect", "adversarial", "random") if adaptive else ("random",)
    worst = 0.0
    for number, query in enumerate(queries):
        depth = len(query.candidates)
        for top_k in top_ks:
            bound = strategy.estimate_calls(depth, top_k)
            for mode in modes:
                calls = asked(strategy, query, depth, top_k, make_judge(qrels[query.qid], mode, number))
                assert calls <= bound, (query.qid, top_k, mode, calls, bound)
                worst = max(worst, calls / bound)
    # the bound is close to what a judge can make a plan ask, not merely safe
    assert worst > 0.7, worst
    print(f"{strategy.name} {vars(strategy)}: most asked / bound = {worst:.3f}")


def test_allpairs_bound_is_exact_below_its_cap(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]],
) -> None:
    queries, qrels = dl19
    strategy = Pairwise(method="allpairs")
    for query in queries[:3]:
        calls = asked(strategy, query, 20, 10, make_judge(qrels[query.qid], "random"))
        assert calls == strategy.estimate_calls(20, 10) == 380
