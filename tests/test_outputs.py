import pytest

from llmrerank.outputs import (
    BestChoice,
    GradeOutput,
    InvalidOutput,
    PermutationOutput,
    Preference,
    extract_json_object,
)


def test_json_is_found_in_fences_and_prose() -> None:
    assert extract_json_object('Sure!\n```json\n{"grade": 2}\n```') == {"grade": 2}
    assert extract_json_object('The answer is {"winner": "B"} because...') == {"winner": "B"}
    with pytest.raises(InvalidOutput, match="no JSON"):
        extract_json_object("I think it is relevant")


def test_grade_must_be_on_the_scale() -> None:
    spec = GradeOutput([0, 1, 2, 3])
    assert spec.parse('{"grade": 3}').value == 3
    assert spec.parse('{"grade": "2"}').value == 2
    with pytest.raises(InvalidOutput, match="not on the scale"):
        spec.parse('{"grade": 7}')
    with pytest.raises(InvalidOutput, match="grade"):
        spec.parse('{"score": 1}')
    assert spec.json_schema()["properties"]["grade"]["enum"] == [0, 1, 2, 3]


def test_permutation_repairs_are_explicit_and_counted() -> None:
    spec = PermutationOutput(["1", "2", "3", "4"])
    clean = spec.parse('{"ranking": ["3", "1", "4", "2"]}')
    assert (clean.value, dict(clean.repairs)) == ([2, 0, 3, 1], {})
    repaired = spec.parse('{"ranking": ["3", "3", "9", "1"]}')
    assert repaired.value == [2, 0, 1, 3]
    assert dict(repaired.repairs) == {"duplicates": 1, "unknown": 1, "missing": 2}
    classic = spec.parse("[2] > [4] > [1] > [3]")
    assert classic.value == [1, 3, 0, 2]
    with pytest.raises(InvalidOutput, match="none of the passage identifiers"):
        spec.parse('{"ranking": ["x", "y"]}')


def test_preference_and_best_choice() -> None:
    assert Preference().parse('{"winner": "B"}').value == "B"
    with pytest.raises(InvalidOutput, match="winner"):
        Preference().parse('{"winner": "C"}')
    spec = BestChoice(["A", "B", "C"])
    assert spec.parse('{"best": "C"}').value == 2
    with pytest.raises(InvalidOutput, match="not one of"):
        spec.parse('{"best": "D"}')
