"""Every strategy's plan stepped by hand, without sockets, models or TREC assets.

An oracle reads each passage's true relevance from a marker in its text (``zq3zq``) and
answers the way a perfect judge would, for whatever output the request asks for.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from llmrerank import LLMReranker
from llmrerank.backends import BackendRequest
from llmrerank.outputs import BestChoice, GradeOutput, PermutationOutput, Preference
from llmrerank.prompts import load_prompt
from llmrerank.strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy, make_strategy
from llmrerank.strategies.base import PlanContext
from llmrerank.strategies.plan import Answer, LLMRequest
from llmrerank.testing import FunctionBackend, ScriptedAnswers, drive_plan
from llmrerank.types import CallRecord, Candidate, TokenLogprob, Usage

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
    Listwise(method="partition"),
    Listwise(method="partition", window=8, final_window=8),
    Listwise(method="partition", window=8, final_window=30),
    Listwise(window=None),
]

# plans whose answers may need a second round: first-token ranking falls back to full generation
FALLBACK_STRATEGIES = [
    Listwise(first_token=True),
    Listwise(method="partition", first_token=True),
    Listwise(method="partition", window=6, first_token=True),
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


@pytest.mark.parametrize(
    "strategy", [*STRATEGIES, *FALLBACK_STRATEGIES, Pointwise()], ids=lambda s: f"{s.name}-{vars(s)}"
)
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


def bm25_like(n: int, seed: int = 3) -> tuple[list[Candidate], list[int]]:
    """Relevance that mostly falls with the first-stage rank, with local disorder."""
    rng = random.Random(seed)
    rels = sorted(range(n), key=lambda r: -r + rng.gauss(0, n / 10))  # best first, roughly
    return [Candidate(id=f"d{i}", text=f"passage {i} zq{r}zq") for i, r in enumerate(rels)], rels


def test_partition_reaches_the_top_10_of_100_in_three_rounds() -> None:
    items, rels = bm25_like(100)
    strategy = Listwise(method="partition")
    driven = drive_plan(strategy.plan(context(strategy, items, top_k=10)), oracle)
    # round 1: the first window; round 2: five windows of 19 + pivot side by side; round 3: the gathered
    assert [len(r) for r in driven.rounds] == [1, 5, 1]
    assert [len(relevances(r.rendered.user)) for r in driven.rounds[1]] == [17] * 5  # pivot + 80 / 5
    pivot = relevances(driven.rounds[1][0].rendered.user)[0]
    assert all(relevances(r.rendered.user)[0] == pivot for r in driven.rounds[1])
    order = list(driven.outcome.order)
    assert sorted(order) == list(range(100))
    assert order[:10] == sorted(range(100), key=lambda i: -rels[i])[:10]
    assert driven.calls <= strategy.estimate_calls(100, 10)
    assert driven.calls < 9


def test_partition_ranks_a_large_gathered_set_in_one_wide_window_or_slides() -> None:
    items, rels = candidates(100)  # shuffled: many candidates beat the first window's pivot
    ideal = sorted(range(100), key=lambda i: -rels[i])[:10]
    narrow = Listwise(method="partition", final_window=20)
    sliding = drive_plan(narrow.plan(context(narrow, items, top_k=10)), oracle)
    assert len(sliding.rounds) > 3
    assert all(len(relevances(r.rendered.user)) <= 20 for batch in sliding.rounds for r in batch)
    wide = Listwise(method="partition")
    fitted = drive_plan(wide.plan(context(wide, items, top_k=10)), oracle)
    assert [len(r) for r in fitted.rounds] == [1, 5, 1]
    for driven in (sliding, fitted):
        assert list(driven.outcome.order)[:10] == ideal


def test_single_pass_is_one_window_over_every_candidate() -> None:
    items, rels = candidates(45)
    strategy = Listwise(window=None)
    driven = drive_plan(strategy.plan(context(strategy, items)), oracle)
    assert [len(r) for r in driven.rounds] == [1]
    assert len(relevances(driven.rounds[0][0].rendered.user)) == 45
    assert list(driven.outcome.order) == sorted(range(45), key=lambda i: -rels[i])
    assert strategy.estimate_calls(45) == 1


def test_single_pass_refuses_a_prompt_beyond_the_models_context() -> None:
    from llmrerank import UserError

    items, _ = candidates(100)
    strategy = Listwise(window=None, context_tokens=500)
    with pytest.raises(UserError, match="more than the model's context of 500"):
        drive_plan(strategy.plan(context(strategy, items)), oracle)
    roomy = Listwise(window=None, context_tokens=100_000)
    assert drive_plan(roomy.plan(context(roomy, items)), oracle).calls == 1


def first_token_answer(request: LLMRequest) -> Answer:
    """A judge that returns the first label's logprobs, as the sim and OpenAI-style servers do."""
    order = oracle(request)
    assert isinstance(request.output, PermutationOutput)
    labels = request.output.labels
    top = {labels[i]: -0.5 * rank for rank, i in enumerate(order[:10])}
    token = TokenLogprob(labels[order[0]], 0.0, top)
    return Answer(request.output.parse('{"ranking": ["' + labels[order[0]] + '"'), _record(), {}, (token,))


