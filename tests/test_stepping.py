"""The stepping seam: a ``Stepper`` holds a flow between questions, ``drive``/``adrive`` answer
it in a loop, and the public flows (``Cascade.walk``, ``LLMReranker.plan``,
``Driver.exchange``) stepped by hand rank exactly as ``rerank`` does."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Generator

import pytest

from llmrerank import BackendError, Cascade, LLMReranker, ParseError, Stage
from llmrerank.backends.base import BackendRequest
from llmrerank.errors import LLMRerankError
from llmrerank.rerankers.cascade import StageTurn
from llmrerank.stepping import Stepper, adrive, drive
from llmrerank.strategies.plan import Answer
from llmrerank.testing import FunctionBackend
from llmrerank.types import CallRecord, Candidate, Ranking, as_candidates

from .test_cascade import PASSAGES, ByNumber

Flow = Generator[str, int, int]


def adds_up() -> Flow:
    """Asks "a" then "b"; a failure at "a" counts 100 instead."""
    total = 0
    try:
        total += yield "a"
    except BackendError:
        total += 100
    total += yield "b"
    return total


def test_a_stepper_holds_a_flow_between_its_questions() -> None:
    stepper = Stepper(adds_up())
    assert (stepper.finished, stepper.question) == (False, "a")
    with pytest.raises(RuntimeError, match="not finished"):
        _ = stepper.result
    stepper.throw(BackendError("down"))  # the flow recovers and asks on
    assert stepper.question == "b"
    stepper.send(2)
    assert (stepper.finished, stepper.result) == (True, 102)
    with pytest.raises(RuntimeError, match="asks nothing more"):
        _ = stepper.question
    with pytest.raises(RuntimeError, match="asks nothing more"):
        stepper.send(1)


def test_an_error_the_flow_does_not_handle_leaves_through_throw() -> None:
    stepper = Stepper(adds_up())
    stepper.send(1)
    error = BackendError("down")
    with pytest.raises(BackendError) as raised:
        stepper.throw(error)  # "b" does not handle it
    assert raised.value is error


def test_a_flow_that_asks_nothing_is_finished_at_once() -> None:
    def nothing_to_ask() -> Flow:
        return 7
        yield "never"

    stepper = Stepper(nothing_to_ask())
    assert (stepper.finished, stepper.result) == (True, 7)
    assert drive(nothing_to_ask(), len) == 7


def test_drive_and_adrive_step_a_flow_alike() -> None:
    def answer(question: str) -> int:
        if question == "a":
            raise BackendError("down")
        return 5

    async def aanswer(question: str) -> int:
        return answer(question)

    assert drive(adds_up(), answer) == asyncio.run(adrive(adds_up(), aanswer)) == 105

    def broken(question: str) -> int:
        raise ValueError("not an LLMRerankError")

    with pytest.raises(ValueError, match="not an LLMRerankError"):  # only the library's errors go in
        drive(adds_up(), broken)


def number_of(request: BackendRequest) -> int:
    match = re.search(r"passage number (\d+)", " ".join(m["content"] for m in request.messages))
    assert match is not None
    return int(match.group(1))


def grade_by_number(request: BackendRequest) -> str:
    """Pointwise grades from the passage's number; the first ask about an even one gets an
    invalid reply, so its exchange re-asks."""
    reasked = any(m["role"] == "assistant" for m in request.messages)
    if number_of(request) % 2 == 0 and not reasked:
        return "not json"
    return json.dumps({"grade": number_of(request) % 4})


def by_hand(llm: LLMReranker, query: str, items: list[Candidate]) -> tuple[Ranking, int]:
    """One LLM stage stepped through the public seam, as batch mode does; also returns how
    many re-asks the exchanges sent."""
    plan = Stepper(llm.plan(query, items))
    calls: list[CallRecord] = []
    reasks = 0
    while not plan.finished:
        answers: list[Answer] = []
        for request in plan.question:
            key, hit = llm.driver.lookup(request)
            if hit is None:
                exchange = Stepper(llm.driver.exchange(request, key))
                while not exchange.finished:
                    exchange.send(llm.backend.complete(exchange.question))
                hit = exchange.result
                reasks += hit.record.reasks
            answers.append(hit)
        calls += [answer.record for answer in answers]
        plan.send(answers)
    return llm.ranking(query, items, plan.result, calls), reasks


def test_an_llm_stage_stepped_by_hand_ranks_as_rerank_does() -> None:
    items = as_candidates(PASSAGES)
    backend = FunctionBackend(grade_by_number)
    llm = LLMReranker(backend, strategy="pointwise")
    stepped, reasks = by_hand(llm, "which number?", items)
    online = llm.rerank("which number?", items)
    assert reasks == sum(c.reasks for c in online.calls) == 5  # re-asked by hand as online
    assert stepped.ids() == online.ids()
    assert [i.stage_scores for i in stepped] == [i.stage_scores for i in online]
    assert [(c.cache_key, c.reasks, c.attempts) for c in stepped.calls] == [
        (c.cache_key, c.reasks, c.attempts) for c in online.calls
    ]


def test_an_exchange_that_never_parses_raises_with_its_paid_replies() -> None:
    llm = LLMReranker(FunctionBackend(lambda request: "no"), strategy="pointwise", max_reasks=1)
    (request,) = Stepper(llm.plan("q", as_candidates(["one"]))).question
    key, hit = llm.driver.lookup(request)
    assert hit is None
    exchange = Stepper(llm.driver.exchange(request, key))
    exchange.send(llm.backend.complete(exchange.question))
    with pytest.raises(ParseError) as raised:
        exchange.send(llm.backend.complete(exchange.question))
    (paid,) = raised.value.calls
    assert (paid.reasks, paid.attempts, paid.usage.total_tokens) == (1, 2, 4)


def test_a_cascade_walked_by_hand_asks_each_stage_in_turn() -> None:
    def llm_grade(request: BackendRequest) -> str:
        return json.dumps({"grade": 3 if number_of(request) == 7 else 0})

    llm = LLMReranker(FunctionBackend(llm_grade), strategy="pointwise")
    cascade = Cascade([Stage(ByNumber(), keep=4), Stage(llm, keep=2), Stage(ByNumber("last"))])
    walk = Stepper(cascade.walk("q", PASSAGES))
    asked: list[tuple[str, list[str]]] = []
    while not walk.finished:
        turn: StageTurn = walk.question
        asked.append((turn.stage.label, [c.id for c in turn.inputs]))
        if turn.stage.uses_llm:
            walk.throw(BackendError("the LLM is down"))  # degrades: the earlier order stays
        else:
            walk.send(turn.rerank())
    ranking = walk.result
    assert asked == [
        ("local", [f"d{i}" for i in range(10)]),
        ("llm", ["d9", "d8", "d7", "d6"]),
        ("last", ["d9", "d8"]),
    ]
    assert ranking.degraded
    assert "the LLM is down" in (ranking.degraded_reason or "")
    assert ranking.ids() == [f"d{i}" for i in range(9, -1, -1)]
    online = cascade.rerank("q", PASSAGES)  # the same walk, the LLM answering: d7 is kept
    assert (online.degraded, online.ids()[:3]) == (False, ["d9", "d7", "d8"])


def test_errors_a_flow_raises_itself_are_never_thrown_back_in() -> None:
    thrown: list[LLMRerankError] = []

    def raises_after_answer() -> Flow:
        try:
            yield "a"
        except LLMRerankError as exc:  # would mean drive threw the flow's own error back in
            thrown.append(exc)
        raise BackendError("from the flow")

    with pytest.raises(BackendError, match="from the flow"):
        drive(raises_after_answer(), len)
    assert thrown == []
