"""An in-process HTTP server that speaks Hugging Face text-embeddings-inference's rerank API.

``POST /rerank`` takes ``{query, texts, raw_scores?, return_text?, truncate?}`` and answers
a JSON list of ``{index, score}`` (plus ``text`` when asked), best first, as TEI does;
errors are TEI's ``{"error": ..., "error_type": ...}`` with its statuses: 413 for an empty
``texts`` or more than ``max_client_batch_size`` of them, 422 for a body that is not a
rerank request, 401 without the ``api_key`` when one is set. ``score(query, text)`` gives
each raw score (default: the share of the query's words in the text); without
``raw_scores`` it goes through a sigmoid, as TEI's does for a one-label model. The handler
decides each request's fate first: ``Scores()`` answers, a ``Fault`` is an error in TEI's
shape (with its headers, e.g. Retry-After), a ``Hang`` waits before answering.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .server import Fault, Hang, LoopbackHandler, LoopbackServer, answers_in_order, serve_in_background

__all__ = ["Scores", "TEIRequest", "TEIServer", "in_order", "word_overlap"]


@dataclass(frozen=True)
class TEIRequest:
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def query(self) -> str:
        return str(self.body.get("query", ""))

    @property
    def texts(self) -> list[str]:
        return [str(t) for t in self.body.get("texts", [])]


@dataclass(frozen=True)
class Scores:
    """Answer the request with its scores."""


TEIResponse = Scores | Fault | Hang
TEIHandler = Callable[[TEIRequest], TEIResponse]


def in_order(*responses: TEIResponse) -> TEIHandler:
    """Answer with ``responses`` in order, then keep repeating the last one."""
    return answers_in_order(*responses)


def word_overlap(query: str, text: str) -> float:
    """The share of the query's distinct words that occur in ``text`` (lower-cased)."""
    words = set(query.lower().split())
    return len(words & set(text.lower().split())) / max(1, len(words))


def _error_type(status: int) -> str:
    return {413: "validation", 422: "tokenizer", 424: "backend", 429: "overloaded", 503: "unhealthy"}.get(
        status, "backend"
    )


class TEIServer(LoopbackServer[TEIRequest]):
    """``with TEIServer() as server:`` then ``rerank-api:{server.url}?wire=tei``.
    ``requests`` lists every rerank request that arrived (``count`` how many)."""

    def __init__(
        self,
        handler: TEIHandler | None = None,
        *,
        score: Callable[[str, str], float] = word_overlap,
        max_client_batch_size: int = 32,
        api_key: str | None = None,
    ) -> None:
        super().__init__()
        self.handler = handler or (lambda _: Scores())
        self.score = score
        self.max_client_batch_size = max_client_batch_size
        self.api_key = api_key

    def answer(self, request: TEIRequest) -> tuple[int, Any, Mapping[str, str]]:
        """(status, JSON body, headers) for a well-formed request, as TEI would answer."""
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": "Unauthorized", "error_type": "unauthorized"}, {}
        texts = request.texts
        if not texts:
            return 413, {"error": "`texts` cannot be empty", "error_type": "validation"}, {}
        if len(texts) > self.max_client_batch_size:
            message = f"batch size {len(texts)} > maximum allowed batch size {self.max_client_batch_size}"
            return 413, {"error": message, "error_type": "validation"}, {}
        response = self.handler(request)
        if isinstance(response, Hang):
            if self.stopping.wait(response.seconds):
                return 503, {"error": "shutting down", "error_type": "unhealthy"}, {}
            response = Scores()
        if isinstance(response, Fault):
            if response.delay_s:
                self.stopping.wait(response.delay_s)
            body = {"error": response.message, "error_type": _error_type(response.status)}
            return response.status, body, response.headers
        raw = bool(request.body.get("raw_scores", False))
        ranks = []
        for index, text in enumerate(texts):
            value = self.score(request.query, text)
            rank: dict[str, Any] = {"index": index, "score": value if raw else 1 / (1 + math.exp(-value))}
            if request.body.get("return_text"):
                rank["text"] = text
            ranks.append(rank)
        ranks.sort(key=lambda r: r["score"], reverse=True)
        return 200, ranks, {}

    def start(self) -> TEIServer:
        server = self

        class _Handler(LoopbackHandler):
            def _send(self, status: int, body: Any, headers: Mapping[str, str] = {}) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/health":
                    self._send(200, {})
                else:
                    self._send(404, {"error": "not found", "error_type": "backend"})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.split("?")[0].rstrip("/") != "/rerank":
                    self._send(404, {"error": f"no route {self.path}", "error_type": "backend"})
                    return
                try:
                    body = json.loads(raw or b"{}")
                    valid = (
                        isinstance(body, dict)
                        and isinstance(body.get("query"), str)
                        and isinstance(body.get("texts"), list)
                    )
                except ValueError:
                    valid = False
                if not valid:
                    self._send(422, {"error": "not a rerank request", "error_type": "tokenizer"})
                    return
                request = TEIRequest(body=body, headers={k.lower(): v for k, v in self.headers.items()})
                with server.lock:
                    server.requests.append(request)
                self._send(*server.answer(request))

        self.httpd = serve_in_background(_Handler, "tei-server")
        return self
