"""A narrowing stage served elsewhere: a rerank server over HTTP (stage kind ``rerank-api``).

``rerank-api:URL?model=NAME&wire=cohere`` (or ``wire=tei``). Two wire formats:

* ``cohere``: ``POST {url}`` with ``{model, query, documents, top_n}``, reply
  ``{results: [{index, relevance_score}]}``: Cohere, Jina, Voyage-compatible servers, vLLM,
  Infinity and ``llmrerank serve``. A URL whose path does not end in ``/rerank`` gets
  ``/v1/rerank`` (``/rerank`` after a path ending in ``/v1`` or ``/v2``).
* ``tei``: Hugging Face text-embeddings-inference, ``POST {url}/rerank`` with
  ``{query, texts, raw_scores, truncate}``, reply ``[{index, score}]``.

A long candidate list is split into calls of at most ``max_batch`` documents (the server's
limit: TEI's ``--max-client-batch-size`` defaults to 32), sent ``max_concurrency`` at a
time; their scores are merged, so each score must depend only on its query and passage (a
cross-encoder's does). ``llmrerank serve`` answers with rank-derived scores, which order one
reply only: such a reply (recognised by its ``meta.pipeline``) is never cached per passage,
and a list split over several calls fails instead of being merged wrongly.

Each call has a total deadline of ``timeout_s`` and is retried by the one ``RetryPolicy``
(429 and 5xx are transient, Retry-After honoured; other statuses are terminal). Scores are
cached in the response cache by content hash (URL, model, wire, query, passage). An API key
(``api_key=`` in Python, ``api_key_env=NAME`` in a spec) goes only over HTTPS or to a
loopback host, as ``Authorization: Bearer``; it is never logged nor part of a cache key.
A failure raises a ``BackendError``, so a cascade keeps the earlier order and says why.

Long because both wire formats, the HTTP error mapping and the sync and async paths of one
stage sit together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from .._concurrency import CancelToken, Limiter, all_or_nothing, current_token, run_in_daemon_threads
from ..backends import retry_after_seconds
from ..cache import BestEffortCache, DiskCache, request_key
from ..errors import (
    BackendError,
    BackendTimeoutError,
    MalformedReplyError,
    RateLimitError,
    TerminalBackendError,
    TransientBackendError,
    UserError,
)
from ..retry import Attempting, RetryPolicy
from ..types import Candidate, CandidateLike, Ranking, as_count, as_request, as_seconds
from .protocol import ranking_from_scores

__all__ = ["WIRES", "RemoteReranker", "remote_stage", "rerank_endpoint"]

logger = logging.getLogger("llmrerank")

WIRES = ("cohere", "tei")
DEFAULT_MAX_BATCH = {"cohere": 1000, "tei": 32}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_NAMESPACE = "rerank_scores"


def rerank_endpoint(url: str, wire: str) -> str:
    """The URL a ``wire`` request goes to (see the module docstring)."""
    if wire not in WIRES:
        raise UserError(f"rerank-api: wire must be one of {', '.join(WIRES)}, got {wire!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"rerank-api: {url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise UserError(f"rerank-api: {url!r} must not carry a query or fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/rerank"):
        return url.rstrip("/")
    if wire == "cohere" and not path.endswith(("/v1", "/v2")):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}/rerank"


@dataclass(frozen=True)
class _Scored:
    scores: list[float]
    rank_derived: bool


def _error_for_status(response: httpx2.Response, body: bytes, where: str) -> BackendError:
    status = response.status_code
    detail = body[:300].decode("utf-8", "replace")
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            detail = str(parsed.get("message") or parsed.get("error") or parsed.get("detail") or detail)
    except ValueError:
        pass
    message = f"{where} HTTP {status}: {detail}"
    wait = retry_after_seconds(response.headers)
    if status == 429:
        return RateLimitError(message, provider="rerank-api", retry_after=wait)
    if status in (408, 409) or status >= 500:
        return TransientBackendError(message, status_code=status, provider="rerank-api", retry_after=wait)
    if status == 413:
        message += " (lower the stage's max_batch to the server's limit)"
    return TerminalBackendError(message, status_code=status, provider="rerank-api")


class RemoteReranker:
    """A ``Reranker`` that asks a rerank server (see the module docstring for the options).

    ``http_requests``, ``cache_hits`` and ``cache_misses`` count since construction.
    """

    uses_llm = False

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        wire: str = "cohere",
        max_batch: int | None = None,
        max_concurrency: int = 4,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        raw_scores: bool = False,
        truncate: bool | None = None,
        cache: DiskCache | None = None,
        name: str = "rerank-api",
    ) -> None:
        self.url = url
        self.endpoint = rerank_endpoint(url, wire)
        self.wire = wire
        self.model = model
        if wire == "cohere" and not model:
            raise UserError(f"rerank-api {url}: the cohere wire needs a model (model=NAME)")
        self.max_batch = as_count(max_batch or DEFAULT_MAX_BATCH[wire], "rerank-api: max_batch")
        self.limiter = Limiter(max_concurrency)
        self.timeout_s = as_seconds(timeout_s, "rerank-api: timeout_s")
        self.retry = retry or RetryPolicy()
        self.raw_scores = raw_scores
        self.truncate = truncate
        self.name = name
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise UserError(f"rerank-api {url}: api_key_env={api_key_env} is not set")
        parts = urlsplit(self.endpoint)
        if api_key and parts.scheme != "https" and (parts.hostname or "").lower() not in _LOOPBACK:
            raise UserError(
                f"rerank-api {url}: an API key goes only over https or to 127.0.0.1/localhost, "
                f"not over plain http to {parts.hostname}"
            )
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._store = BestEffortCache(cache, _NAMESPACE)
        self._client: httpx2.Client | None = None
        self._client_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.http_requests = 0
        self.cache_hits = 0
        self.cache_misses = 0

    def __repr__(self) -> str:
        return f"RemoteReranker({self.endpoint!r}, model={self.model!r}, wire={self.wire!r})"

    # -- the wire ---------------------------------------------------------------------
    def _body(self, query: str, texts: Sequence[str]) -> dict[str, Any]:
        if self.wire == "tei":
            body: dict[str, Any] = {"query": query, "texts": list(texts), "raw_scores": self.raw_scores}
            if self.truncate is not None:
                body["truncate"] = self.truncate
            return body
        return {"model": self.model, "query": query, "documents": list(texts), "top_n": len(texts)}

    def _scores(self, raw: bytes, count: int) -> _Scored:
        """The reply's scores in request order; ``MalformedReplyError`` for anything else."""
        try:
            reply = json.loads(raw)
            if self.wire == "tei":
                entries, field, rank_derived = reply, "score", False
            else:
                entries, field = reply["results"], "relevance_score"
                meta = reply.get("meta")
                rank_derived = isinstance(meta, dict) and "pipeline" in meta
            scores: dict[int, float] = {int(e["index"]): float(e[field]) for e in entries}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise MalformedReplyError(
                f"{self.endpoint}: reply is not the {self.wire} rerank API's JSON ({exc!r:.80})",
                provider="rerank-api",
                status_code=200,
            ) from None
        if sorted(scores) != list(range(count)) or not all(map(math.isfinite, scores.values())):
            raise MalformedReplyError(
                f"{self.endpoint}: reply scored indices {sorted(scores)[:10]} for {count} documents, "
                "or a score is not a finite number",
                provider="rerank-api",
                status_code=200,
            )
        return _Scored([scores[i] for i in range(count)], rank_derived)

    def _deadline_check(self, started: float, token: CancelToken) -> None:
        if token.cancelled:
            raise BackendTimeoutError(f"{self.endpoint}: stopped: {token.reason}", provider="rerank-api")
        if time.monotonic() - started > self.timeout_s:
            raise BackendTimeoutError(
                f"{self.endpoint}: no complete reply within {self.timeout_s:g}s", provider="rerank-api"
            )

    def _finish(self, response: httpx2.Response, body: bytes, count: int) -> _Scored:
        if response.status_code != 200:
            raise _error_for_status(response, body, self.endpoint)
        return self._scores(body, count)

    def _counted(self) -> None:
        with self._counts_lock:
            self.http_requests += 1

    @property
    def client(self) -> httpx2.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx2.Client(timeout=self.timeout_s)
                weakref.finalize(self, self._client.close)
            return self._client

    def _send(self, query: str, texts: Sequence[str], token: CancelToken) -> _Scored:
        """One HTTP request, its whole reply read within ``timeout_s``."""
        started = time.monotonic()
        self._counted()
        with (
            self._transport_errors(),
            self.client.stream(
                "POST", self.endpoint, json=self._body(query, texts), headers=self._headers
            ) as response,
        ):
            chunks = []
            for chunk in response.iter_bytes():
                self._deadline_check(started, token)
                chunks.append(chunk)
        return self._finish(response, b"".join(chunks), len(texts))

    async def _asend(self, client: httpx2.AsyncClient, query: str, texts: Sequence[str]) -> _Scored:
        self._counted()

        async def read() -> tuple[httpx2.Response, bytes]:
            async with client.stream(
                "POST", self.endpoint, json=self._body(query, texts), headers=self._headers
            ) as response:
                return response, await response.aread()

        with self._transport_errors():
            response, body = await asyncio.wait_for(read(), self.timeout_s)
        return self._finish(response, body, len(texts))

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """A call's timeout and connection failures as the error tree's (both transient)."""
        try:
            yield
        except (asyncio.TimeoutError, httpx2.TimeoutException):
            raise BackendTimeoutError(
                f"{self.endpoint}: no complete reply within {self.timeout_s:g}s", provider="rerank-api"
            ) from None
        except httpx2.TransportError as exc:
            raise TransientBackendError(
                f"{self.endpoint}: connection failed: {exc}", provider="rerank-api"
            ) from None

    # -- cache and batches -----------------------------------------------------------------
    def _key(self, query: str, text: str) -> str:
        material: dict[str, Any] = {
            "stage": "rerank-api",
            "url": self.endpoint,
            "model": self.model,
            "wire": self.wire,
            "query": query,
            "text": text,
        }
        if self.wire == "tei":
            material["raw_scores"] = self.raw_scores
        return request_key(material)

    def _cached(self, query: str, items: Sequence[Candidate]) -> tuple[list[float | None], list[int]]:
        scores: list[float | None] = []
        for item in items:
            raw = self._store.get(self._key(query, item.text))
            try:
                scores.append(float(raw) if isinstance(raw, str) else None)
            except ValueError:
                scores.append(None)
        missing = [i for i, s in enumerate(scores) if s is None]
        with self._counts_lock:
            self.cache_hits += len(items) - len(missing)
            self.cache_misses += len(missing)
        return scores, missing

    def _batches(self, missing: list[int]) -> list[list[int]]:
        return [missing[i : i + self.max_batch] for i in range(0, len(missing), self.max_batch)]

    def _merge(
        self,
        query: str,
        items: Sequence[Candidate],
        scores: list[float | None],
        batches: list[list[int]],
        replies: list[_Scored],
    ) -> list[float]:
        if len(batches) > 1 and any(reply.rank_derived for reply in replies):
            raise TerminalBackendError(
                f"{self.endpoint} answers with rank-derived scores (llmrerank serve), which cannot be "
                f"merged across {len(batches)} calls; set max_batch to at least {sum(map(len, batches))}",
                provider="rerank-api",
            )
        for batch, reply in zip(batches, replies, strict=True):
            for index, score in zip(batch, reply.scores, strict=True):
                scores[index] = score
                if not reply.rank_derived:
                    self._store.set(self._key(query, items[index].text), repr(score))
        return [s for s in scores if s is not None]

    def _ranking(self, query: str, items: list[Candidate], scores: list[float], top_k: int | None) -> Ranking:
        return ranking_from_scores(query, items, scores, stage=self.name).trimmed(top_k)

    def _attempting(self, token: CancelToken) -> Attempting:
        return Attempting(limiter=self.limiter, token=token, attempts=[0], provider="rerank-api")

    # -- the Reranker protocol ---------------------------------------------------------------
    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        query, items, top_k = as_request(query, candidates, top_k)
        if not items:
            return Ranking(query=query, items=())
        scores, missing = self._cached(query, items)
        batches = self._batches(missing)
        token = CancelToken(parent=current_token())

        def call(batch: list[int]) -> _Scored:
            texts = [items[i].text for i in batch]
            return self.retry.call(lambda: self._send(query, texts, token), self._attempting(token))

        replies = run_in_daemon_threads(call, batches, self.limiter.capacity, token) if batches else []
        return self._ranking(query, items, self._merge(query, items, scores, batches, replies), top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        query, items, top_k = as_request(query, candidates, top_k)
        if not items:
            return Ranking(query=query, items=())
        scores, missing = self._cached(query, items)
        batches = self._batches(missing)
        token = CancelToken(parent=current_token())
        async with httpx2.AsyncClient(timeout=self.timeout_s) as client:

            async def call(batch: list[int]) -> _Scored:
                texts = [items[i].text for i in batch]
                return await self.retry.acall(
                    lambda: self._asend(client, query, texts), self._attempting(token)
                )

            replies = await all_or_nothing([call(b) for b in batches])
        return self._ranking(query, items, self._merge(query, items, scores, batches, replies), top_k)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def remote_stage(url: str, /, *, cache: DiskCache | None = None, **options: Any) -> RemoteReranker:
    """The ``rerank-api`` stage kind: ``rerank-api:URL?model=NAME&wire=cohere|tei`` with the
    options ``max_batch``, ``max_concurrency``, ``timeout_s``, ``max_attempts``,
    ``api_key_env``, ``raw_scores``, ``truncate`` (TEI) and ``name``. A key itself is refused
    here: a spec is written into results and traces."""
    if not url:
        raise UserError("rerank-api needs the server's URL: rerank-api:http://HOST:PORT?model=NAME")
    if "api_key" in options:
        raise UserError(
            "rerank-api: a key in a stage spec would be written into results and traces; "
            "put it in an environment variable and pass api_key_env=NAME"
        )
    if "model" in options and options["model"] is not None and not isinstance(options["model"], str):
        options["model"] = str(options["model"])  # a YAML number such as 2.0 is a name here
    max_attempts = options.pop("max_attempts", None)
    retry = (
        RetryPolicy(max_attempts=as_count(max_attempts, "rerank-api: max_attempts")) if max_attempts else None
    )
    return RemoteReranker(url, cache=cache, retry=retry, **options)
