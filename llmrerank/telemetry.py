"""OpenTelemetry traces: a span per rerank request, per cascade stage and per LLM call.

With ``opentelemetry-api`` installed (``pip install "llmrerank[otel]"``) the cascade and the
driver report through the global tracer provider, named ``llmrerank``; without it every hook
here is a no-op and nothing is imported beyond one ``find_spec`` check. The API alone
records nothing either: the application (or ``configure_from_environment``) installs the
SDK's ``TracerProvider`` and an exporter.

The tree of one request::

    rerank <cascade>                  the request (Cascade.rerank / arerank)
      stage <label>                   one per stage, skipped ones included
        chat <model>                  one per LLM call: the backend request with its retries
                                      and re-asks, or the cache hit that answered it

Call spans follow the generative-AI semantic conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens``); everything else is under ``llmrerank.``.
No span carries query, passage or prompt text unless ``LLMRERANK_OTEL_CAPTURE_TEXT=1`` is set
(read at each request): then the request span has ``llmrerank.query`` and each call span
``gen_ai.input.messages``. A degraded ranking is status OK with ``llmrerank.degraded_reason``;
only a failure that leaves (an exception) records it and sets status ERROR.

Long because every OpenTelemetry name llmrerank emits lives here, so the hooks in the
cascade, the driver and the service stay one line each, plus the service's exporter setup.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .types import CallRecord, Ranking, StageReport

if TYPE_CHECKING:
    from .backends.base import BackendReply
    from .strategies.plan import Answer

logger = logging.getLogger("llmrerank")

__all__ = [
    "CAPTURE_TEXT_ENV",
    "TRACES_FILE_ENV",
    "CallSpan",
    "RequestSpan",
    "StageSpan",
    "available",
    "call_span",
    "configure_from_environment",
    "continued_from",
    "record_cache_hit",
    "request_span",
    "start_stage",
]

#: set to ``1`` to put query and prompt text on spans (off by default: text may be private)
CAPTURE_TEXT_ENV = "LLMRERANK_OTEL_CAPTURE_TEXT"
#: ``configure_from_environment`` appends each finished span to this file as one JSON line
TRACES_FILE_ENV = "LLMRERANK_OTEL_TRACES_FILE"

_AVAILABLE = importlib.util.find_spec("opentelemetry") is not None and (
    importlib.util.find_spec("opentelemetry.trace") is not None
)


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (spans are made; else every hook is a no-op)."""
    return _AVAILABLE


def _capture_text() -> bool:
    return os.environ.get(CAPTURE_TEXT_ENV) == "1"


@functools.cache
def _tracer() -> Any:
    """The ``llmrerank`` tracer (a proxy until the app installs a provider, then its own)."""
    from opentelemetry import trace

    return trace.get_tracer("llmrerank")


def _fail(span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


@contextmanager
def _current(span: Any, *, record_failure: bool = True) -> Iterator[None]:
    """``span`` as the current span while the block runs; with ``record_failure`` an exception
    leaving the block is recorded on it (status ERROR). The span is not ended here."""
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        try:
            yield
        except BaseException as error:
            if record_failure:
                _fail(span, error)
            raise


@contextmanager
def _ended(span: Any) -> Iterator[None]:
    """``span`` current while the block runs, a failure leaving it recorded, then ended."""
    try:
        with _current(span):
            yield
    finally:
        span.end()


def _call_attributes(record: CallRecord) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": record.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": record.usage.completion_tokens,
        "llmrerank.cache_hit": record.cached,
        "llmrerank.attempts": record.attempts,
        "llmrerank.reasks": record.reasks,
        "llmrerank.repairs": sum(record.repairs.values()),
        "llmrerank.rubric.ref": record.rubric_ref,
        "llmrerank.rubric.sha256": record.rubric_sha256,
    }


