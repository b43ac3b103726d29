"""In-process seams: a backend that is a Python function, and a plan stepped by hand.

``FunctionBackend(fn)`` answers every request with ``fn(request)`` — reply text or a
``BackendReply`` — so an app's tests, or a new strategy's, run the real driver (cache,
parsing, re-asks) with no server. ``drive_plan(plan, answer)`` steps a strategy's plan
with answers from ``answer(request)`` and no driver at all, recording every round.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend, BackendReply, BackendRequest
from ..errors import UserError
from ..stepping import drive
from ..strategies.plan import Answer, LLMRequest, Outcome, Plan
from ..types import CallRecord, Usage

__all__ = ["DrivenPlan", "FunctionBackend", "ScriptedAnswers", "drive_plan"]

ReplyLike = str | BackendReply
Responder = Callable[[BackendRequest], ReplyLike | Awaitable[ReplyLike]]


class FunctionBackend(Backend):
    """``FunctionBackend(lambda request: '{"grade": 2}')``; ``fn`` may be async. ``requests``
    keeps every request it was sent, in order."""

    provider = "function"

    def __init__(self, fn: Responder, *, model: str = "function", supports_logprobs: bool = False) -> None:
        self.fn = fn
        self.model = model
        self.supports_logprobs = supports_logprobs
        self.requests: list[BackendRequest] = []

    def identity(self) -> dict[str, Any]:
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return {"provider": self.provider, "model": self.model, "function": name}

    def _reply(self, value: ReplyLike) -> BackendReply:
        if isinstance(value, BackendReply):
            return value
        if isinstance(value, str):
            return BackendReply(
                text=value, usage=Usage(prompt_tokens=1, completion_tokens=1), model=self.model
            )
        raise UserError(
            f"FunctionBackend's function returned {type(value).__name__}, not str or BackendReply"
        )

    def complete(self, request: BackendRequest) -> BackendReply:
        self.requests.append(request)
        value = self.fn(request)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return self._reply(value)

    async def acomplete(self, request: BackendRequest) -> BackendReply:
        self.requests.append(request)
        value = self.fn(request)
        if inspect.isawaitable(value):
            value = await value
        return self._reply(value)


async def _awaited(value: Awaitable[ReplyLike]) -> ReplyLike:
    return await value


@dataclass
class DrivenPlan:
    """What stepping a plan by hand produced: its outcome and every round of requests."""

    outcome: Outcome
    rounds: list[list[LLMRequest]] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(len(r) for r in self.rounds)


def _record(request: LLMRequest, round_index: int) -> CallRecord:
    return CallRecord(
        prompt_ref=request.prompt.ref,
        prompt_sha256=request.prompt.sha256,
        backend="scripted",
        model="scripted",
        usage=Usage(),
        cached=False,
        attempts=1,
        reasks=0,
        latency_s=0.0,
        cache_key="",
        round=round_index,
    )


def drive_plan(plan: Plan, answer: Callable[[LLMRequest], Any]) -> DrivenPlan:
    """Step ``plan`` to its outcome; ``answer(request)`` gives each request's parsed value
    (a grade, a permutation, a choice), as the driver would after parsing."""
    rounds: list[list[LLMRequest]] = []

    def answer_round(batch: Sequence[LLMRequest]) -> list[Answer]:
        rounds.append(list(batch))
        return [Answer(answer(request), _record(request, len(rounds) - 1)) for request in batch]

    return DrivenPlan(drive(plan, answer_round), rounds)


class ScriptedAnswers:
    """Answers in the order given; asking for more than were scripted is an error."""

    def __init__(self, values: Iterable[Any]) -> None:
        self._values = list(values)
        self.asked = 0

    def __call__(self, request: LLMRequest) -> Any:
        if self.asked >= len(self._values):
            raise AssertionError(f"the plan asked a question beyond the {len(self._values)} scripted")
        value = self._values[self.asked]
        self.asked += 1
        return value
