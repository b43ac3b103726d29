from llmrerank import LLMReranker
from llmrerank.backends import OpenAIBackend
from llmrerank.testing import SimulatedJudge, WireServer

LABELS = {
    ("is water wet", "Water makes things wet; it is a liquid."): 3,
    ("is water wet", "Wetness describes a liquid touching a surface."): 1,
    ("is water wet", "The stock market fell on Tuesday."): 0,
}
PASSAGES = [p for _, p in LABELS]


def rerank(judge: SimulatedJudge, strategy: str) -> list[str]:
    with (
        WireServer(judge) as server,
        OpenAIBackend("judge", base_url=server.openai_base_url) as backend,
    ):
        return [
            c.text for c in LLMReranker(backend, strategy=strategy).rerank("is water wet", PASSAGES[::-1])
        ]


def test_perfect_judge_answers_each_task_from_labels() -> None:
    judge = SimulatedJudge(LABELS)
    assert rerank(judge, "pointwise") == PASSAGES
    assert judge.calls["relevance_grade"] == 3
    assert judge.relevance("is water wet", "  Water makes things wet; it is a liquid. …") == 3
    assert judge.relevance("is water wet", "unknown text") == 0


def test_noise_is_deterministic_per_request() -> None:
    first = rerank(SimulatedJudge(LABELS, error_rate=0.5, seed=7), "pointwise")
    again = rerank(SimulatedJudge(LABELS, error_rate=0.5, seed=7), "pointwise")
    assert first == again
