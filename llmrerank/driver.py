"""Runs a strategy's plan: cache → backend (one retry policy) → parse → bounded re-ask.

Only validated replies are cached; a hit is parsed again, so a stale or corrupt entry is a
miss, never a wrong answer. A cache that cannot be read or written is logged and bypassed:
the answer that was paid for is never lost to a full disk. Nor to a failure: every call
finished before an error, and the invalid replies of the call that failed, go with the
error (``LLMRerankError.calls``), and ``call_log`` sees each call as it finishes.

A request's conversation with the backend is one flow (``Driver.exchange``; see
``llmrerank.stepping``): the sync and async paths and batch mode step the same one.

Long because the sync and async paths each keep those books.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from functools import partial
from typing import Any

from ._calls import call_log, open_call_logs
from ._concurrency import CancelToken, all_or_nothing, current_token, limiter_for, run_in_daemon_threads
from ._entries import read_entry, write_entry
from .backends.base import Backend, BackendReply, BackendRequest
from .cache import BestEffortCache, DiskCache, request_key
from .errors import LLMRerankError, ParseError
from .outputs import InvalidOutput, Parsed
from .retry import Attempting, RetryPolicy
from .rubrics import Rubric
from .stepping import adrive, drive
from .strategies.plan import Answer, LLMRequest, Outcome, Plan
from .telemetry import CallSpan, call_span, record_cache_hit
from .types import CallRecord, TokenLogprob, Usage

__all__ = ["Driver", "Exchange", "call_log"]

logger = logging.getLogger("llmrerank")

_NAMESPACE = "responses"

Exchange = Generator[BackendRequest, BackendReply, Answer]
"""One request's conversation with the backend (``Driver.exchange``): yields what to send,
is sent each reply, returns the parsed ``Answer``."""


class _Books:
    """The calls of one plan so far: its finished rounds, and the calls of the current round
    as each finishes (worker threads append), so a failure hands over everything already
    paid for (``LLMRerankError.calls``) instead of dropping it."""

    def __init__(self) -> None:
        self.closed: list[CallRecord] = []
        self.current: list[CallRecord] = []
        self.round = 0
        self.logs = open_call_logs()

    def note(self, record: CallRecord) -> None:
        record = replace(record, round=self.round)
        self.current.append(record)
        for log in self.logs:
            log(record)

    def note_failed(self, error: LLMRerankError) -> None:
        """A call failed: its paid replies (``error.calls``, e.g. the invalid replies before a
        ``ParseError``) still count."""
        for record in error.calls:
            self.note(record)

    def close_round(self, answers: Sequence[Answer]) -> None:
        """The round ended: its calls in request order; the plan's next step starts a new round."""
        self.closed += [replace(a.record, round=self.round) for a in answers]
        self.current = []
        self.round += 1

    def charge(self, error: LLMRerankError) -> None:
        """Hand the calls made so far, the failing call's own paid replies included, to ``error``."""
        error.calls = (*self.closed, *self.current)


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
    back with its validation error before ``ParseError``. ``max_concurrency`` bounds the
    requests in flight *per backend object*: every driver (reranker), call, thread and event
    loop using that backend shares one limiter, whose capacity is the smallest any of them
    asked for. ``rubric`` (the one the requests render) is named on every ``CallRecord``."""

    def __init__(
        self,
        backend: Backend,
        *,
        cache: DiskCache | None = None,
        retry: RetryPolicy | None = None,
        max_reasks: int = 2,
        max_concurrency: int = 8,
        temperature: float = 0.0,
        rubric: Rubric | None = None,
    ) -> None:
        self.backend = backend
        self.rubric_ref, self.rubric_sha256 = (rubric.ref, rubric.sha256) if rubric else ("", "")
        self.cache = cache
        self._store = BestEffortCache(cache, _NAMESPACE)
        self.retry = retry or RetryPolicy()
        self.max_reasks = max_reasks
        self.max_concurrency = max(1, max_concurrency)
        self.limiter = limiter_for(backend, self.max_concurrency)
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
        return read_entry(self._store, key, request)

    def _cache_set(self, key: str, reply: BackendReply) -> None:
        if self.cache is not None:
            write_entry(self._store, key, reply)

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
            rubric_ref=self.rubric_ref,
            rubric_sha256=self.rubric_sha256,
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
    def lookup(self, request: LLMRequest) -> tuple[str, Answer | None]:
        """The first step for every request: its cache key, and its ``Answer`` when the cache
        holds a valid reply (``cached=True``, zero tokens). On a miss (None), step
        ``exchange(request, key, ...)`` to ask the backend."""
        started = time.perf_counter()
        key = self.key(request)
        hit = self._from_cache(request, key, started)
        if hit is not None:
            record_cache_hit(hit.record, request.max_tokens)
        return key, hit

    def exchange(self, request: LLMRequest, key: str, attempts: list[int] | None = None) -> Exchange:
        """The conversation about one request the cache missed, as a flow (see
        ``llmrerank.stepping``): it yields the ``BackendRequest`` to send and is sent the
        ``BackendReply``; an invalid reply is sent back with its validation error (at most
        ``max_reasks`` times); it returns the ``Answer`` and caches the valid reply under
        ``key``. Throw in the ``LLMRerankError`` a send failed with for good: it leaves again
        carrying the call's paid replies (``calls``), as does the ``ParseError`` raised when
        no reply is valid.

        The record's ``attempts`` counts one per reply, or what the sender counts in
        ``attempts[0]`` when it passes a counter (the ``RetryPolicy`` also counts the tries
        that failed). Its latency runs from the first step, not from ``lookup``: time spent
        queued is not latency."""
        started = time.perf_counter()
        counts_replies = attempts is None
        attempts = [0] if attempts is None else attempts
        messages = request.rendered.messages()
        usage = Usage()
        answered = 0
        for reask in range(self.max_reasks + 1):
            try:
                reply = yield self._backend_request(request, messages)
            except LLMRerankError as exc:
                self._charge(exc, request, key, usage, answered, attempts[0], started)
                raise
            answered += 1
            if counts_replies:
                attempts[0] += 1
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
        error = self._parse_error(request, reply)
        self._charge(error, request, key, usage, answered, attempts[0], started)
        raise error

    def _charge(
        self,
        error: LLMRerankError,
        request: LLMRequest,
        key: str,
        usage: Usage,
        answered: int,
        attempts: int,
        started: float,
    ) -> None:
        """Add to ``error`` the record of this call's replies when any came back: each was
        paid for, valid or not."""
        if answered:
            record = self._record(
                request,
                key,
                usage,
                cached=False,
                attempts=attempts,
                reasks=answered - 1,
                started=started,
                repairs={},
            )
            error.calls = (*error.calls, record)

    def _fetch(self, request: LLMRequest, key: str, token: CancelToken) -> Answer:
        """Step the exchange with the backend's sync ``complete`` under the retry policy."""
        attempts = [0]
        limits = self._limits(token, attempts)
        with self._call_span(request) as span:

            def send(outgoing: BackendRequest) -> BackendReply:
                return span.replied(self.retry.call(partial(self.backend.complete, outgoing), limits))

            return span.finished(drive(self.exchange(request, key, attempts), send))

    async def _afetch(self, request: LLMRequest, key: str) -> Answer:
        """Step the exchange with the backend's ``acomplete`` under the retry policy."""
        attempts = [0]
        limits = self._limits(CancelToken(parent=current_token()), attempts)
        with self._call_span(request) as span:

            async def send(outgoing: BackendRequest) -> BackendReply:
                return span.replied(await self.retry.acall(partial(self.backend.acomplete, outgoing), limits))

            return span.finished(await adrive(self.exchange(request, key, attempts), send))

    def _call_span(self, request: LLMRequest) -> AbstractContextManager[CallSpan]:
        """The span of one call to the backend (``llmrerank.telemetry``)."""
        prompt = request.prompt
        return call_span(
            self.backend.provider,
            self.backend.model,
            prompt.ref,
            prompt.sha256,
            request.max_tokens,
            request.rendered.messages,
        )

    def _limits(self, token: CancelToken, attempts: list[int]) -> Attempting:
        return Attempting(self.limiter, token, attempts, self.backend.provider)

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
        """Step ``plan`` to its outcome (``llmrerank.stepping.drive``). Cache hits are
        answered here; misses go to the backend, in daemon worker threads when there is more
        than one. The first failure stops the round: no new request or retry starts, and the
        threads still in flight stop before their next attempt. The error raised carries
        every call finished before it (``LLMRerankError.calls``)."""
        books = _Books()
        token = CancelToken(parent=current_token())

        def fetch(pair: tuple[LLMRequest, str]) -> Answer:
            try:
                answer = self._fetch(pair[0], pair[1], token)
            except LLMRerankError as exc:
                books.note_failed(exc)
                raise
            books.note(answer.record)
            return answer

        def answer_round(batch: Sequence[LLMRequest]) -> list[Answer]:
            looked_up = [self.lookup(request) for request in batch]
            for _, hit in looked_up:
                if hit is not None:
                    books.note(hit.record)
            missed = [(r, key) for r, (key, hit) in zip(batch, looked_up, strict=True) if hit is None]
            fetched = iter(
                run_in_daemon_threads(fetch, missed, self.max_concurrency, token)
                if len(missed) > 1
                else [fetch(pair) for pair in missed]
            )
            answers = [hit if hit is not None else next(fetched) for _, hit in looked_up]
            books.close_round(answers)
            return answers

        try:
            return drive(plan, answer_round), books.closed
        except LLMRerankError as exc:
            books.charge(exc)
            raise

    async def arun(self, plan: Plan) -> tuple[Outcome, list[CallRecord]]:
        """Step ``plan`` to its outcome (``llmrerank.stepping.adrive``). Each round's calls
        run as tasks; the first failure (or the caller's cancellation) cancels the others and
        waits for them, so nothing is left running or pending. The error raised carries every
        call finished before it (``LLMRerankError.calls``)."""
        books = _Books()

        async def one(request: LLMRequest) -> Answer:
            key, cached = self.lookup(request)
            if cached is not None:
                books.note(cached.record)
                return cached
            try:
                answer = await self._afetch(request, key)
            except LLMRerankError as exc:
                books.note_failed(exc)
                raise
            books.note(answer.record)
            return answer

        async def answer_round(batch: Sequence[LLMRequest]) -> list[Answer]:
            answers = await all_or_nothing([one(r) for r in batch])
            books.close_round(answers)
            return answers

        async with self.backend.connected():
            try:
                return await adrive(plan, answer_round), books.closed
            except LLMRerankError as exc:
                books.charge(exc)
                raise
