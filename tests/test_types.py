from itertools import pairwise

import pytest

import llmrerank
from llmrerank import Candidate
from llmrerank.errors import CandidateError
from llmrerank.rerankers.protocol import ranking_from_scores
from llmrerank.types import as_candidates, as_query


def test_public_names_are_sorted_and_importable() -> None:
    names = llmrerank.__all__
    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in names:
        assert hasattr(llmrerank, name), name


def test_strings_get_stable_ids_and_mappings_keep_extras() -> None:
    first = as_candidates(["alpha", {"id": "d7", "text": "beta", "score": 3.5, "url": "u"}])
    again = as_candidates(["alpha"])
    assert first[0].id == again[0].id
    assert first[1].score == 3.5
    assert first[1].metadata == {"url": "u"}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([Candidate("a", "x"), Candidate("a", "y")], "duplicate candidate id 'a'"),
        (["same", "same"], "duplicate candidate id"),
        ([{"id": "a", "text": "   "}], "text is empty"),
        ([{"id": "a", "text": 5}], "must be a string"),
        ([{"text": "no id"}], "needs 'id' and 'text'"),
        ([3.0], "must be a Candidate"),
        ("a string", "not a single string"),
        ([{"id": "", "text": "t"}], "non-empty string"),
        ({"d1": "first passage", "d2": "second"}, "must be a list of passages, not a dict"),
        ([{"id": None, "text": "t"}], "#0: id must be a string or a number, got NoneType"),
        ([{"id": True, "text": "t"}], "id must be a string or a number, got bool"),
        ([{"id": ["x"], "text": "t"}], "id must be a string or a number, got list"),
        ([{"id": "d1", "text": "bad \ud800 text"}], "candidate 'd1': text is not valid Unicode: \\\\ud800"),
        (["bad \udfff"], "candidate text is not valid Unicode"),
        ([{"id": "d\ud800", "text": "t"}], "candidate id is not valid Unicode"),
        ([{"id": "a", "text": "t", "score": "high"}], "score must be a number"),
        (5, "must be a list of passages, not a int"),
    ],
)
def test_bad_candidates_are_user_errors(items: object, message: str) -> None:
    with pytest.raises(CandidateError, match=message):
        as_candidates(items)  # type: ignore[arg-type]


def test_numeric_ids_are_stringified_and_integral_floats_lose_their_point() -> None:
    ids = [
        c.id
        for c in as_candidates([{"id": 7, "text": "a"}, {"id": 8.0, "text": "b"}, {"id": 2.5, "text": "c"}])
    ]
    assert ids == ["7", "8", "2.5"]
    with pytest.raises(CandidateError, match="duplicate candidate id '7'"):
        as_candidates([{"id": 7, "text": "a"}, {"id": "7", "text": "b"}])


def test_a_query_with_a_lone_surrogate_is_an_input_error() -> None:
    assert as_query("fine query") == "fine query"
    with pytest.raises(CandidateError, match="query is not valid Unicode"):
        as_query("bad \ud800 query")
    with pytest.raises(CandidateError, match="non-empty string"):
        as_query("   ")


def test_ranking_scores_strictly_decrease_and_ties_keep_input_order() -> None:
    candidates = as_candidates([{"id": c, "text": c} for c in "abcd"])
    ranking = ranking_from_scores("q", candidates, [1.0, 3.0, 1.0, 3.0], stage="s")
    assert ranking.ids() == ["b", "d", "a", "c"]
    scores = [item.score for item in ranking]
    assert all(x > y for x, y in pairwise(scores))
    assert ranking[0].stage_scores == {"s": 3.0}
    assert [r.rank for r in ranking] == [1, 2, 3, 4]
    assert len(ranking.trimmed(2)) == 2
    assert ranking.top(1)[0].id == "b"
