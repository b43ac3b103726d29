"""Stepping a flow: the one way every driver moves a reranker's work one question at a time.

A *flow* is a generator that does no I/O: it yields a question, is sent the answer, and at
the end returns its result. Whoever owns the I/O answers the questions. Three flows make up
a reranking, from the outside in:

* ``Cascade.walk`` asks for one stage's ranking of the survivors at a time (``StageTurn``)
  and returns the cascade's ``Ranking``;
* a strategy's ``Plan`` (``LLMReranker.plan``) asks for a round of ``LLMRequest`` that may
  run together and returns the ``Outcome``;
* ``Driver.exchange`` asks for one ``BackendRequest`` to be sent (again, with the
  validation error, when a reply does not parse) and returns the ``Answer``.

When answering fails with an ``LLMRerankError``, that error is thrown into the flow at the
question it asked: the flow may recover and ask on (the cascade keeps a failed stage's
earlier order) or let the error leave with what it knows added (the exchange adds the replies
already paid for). This is httpx's ``Auth.auth_flow`` idea: the logic is written once, and a
sync client, an async client, a provider batch or a test steps the same generator.

``drive`` (sync) and ``adrive`` (async) answer a flow's questions one after another. A driver
that cannot answer in a loop (batch mode gathers the questions of many flows, sends them in
one provider batch and answers them when the batch is back) holds a ``Stepper`` per flow::

    stepper = Stepper(driver.exchange(request, key))
    outgoing = stepper.question          # a BackendRequest to put in the next batch
    ...
    stepper.send(reply)                  # or stepper.throw(error)
    if stepper.finished:
        answer = stepper.result

``Stepper`` holds the stepping itself (starting a flow, ``send``, ``throw``, reading what it
returned), so no driver writes that loop again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Generic, TypeVar

from .errors import LLMRerankError

__all__ = ["Stepper", "adrive", "drive"]

Q = TypeVar("Q")
A = TypeVar("A")
R = TypeVar("R")


class Stepper(Generic[Q, A, R]):
    """Holds one flow between its questions. Made from a flow, it runs it to its first
    question at once; ``send`` (the answer) or ``throw`` (the error answering raised) runs it
    to the next one. When the flow returns, ``finished`` is true and ``result`` holds what it
    returned. An error the flow raises (including one thrown in that it does not handle)
    leaves ``send``/``throw`` unchanged."""

    _question: Q
    _result: R

    def __init__(self, flow: Generator[Q, A, R]) -> None:
        self._flow = flow
        self._finished = False
        self._advance(flow.__next__)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def question(self) -> Q:
        """What the flow is waiting to be answered."""
        if self._finished:
            raise RuntimeError("the flow has finished: it asks nothing more")
        return self._question

    @property
    def result(self) -> R:
        """What the flow returned."""
        if not self._finished:
            raise RuntimeError("the flow has not finished: answer its question first")
        return self._result

    def send(self, answer: A) -> None:
        """Answer the current question; the flow runs on to its next question or its end."""
        self._advance(lambda: self._flow.send(answer))

    def throw(self, error: LLMRerankError) -> None:
        """Answering the current question failed with ``error``: raise it inside the flow,
        which either recovers and runs on, or raises (``error`` itself, or another)."""
        self._advance(lambda: self._flow.throw(error))

    def _advance(self, step: Callable[[], Q]) -> None:
        if self._finished:
            raise RuntimeError("the flow has finished: it asks nothing more")
        try:
            self._question = step()
        except StopIteration as done:
            self._finished = True
            self._result = done.value


def drive(flow: Generator[Q, A, R], answer: Callable[[Q], A]) -> R:
    """Run ``flow`` to its result, answering each question with ``answer(question)``; an
    ``LLMRerankError`` that ``answer`` raises is thrown into the flow."""
    stepper = Stepper(flow)
    while not stepper.finished:
        try:
            reply = answer(stepper.question)
        except LLMRerankError as error:
            stepper.throw(error)
        else:
            stepper.send(reply)
    return stepper.result


async def adrive(flow: Generator[Q, A, R], answer: Callable[[Q], Awaitable[A]]) -> R:
    """``drive`` for an async ``answer``: the same flow, each question awaited in turn."""
    stepper = Stepper(flow)
    while not stepper.finished:
        try:
            reply = await answer(stepper.question)
        except LLMRerankError as error:
            stepper.throw(error)
        else:
            stepper.send(reply)
    return stepper.result
