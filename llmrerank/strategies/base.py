"""What every strategy shares: the plan signature, prompt context, passage budget."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BudgetError, PromptError
from ..prompts import Prompt
from ..rubrics import DEFAULT_RUBRIC, Rubric
from ..types import Candidate
from .plan import Plan

__all__ = [
    "PassageBudget",
    "PlanContext",
    "Strategy",
    "estimate_tokens",
    "fit_to_context",
    "label_passages",
]

# below this many tokens per passage a ranking is guesswork: refuse instead
MIN_PASSAGE_TOKENS = 32


def estimate_tokens(text: str) -> float:
    """A conservative token count without a tokenizer: 3 ASCII characters per token (English
    averages about 4) and one token per other character (CJK, emoji, accents)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars / 3 + (len(text) - ascii_chars)


def _cut_to_tokens(text: str, max_tokens: float) -> str:
    spent = 0.0
    for index, char in enumerate(text):
        spent += 1 / 3 if char.isascii() else 1.0
        if spent > max_tokens:
            return text[:index]
    return text


@dataclass(frozen=True, slots=True)
class PassageBudget:
    """How much of each passage goes into a prompt: at most ``max_words`` words, then at
    most ``max_chars`` characters (a passage without spaces, like base64 or CJK text, is
    cut too), then at most ``max_tokens`` estimated tokens (set when a prompt must fit a
    model's context). A cut passage ends with `` …`` and counts in ``Ranking.truncated``."""

    max_words: int | None = 300
    max_chars: int | None = 3000
    max_tokens: int | None = None

    def apply(self, text: str) -> tuple[str, bool]:
        cut = text
        if self.max_words is not None:
            words = cut.split()
            if len(words) > self.max_words:
                cut = " ".join(words[: self.max_words])
        if self.max_chars is not None and len(cut) > self.max_chars:
            cut = cut[: self.max_chars]
        if self.max_tokens is not None and estimate_tokens(cut) > self.max_tokens:
            cut = _cut_to_tokens(cut, self.max_tokens)
        if cut is text:
            return text, False
        return cut.rstrip() + " …", True


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

    def passages_per_request(self, n_candidates: int) -> int:
        """The most passages one prompt holds (all of them unless a strategy says fewer)."""
        return n_candidates

    def max_output_tokens(self, passages: int) -> int:
        """The reply allowance of a request with ``passages`` passages."""
        return 16

    def check_prompt(self, prompt: Prompt) -> None:
        if prompt.strategy and prompt.strategy != self.name:
            raise PromptError(
                f"prompt {prompt.ref} is written for the {prompt.strategy!r} strategy, not {self.name!r}"
            )


def fit_to_context(context: PlanContext, strategy: Strategy, context_tokens: int) -> PlanContext:
    """``context`` with a per-passage token budget small enough that the strategy's largest
    request (prompt, passages and reply) fits a model context of ``context_tokens``.

    Only passages longer than that budget are cut (and counted as truncated); a context
    too small for even a minimal passage is a ``BudgetError``, never a refused request.
    """
    n = len(context.candidates)
    per_request = max(1, strategy.passages_per_request(n))
    widest = label_passages([str(max(n, 1))] * per_request, ["x"] * per_request)
    variables = {"passage": widest[0]} if "passage" in context.prompt.variables else {"passages": widest}
    frame = context.prompt.render(**context.render_variables(**variables, output_instruction=""))
    # the output instruction, labels and the chat template's role markers: a generous allowance
    fixed = estimate_tokens(frame.system + frame.user) + 8 * per_request + 64
    room = context_tokens - strategy.max_output_tokens(per_request) - fixed
    per_passage = int(room // per_request)
    if per_passage < MIN_PASSAGE_TOKENS:
        raise BudgetError(
            f"a {strategy.name} request with {per_request} passages cannot fit the model's context "
            f"of {context_tokens} tokens ({per_passage} tokens per passage left); "
            "use a smaller window or a model with a longer context"
        )
    current = context.budget.max_tokens
    if current is not None and current <= per_passage:
        return context
    return replace(context, budget=replace(context.budget, max_tokens=per_passage))