# -- the request ---------------------------------------------------------------------
class RequestSpan:
    """The span of one rerank request (None inside when OpenTelemetry is absent)."""

    def __init__(self, span: Any) -> None:
        self.span = span

    def finished(self, ranking: Ranking) -> None:
        """Record what the request gave: counts, calls, tokens and why it degraded."""
        if self.span is None:
            return
        paid = [call for call in ranking.calls if not call.cached]
        self.span.set_attributes(
            {
                "llmrerank.candidates.out": len(ranking),
                "llmrerank.calls": len(paid),
                "llmrerank.cached_calls": len(ranking.calls) - len(paid),
                "gen_ai.usage.input_tokens": sum(c.usage.prompt_tokens for c in ranking.calls),
                "gen_ai.usage.output_tokens": sum(c.usage.completion_tokens for c in ranking.calls),
                "llmrerank.cost_usd": sum(stage.cost_usd for stage in ranking.stages),
                "llmrerank.degraded": ranking.degraded,
                "llmrerank.repairs": sum(ranking.repairs.values()),
            }
        )
        if ranking.degraded_reason:
            self.span.set_attribute("llmrerank.degraded_reason", ranking.degraded_reason)


@contextmanager
def request_span(name: str, query: str, candidates: int | None, top_k: int | None) -> Iterator[RequestSpan]:
    """The current span while a cascade named ``name`` reranks ``candidates`` candidates
    (None: input the cascade will refuse, having no length)."""
    if not _AVAILABLE:
        yield RequestSpan(None)
        return
    attributes: dict[str, Any] = {"llmrerank.cascade": name}
    if candidates is not None:
        attributes["llmrerank.candidates.in"] = candidates
    if top_k is not None:
        attributes["llmrerank.top_k"] = top_k
    if _capture_text():
        attributes["llmrerank.query"] = query
    span = _tracer().start_span(f"rerank {name}", attributes=attributes)
    with _ended(span):
        yield RequestSpan(span)


# -- a stage ---------------------------------------------------------------------------
class StageSpan:
    """One stage's span, started by the cascade's walk when the stage's turn comes and ended
    with its report; ``active()`` makes it the parent of the calls the stage's reranker makes."""

    def __init__(self, span: Any) -> None:
        self.span = span

    @contextmanager
    def active(self) -> Iterator[None]:
        """The stage's span current while its reranker runs; a failure is not recorded here:
        the walk decides whether it degrades (status OK) or leaves (``failed``)."""
        if self.span is None:
            yield
            return
        with _current(self.span, record_failure=False):
            yield

    def failed(self, error: BaseException) -> None:
        """The stage's failure leaves the cascade: recorded (status ERROR), span ended."""
        if self.span is not None:
            _fail(self.span, error)
            self.span.end()

    def finished(self, report: StageReport, inputs: int) -> None:
        """End the span with the stage's report (a degraded stage stays status OK)."""
        if self.span is None:
            return
        self.span.set_attributes(
            {
                "llmrerank.stage.kept_in": inputs,
                "llmrerank.stage.kept_out": report.kept,
                "llmrerank.stage.skipped": report.skipped,
                "llmrerank.calls": report.calls,
                "llmrerank.cached_calls": report.cached_calls,
                "gen_ai.usage.input_tokens": report.usage.prompt_tokens,
                "gen_ai.usage.output_tokens": report.usage.completion_tokens,
                "llmrerank.cost_usd": report.cost_usd,
            }
        )
        if report.degraded_reason:
            self.span.set_attribute("llmrerank.degraded_reason", report.degraded_reason)
        self.span.end()


def start_stage(label: str, reranker: object, keep: int | None, inputs: int) -> StageSpan:
    """Start the span of the stage ``label``, a child of the current span; none when no span
    is being recorded (batch mode steps many walks at once, outside any request span)."""
    if not _AVAILABLE:
        return StageSpan(None)
    from opentelemetry import trace

    if not trace.get_current_span().is_recording():
        return StageSpan(None)
    attributes: dict[str, Any] = {"llmrerank.stage": label, "llmrerank.stage.kept_in": inputs}
    if keep is not None:
        attributes["llmrerank.stage.keep"] = keep
    strategy = getattr(getattr(reranker, "strategy", None), "name", None)
    if isinstance(strategy, str):
        attributes["llmrerank.strategy"] = strategy
    return StageSpan(_tracer().start_span(f"stage {label}", attributes=attributes))


