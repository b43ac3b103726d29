"""Every stage of a cascade leaves a score of its own, an order-only LLM stage included."""

from __future__ import annotations

from llmrerank import Cascade, LLMReranker, Stage
from llmrerank.backends import BackendRequest
from llmrerank.testing import FunctionBackend
from llmrerank.testing.judge import parse_prompt

from .test_cascade import PASSAGES, ByNumber


def test_a_listwise_stage_writes_a_rank_derived_score_into_stage_scores() -> None:
    def reverse_window(request: BackendRequest) -> str:
        user = next(m["content"] for m in request.messages if m["role"] == "user")
        shown = len(parse_prompt(user)[1])
        return '{"ranking": [' + ", ".join(f'"{i}"' for i in range(shown, 0, -1)) + "]}"

    llm = LLMReranker(FunctionBackend(reverse_window), strategy="listwise", name="llm")
    ranking = Cascade([Stage(ByNumber(), keep=4), Stage(llm, keep=4)]).rerank("q", PASSAGES)
    head = list(ranking)[:4]
    # the local stage put d9 d8 d7 d6 first; the LLM reversed them
    assert [item.id for item in head] == ["d6", "d7", "d8", "d9"]
    assert [item.stage_scores["llm"] for item in head] == [1.0, 0.5, 1 / 3, 0.25]
    assert all("local" in item.stage_scores for item in head)
