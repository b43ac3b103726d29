"""Custom relevance rubrics: what "relevant" means for a team, as data.

A rubric has a name, a description, criteria (what makes a passage useful) and a graded
scale with a meaning per grade. It loads from YAML or is built in code, and the prompts
render it, so changing what "relevant" means never needs a code change::

    name: support-kb
    description: Passages from our support knowledge base, judged for an on-call engineer.
    criteria:
      - Gives a concrete fix or the exact cause, not just background.
    scale:
      - {grade: 0, label: irrelevant, meaning: Unrelated to the question.}
      - {grade: 3, label: answers, meaning: Fully answers the question on its own.}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import RubricError

__all__ = ["DEFAULT_RUBRIC", "Grade", "Rubric"]


class Grade(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    grade: int = Field(ge=0, le=100)
    label: str = Field(min_length=1)
    meaning: str = Field(min_length=1)


class Rubric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    criteria: tuple[str, ...] = ()
    scale: tuple[Grade, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _scale_is_ordered(self) -> Rubric:
        grades = [g.grade for g in self.scale]
        if len(set(grades)) != len(grades):
            raise ValueError(f"scale repeats a grade: {grades}")
        if grades != sorted(grades):
            raise ValueError(f"scale must list grades from lowest to highest: {grades}")
        return self

    @property
    def grades(self) -> list[int]:
        return [g.grade for g in self.scale]

    @property
    def min_grade(self) -> int:
        return self.scale[0].grade

    @property
    def max_grade(self) -> int:
        return self.scale[-1].grade

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "rubric") -> Rubric:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RubricError(f"{source} is not a valid rubric:\n{exc}") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Rubric:
        file = Path(path).expanduser()
        try:
            data = yaml.safe_load(file.read_text("utf-8"))
        except OSError as exc:
            raise RubricError(f"cannot read rubric {file}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise RubricError(f"rubric {file} is not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(file))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


DEFAULT_RUBRIC = Rubric(
    name="general-relevance",
    description="How well the passage answers the search query.",
    criteria=(
        "The passage addresses the information need behind the query, not just its words.",
        "A passage that answers the query directly is better than one that is only on topic.",
    ),
    scale=(
        Grade(grade=0, label="irrelevant", meaning="Has nothing to do with the query."),
        Grade(grade=1, label="related", meaning="On the topic but does not answer the query."),
        Grade(
            grade=2,
            label="highly relevant",
            meaning="Partly answers the query or answers it unclearly.",
        ),
        Grade(
            grade=3,
            label="perfectly relevant",
            meaning="Dedicated to the query and answers it fully.",
        ),
    ),
)
