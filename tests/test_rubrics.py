from pathlib import Path

import pytest

from llmrerank import DEFAULT_RUBRIC, Rubric, load_prompt
from llmrerank.errors import RubricError

EXAMPLES = Path(__file__).resolve().parent.parent / "evals" / "rubrics"


def test_rubric_round_trips_through_yaml(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(DEFAULT_RUBRIC.to_yaml())
    assert Rubric.load(path) == DEFAULT_RUBRIC
    assert DEFAULT_RUBRIC.grades == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nscale: [{grade: 0, label: a, meaning: b}]", "at least 2"),
        (
            "name: x\nscale: [{grade: 1, label: a, meaning: b}, {grade: 0, label: c, meaning: d}]",
            "lowest to highest",
        ),
        ("name: x\nscale: [{grade: 0, label: a}, {grade: 1, label: c, meaning: d}]", "meaning"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_bad_rubrics_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RubricError, match=message):
        Rubric.load(path)


def test_missing_rubric_file() -> None:
    with pytest.raises(RubricError, match="cannot read"):
        Rubric.load("/nonexistent/rubric.yaml")


def test_shipped_rubrics_load_and_render() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files, "ship at least one worked rubric example"
    for file in files:
        rubric = Rubric.load(file)
        rendered = load_prompt("pointwise/relevance@1").render(
            query="q", passage={"label": "P", "text": "t"}, rubric=rubric, output_instruction="J"
        )
        for grade in rubric.scale:
            assert f"- {grade.grade} ({grade.label}): {grade.meaning}" in rendered.system
        for criterion in rubric.criteria:
            assert criterion in rendered.system
