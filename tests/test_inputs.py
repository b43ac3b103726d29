"""Bad input reaches the caller as one ``CandidateError`` naming what is wrong, never as a
crash deeper down (cache-key hashing, prompt rendering, the wire)."""

from __future__ import annotations

import pytest

from llmrerank import CandidateError
from llmrerank.rerankers.llm import LLMReranker
from llmrerank.testing import FunctionBackend


def grade_two(request: object) -> str:
    return '{"grade": 2}'


@pytest.mark.parametrize(
    ("query", "candidates", "message"),
    [
        ("ok query", [{"id": "d1", "text": "fine"}, {"id": "d2", "text": "bad \ud800"}], "candidate 'd2'"),
        ("bad \ud800 query", [{"id": "d1", "text": "fine"}], "query is not valid Unicode"),
        ("ok query", {"d1": "fine", "d2": "also fine"}, "must be a list"),
        ("ok query", [{"id": None, "text": "fine"}], "id must be a string or a number"),
    ],
)
def test_bad_input_without_a_cache_is_a_candidate_error_and_sends_nothing(
    query: str, candidates: object, message: str
) -> None:
    backend = FunctionBackend(grade_two)
    reranker = LLMReranker(backend, cache=None)
    with pytest.raises(CandidateError, match=message):
        reranker.rerank(query, candidates)  # type: ignore[arg-type]
    assert backend.requests == []


def test_numeric_ids_come_back_as_strings() -> None:
    reranker = LLMReranker(FunctionBackend(grade_two), cache=None)
    ranking = reranker.rerank("q", [{"id": 3, "text": "a"}, {"id": 4, "text": "b"}])
    assert ranking.ids() == ["3", "4"]
