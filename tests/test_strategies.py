"""Every strategy through the real OpenAI SDK against the simulated judge on TREC DL 2019."""

from __future__ import annotations

import asyncio
import json

import pytest
from ranx import Qrels, Run, evaluate

from llmrerank import LLMReranker, UserError
from llmrerank.backends import OpenAIBackend
from llmrerank.errors import BudgetError
from llmrerank.strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy
from llmrerank.strategies.listwise import sliding_windows
from llmrerank.testing import Reply, WireServer, scripted

from .conftest import TrecQuery

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaTypeSafetyWarning")


def ndcg10(qrels: dict[str, dict[str, int]], qid: str, scores: dict[str, float]) -> float:
    return float(evaluate(Qrels({qid: qrels[qid]}), Run({qid: scores}), "ndcg@10"))


def ideal_scores(qrels: dict[str, dict[str, int]], query: TrecQuery, depth: int) -> dict[str, float]:
    n = depth
    return {
        c["id"]: qrels[query.qid].get(c["id"], 0) * n + (n - i)
        for i, c in enumerate(query.candidates[:depth])
    }


@pytest.mark.parametrize(
    ("strategy", "depth"),
    [
        (Pointwise(), 100),
        (Listwise(), 100),
        (Listwise(shuffles=2), 50),
        (Listwise(method="partition"), 100),
        (Listwise(window=None), 100),
        (Listwise(method="partition", first_token=True), 100),
        (Pairwise(method="allpairs"), 20),
        (Pairwise(method="heapsort"), 100),
        (Pairwise(method="sliding"), 30),
        (Setwise(), 100),
    ],
    ids=lambda v: getattr(v, "method", type(v).__name__) if not isinstance(v, int) else str(v),
)
def test_perfect_judge_reaches_the_ideal_order(
    strategy: Strategy,
    depth: int,
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]],
    judge_backend: OpenAIBackend,
) -> None:
    queries, qrels = dl19
    reranker = LLMReranker(judge_backend, strategy=strategy, max_concurrency=8)
    for query in queries[:2]:
        ranking = reranker.rerank(query.query, query.candidates[:depth])
        assert sorted(ranking.ids()) == sorted(c["id"] for c in query.candidates[:depth])
        got = ndcg10(qrels, query.qid, {item.id: item.score for item in ranking})
        ideal = ndcg10(qrels, query.qid, ideal_scores(qrels, query, depth))
        assert got >= 0.98 * ideal, (query.qid, got, ideal)
        assert len(ranking.calls) <= strategy.estimate_calls(depth)


def test_call_counts_match_theory(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]], judge_backend: OpenAIBackend
) -> None:
    queries, _ = dl19
    query = queries[0]
    listwise = LLMReranker(judge_backend, strategy=Listwise(window=20, step=10))
    listwise_ranking = listwise.rerank(query.query, query.candidates[:100])
    assert len(listwise_ranking.calls) == 9
    assert listwise_ranking.rounds == 9  # each window waits for the one below it
    assert sliding_windows(100, 20, 10)[0] == (80, 100)
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]
    allpairs = LLMReranker(judge_backend, strategy=Pairwise(method="allpairs"))
    allpairs_ranking = allpairs.rerank(query.query, query.candidates[:20])
    assert len(allpairs_ranking.calls) == 380
    assert allpairs_ranking.rounds == 1  # every comparison is independent
    assert LLMReranker(judge_backend, strategy="pointwise").estimate_calls(50) == 50


def test_all_pairs_above_the_bound_is_refused_with_the_call_count(
    judge_backend: OpenAIBackend,
) -> None:
    reranker = LLMReranker(judge_backend, strategy=Pairwise(method="allpairs", max_allpairs=10))
    with pytest.raises(BudgetError, match="all-pairs on 11 candidates is 110 LLM calls"):
        reranker.rerank("q", [f"passage {i}" for i in range(11)])


