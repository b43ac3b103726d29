"""A caller's mistake raises where it is made — the spec, ``hybrid()``, a stage, a CLI flag —
as a ``UserError`` naming it, and is never turned into a degraded ranking: only the backend,
parsing and the budgets degrade. Each stage checks its request with the same function, so
the same bad input reads the same whatever ranks it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llmrerank import Candidate, Cascade, LLMReranker, PipelineSpec, Ranking, Stage, UserError, hybrid
from llmrerank._concurrency import Limiter
from llmrerank.backends import AnthropicBackend, OpenAIBackend
from llmrerank.errors import BudgetError, CandidateError
from llmrerank.rerankers.cross_encoder import CrossEncoderReranker
from llmrerank.rerankers.dense import DenseReranker
from llmrerank.rerankers.protocol import FirstStage
from llmrerank.testing import FunctionBackend
from llmrerank.types import CandidateLike, as_request

from .test_cli import run_cli

PASSAGES = [
    {"id": "a", "text": "cats purr"},
    {"id": "b", "text": "dogs bark"},
    {"id": "c", "text": "fish swim"},
]
GOOD_LINE = json.dumps({"query": "what do cats do", "candidates": PASSAGES}) + "\n"


def grade_two(request: object) -> str:
    return '{"grade": 2}'


def function_llm() -> LLMReranker:
    return LLMReranker(FunctionBackend(grade_two), cache=None)


class Raising:
    """A stage that fails with the given error, as a stage's bug or a caller's input would."""

    uses_llm = True
    name = "raising"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        raise self.error

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        raise self.error


# -- defect 2: top_k and the other counts ---------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"narrow_with": ("dense:",), "narrow_to": (0,)}, "narrow_to"),
        ({"narrow_with": ("dense:",), "narrow_to": (-3,)}, "narrow_to"),
        ({"narrow_to": (0,)}, "narrow_to"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"llm_timeout_s": 0}, "llm_timeout_s"),
        ({"llm_timeout_s": -1.0}, "llm_timeout_s"),
        ({"llm_timeout_s": float("nan")}, "llm_timeout_s"),
        ({"call_timeout_s": 0.0}, "call_timeout_s"),
    ],
)
def test_a_bad_count_or_time_bound_fails_at_the_spec(fields: dict[str, object], names: str) -> None:
    with pytest.raises(UserError, match=f"pipeline 'p': {names}"):
        PipelineSpec(name="p", llm="sim:dl19", **fields)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=names):
        PipelineSpec.from_dict({"name": "p", "llm": "sim:dl19", **fields})


@pytest.mark.parametrize("top_k", [0, -1])
def test_hybrid_refuses_a_top_k_below_one(top_k: int) -> None:
    with pytest.raises(UserError, match="top_k"):
        hybrid(function_llm(), narrow_with=(), top_k=top_k)


@pytest.mark.parametrize("top_k", [0, -1])
def test_a_cascade_refuses_a_top_k_below_one_instead_of_trimming(top_k: int) -> None:
    cascade = Cascade([Stage(function_llm(), keep=2)])
    with pytest.raises(UserError, match=f"top_k must be a positive whole number, got {top_k}"):
        cascade.rerank("what do cats do", PASSAGES, top_k=top_k)
    with pytest.raises(UserError, match="top_k"):
        asyncio.run(cascade.arerank("what do cats do", PASSAGES, top_k=top_k))
    with pytest.raises(UserError, match="top_k"):
        FirstStage().rerank("what do cats do", PASSAGES, top_k=top_k)
    with pytest.raises(UserError, match="top_k"):
        Cascade([Stage(function_llm())], top_k=top_k)
    with pytest.raises(UserError, match="keep"):
        Stage(function_llm(), keep=top_k)
    with pytest.raises(UserError, match="top_k"):
        cascade.rerank("what do cats do", PASSAGES).trimmed(top_k)
    assert cascade.stats["degraded"] == 0


@pytest.mark.parametrize(
    "error",
    [
        CandidateError("candidate 'a': embedding is from 'other-model'"),
        UserError("top_k must be at least 1, got 0"),
    ],
    ids=["candidate", "user"],
)
def test_a_caller_error_inside_a_stage_raises_and_is_never_a_degraded_ranking(error: UserError) -> None:
    cascade = Cascade([Stage(Raising(error), keep=2)])
    with pytest.raises(type(error), match=re.escape(str(error))):
        cascade.rerank("what do cats do", PASSAGES)
    with pytest.raises(type(error), match=re.escape(str(error))):
        asyncio.run(cascade.arerank("what do cats do", PASSAGES))
    assert cascade.stats["degraded"] == 0


def test_a_budget_error_inside_a_stage_still_degrades() -> None:
    cascade = Cascade([Stage(Raising(BudgetError("too many calls")), keep=2)])
    ranking = cascade.rerank("what do cats do", PASSAGES)
    assert ranking.degraded
    assert ranking.degraded_reason == "stage 'raising': too many calls"
    assert ranking.ids() == ["a", "b", "c"]


SIM = ("--model", "sim:dl19")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ((*SIM, "-k", "0"), "Invalid value for '--top-k' / '-k': 0 is not in the range x>=1"),
        ((*SIM, "-k", "-1"), "Invalid value for '--top-k' / '-k': -1 is not in the range x>=1"),
        (("--narrow-with", "dense:", "-k", "0"), "Invalid value for '--top-k' / '-k'"),
        ((*SIM, "--max-concurrency", "0"), "Invalid value for '--max-concurrency'"),
        ((*SIM, "--max-concurrency", "-1"), "Invalid value for '--max-concurrency'"),
        ((*SIM, "--llm-timeout", "0"), "Invalid value for '--llm-timeout'"),
        ((*SIM, "--llm-timeout", "-1"), "Invalid value for '--llm-timeout'"),
        (("--narrow-with", "dense:", "--narrow-to", "0"), "Invalid value for '--narrow-to'"),
        ((*SIM, "-s", "listwise", "--window", "1"), "Invalid value for '--window'"),
        ((*SIM, "-s", "setwise", "--set-size", "0"), "Invalid value for '--set-size'"),
    ],
)
def test_a_bad_count_flag_is_a_usage_error(flags: tuple[str, ...], says: str) -> None:
    completed = run_cli("rerank", "--no-cache", *flags, stdin=GOOD_LINE)
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    assert says in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_pipeline_file_with_a_bad_top_k_is_one_error_line(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("name: kb\nllm: sim:dl19\ntop_k: 0\n")
    completed = run_cli("rerank", "--pipeline", str(spec), "--no-cache", stdin=GOOD_LINE)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.strip().splitlines() == [
        "error: pipeline 'kb': top_k must be a positive whole number, got 0"
    ]


def test_a_good_top_k_still_trims_from_the_cli() -> None:
    completed = run_cli("rerank", "--model", "sim:dl19", "--no-cache", "-k", "2", stdin=GOOD_LINE)
    assert completed.returncode == 0, completed.stderr
    (line,) = [json.loads(text) for text in completed.stdout.splitlines()]
    assert len(line["ranking"]) == 2
    assert not line["degraded"]


# -- defect 3: the standalone local stages check their request like the cascade ---------------------
LOCAL_STAGES = [DenseReranker, CrossEncoderReranker]


@pytest.mark.parametrize("stage_class", LOCAL_STAGES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("q\ud800", "query is not valid Unicode: \\ud800 at character 1"),
        (5, "query must be a non-empty string, got 5"),
        (None, "query must be a non-empty string, got None"),
        ("", "query must be a non-empty string, got ''"),
        ("   ", "query must be a non-empty string"),
    ],
)
def test_a_local_stage_alone_refuses_a_bad_query_as_the_cascade_does(
    stage_class: type[DenseReranker | CrossEncoderReranker], query: object, says: str
) -> None:
    stage = stage_class(device="cpu")
    entries: list[Callable[[], object]] = [
        lambda: stage.rerank(query, ["a passage"]),  # type: ignore[arg-type]
        lambda: asyncio.run(stage.arerank(query, ["a passage"])),  # type: ignore[arg-type]
        lambda: stage.score(query, ["a passage"]),  # type: ignore[arg-type]
        lambda: Cascade([Stage(stage)]).rerank(query, ["a passage"]),  # type: ignore[arg-type]
    ]
    messages = set()
    for entry in entries:
        with pytest.raises(CandidateError, match=re.escape(says)) as raised:
            entry()
        messages.add(str(raised.value))
    assert len(messages) == 1  # one rule, one message


@pytest.mark.parametrize("stage_class", LOCAL_STAGES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("candidates", "says"),
    [
        ({"a passage", "another"}, "candidates must be a list of passages, not a set"),
        ([{"id": "d1", "text": "x \ud800"}], "candidate 'd1': text is not valid Unicode"),
        ([{"id": "d1", "text": "x"}, {"id": "d1", "text": "y"}], "duplicate candidate id 'd1'"),
        ([{"id": "d1", "text": " "}], "candidate 'd1': text is empty"),
    ],
)
def test_a_local_stage_alone_refuses_bad_candidates(
    stage_class: type[DenseReranker | CrossEncoderReranker], candidates: object, says: str
) -> None:
    stage = stage_class(device="cpu")
    with pytest.raises(CandidateError, match=re.escape(says)):
        stage.rerank("a query", candidates)  # type: ignore[arg-type]
    with pytest.raises(CandidateError, match=re.escape(says)):
        stage.score("a query", candidates)  # type: ignore[arg-type]


# -- defect 4: unordered candidates and the Python constructors ----------------------------------------
@pytest.mark.parametrize(
    "candidates",
    [{"cats purr", "dogs bark"}, frozenset({"cats purr"}), (text for text in ["cats purr"]), {"a": 1}.keys()],
    ids=["set", "frozenset", "generator", "dict-keys"],
)
def test_candidates_without_an_order_are_refused_by_every_entry(candidates: object) -> None:
    backend = FunctionBackend(grade_two)
    llm = LLMReranker(backend, cache=None)
    for rerank in (llm.rerank, Cascade([Stage(llm)]).rerank, FirstStage().rerank):
        with pytest.raises(CandidateError, match="candidates must be a list of passages, not a"):
            rerank("what do cats do", candidates)  # type: ignore[arg-type]
    assert backend.requests == []


def test_an_ordered_sequence_of_any_kind_is_still_taken() -> None:
    ranking = FirstStage().rerank("q", (Candidate("x", "one"), Candidate("y", "two")))
    assert ranking.ids() == ["x", "y"]
    assert as_request("q", ["one"], 1)[2] == 1


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_a_concurrency_below_one_is_refused_not_raised_to_one(value: object) -> None:
    with pytest.raises(UserError, match="max_concurrency must be a positive whole number"):
        LLMReranker(FunctionBackend(grade_two), max_concurrency=value)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="max_concurrency"):
        Limiter(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ({"max_reasks": -1}, "max_reasks must be a whole number of at least 0, got -1"),
        ({"max_words": 0}, "max_words must be a positive whole number, got 0"),
        ({"max_chars": -5}, "max_chars must be a positive whole number, got -5"),
    ],
)
def test_the_llm_stage_refuses_counts_it_cannot_honour(option: dict[str, int], says: str) -> None:
    with pytest.raises(UserError, match=says):
        LLMReranker(FunctionBackend(grade_two), **option)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, float("inf")])
def test_a_time_bound_of_zero_or_less_is_refused(value: float) -> None:
    with pytest.raises(UserError, match="timeout_s must be a number of seconds above 0"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", timeout_s=value)
    with pytest.raises(UserError, match="timeout_s must be a number of seconds above 0"):
        AnthropicBackend("m", base_url="http://127.0.0.1:9", timeout_s=value)
    with pytest.raises(UserError, match="stage 'llm': timeout_s"):
        Stage(function_llm(), timeout_s=value)
