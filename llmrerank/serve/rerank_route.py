"""``POST /v1/rerank`` and ``/v2/rerank``: validate, apply limits, admit, rerank, answer.

Errors use Cohere's shape, ``{"message": ...}``: 400 for a bad request (which limit, which
field, which models exist, a body nested too deeply to parse, a pipeline that failed to
start), 413 for a body over ``max_body_bytes`` (checked before it is read), 429 with
``Retry-After`` when the LLM backend's queue is full.
An LLM failure or a passed deadline is never an error: the response keeps the previous
stage's order and ``meta.degraded`` says why.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from .._json import parse_json
from ..errors import LLMRerankError, UserError
from ..types import Ranking
from .config import Limits
from .limits import QueueFull, request_deadline
from .metrics import Metrics
from .pipelines import BuiltPipeline, Pipelines, PipelineUnavailableError
from .wire import RerankRequest, RerankResponse, RerankResult

__all__ = ["ApiError", "rerank"]


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
    token = request_deadline.set(deadline)
    try:
        if built.gate is None:
            ranking = await built.reranker.arerank(body.query, candidates, top_k=body.top_n)
        else:
            async with built.gate.admit():
                ranking = await built.reranker.arerank(body.query, candidates, top_k=body.top_n)
    except QueueFull as exc:
        metrics.rejected.labels("queue_full").inc()
        metrics.requests.labels(name, "429").inc()
        raise ApiError(429, str(exc), retry_after_s=exc.retry_after_s) from None
    except UserError as exc:
        raise ApiError(400, str(exc)) from None
    except LLMRerankError as exc:
        metrics.requests.labels(name, "500").inc()
        raise ApiError(500, f"{type(exc).__name__}: {exc}") from None
    finally:
        request_deadline.reset(token)
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
