"""The cascade: narrowing, full rankings, fallback when the LLM fails, bypass, routing, trace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from llmrerank import Cascade, LLMReranker, ParseError, Stage, UserError, hybrid
from llmrerank.backends import OpenAIBackend
from llmrerank.pricing import PriceTable
from llmrerank.rerankers.protocol import ranking_from_scores
from llmrerank.retry import RetryPolicy
from llmrerank.testing import Fault, Hang, WireServer, always, scripted
from llmrerank.types import CandidateLike, Ranking, as_candidates

PASSAGES = [{"id": f"d{i}", "text": f"passage number {i}"} for i in range(10)]


class ByNumber:
    """A deterministic local stage: higher passage number ranks higher."""

    uses_llm = False

    def __init__(self, name: str = "local", scale: float = 1.0) -> None:
        self.name = name
        self.scale = scale

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        items = as_candidates(candidates)
        scores = [self.scale * int(c.id[1:]) for c in items]
        return ranking_from_scores(query, items, scores, stage=self.name).trimmed(top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        return self.rerank(query, candidates, top_k=top_k)


def llm(server: WireServer, **options: object) -> LLMReranker:
    backend = OpenAIBackend("m", base_url=server.openai_base_url, timeout_s=2.0)
    return LLMReranker(backend, retry=RetryPolicy(max_attempts=2, base_s=0.01), **options)  # type: ignore[arg-type]


def test_stages_narrow_and_the_rest_stay_below_in_previous_order() -> None:
    with WireServer(always('{"ranking": ["2", "1", "3"]}')) as server:
        cascade = Cascade([Stage(ByNumber(), keep=3), Stage(llm(server, strategy="listwise"), keep=2)])
        ranking = cascade.rerank("q", PASSAGES)
        assert len(server.requests) == 1
    # local: d9 d8 d7 | d6 ... d0 ; LLM reorders the three survivors as [2, 1, 3]
    assert ranking.ids() == ["d8", "d9", "d7", "d6", "d5", "d4", "d3", "d2", "d1", "d0"]
    assert [item.score for item in ranking] == sorted((item.score for item in ranking), reverse=True)
    assert ranking[0].stage_scores["local"] == 8.0
    assert [s.name for s in ranking.stages] == ["local", "llm"]
    assert ranking.stages[1].calls == 1
    assert ranking.stages[1].usage.prompt_tokens > 0
    assert not ranking.degraded
    assert len(cascade.rerank("q", PASSAGES, top_k=4)) == 4


class AskedFor(ByNumber):
    """An LLM-like stage that records how many of its ranking each call asked for."""

    uses_llm = True

    def __init__(self) -> None:
        super().__init__("llm")
        self.asked: list[int | None] = []

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        self.asked.append(top_k)
        return super().rerank(query, candidates, top_k=top_k)


def test_the_last_llm_stage_is_asked_only_for_the_head_the_request_wants() -> None:
    last = AskedFor()
    cascade = Cascade([Stage(ByNumber(), keep=8), Stage(last, keep=5)])
    assert len(cascade.rerank("q", PASSAGES)) == 10
    assert len(cascade.rerank("q", PASSAGES, top_k=3)) == 3
    assert len(asyncio.run(cascade.arerank("q", PASSAGES, top_k=2))) == 2
    assert len(cascade.rerank("q", PASSAGES, top_k=7)) == 7  # more than keep: keep stands
    assert last.asked == [5, 3, 2, 5]
    # an LLM stage with a stage after it orders its whole keep whatever the request wants
    first = AskedFor()
    Cascade([Stage(first, keep=6), Stage(ByNumber("after"), keep=4)]).rerank("q", PASSAGES, top_k=1)
    assert first.asked == [6]
    # the cascade's own top_k counts as the request's when the call gives none
    own = AskedFor()
    Cascade([Stage(own)], top_k=4).rerank("q", PASSAGES)
    assert own.asked == [4]


def test_each_stage_reports_its_cost_from_the_price_table(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("date: 2026-11-25\nmodels:\n  m: {input: 2.0, output: 8.0}\n")
    with WireServer(always('{"ranking": ["2", "1", "3"]}')) as server:
        cascade = Cascade(
            [Stage(ByNumber(), keep=3), Stage(llm(server, strategy="listwise"))], prices=PriceTable(prices)
        )
        local, llm_stage = cascade.rerank("q", PASSAGES).stages
    tokens = llm_stage.usage
    assert tokens.prompt_tokens > 0
    assert local.cost_usd == 0.0
    assert llm_stage.cost_usd == pytest.approx(
        (2.0 * tokens.prompt_tokens + 8.0 * tokens.completion_tokens) / 1e6
    )


def test_a_malformed_price_table_is_a_user_error(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  m: {input: cheap}\n")
    with pytest.raises(UserError, match="price table"):
        PriceTable(prices)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (scripted(Fault(500, "model overloaded")), "HTTP 500"),
        (scripted(Fault(401, "bad key")), "HTTP 401"),
        (always("not json at all"), "no valid permutation"),
    ],
    ids=["server-errors", "auth", "unparseable"],
)
def test_llm_failures_fall_back_to_the_previous_order(handler: object, reason: str) -> None:
    with WireServer(handler) as server:  # type: ignore[arg-type]
        cascade = Cascade([Stage(ByNumber(), keep=4), Stage(llm(server, strategy="listwise", max_reasks=1))])
        ranking = cascade.rerank("q", PASSAGES)
    assert ranking.ids() == [f"d{i}" for i in range(9, -1, -1)]
    assert ranking.degraded
    assert ranking.degraded_reason is not None
    assert reason in ranking.degraded_reason
    assert ranking.stages[1].degraded_reason == ranking.degraded_reason
    assert cascade.stats["degraded"] == 1


def test_a_hanging_llm_hits_the_stage_budget_sync_and_async() -> None:
    with WireServer(scripted(Hang(30))) as server:
        cascade = Cascade([Stage(ByNumber(), keep=4), Stage(llm(server), timeout_s=0.5)])
        ranking = cascade.rerank("q", PASSAGES)
        assert ranking.degraded
        assert "timeout after 0.5s" in (ranking.degraded_reason or "")
        assert ranking.ids()[0] == "d9"
        ranking = asyncio.run(cascade.arerank("q", PASSAGES))
        assert ranking.degraded
        assert "timeout after 0.5s" in (ranking.degraded_reason or "")
    assert ranking.stages[1].latency_s < 5


def test_without_fallback_the_error_propagates() -> None:
    with WireServer(always("garbage")) as server:
        cascade = Cascade([Stage(llm(server, max_reasks=0), fallback=False)])
        with pytest.raises(ParseError):
            cascade.rerank("q", PASSAGES[:2])


def test_bypass_by_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with WireServer(always('{"grade": 3}')) as server:
        stages = [Stage(ByNumber(), keep=3), Stage(llm(server))]
        ranking = Cascade(stages, bypass_llm=True).rerank("q", PASSAGES)
        assert ranking.stages[1].skipped
        assert ranking.stages[1].degraded_reason == "bypassed"
        monkeypatch.setenv("LLMRERANK_BYPASS_LLM", "1")
        ranking = Cascade(stages).rerank("q", PASSAGES)
        assert ranking.stages[1].skipped
        assert not server.requests
    assert ranking.ids()[0] == "d9"
    assert not ranking.degraded


def test_confidence_routing_skips_the_llm_when_the_margin_is_decisive() -> None:
    with WireServer(always('{"grade": 1}')) as server:
        decisive = Cascade([Stage(ByNumber(scale=10), keep=3), Stage(llm(server))], skip_margin=5)
        decisive.rerank("q", PASSAGES)
        assert decisive.stats["llm_skipped_by_margin"] == 1
        close = Cascade([Stage(ByNumber(scale=1), keep=3), Stage(llm(server))], skip_margin=5)
        close.rerank("q", PASSAGES)
        assert close.stats["llm_skipped_by_margin"] == 0
        assert len(server.requests) == 3


def test_trace_records_each_request_without_secrets(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with WireServer(always('{"grade": 2}')) as server:
        backend = OpenAIBackend("m", base_url=server.openai_base_url, api_key="sk-very-secret")
        cascade = hybrid(LLMReranker(backend), narrow_with=ByNumber(), narrow_to=3, top_k=2, trace=trace)
        cascade.rerank("first query", PASSAGES)
        cascade.rerank("second query", PASSAGES)
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [line["query"] for line in lines] == ["first query", "second query"]
    first = lines[0]
    assert first["final_ids"][:3] == ["d9", "d8", "d7"]
    assert set(first["stage_scores"]) == {"local", "llm"}
    assert first["prompts"] == [f"pointwise/relevance@2 {LLMReranker(backend).prompt.sha256}"]
    assert first["prompt_tokens"] > 0
    assert "sk-very-secret" not in trace.read_text()


def test_hybrid_builds_several_narrowing_stages() -> None:
    with WireServer(always('{"grade": 2}')) as server:
        cascade = hybrid(llm(server), narrow_with=[ByNumber("a"), ByNumber("b")], narrow_to=[6, 3], top_k=2)
        ranking = cascade.rerank("q", PASSAGES)
        assert len(server.requests) == 3
    assert [s.kept for s in ranking.stages] == [6, 3, 2]  # the LLM stage keeps top_k
    assert ranking.ids() == ["d9", "d8"]  # top_k trims the result
    assert len(cascade.rerank("q", PASSAGES, top_k=7)) == 7
    with pytest.raises(UserError, match="narrow_to"):
        hybrid(ByNumber("llm"), narrow_with=[ByNumber(), ByNumber()], narrow_to=[5, 4, 3])
