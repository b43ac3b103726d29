"""An in-process HTTP server that speaks the OpenAI and Anthropic wire formats.

Tests and benchmarks point the *real* SDKs at it: ``POST /v1/chat/completions`` and
``POST /v1/messages`` answer with whatever the handler decides — a reply, an HTTP error in
the provider's error shape, or a hang — so request shapes, usage, retries, timeouts and
re-asks are exercised over real HTTP without the internet. Long because both wire formats
(request parsing, success and error bodies) live here side by side, in one place.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Literal, TypeVar

from typing_extensions import Self

__all__ = [
    "Fault",
    "Hang",
    "LoopbackHandler",
    "Reply",
    "WireRequest",
    "WireResponse",
    "WireServer",
    "always",
    "answers_in_order",
    "error_body",
    "scripted",
    "serve_in_background",
    "success_body",
]


@dataclass(frozen=True)
class WireRequest:
    api: Literal["openai", "anthropic"]
    body: dict[str, Any]
    headers: dict[str, str]

    @staticmethod
    def _text(content: Any) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
        return ""

    @property
    def system_text(self) -> str:
        if self.api == "anthropic":
            return self._text(self.body.get("system", ""))
        return "\n".join(
            self._text(m.get("content")) for m in self.body.get("messages", []) if m.get("role") == "system"
        )

    @property
    def user_text(self) -> str:
        users = [m for m in self.body.get("messages", []) if m.get("role") == "user"]
        return self._text(users[0].get("content")) if users else ""

    @property
    def schema_name(self) -> str | None:
        if self.api == "openai":
            fmt = self.body.get("response_format") or {}
            if fmt.get("type") == "json_schema":
                return str(fmt.get("json_schema", {}).get("name"))
            return None
        choice = self.body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            return str(choice.get("name"))
        fmt = (self.body.get("output_config") or {}).get("format") or {}
        if fmt.get("type") == "json_schema":
            title = (fmt.get("schema") or {}).get("title")
            return str(title) if title else None
        return None

    @property
    def schema(self) -> dict[str, Any] | None:
        if self.api == "openai":
            fmt = self.body.get("response_format") or {}
            schema = fmt.get("json_schema", {}).get("schema") if fmt.get("type") == "json_schema" else None
            return dict(schema) if schema else None
        choice = self.body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            for tool in self.body.get("tools", []):
                if tool.get("name") == choice.get("name"):
                    return dict(tool.get("input_schema") or {})
        fmt = (self.body.get("output_config") or {}).get("format") or {}
        return dict(fmt["schema"]) if fmt.get("type") == "json_schema" and fmt.get("schema") else None

    @property
    def forced_tool(self) -> str | None:
        choice = self.body.get("tool_choice") or {}
        return str(choice["name"]) if self.api == "anthropic" and choice.get("type") == "tool" else None

    @property
    def prompt_words(self) -> int:
        words = len(self.system_text.split())
        for message in self.body.get("messages", []):
            words += len(self._text(message.get("content")).split())
        return words


@dataclass(frozen=True)
class Reply:
    """A successful answer. ``logprobs``: OpenAI-shaped token entries, returned when asked."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    logprobs: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Fault:
    """An HTTP error in the provider's error shape (429 with Retry-After, 500, 401, ...)."""

    status: int
    message: str = "simulated failure"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Wait this long before answering, so client timeouts fire."""

    seconds: float
    then: Reply = Reply('{"late": true}')


WireResponse = Reply | Fault | Hang
Handler = Callable[[WireRequest], WireResponse]


AnswerT = TypeVar("AnswerT")


def answers_in_order(*responses: AnswerT) -> Callable[[object], AnswerT]:
    """A handler answering with ``responses`` in order, then repeating the last one (any
    test server's request and response types)."""
    if not responses:
        raise ValueError("a scripted server needs at least one response")
    queue = list(responses)
    lock = threading.Lock()

    def handler(_: object) -> AnswerT:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


def scripted(*responses: WireResponse) -> Handler:
    """Answer with ``responses`` in order, then keep repeating the last one."""
    return answers_in_order(*responses)


class LoopbackHandler(BaseHTTPRequestHandler):
    """The base of the test servers' handlers: HTTP/1.1 keep-alive, no Nagle delay (headers
    and body are separate writes: Nagle's algorithm and delayed ACKs would add ~40 ms to every
    answer), and no request log on the test's stderr."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_in_background(handler_class: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
    """A threading HTTP server on a free 127.0.0.1 port, serving from a daemon thread."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        block_on_close = False
        # the default listen backlog (5) refuses connections under a concurrent burst
        request_queue_size = 256

    httpd = _Server(("127.0.0.1", 0), handler_class)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), name=name, daemon=True).start()
    return httpd