# -- an LLM call -----------------------------------------------------------------------
def _gen_ai_request(
    provider: str, model: str, prompt_ref: str, prompt_sha256: str, max_tokens: int | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "llmrerank.prompt.ref": prompt_ref,
        "llmrerank.prompt.sha256": prompt_sha256,
    }
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    return attributes


class CallSpan:
    """The span of one call sent to a backend (its retries and re-asks inside)."""

    def __init__(self, span: Any) -> None:
        self.span = span

    def replied(self, reply: BackendReply) -> BackendReply:
        """Note the model the provider says answered ``reply``; returns ``reply``."""
        if self.span is not None and reply.model:
            self.span.set_attribute("gen_ai.response.model", reply.model)
        return reply

    def finished(self, answer: Answer) -> Answer:
        """Note what the call cost (tokens, attempts, re-asks, repairs); returns ``answer``."""
        if self.span is not None:
            self.span.set_attributes(_call_attributes(answer.record))
        return answer


@contextmanager
def call_span(
    provider: str,
    model: str,
    prompt_ref: str,
    prompt_sha256: str,
    max_tokens: int | None,
    messages: Callable[[], Sequence[Mapping[str, str]]],
) -> Iterator[CallSpan]:
    """The current span while one call goes to the backend; a failure that leaves it is
    recorded (status ERROR)."""
    if not _AVAILABLE:
        yield CallSpan(None)
        return
    from opentelemetry.trace import SpanKind

    attributes = _gen_ai_request(provider, model, prompt_ref, prompt_sha256, max_tokens)
    if _capture_text():
        attributes["gen_ai.input.messages"] = json.dumps(list(messages()))
    span = _tracer().start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
    with _ended(span):
        yield CallSpan(span)


def record_cache_hit(record: CallRecord, max_tokens: int | None) -> None:
    """A call the cache answered: a span marked ``llmrerank.cache_hit``, nothing sent."""
    if not _AVAILABLE:
        return
    attributes = _gen_ai_request(
        record.backend, record.model, record.prompt_ref, record.prompt_sha256, max_tokens
    )
    attributes.update(_call_attributes(record))
    from opentelemetry.trace import SpanKind

    _tracer().start_span(f"chat {record.model}", kind=SpanKind.CLIENT, attributes=attributes).end()


# -- the service -------------------------------------------------------------------------
@contextmanager
def continued_from(headers: Mapping[str, str]) -> Iterator[None]:
    """Spans started in the block continue the caller's trace: the W3C ``traceparent``
    (and ``tracestate``, ``baggage``) in ``headers``, through the global propagator."""
    if not _AVAILABLE:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)


def configure_from_environment() -> bool:
    """Install the SDK's tracer provider for a process that has none (the service) when the
    environment asks for one: ``OTEL_TRACES_EXPORTER`` (``console``, or ``otlp`` with
    ``opentelemetry-exporter-otlp`` installed; its ``OTEL_EXPORTER_OTLP_*`` settings apply)
    and/or ``LLMRERANK_OTEL_TRACES_FILE`` (each finished span appended as one JSON line).
    ``OTEL_SERVICE_NAME`` names the service (default ``llmrerank``). Returns whether it did
    (not when a provider is installed already, e.g. by ``opentelemetry-instrument``)."""
    exporters = [e.strip() for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    exporters = [e for e in exporters if e != "none"]
    path = os.environ.get(TRACES_FILE_ENV)
    if not _AVAILABLE or not (exporters or path):
        return False
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False  # one is installed already (opentelemetry-instrument, the embedding app)
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        logger.warning(
            "OTEL_TRACES_EXPORTER or %s is set but opentelemetry-sdk is not installed", TRACES_FILE_ENV
        )
        return False
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "llmrerank")})
    )
    for name in exporters:
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            raise UserError(f"OTEL_TRACES_EXPORTER={name!r}: llmrerank knows console, otlp and none")
    if path:
        stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (the process's life)
        exporter = ConsoleSpanExporter(out=stream, formatter=lambda span: span.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _otlp_exporter() -> Any:
    try:  # an optional package of its own, imported by name (no stubs needed without it)
        module = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        raise UserError(
            "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http installed"
        ) from None
    return module.OTLPSpanExporter()
