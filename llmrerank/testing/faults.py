"""A fault-injecting server speaking the OpenAI and Anthropic wire formats.

``FaultServer(handler)`` answers like ``WireServer`` (a handler returns ``Reply``,
``Fault`` or ``Hang``) and also with the failures real deployments see: a 200 whose body
is not JSON (``RawBody``: an HTML page from a proxy, an empty body, a truncated reply), a
connection reset part-way through the body (``ResetMidBody``), a body dripped one byte at
a time (``Drip``) and a model refusal (``Refusal``). It counts requests and the most it
ever had in flight, so tests can assert that nothing kept sending after an error and that
concurrency limits hold.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from .server import (
    Fault,
    Hang,
    LoopbackHandler,
    LoopbackServer,
    Reply,
    WireRequest,
    error_body,
    serve_in_background,
    success_body,
)

__all__ = ["Drip", "FaultServer", "RawBody", "Refusal", "ResetMidBody"]


@dataclass(frozen=True)
class RawBody:
    """Send exactly ``body`` with this status and content type (not necessarily JSON)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResetMidBody:
    """Announce a whole valid reply, send ``fraction`` of it, then reset the connection."""

    reply: Reply = field(default_factory=lambda: Reply('{"grade": 3}'))
    fraction: float = 0.5


@dataclass(frozen=True)
class Drip:
    """A valid 200 reply sent one byte every ``interval_s`` seconds."""

    reply: Reply = field(default_factory=lambda: Reply('{"grade": 3}'))
    interval_s: float = 0.5


@dataclass(frozen=True)
class Refusal:
    """The model declines: OpenAI's ``refusal`` field, or Anthropic text that is not JSON."""

    text: str = "I can't help with that request."


FaultResponse = Reply | Fault | Hang | RawBody | ResetMidBody | Drip | Refusal
FaultHandler = Callable[[WireRequest], FaultResponse]


def _refusal_body(request: WireRequest, refusal: Refusal) -> dict[str, Any]:
    if request.api == "anthropic":
        return success_body(
            WireRequest(api="anthropic", body={**request.body, "tool_choice": None}, headers={}),
            Reply(refusal.text),
        )
    body = success_body(request, Reply(""))
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": refusal.text}
    return body


class FaultServer(LoopbackServer[WireRequest]):
    """``with FaultServer(handler) as server:`` then point an SDK at ``server.openai_base_url``
    or ``server.anthropic_base_url``. ``requests`` lists what arrived (``arrivals``: when);
    ``max_in_flight`` is the largest number of requests it was answering at once."""

    def __init__(self, handler: FaultHandler) -> None:
        super().__init__()
        self.handler = handler
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.in_flight = 0
        self.max_in_flight = 0

    def _arrived(self, request: WireRequest) -> None:
        with self.lock:
            self.requests.append(request)
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _left(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def start(self) -> FaultServer:
        handler_class = _make_handler(self)

        self.httpd = serve_in_background(handler_class, "fault-server")
        return self


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(LoopbackHandler):
        left = False  # this request's reply is on its way (set per request)

        def _head(self, status: int, length: int, content_type: str, headers: Mapping[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.flush()

        def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
            self._head(status, len(body), content_type, headers)
            # answered once the whole reply is on its way: the client may read it and send its
            # next request before this thread is scheduled again, and that must not count twice
            self._leave()
            self.wfile.write(body)

        def _leave(self) -> None:
            if not self.left:
                self.left = True
                server._left()

        def _reset(self) -> None:
            # SO_LINGER 0: close sends a TCP RST instead of an orderly FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = self.path.split("?")[0].rstrip("/")
            api: Literal["openai", "anthropic"] = (
                "openai" if path.endswith("/chat/completions") else "anthropic"
            )
            request = WireRequest(
                api=api,
                body=json.loads(raw or b"{}"),
                headers={k.lower(): v for k, v in self.headers.items()},
            )
            self.left = False
            server._arrived(request)
            try:
                self._answer(request, server.handler(request))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                self._leave()

        def _answer(self, request: WireRequest, response: FaultResponse) -> None:
            if isinstance(response, Hang):
                if server.stopping.wait(response.seconds):
                    return
                response = response.then
            if isinstance(response, Fault):
                time.sleep(response.delay_s)
                body = json.dumps(error_body(request.api, response.status, response.message)).encode()
                self._send(response.status, body, "application/json", response.headers)
            elif isinstance(response, RawBody):
                self._send(response.status, response.body, response.content_type, response.headers)
            elif isinstance(response, Refusal):
                self._send(200, json.dumps(_refusal_body(request, response)).encode(), "application/json")
            elif isinstance(response, ResetMidBody):
                body = json.dumps(success_body(request, response.reply)).encode()
                self._head(200, len(body), "application/json", {})
                self.wfile.write(body[: int(len(body) * response.fraction)])
                self.wfile.flush()
                self._reset()
            elif isinstance(response, Drip):
                body = json.dumps(success_body(request, response.reply)).encode()
                self._head(200, len(body), "application/json", {})
                for index in range(len(body)):
                    if server.stopping.wait(response.interval_s):
                        return
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
            else:
                self._send(200, json.dumps(success_body(request, response)).encode(), "application/json")

    return _Handler
