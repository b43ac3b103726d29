"""What a model must answer, as pydantic-validated output specs with tolerant parsing.

Each spec names its task (``relevance_grade``, ``permutation``, ``preference``,
``best_choice``), gives a strict JSON schema for backends with native structured output,
and parses free text for backends without it: code fences and prose around the JSON are
tolerated, and listwise also accepts RankGPT's ``[2] > [1] > [3]``. Output that cannot be
read raises ``InvalidOutput`` with a message fit to send back to the model. A permutation
that is readable but imperfect is repaired explicitly, and the repair is counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "BestChoice",
    "GradeOutput",
    "InvalidOutput",
    "OutputSpec",
    "Parsed",
    "PermutationOutput",
    "Preference",
    "extract_json_object",
]

T = TypeVar("T")


class InvalidOutput(ValueError):
    """The reply cannot be read; the message explains why, for the re-ask."""


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    value: T
    repairs: Mapping[str, int] = field(default_factory=dict)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (inside a code fence or surrounded by prose)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        start = chunk.find("{")
        while start >= 0:
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                start = chunk.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = chunk.find("{", start + 1)
    raise InvalidOutput("no JSON object found in the reply")


def _validate(model: type[BaseModel], text: str) -> Any:
    data = extract_json_object(text)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'reply'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidOutput(problems) from None


class OutputSpec(Generic[T]):
    """Base of the task specs; ``name`` doubles as the JSON-schema / tool name."""

    name: str
    instruction: str

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, text: str) -> Parsed[T]:
        raise NotImplementedError

    def cache_material(self) -> dict[str, Any]:
        return {"name": self.name, "schema": self.json_schema()}


def _object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


class _GradeReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    grade: int


class GradeOutput(OutputSpec[int]):
    """``{"grade": G}`` with G on the rubric's scale."""

    name = "relevance_grade"

    def __init__(self, grades: Sequence[int]) -> None:
        self.grades = list(grades)
        self.instruction = f'Reply with JSON only: {{"grade": G}} where G is one of {self.grades}.'

    def json_schema(self) -> dict[str, Any]:
        return _object_schema({"grade": {"type": "integer", "enum": self.grades}})

    def parse(self, text: str) -> Parsed[int]:
        reply = _validate(_GradeReply, text)
        if reply.grade not in self.grades:
            raise InvalidOutput(f"grade {reply.grade} is not on the scale {self.grades}")
        return Parsed(reply.grade)


class _PermutationReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ranking: list[str | int]


_BRACKETED = re.compile(r"\[\s*([A-Za-z0-9]+)\s*\]")


class PermutationOutput(OutputSpec[list[int]]):
    """``{"ranking": [labels, most relevant first]}`` or the text ``[2] > [1] > [3]``.

    The parsed value is a full permutation of indices into ``labels``. Repairs are explicit:
    repeated labels are dropped after their first place (``duplicates``), labels that were
    not shown are dropped (``unknown``), and labels left out are appended in the order they
    were shown (``missing``).
    """

    name = "permutation"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.index_of_label = {label: i for i, label in enumerate(self.labels)}  # label -> position
        example = ", ".join(f'"{label}"' for label in self.labels[:3])
        self.instruction = (
            f'Reply with JSON only: {{"ranking": [{example}, ...]}} listing all '
            f"{len(self.labels)} passage identifiers, most relevant first, each exactly once."
        )

    def json_schema(self) -> dict[str, Any]:
        n = len(self.labels)
        return _object_schema(
            {
                "ranking": {
                    "type": "array",
                    "items": {"type": "string", "enum": self.labels},
                    "minItems": n,
                    "maxItems": n,
                }
            }
        )

    def _raw_labels(self, text: str) -> list[str]:
        try:
            return [str(x).strip().strip("[]") for x in _validate(_PermutationReply, text).ranking]
        except InvalidOutput:
            bracketed = _BRACKETED.findall(text)
            if bracketed:
                return bracketed
            raise

    def parse(self, text: str) -> Parsed[list[int]]:
        order: list[int] = []
        seen: set[int] = set()
        duplicates = unknown = 0
        for label in self._raw_labels(text):
            index = self.index_of_label.get(label)
            if index is None:
                unknown += 1
            elif index in seen:
                duplicates += 1
            else:
                seen.add(index)
                order.append(index)
        if not order:
            raise InvalidOutput(f"the ranking names none of the passage identifiers {self.labels}")
        missing = [i for i in range(len(self.labels)) if i not in seen]
        repairs = {
            name: count
            for name, count in (
                ("duplicates", duplicates),
                ("unknown", unknown),
                ("missing", len(missing)),
            )
            if count
        }
        return Parsed(order + missing, repairs)


class _PreferenceReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    winner: Literal["A", "B"]


class Preference(OutputSpec[Literal["A", "B"]]):
    """``{"winner": "A" | "B"}``: which of two passages is more relevant."""

    name = "preference"
    instruction = 'Reply with JSON only: {"winner": "A"} or {"winner": "B"}.'

    def json_schema(self) -> dict[str, Any]:
        return _object_schema({"winner": {"type": "string", "enum": ["A", "B"]}})

    def parse(self, text: str) -> Parsed[Literal["A", "B"]]:
        return Parsed(_validate(_PreferenceReply, text).winner)


class _ChoiceReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    best: str | int


class BestChoice(OutputSpec[int]):
    """``{"best": LABEL}``: the most relevant of a set; parsed to the label's index."""

    name = "best_choice"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.instruction = f'Reply with JSON only: {{"best": L}} where L is one of {self.labels}.'

    def json_schema(self) -> dict[str, Any]:
        return _object_schema({"best": {"type": "string", "enum": self.labels}})

    def parse(self, text: str) -> Parsed[int]:
        label = str(_validate(_ChoiceReply, text).best).strip().strip("[]")
        if label not in self.labels:
            raise InvalidOutput(f"{label!r} is not one of the passage identifiers {self.labels}")
        return Parsed(self.labels.index(label))
