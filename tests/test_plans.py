"""Every strategy's plan stepped by hand, without sockets, models or TREC assets.

An oracle reads each passage's true relevance from a marker in its text (``zq3zq``) and
answers the way a perfect judge would, for whatever output the request asks for.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from llmrerank import LLMReranker, make_strategy
from llmrerank.backends import BackendRequest
from llmrerank.outputs import BestChoice, GradeOutput, PermutationOutput, Preference
from llmrerank.prompts import load_prompt
from llmrerank.strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy
from llmrerank.strategies.base import PlanContext
from llmrerank.strategies.plan import LLMRequest
from llmrerank.testing import FunctionBackend, ScriptedAnswers, drive_plan
from llmrerank.types import Candidate

MARKER = re.compile(r"zq(\d+)zq")


def relevances(text: str) -> list[int]:
    return [int(m) for m in MARKER.findall(text)]


def oracle(request: LLMRequest) -> Any:
    """A perfect judge's parsed answer to any strategy's request."""
    rels = relevances(request.rendered.user)
    output = request.output
    if isinstance(output, GradeOutput):
        return min(rels[0], max(output.grades))
    if isinstance(output, PermutationOutput):
        return sorted(range(len(rels)), key=lambda i: (-rels[i], i))
    if isinstance(output, Preference):
        return "A" if rels[0] >= rels[1] else "B"
    if isinstance(output, BestChoice):
        return max(range(len(rels)), key=lambda i: (rels[i], -i))
    raise AssertionError(f"unexpected output {type(output).__name__}")


def candidates(n: int, seed: int = 7) -> tuple[list[Candidate], list[int]]:
    """``n`` passages with distinct relevances in a shuffled order."""
    rels = list(range(n))
    random.Random(seed).shuffle(rels)
    return [
        Candidate(id=f"d{i}", text=f"passage {i} zq{r}zq about the topic") for i, r in enumerate(rels)
    ], rels


def context(strategy: Strategy, items: list[Candidate], top_k: int | None = None) -> PlanContext:
    return PlanContext(
        query="which passage matters most",
        candidates=items,
        prompt=load_prompt(strategy.default_prompt),
        top_k=top_k,
    )


STRATEGIES = [
    Listwise(),
    Listwise(window=10, step=5),  # a sliding window guarantees the top window - step
    Listwise(shuffles=2),
    Pairwise(method="heapsort"),
    Pairwise(method="sliding"),
    Pairwise(method="allpairs"),
    Setwise(),
    Setwise(set_size=3),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{s.name}-{vars(s)}")
def test_a_perfect_judge_gives_the_ideal_head(strategy: Strategy) -> None:
    items, rels = candidates(30)
    driven = drive_plan(strategy.plan(context(strategy, items, top_k=5)), oracle)
    order = list(driven.outcome.order)
    assert sorted(order) == list(range(30))
    ideal = sorted(range(30), key=lambda i: -rels[i])
    assert order[:5] == ideal[:5]


def test_pointwise_grades_everything_in_one_round() -> None:
    items, rels = candidates(12)
    # grades cap at the rubric's top grade, so give each passage a distinct grade in range
    items = [Candidate(id=c.id, text=f"passage zq{min(r, 3)}zq") for c, r in zip(items, rels, strict=True)]
    driven = drive_plan(Pointwise().plan(context(Pointwise(), items)), oracle)
    assert len(driven.rounds) == 1
    assert driven.calls == 12
    grades = [driven.outcome.scores[i] for i in driven.outcome.order]
    assert grades == sorted(grades, reverse=True)


def test_listwise_slides_back_to_front_one_window_per_round() -> None:
    items, _ = candidates(100)
    driven = drive_plan(Listwise().plan(context(Listwise(), items)), oracle)
    assert [len(r) for r in driven.rounds] == [1] * 9
    first_window = relevances(driven.rounds[0][0].rendered.user)
    assert len(first_window) == 20


def test_listwise_shuffles_run_their_passes_side_by_side() -> None:
    items, _ = candidates(40)
    driven = drive_plan(Listwise(shuffles=2).plan(context(Listwise(), items)), oracle)
    assert all(len(r) == 3 for r in driven.rounds)


def test_pairwise_asks_both_orders_and_counts_a_position_biased_judge() -> None:
    items, _ = candidates(6)
    strategy = Pairwise(method="allpairs")
    driven = drive_plan(strategy.plan(context(strategy, items)), lambda request: "A")
    assert driven.calls == 6 * 5
    assert driven.outcome.repairs.get("inconsistent_pairs", 0) > 0 or any(driven.outcome.repairs.values())


@pytest.mark.parametrize("strategy", [*STRATEGIES, Pointwise()], ids=lambda s: f"{s.name}-{vars(s)}")
def test_no_plan_asks_more_than_its_estimate(strategy: Strategy) -> None:
    for seed in range(5):
        items, _ = candidates(30, seed=seed)
        driven = drive_plan(strategy.plan(context(strategy, items, top_k=5)), oracle)
        assert driven.calls <= strategy.estimate_calls(30, 5)


@pytest.mark.parametrize(
    ("name", "n"),
    [("pointwise", 0), ("listwise", 0), ("listwise", 1), ("pairwise", 0), ("pairwise", 1), ("setwise", 1)],
)
def test_tiny_lists_need_no_question(name: str, n: int) -> None:
    strategy = make_strategy(name)
    items, _ = candidates(n)
    driven = drive_plan(strategy.plan(context(strategy, items)), ScriptedAnswers([]))
    assert driven.calls == 0
    assert list(driven.outcome.order) == list(range(n))


def test_the_real_driver_over_a_function_backend_parses_caches_and_reasks(tmp_path: Any) -> None:
    from llmrerank import DiskCache

    replies = iter(["I cannot rank these."])  # one invalid reply first, then the oracle

    def answer(request: BackendRequest) -> str:
        bad = next(replies, None)
        if bad is not None:
            return bad
        rels = relevances(next(m["content"] for m in request.messages if m["role"] == "user"))
        order = sorted(range(len(rels)), key=lambda i: (-rels[i], i))
        return '{"ranking": [' + ", ".join(f'"{i + 1}"' for i in order) + "]}"

    backend = FunctionBackend(answer)
    items, rels = candidates(10)
    with DiskCache(tmp_path / "cache") as cache:
        reranker = LLMReranker(backend, strategy="listwise", cache=cache)
        first = reranker.rerank("which passage matters most", items)
        again = reranker.rerank("which passage matters most", items)
    assert first.ids()[0] == items[rels.index(9)].id
    assert first.calls[0].reasks == 1
    assert again.ids() == first.ids()
    assert all(call.cached for call in again.calls)
    assert len(backend.requests) == 2