def _record() -> CallRecord:
    return CallRecord(
        "p", "s", "b", "m", Usage(), cached=False, attempts=1, reasks=0, latency_s=0.0, cache_key=""
    )


def step_with(plan: Any, answer: Any) -> tuple[Any, list[list[LLMRequest]]]:
    rounds = []
    try:
        batch = next(plan)
        while True:
            rounds.append(list(batch))
            batch = plan.send([answer(r) for r in batch])
    except StopIteration as done:
        return done.value, rounds


def test_first_token_orders_each_window_by_the_first_label_logprobs() -> None:
    items, rels = bm25_like(100)
    strategy = Listwise(method="partition", first_token=True)
    outcome, rounds = step_with(strategy.plan(context(strategy, items, top_k=10)), first_token_answer)
    assert [len(r) for r in rounds] == [1, 5, 1]
    assert all(r.logprobs and r.max_tokens <= 8 for batch in rounds for r in batch)
    assert list(outcome.order)[:10] == sorted(range(100), key=lambda i: -rels[i])[:10]
    assert "first_token_fallback" not in outcome.repairs


def test_first_token_falls_back_to_full_generation_without_logprobs() -> None:
    items, rels = candidates(30)
    strategy = Listwise(first_token=True)
    driven = drive_plan(strategy.plan(context(strategy, items, top_k=5)), oracle)  # no logprobs
    # each window: a short first-token request, then the same window asked in full
    assert [len(r) for r in driven.rounds] == [1, 1, 1, 1]
    assert [r.logprobs for batch in driven.rounds for r in batch] == [True, False, True, False]
    assert driven.outcome.repairs == {"first_token_fallback": 2}
    assert list(driven.outcome.order)[:5] == sorted(range(30), key=lambda i: -rels[i])[:5]


def test_first_token_order_reads_the_first_label_token() -> None:
    from llmrerank.strategies._first_token import first_token_order

    tokens = (TokenLogprob('{"ranking": ["', 0.0), TokenLogprob("2", -0.1, {"2": -0.1, "4": -1.0, "x": -0.5}))
    assert first_token_order(tokens, ["1", "2", "3", "4"]) == [1, 3, 0, 2]
    assert first_token_order((TokenLogprob("{", 0.0),), ["1", "2"]) is None
    assert first_token_order(None, ["1", "2"]) is None


def test_listwise_options_reach_make_strategy() -> None:
    from llmrerank import UserError

    with pytest.raises(UserError, match="partition"):
        make_strategy("listwise", method="partition", window=None)
    partition = make_strategy("listwise", method="partition", final_window=40, first_token=True)
    assert isinstance(partition, Listwise)
    assert partition.method == "partition"
    assert partition.first_token
    assert make_strategy("listwise", window=None).estimate_calls(100) == 1


@pytest.mark.parametrize(
    "strategy", [s for s in STRATEGIES + FALLBACK_STRATEGIES if s.name == "listwise"], ids=str
)
def test_listwise_estimates_bound_100_to_10(strategy: Strategy) -> None:
    for seed in range(5):
        items, _ = candidates(100, seed=seed)
        driven = drive_plan(strategy.plan(context(strategy, items, top_k=10)), oracle)
        assert driven.calls <= strategy.estimate_calls(100, 10)


def test_pointwise_with_logprobs_scores_by_the_expected_grade() -> None:
    import math

    from llmrerank.strategies.plan import Answer
    from llmrerank.strategies.pointwise import expected_grade
    from llmrerank.types import TokenLogprob

    def grade_token(p2: float) -> tuple[TokenLogprob, ...]:
        top = {"2": math.log(p2), "3": math.log(1 - p2)}
        return (TokenLogprob('{"grade": ', -0.01), TokenLogprob("2", math.log(p2), top))

    assert expected_grade(grade_token(0.6), [0, 1, 2, 3]) == pytest.approx(2.4)
    assert expected_grade(None, [0, 1, 2, 3]) is None
    assert expected_grade((TokenLogprob("x", -0.1),), [0, 1, 2, 3]) is None

    strategy = Pointwise(use_logprobs=True)
    items, _ = candidates(2)
    plan = strategy.plan(context(strategy, items))
    requests = next(plan)
    assert all(r.logprobs for r in requests)
    answers = [
        Answer(2, _scripted_record(requests[0]), logprobs=grade_token(0.9)),
        Answer(2, _scripted_record(requests[1]), logprobs=grade_token(0.2)),
    ]
    with pytest.raises(StopIteration) as done:
        plan.send(answers)
    outcome = done.value.value
    assert list(outcome.order) == [1, 0]  # same grade, but the second is more likely a 3
    assert outcome.scores[1] == pytest.approx(2.8)


def _scripted_record(request: LLMRequest) -> Any:
    from llmrerank.testing.function import _record

    return _record(request, 0)
