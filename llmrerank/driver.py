"""Runs a strategy's plan: cache → backend (one retry policy) → parse → bounded re-ask.

Only validated replies are cached; a hit is parsed again, so a stale or corrupt entry is a
miss, never a wrong answer. A cache that cannot be read or written is logged and bypassed:
the answer that was paid for is never lost to a full disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from .backends.base import Backend, BackendReply, BackendRequest
from .cache import BestEffortCache, DiskCache, request_key
from .errors import ParseError
from .outputs import InvalidOutput, Parsed
from .retry import RetryPolicy
from .strategies.plan import Answer, LLMRequest, Outcome, Plan
from .types import CallRecord, TokenLogprob, Usage

__all__ = ["Driver", "RetryPolicy"]

logger = logging.getLogger("llmrerank")

_NAMESPACE = "responses"


def _reask_messages(request: LLMRequest, raw: str, problem: str) -> list[dict[str, str]]:
    return [
        *request.rendered.messages(),
        {"role": "assistant", "content": raw},
        {
            "role": "user",
            "content": f"That reply was invalid: {problem}. {request.output.instruction}",
        },
    ]


class Driver:
    """Answers a plan's requests. ``max_reasks`` bounds how often invalid output is sent
    back with its validation error before ``ParseError``."""

    def __init__(
        self,
        backend: Backend,
        *,
        cache: DiskCache | None = None,
        retry: RetryPolicy | None = None,
        max_reasks: int = 2,
        max_concurrency: int = 8,
        temperature: float = 0.0,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self._store = BestEffortCache(cache, _NAMESPACE)
        self.retry = retry or RetryPolicy()
        self.max_reasks = max_reasks
        self.max_concurrency = max(1, max_concurrency)
        self.temperature = temperature

    # -- keys and cache -------------------------------------------------------------
    def _backend_request(self, request: LLMRequest, messages: Sequence[dict[str, str]]) -> BackendRequest:
        return BackendRequest(
            messages=messages,
            schema_name=request.output.name,
            schema=request.output.json_schema(),
            temperature=self.temperature,
            max_tokens=request.max_tokens,
            logprobs=request.logprobs,
        )

    def key(self, request: LLMRequest) -> str:
        return request_key(
            {
                "backend": self.backend.identity(),
                "messages": request.rendered.messages(),
                "output": request.output.cache_material(),
                "decoding": {
                    "temperature": self.temperature,
                    "max_tokens": request.max_tokens,
                    "logprobs": request.logprobs,
                },
            }
        )

    def _cache_get(self, key: str, request: LLMRequest) -> tuple[Parsed[Any], dict[str, Any]] | None:
        raw = self._store.get(key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            return request.output.parse(entry["text"]), entry
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "cache entry %s is unreadable or no longer valid (%s); asking again", key[:12], exc
            )
            return None

    def _cache_set(self, key: str, reply: BackendReply) -> None:
        if self.cache is None:
            return
        entry: dict[str, Any] = {"text": reply.text, "model": reply.model}
        if reply.logprobs is not None:
            entry["logprobs"] = [[t.token, t.logprob, dict(t.top)] for t in reply.logprobs]
        self._store.set(key, json.dumps(entry, ensure_ascii=False))

    def _record(
        self,
        request: LLMRequest,
        key: str,
        usage: Usage,
        *,
        cached: bool,
        attempts: int,
        reasks: int,
        started: float,
        repairs: Any,
    ) -> CallRecord:
        return CallRecord(
            prompt_ref=request.prompt.ref,
            prompt_sha256=request.prompt.sha256,
            backend=self.backend.provider,
            model=self.backend.model,
            usage=usage,
            cached=cached,
            attempts=attempts,
            reasks=reasks,
            latency_s=time.perf_counter() - started,
            cache_key=key,
            repairs=dict(repairs),
        )

    def _from_cache(self, request: LLMRequest, key: str, started: float) -> Answer | None:
        hit = self._cache_get(key, request)
        if hit is None:
            return None
        parsed, entry = hit
        logprobs = None
        if "logprobs" in entry:
            logprobs = tuple(TokenLogprob(t, lp, top) for t, lp, top in entry["logprobs"])
        record = self._record(
            request,
            key,
            Usage(),
            cached=True,
            attempts=0,
            reasks=0,
            started=started,
            repairs=parsed.repairs,
        )
        return Answer(parsed.value, record, parsed.repairs, logprobs)

    # -- one question ---------------------------------------------------------------
    def _lookup(self, request: LLMRequest) -> tuple[str, Answer | None]:
        started = time.perf_counter()
        key = self.key(request)
        return key, self._from_cache(request, key, started)

    def _exchange(
        self, request: LLMRequest, key: str, started: float, attempts: list[int]
    ) -> Generator[BackendRequest, BackendReply, Answer]:
        """The conversation about one request, shared by the sync and async paths: yields
        what to send, receives the reply, re-asks with the validation error (bounded)."""
        messages = request.rendered.messages()
        usage = Usage()
        for reask in range(self.max_reasks + 1):
            reply = yield self._backend_request(request, messages)
            usage = usage + reply.usage
            try:
                parsed = request.output.parse(reply.text)
            except InvalidOutput as exc:
                messages = self._note_invalid(request, reply, exc, reask)
                continue
            self._cache_set(key, reply)
            record = self._record(
                request,
                key,
                usage,
                cached=False,
                attempts=attempts[0],
                reasks=reask,
                started=started,
                repairs=parsed.repairs,
            )
            return Answer(parsed.value, record, parsed.repairs, reply.logprobs)
        raise self._parse_error(request, reply)

    def _fetch(self, request: LLMRequest, key: str) -> Answer:
        started = time.perf_counter()  # here, not at lookup: time spent queued is not latency
        attempts = [0]
        exchange = self._exchange(request, key, started, attempts)
        outgoing = next(exchange)
        try:
            while True:
                for attempt in self.retry.sync():
                    with attempt:
                        attempts[0] += 1
                        reply = self.backend.complete(outgoing)
                outgoing = exchange.send(reply)
        except StopIteration as done:
            answer: Answer = done.value
            return answer

    async def _afetch(self, request: LLMRequest, key: str) -> Answer:
        started = time.perf_counter()
        attempts = [0]
        exchange = self._exchange(request, key, started, attempts)
        outgoing = next(exchange)
        try:
            while True:
                async for attempt in self.retry.asynchronous():
                    with attempt:
                        attempts[0] += 1
                        reply = await self.backend.acomplete(outgoing)
                outgoing = exchange.send(reply)
        except StopIteration as done:
            answer: Answer = done.value
            return answer

    def answer(self, request: LLMRequest) -> Answer:
        key, cached = self._lookup(request)
        return cached if cached is not None else self._fetch(request, key)

    async def aanswer(self, request: LLMRequest) -> Answer:
        key, cached = self._lookup(request)
        return cached if cached is not None else await self._afetch(request, key)

    def _note_invalid(
        self, request: LLMRequest, reply: BackendReply, exc: InvalidOutput, reask: int
    ) -> list[dict[str, str]]:
        logger.info(
            "invalid %s output (%s); re-ask %d of %d",
            request.output.name,
            exc,
            reask + 1,
            self.max_reasks,
        )
        return _reask_messages(request, reply.text, str(exc))

    def _parse_error(self, request: LLMRequest, reply: BackendReply) -> ParseError:
        return ParseError(
            f"{self.backend.model} gave no valid {request.output.name} for {request.prompt.ref} "
            f"after {self.max_reasks} re-asks; last reply: {reply.text[:200]!r}",
            raw=reply.text,
            attempts=self.max_reasks + 1,
        )

    # -- whole plans ----------------------------------------------------------------
    def run(self, plan: Plan) -> tuple[Outcome, list[CallRecord]]:
        records: list[CallRecord] = []
        pool: ThreadPoolExecutor | None = None
        try:
            batch = next(plan)
            round_index = 0
            while True:
                # cache hits are answered here; only misses go to the backend, in worker
                # threads when there is more than one
                looked_up = [self._lookup(request) for request in batch]
                missed = [request for request, (_, hit) in zip(batch, looked_up, strict=True) if hit is None]
                keys = [key for key, hit in looked_up if hit is None]
                fetched: Iterator[Answer]
                if len(missed) > 1:
                    pool = pool or ThreadPoolExecutor(max_workers=self.max_concurrency)
                    fetched = pool.map(self._fetch, missed, keys)
                else:
                    fetched = map(self._fetch, missed, keys)
                answers = [hit if hit is not None else next(fetched) for _, hit in looked_up]
                records += [replace(a.record, round=round_index) for a in answers]
                batch = plan.send(answers)
                round_index += 1
        except StopIteration as stop:
            return stop.value, records
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    async def arun(self, plan: Plan) -> tuple[Outcome, list[CallRecord]]:
        records: list[CallRecord] = []
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def bounded(request: LLMRequest) -> Answer:
            key, cached = self._lookup(request)
            if cached is not None:
                return cached
            async with semaphore:
                return await self._afetch(request, key)

        async with self.backend.connected():
            try:
                batch = next(plan)
                round_index = 0
                while True:
                    answers = list(await asyncio.gather(*(bounded(r) for r in batch)))
                    records += [replace(a.record, round=round_index) for a in answers]
                    batch = plan.send(answers)
                    round_index += 1
            except StopIteration as stop:
                return stop.value, records
