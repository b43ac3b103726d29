"""OpenTelemetry spans, collected with the real SDK: through the library, the CLI and the
service (a real process continuing the caller's W3C ``traceparent``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llmrerank import Cascade, DenseReranker, LLMReranker, Stage
from llmrerank.cache import DiskCache
from llmrerank.cli import main
from llmrerank.retry import RetryPolicy
from llmrerank.serve.process import ServiceProcess
from llmrerank.telemetry import CAPTURE_TEXT_ENV, TRACES_FILE_ENV
from llmrerank.testing import FunctionBackend

from .conftest import TrecQuery, dense_sim_service

QUERY = "which zebra-quokka facts are private"
PASSAGES = [
    {"id": f"d{i}", "text": f"confidential passage {i} about zebra-quokka number {i}"} for i in range(8)
]
PRIVATE = ("zebra-quokka", "confidential passage")

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    """The SDK behind the global API: OpenTelemetry allows one provider per process."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # another test (a docs example) installed the SDK
        current.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def grade_by_number(request: Any) -> str:
    """Pointwise grades: the passage's number decides (d7 best)."""
    text = request.messages[-1]["content"]
    number = next(int(word) for word in reversed(text.split()) if word.isdigit())
    return json.dumps({"grade": min(3, number // 2)})


def cascade(backend: FunctionBackend, tmp_path: Path) -> Cascade:
    llm = LLMReranker(
        backend,
        strategy="pointwise",
        cache=DiskCache(tmp_path / "cache"),
        retry=RetryPolicy(max_attempts=1),
        max_reasks=1,
    )
    return Cascade([Stage(DenseReranker(), keep=4, name="dense"), Stage(llm, keep=2, name="judge")])


def by_name(finished: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    found: int = span.context.span_id
    return found


def attribute_text(attributes: Mapping[str, Any] | None) -> str:
    return json.dumps(
        {k: v if isinstance(v, str | int | float | bool) else list(v) for k, v in (attributes or {}).items()}
    )


def assert_no_text(finished: Sequence[ReadableSpan]) -> None:
    for span in finished:
        text = attribute_text(span.attributes)
        assert not any(secret in text for secret in PRIVATE), (span.name, text)
        assert "gen_ai.input.messages" not in (span.attributes or {})
        assert "llmrerank.query" not in (span.attributes or {})


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_cascade_request_is_a_tree_of_request_stage_and_call_spans(
    mode: str, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    backend = FunctionBackend(grade_by_number, model="grader-1")
    reranker = cascade(backend, tmp_path)
    if mode == "sync":
        ranking = reranker.rerank(QUERY, PASSAGES)
    else:
        ranking = asyncio.run(reranker.arerank(QUERY, PASSAGES))
    assert not ranking.degraded
    finished = spans.get_finished_spans()
    named = by_name(finished)
    (request,) = named["rerank cascade"]
    dense, judge = named["stage dense"][0], named["stage judge"][0]
    calls = named["chat grader-1"]
    assert len(calls) == len(backend.requests) == 4
    assert request.parent is None
    assert parent_of(dense) == parent_of(judge) == span_id(request)
    assert {parent_of(call) for call in calls} == {span_id(judge)}
    assert request.context is not None
    assert {call.context.trace_id for call in calls if call.context} == {request.context.trace_id}

    call = calls[0].attributes or {}
    assert call["gen_ai.operation.name"] == "chat"
    assert call["gen_ai.provider.name"] == "function"
    assert call["gen_ai.request.model"] == call["gen_ai.response.model"] == "grader-1"
    assert call["gen_ai.usage.input_tokens"] == call["gen_ai.usage.output_tokens"] == 1
    assert call["llmrerank.cache_hit"] is False
    assert call["llmrerank.attempts"] == 1
    assert call["llmrerank.reasks"] == 0
    assert call["llmrerank.prompt.ref"] == ranking.calls[0].prompt_ref
    assert call["llmrerank.prompt.sha256"] == ranking.calls[0].prompt_sha256
    assert len(str(call["llmrerank.prompt.sha256"])) == 64
    assert "llmrerank.rubric.sha256" in call
    assert calls[0].kind == trace.SpanKind.CLIENT

    dense_attributes, judge_attributes = dense.attributes or {}, judge.attributes or {}
    assert (dense_attributes["llmrerank.stage.kept_in"], dense_attributes["llmrerank.stage.kept_out"]) == (
        8,
        4,
    )
    assert (judge_attributes["llmrerank.stage.kept_in"], judge_attributes["llmrerank.stage.kept_out"]) == (
        4,
        2,
    )
    assert judge_attributes["llmrerank.strategy"] == "pointwise"
    assert judge_attributes["llmrerank.calls"] == 4
    assert judge_attributes["gen_ai.usage.input_tokens"] == 4
    assert "llmrerank.cost_usd" in judge_attributes
    request_attributes = request.attributes or {}
    assert request_attributes["llmrerank.candidates.in"] == 8
    assert request_attributes["llmrerank.degraded"] is False
    assert "llmrerank.degraded_reason" not in request_attributes
    assert all(span.status.status_code is not StatusCode.ERROR for span in finished)
    assert_no_text(finished)


def test_a_cache_hit_is_a_call_span_marked_as_such(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    backend = FunctionBackend(grade_by_number, model="grader-1")
    reranker = cascade(backend, tmp_path)
    reranker.rerank(QUERY, PASSAGES)
    spans.clear()
    reranker.rerank(QUERY, PASSAGES)
    assert len(backend.requests) == 4  # the second request sent nothing
    calls = by_name(spans.get_finished_spans())["chat grader-1"]
    assert len(calls) == 4
    for call in calls:
        attributes = call.attributes or {}
        assert attributes["llmrerank.cache_hit"] is True
        assert attributes["gen_ai.usage.input_tokens"] == 0
        assert attributes["llmrerank.attempts"] == 0
    (judge,) = by_name(spans.get_finished_spans())["stage judge"]
    assert {parent_of(call) for call in calls} == {span_id(judge)}
    assert (judge.attributes or {})["llmrerank.cached_calls"] == 4


def test_a_degraded_ranking_is_status_ok_with_its_reason_and_the_failed_call_is_an_error(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    backend = FunctionBackend(lambda request: "no json here", model="grader-1")
    ranking = cascade(backend, tmp_path).rerank(QUERY, PASSAGES)
    assert ranking.degraded
    assert ranking.degraded_reason
    named = by_name(spans.get_finished_spans())
    (request,) = named["rerank cascade"]
    (judge,) = named["stage judge"]
    assert request.status.status_code is not StatusCode.ERROR
    assert judge.status.status_code is not StatusCode.ERROR
    assert (request.attributes or {})["llmrerank.degraded_reason"] == ranking.degraded_reason
    assert (judge.attributes or {})["llmrerank.degraded_reason"] == ranking.stages[1].degraded_reason
    failed = [call for call in named["chat grader-1"] if call.status.status_code is StatusCode.ERROR]
    assert failed
    assert any(event.name == "exception" for event in failed[0].events)
    assert_no_text(spans.get_finished_spans())


def test_a_request_that_fails_is_an_error_span(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    backend = FunctionBackend(lambda request: "no json here", model="grader-1")
    llm = LLMReranker(backend, retry=RetryPolicy(max_attempts=1), max_reasks=0)
    with pytest.raises(Exception, match="no valid"):
        Cascade([Stage(llm, fallback=False, name="judge")]).rerank(QUERY, PASSAGES[:2])
    named = by_name(spans.get_finished_spans())
    assert named["rerank cascade"][0].status.status_code is StatusCode.ERROR
    assert named["stage judge"][0].status.status_code is StatusCode.ERROR


def test_text_is_on_spans_only_when_opted_in(
    spans: InMemorySpanExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_TEXT_ENV, "1")
    cascade(FunctionBackend(grade_by_number, model="grader-1"), tmp_path).rerank(QUERY, PASSAGES)
    named = by_name(spans.get_finished_spans())
    assert (named["rerank cascade"][0].attributes or {})["llmrerank.query"] == QUERY
    messages = json.loads(str((named["chat grader-1"][0].attributes or {})["gen_ai.input.messages"]))
    assert any("confidential passage" in message["content"] for message in messages)


def test_the_cli_reports_spans_for_each_line(
    spans: InMemorySpanExporter, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    query = dl19[0][0]
    line = json.dumps({"query": query.query, "candidates": query.candidates[:6]}) + "\n"
    args = ["rerank", "--model", "sim:dl19", "--narrow-with", "dense:", "--narrow-to", "3", "--no-cache"]
    result = CliRunner().invoke(main, args, input=line)
    assert result.exit_code == 0, result.output
    finished = spans.get_finished_spans()
    requests = [span for span in finished if span.name.startswith("rerank ")]
    assert len(requests) == 1
    stages = [span for span in finished if span.name.startswith("stage ")]
    assert [parent_of(stage) for stage in stages] == [span_id(requests[0])] * 2
    calls = [span for span in finished if (span.attributes or {}).get("gen_ai.operation.name") == "chat"]
    assert len(calls) == 3
    llm_stage = next(stage for stage in stages if parent_of(calls[0]) == span_id(stage))
    assert (llm_stage.attributes or {})["llmrerank.stage.kept_in"] == 3
    assert {(call.attributes or {})["gen_ai.provider.name"] for call in calls} == {"sim"}
    assert all(str((call.attributes or {})["gen_ai.request.model"]).startswith("sim-dl19") for call in calls)
    texts = [query.query, *(c["text"] for c in query.candidates[:6])]
    for span in finished:
        dumped = attribute_text(span.attributes)
        assert not any(text in dumped for text in texts), span.name


def test_the_service_continues_the_callers_trace(
    tmp_path: Path, dl19: tuple[list[TrecQuery], dict[str, dict[str, int]]]
) -> None:
    traces = tmp_path / "spans.jsonl"
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    query = dl19[0][0]
    texts = [c["text"] for c in query.candidates[:8]]
    with ServiceProcess(dense_sim_service(), tmp_path, env={TRACES_FILE_ENV: str(traces)}) as service:
        response = httpx.post(
            f"{service.url}/v1/rerank",
            json={"query": query.query, "documents": texts, "top_n": 3},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert not response.json()["meta"].get("degraded")
        exported = [json.loads(line) for line in traces.read_text().splitlines()]
    by_id = {span["context"]["span_id"]: span for span in exported}
    (request,) = [span for span in exported if span["name"].startswith("rerank ")]
    assert request["context"]["trace_id"] == f"0x{trace_id}"
    assert request["parent_id"] == f"0x{parent_id}"
    stages = [span for span in exported if span["name"].startswith("stage ")]
    assert sorted(span["attributes"]["llmrerank.stage"] for span in stages) == ["dense", "llm"]
    assert all(span["parent_id"] == request["context"]["span_id"] for span in stages)
    calls = [span for span in exported if span["attributes"].get("gen_ai.operation.name") == "chat"]
    assert len(calls) == 5
    assert all(by_id[call["parent_id"]]["attributes"]["llmrerank.stage"] == "llm" for call in calls)
    assert {span["context"]["trace_id"] for span in exported} == {f"0x{trace_id}"}
    for span in exported:
        dumped = json.dumps(span["attributes"])
        assert not any(text in dumped for text in [query.query, *texts]), span["name"]


NO_OPENTELEMETRY = """
import sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
from llmrerank import Cascade, LLMReranker, Stage, telemetry
from llmrerank.testing import FunctionBackend
assert not telemetry.available()
llm = LLMReranker(FunctionBackend(lambda request: '{"grade": 2}'))
ranking = Cascade([Stage(llm, keep=2)]).rerank("q", ["a", "b", "c"])
assert len(ranking) == 3 and not ranking.degraded, ranking
print("ok")
"""


def test_without_opentelemetry_every_hook_is_a_no_op() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", NO_OPENTELEMETRY], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"