def always(text: str) -> Handler:
    reply = Reply(text)
    return lambda _: reply


def error_body(api: str, status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "api_error")
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": status}}


def success_body(request: WireRequest, reply: Reply) -> dict[str, Any]:
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, request.prompt_words)
    completion_tokens = (
        reply.completion_tokens if reply.completion_tokens is not None else max(1, len(reply.text.split()))
    )
    model = str(request.body.get("model", "wire-model"))
    if request.api == "anthropic":
        tool = request.forced_tool
        if tool is not None:
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:20]}",
                    "name": tool,
                    "input": json.loads(reply.text),
                }
            ]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": reply.text}]
            stop = "end_turn"
        return {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.text, "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if request.body.get("logprobs") and reply.logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {
                    "token": entry["token"],
                    "logprob": entry["logprob"],
                    "bytes": None,
                    "top_logprobs": [
                        {"token": top["token"], "logprob": top["logprob"], "bytes": None}
                        for top in entry.get("top_logprobs", [])
                    ],
                }
                for entry in reply.logprobs
            ]
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


RequestT = TypeVar("RequestT")


class LoopbackServer(Generic[RequestT]):
    """What the test servers share: the requests they were sent (``requests``, ``count``,
    guarded by ``lock``), their base URLs on 127.0.0.1 (``httpd`` once started), ``stop``
    (which sets ``stopping``, so a handler waiting to answer gives up) and the ``with`` block
    around ``start``."""

    def __init__(self) -> None:
        self.requests: list[RequestT] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def count(self) -> int:
        """How many requests arrived so far."""
        with self.lock:
            return len(self.requests)

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self.httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url


class WireServer(LoopbackServer[WireRequest]):
    """``with WireServer(handler) as server:`` then point an SDK at ``server.openai_base_url``
    or ``server.anthropic_base_url``. ``delay_s`` adds a fixed latency to every answer."""

    def __init__(self, handler: Handler, *, delay_s: float = 0.0) -> None:
        super().__init__()
        self.handler = handler
        self.delay_s = delay_s

    def route(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, bytes, str] | None:
        """A hook for subclasses that serve more endpoints: (status, body, content type),
        or None to fall through to the chat endpoints."""
        return None

    def start(self) -> WireServer:
        server = self

        class _Handler(LoopbackHandler):
            def _send(self, status: int, body: dict[str, Any], headers: Mapping[str, str] = {}) -> None:
                self._send_bytes(status, json.dumps(body).encode(), "application/json", headers)

            def _send_bytes(
                self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] = {}
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _extra(self, raw: bytes) -> bool:
                routed = server.route(self.command, self.path.split("?")[0].rstrip("/"), self.headers, raw)
                if routed is not None:
                    self._send_bytes(*routed)
                return routed is not None

            def do_GET(self) -> None:
                if self._extra(b""):
                    return
                if self.path.rstrip("/") in ("/health", "/v1/health"):
                    self._send(200, {"status": "ok"})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self._extra(raw):
                    return
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/chat/completions"):
                    api: Literal["openai", "anthropic"] = "openai"
                elif path.endswith("/messages"):
                    api = "anthropic"
                else:
                    self._send(404, {"error": {"message": f"no route {path}"}})
                    return
                request = WireRequest(
                    api=api,
                    body=json.loads(raw or b"{}"),
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                with server.lock:
                    server.requests.append(request)
                response = server.handler(request)
                if server.delay_s:
                    time.sleep(server.delay_s)
                if isinstance(response, Hang):
                    if server.stopping.wait(response.seconds):
                        return
                    response = response.then
                if isinstance(response, Fault):
                    if response.delay_s:
                        time.sleep(response.delay_s)
                    self._send(
                        response.status,
                        error_body(api, response.status, response.message),
                        response.headers,
                    )
                    return
                self._send(200, success_body(request, response))

        self.httpd = serve_in_background(_Handler, "wire-server")
        return self
