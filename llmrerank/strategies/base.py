"""What every strategy shares: the plan signature, prompt context, passage budget."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PromptError
from ..prompts import Prompt
from ..rubrics import DEFAULT_RUBRIC, Rubric
from ..types import Candidate
from .plan import Plan

__all__ = ["PassageBudget", "PlanContext", "Strategy", "label_passages"]


@dataclass(frozen=True, slots=True)
class PassageBudget:
    """Passages longer than ``max_words`` are cut to that many words for the prompt."""

    max_words: int | None = 300

    def apply(self, text: str) -> tuple[str, bool]:
        if self.max_words is None:
            return text, False
        words = text.split()
        if len(words) <= self.max_words:
            return text, False
        return " ".join(words[: self.max_words]) + " …", True


@dataclass(frozen=True, slots=True)
class PlanContext:
    query: str
    candidates: Sequence[Candidate]
    prompt: Prompt
    rubric: Rubric = DEFAULT_RUBRIC
    budget: PassageBudget = PassageBudget()
    top_k: int | None = None
    variables: tuple[tuple[str, Any], ...] = ()

    def passages(self) -> tuple[list[str], int]:
        """Candidate texts within the budget, and how many were truncated."""
        texts, truncated = [], 0
        for candidate in self.candidates:
            text, cut = self.budget.apply(candidate.text)
            texts.append(text)
            truncated += cut
        return texts, truncated

    def render_variables(self, **variables: Any) -> dict[str, Any]:
        return {"query": self.query, "rubric": self.rubric, **dict(self.variables), **variables}


def label_passages(labels: Sequence[str], texts: Sequence[str]) -> list[dict[str, str]]:
    return [{"label": label, "text": text} for label, text in zip(labels, texts, strict=True)]


class Strategy(ABC):
    """A pure reranking method. ``plan`` yields batches of requests and returns the order."""

    name: str
    default_prompt: str

    @abstractmethod
    def plan(self, context: PlanContext) -> Plan: ...

    @abstractmethod
    def estimate_calls(self, n_candidates: int, top_k: int | None = None) -> int:
        """A proven upper bound on the LLM calls ``plan`` makes for ``n_candidates`` (exact
        where the method is not adaptive); each strategy sketches its proof. ``--dry-run`` and
        ``--max-cost`` plan from it."""

    def check_prompt(self, prompt: Prompt) -> None:
        if prompt.strategy and prompt.strategy != self.name:
            raise PromptError(
                f"prompt {prompt.ref} is written for the {prompt.strategy!r} strategy, not {self.name!r}"
            )
