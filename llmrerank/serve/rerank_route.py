"""``POST /v1/rerank`` and ``/v2/rerank``: validate, apply limits, admit, rerank, answer.

Errors use Cohere's shape, ``{"message": ...}``: 400 for a bad request (which limit, which
field, which models exist, a body nested too deeply to parse, a pipeline that failed to
start), 413 for a body over ``max_body_bytes`` (checked before it is read), 429 with
``Retry-After`` when the LLM backend's queue or the local (CPU) stages' queue is full.
An LLM failure or a passed deadline is never an error: the response keeps the previous
stage's order and ``meta.degraded`` says why. Every request is answered by its deadline
plus ``ANSWER_GRACE_S`` at the latest: a pipeline that has not returned by then (it cannot,
unless something blocks the event loop) is a ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from .._json import parse_json
from ..errors import LLMRerankError, UserError
from ..telemetry import continued_from
from ..types import Ranking
from .config import Limits
from .limits import QueueFull, local_admission, request_deadline
from .metrics import Metrics
from .pipelines import BuiltPipeline, Pipelines, PipelineUnavailableError
from .wire import RerankRequest, RerankResponse, RerankResult

__all__ = ["ANSWER_GRACE_S", "ApiError", "rerank", "shutdown_grace_s"]

#: past its deadline, a request's pipeline has this long to return before the answer is a 503
ANSWER_GRACE_S = 2.0


def shutdown_grace_s(limits: Limits) -> int:
    """How long a graceful shutdown waits for in-flight requests before the server cancels
    them (uvicorn's ``timeout_graceful_shutdown``): longer than any request can take, so
    every in-flight request gets its own answer."""
    return math.ceil(limits.deadline_s + ANSWER_GRACE_S) + 3


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after_s: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(retry_after_s)

    def response(self) -> JSONResponse:
        return JSONResponse({"message": self.message}, status_code=self.status, headers=self.headers)


def _validation_message(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "invalid request: " + "; ".join(problems)


def check_limits(body: RerankRequest, texts: list[str], limits: Limits) -> None:
    if not body.query.strip():
        raise ApiError(400, "query is empty")
    if len(body.query) > limits.max_query_chars:
        raise ApiError(
            400, f"query has {len(body.query)} characters; max_query_chars is {limits.max_query_chars}"
        )
    if not texts:
        raise ApiError(400, "documents is empty")
    if len(texts) > limits.max_documents:
        raise ApiError(400, f"{len(texts)} documents; max_documents is {limits.max_documents}")
    for index, text in enumerate(texts):
        if not text.strip():
            raise ApiError(400, f"documents[{index}] is empty")
        if len(text) > limits.max_document_chars:
            raise ApiError(
                400,
                f"documents[{index}] has {len(text)} characters; max_document_chars is "
                f"{limits.max_document_chars}",
            )
    total = sum(len(t) for t in texts)
    if total > limits.max_total_chars:
        raise ApiError(
            400, f"documents total {total} characters; max_total_chars is {limits.max_total_chars}"
        )


def _truncate_words(text: str, max_tokens: int | None) -> str:
    """``max_tokens_per_doc``, approximated as whitespace-separated words."""
    if max_tokens is None:
        return text
    words = text.split()
    return text if len(words) <= max_tokens else " ".join(words[:max_tokens])


def _meta(
    ranking: Ranking, built: BuiltPipeline, version: str, latency_s: float, trace: bool
) -> dict[str, Any]:
    usage = ranking.usage
    meta: dict[str, Any] = {
        "api_version": {"version": version},
        "billed_units": {"search_units": 1},
        "pipeline": built.name,
        "degraded": ranking.degraded,
        "degraded_reason": ranking.degraded_reason,
        "latency_ms": round(1000 * latency_s, 2),
        "stages": [
            {
                "name": s.name,
                "latency_ms": round(1000 * s.latency_s, 2),
                "kept": s.kept,
                "llm_calls": s.calls,
                "prompt_tokens": s.usage.prompt_tokens,
                "completion_tokens": s.usage.completion_tokens,
                "cost_usd": s.cost_usd,
                "skipped": s.skipped,
                "degraded_reason": s.degraded_reason,
            }
            for s in ranking.stages
        ],
        # paid calls only, as everywhere else; answers from the cache are counted apart
        "llm_calls": sum(1 for c in ranking.calls if not c.cached),
        "cached_calls": sum(1 for c in ranking.calls if c.cached),
        "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
        "cost_usd": sum(s.cost_usd for s in ranking.stages),
        "prompt": {"ref": built.prompt_ref, "sha256": built.prompt_sha256} if built.prompt_ref else None,
        "rubric": {"ref": built.rubric_ref, "sha256": built.rubric_sha256} if built.rubric_ref else None,
    }
    if trace:
        meta["trace"] = ranking.to_dict()
    return meta


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with ``413`` as soon as it is known to exceed ``max_bytes``:
    from ``Content-Length`` before reading anything, or while a streamed body arrives."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > max_bytes:
            raise ApiError(413, f"the body has {int(declared)} bytes; max_body_bytes is {max_bytes}")
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise ApiError(413, f"the body is over {max_bytes} bytes (max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(request: Request, max_bytes: int) -> RerankRequest:
    body = await _read_body(request, max_bytes)
    try:
        raw = parse_json(body, "the body")
    except UserError as exc:
        raise ApiError(400, str(exc)) from None
    try:
        return RerankRequest.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(400, _validation_message(exc)) from None


async def _within_deadline(
    built: BuiltPipeline, query: str, candidates: list[dict[str, str]], top_n: int | None, deadline: float
) -> Ranking:
    """The pipeline's ranking; a ``503`` if it has not returned ``ANSWER_GRACE_S`` after the
    deadline (its stages degrade at the deadline, so only a blocked event loop gets here)."""
    work = asyncio.ensure_future(built.reranker.arerank(query, candidates, top_k=top_n))
    loop = asyncio.get_running_loop()
    try:
        done, _ = await asyncio.wait({work}, timeout=max(0.0, deadline - loop.time()) + ANSWER_GRACE_S)
    except asyncio.CancelledError:
        work.cancel()
        raise
    if not done:
        work.cancel()
        work.add_done_callback(_consume)
        raise ApiError(
            503, "the pipeline could not answer within the request deadline; retry later", retry_after_s=1
        )
    return work.result()


def _consume(task: asyncio.Future[Ranking]) -> None:
    if not task.cancelled():
        task.exception()


async def rerank(
    request: Request, pipelines: Pipelines, metrics: Metrics, *, api_version: str
) -> JSONResponse:
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + pipelines.limits.deadline_s
    try:
        body = await _parse(request, pipelines.limits.max_body_bytes)
        texts = body.texts()
        check_limits(body, texts, pipelines.limits)
        name = pipelines.resolve(body.model)
        request.state.log.update(pipeline=name, documents=len(texts))
        built = await pipelines.get(name, prompt=body.prompt, rubric=body.rubric)
    except ApiError:
        metrics.rejected.labels("invalid").inc()
        raise
    except PipelineUnavailableError as exc:
        metrics.rejected.labels("unavailable").inc()
        raise ApiError(400, str(exc)) from None
    except UserError as exc:
        metrics.rejected.labels("invalid").inc()
        raise ApiError(400, str(exc)) from None
    candidates = [
        {"id": str(i), "text": _truncate_words(t, body.max_tokens_per_doc)} for i, t in enumerate(texts)
    ]
    deadline_token = request_deadline.set(deadline)
    admission_token = local_admission.set(None)
    try:
        async with AsyncExitStack() as admitted:
            # the CPU gate first: a request refused by the LLM's gate gives its place back
            if built.local_gate is not None:
                local_admission.set(await admitted.enter_async_context(built.local_gate.admit()))
            if built.gate is not None:
                await admitted.enter_async_context(built.gate.admit())
            with continued_from(request.headers):  # the caller's W3C traceparent
                ranking = await _within_deadline(built, body.query, candidates, body.top_n, deadline)
    except QueueFull as exc:
        reason = (
            "local_queue_full"
            if built.local_gate is not None and exc.what == built.local_gate.what
            else "queue_full"
        )
        metrics.rejected.labels(reason).inc()
        metrics.requests.labels(name, "429").inc()
        raise ApiError(429, str(exc), retry_after_s=exc.retry_after_s) from None
    except UserError as exc:
        raise ApiError(400, str(exc)) from None
    except LLMRerankError as exc:
        metrics.requests.labels(name, "500").inc()
        raise ApiError(500, f"{type(exc).__name__}: {exc}") from None
    except ApiError as exc:
        metrics.requests.labels(name, str(exc.status)).inc()
        raise
    finally:
        local_admission.reset(admission_token)
        request_deadline.reset(deadline_token)
    latency = time.perf_counter() - started
    metrics.observe_ranking(name, ranking)
    metrics.request_latency.labels(name).observe(latency)
    metrics.requests.labels(name, "200").inc()
    request.state.log.update(
        degraded=ranking.degraded,
        llm_calls=sum(1 for c in ranking.calls if not c.cached),
        cached_calls=sum(1 for c in ranking.calls if c.cached),
    )
    n = len(texts)
    results = [
        RerankResult(
            index=int(item.id),
            relevance_score=round(1.0 - (item.rank - 1) / n, 6),
            document={"text": texts[int(item.id)]} if body.return_documents else None,
            stage_scores=dict(item.stage_scores) if body.trace else None,
        )
        for item in ranking
    ]
    response = RerankResponse(
        id=str(uuid.uuid4()),
        results=results,
        meta=_meta(ranking, built, api_version, latency, body.trace),
    )
    return JSONResponse(response.model_dump(exclude_none=True))