def test_listwise_repairs_are_counted_on_the_ranking() -> None:
    reply = Reply(json.dumps({"ranking": ["3", "3", "9", "1"]}))
    with (
        WireServer(scripted(reply)) as server,
        OpenAIBackend("m", base_url=server.openai_base_url) as backend,
    ):
        ranking = LLMReranker(backend, strategy="listwise").rerank("q", ["a", "b", "c", "d"])
    assert [item.text for item in ranking] == ["c", "a", "b", "d"]
    assert ranking.repaired
    assert dict(ranking.repairs) == {"duplicates": 1, "unknown": 1, "missing": 2}
    assert ranking.calls[0].repairs == {"duplicates": 1, "unknown": 1, "missing": 2}


def test_shuffled_listwise_is_seeded_and_reproducible(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]], dl19_judge_server: WireServer
) -> None:
    queries, _ = dl19
    query = queries[1]
    orders = []
    for _ in range(2):
        with OpenAIBackend("noisy", base_url=dl19_judge_server.openai_base_url) as backend:
            strategy = Listwise(window=10, step=5, shuffles=2, seed=3, aggregate="borda")
            ranking = LLMReranker(backend, strategy=strategy).rerank(query.query, query.candidates[:30])
            orders.append(ranking.ids())
            assert len(ranking.calls) == strategy.estimate_calls(30) == 15
    assert orders[0] == orders[1]


def test_async_gives_the_same_order_as_sync(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]], judge_backend: OpenAIBackend
) -> None:
    queries, _ = dl19
    query = queries[2]
    for strategy in (Setwise(), Pairwise(method="heapsort"), Listwise(window=10, step=5)):
        reranker = LLMReranker(judge_backend, strategy=strategy)
        sync = reranker.rerank(query.query, query.candidates[:25], top_k=10)
        asynchronous = asyncio.run(reranker.arerank(query.query, query.candidates[:25], top_k=10))
        assert sync.ids() == asynchronous.ids()


def test_passage_budget_truncates_and_counts(judge_backend: OpenAIBackend) -> None:
    long_text = " ".join(f"word{i}" for i in range(50))
    reranker = LLMReranker(judge_backend, strategy="pointwise", max_words=10)
    ranking = reranker.rerank("q", [long_text, "short passage"])
    assert ranking.truncated == 1


def test_bad_strategy_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="window"):
        Listwise(window=5, step=5)
    with pytest.raises(UserError, match="method"):
        Pairwise(method="bubble")
    with pytest.raises(UserError, match="set_size"):
        Setwise(set_size=1)


def test_first_token_listwise_over_the_sdk_reads_logprobs_or_falls_back(
    dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]], dl19_judge_server: WireServer
) -> None:
    queries, _ = dl19
    query = queries[0]
    strategy = Listwise(method="partition", first_token=True)
    full = Listwise(method="partition")
    url = dl19_judge_server.openai_base_url
    with (
        OpenAIBackend("judge", base_url=url) as with_logprobs,
        OpenAIBackend("judge", base_url=url, logprobs=False) as without,
    ):
        fast = LLMReranker(with_logprobs, strategy=strategy).rerank(query.query, query.candidates, top_k=10)
        slow = LLMReranker(without, strategy=strategy).rerank(query.query, query.candidates, top_k=10)
        reference = LLMReranker(with_logprobs, strategy=full).rerank(query.query, query.candidates, top_k=10)
    assert fast.rounds == 3
    assert "first_token_fallback" not in fast.repairs
    assert fast.usage.completion_tokens < reference.usage.completion_tokens
    assert fast.ids()[:10] == reference.ids()[:10]
    # without logprobs every window is asked again in full: twice the calls, counted
    assert len(slow.calls) == 2 * len(fast.calls)
    assert slow.repairs["first_token_fallback"] == len(fast.calls)
    assert slow.ids()[:10] == reference.ids()[:10]
