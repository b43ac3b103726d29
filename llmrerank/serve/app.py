"""The ASGI app: routes, startup, auth and the access log around every route.

Startup builds every pipeline and loads its local models before the server accepts a
connection. A pipeline that cannot be built fails the startup, as any failed ASGI startup
does under uvicorn: the reason is logged in one line and the process exits with code 3.
With ``allow_partial`` the service starts with the pipelines that built; ``/readyz`` and
``/v1/models`` name the ones that did not and why, and a request naming one is a ``400``.

``/readyz`` answers ``200`` only when every worker has built its pipelines (see
``readiness``). A graceful shutdown (SIGTERM) first drains (see ``drain``): the service
goes on accepting and serving, ``/readyz`` answers ``503`` and every answer carries
``Connection: close``, until no request has arrived for a moment, so no request the kernel
already accepted is reset. Then the server stops accepting connections and lets every
in-flight request finish: each is answered by its deadline (degraded if need be) plus
``ANSWER_GRACE_S``, before the server's own shutdown timeout; should the server cancel a
request anyway, it is answered with a JSON ``503`` and ``Retry-After``, never with the
server's plain-text ``500``, and it is in the access log like any other.

``create_app(config)`` for embedding; ``app_from_environment()`` is the factory uvicorn
workers call (the CLI passes the config path in ``LLMRERANK_SERVE_CONFIG``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..cache import DiskCache
from ..telemetry import configure_from_environment
from .access_log import configure_access_log, log_request
from .auth import BearerAuth
from .config import ServiceConfig
from .drain import Drain, drain_on_sigterm
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .pipelines import Pipelines, StartupError
from .readiness import WorkerReadiness
from .rerank_route import ApiError, rerank

__all__ = ["ALLOW_PARTIAL_ENV", "CONFIG_ENV", "STARTUP_REPORT_ENV", "app_from_environment", "create_app"]

CONFIG_ENV = "LLMRERANK_SERVE_CONFIG"
#: "1": serve the pipelines that built when others cannot (the CLI's --allow-partial)
ALLOW_PARTIAL_ENV = "LLMRERANK_SERVE_ALLOW_PARTIAL"
#: a path prefix: a worker whose startup failed writes why to ``PREFIX-<pid>.txt``, for the CLI
STARTUP_REPORT_ENV = "LLMRERANK_SERVE_STARTUP_REPORT"
logger = logging.getLogger("llmrerank")

Handler = Callable[[Request], Awaitable[Response]]


class ServiceState:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.auth = BearerAuth(config.auth.tokens())
        self.metrics = Metrics()
        self.pipelines: Pipelines | None = None
        self.startup_error: str | None = None
        self.readiness = WorkerReadiness.from_environment()
        self.drain = Drain(config.limits.drain_s, config.limits.drain_quiet_s)

    def require_pipelines(self) -> Pipelines:
        if self.pipelines is None:  # only reachable when a host serves requests before startup
            raise ApiError(503, "the service has not started yet", retry_after_s=5)
        return self.pipelines

    async def start(self) -> None:
        """Build the pipelines; on failure stop whatever was started, record why, raise."""
        pipelines: Pipelines | None = None
        try:
            cache = DiskCache(os.path.expanduser(self.config.cache_dir)) if self.config.cache_dir else None
            pipelines = Pipelines(self.config, cache)
            await asyncio.to_thread(pipelines.start)
        except Exception as exc:
            if pipelines is not None:
                await asyncio.to_thread(pipelines.close)
            reason = str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}"
            self.startup_error = f"llmrerank serve cannot start: {reason}"
            _report_startup_failure(self.startup_error)
            raise
        self.pipelines = pipelines


def _report_startup_failure(reason: str) -> None:
    prefix = os.environ.get(STARTUP_REPORT_ENV)
    if prefix:
        try:
            Path(f"{prefix}-{os.getpid()}.txt").write_text(reason, "utf-8")
        except OSError:
            logger.warning("could not write the startup report to %s", prefix, exc_info=True)


class _StartupFailureMessage:
    """Hands the server the one-line reason of a failed startup instead of Starlette's
    traceback (uvicorn logs the message, then exits with code 3)."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_reason(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "lifespan.startup.failed" and self.state.startup_error:
                message = {**message, "message": self.state.startup_error}
            await send(message)

        await self.app(scope, receive, send_reason)


def _endpoint(state: ServiceState, handler: Handler, *, authenticated: bool = True) -> Handler:
    async def wrapped(request: Request) -> Response:
        request_id = _request_id(request)
        request.state.request_id = request_id
        request.state.log = {}
        started = time.perf_counter()
        state.drain.arrived(asyncio.get_running_loop().time())
        try:
            if authenticated and not state.auth.allows(request.headers.get("authorization")):
                state.metrics.rejected.labels("auth").inc()
                raise ApiError(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except asyncio.CancelledError:
            # the server gave up on this request (its shutdown timeout): still a JSON answer
            logger.error("request %s was cancelled by the server's shutdown", request_id)
            response = ApiError(503, "the service is shutting down; retry", retry_after_s=1).response()
        except Exception:
            logger.exception("request %s failed", request_id)
            response = JSONResponse({"message": "internal error", "request_id": request_id}, status_code=500)
        response.headers["x-request-id"] = request_id
        if state.drain.draining:  # the listener closes soon: no more requests on this connection
            response.headers["connection"] = "close"
        if request.url.path not in ("/healthz", "/metrics"):
            log_request(
                request_id=request_id,
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                latency_ms=round(1000 * (time.perf_counter() - started), 2),
                client=request.client.host if request.client else None,
                **request.state.log,
            )
        return response

    return wrapped


def _request_id(request: Request) -> str:
    return request.headers.get("x-request-id") or uuid.uuid4().hex


def _route_error(routes: list[Route]) -> Callable[[Request, Exception], Awaitable[Response]]:
    """404 and 405 in the service's error shape, ``{"message": ...}``, like every other error."""
    paths = ", ".join(route.path for route in routes)

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = f"no route {request.url.path}; this service has {paths}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; use {headers.get('Allow', '')}"
        else:
            message = exc.detail
        request_id = _request_id(request)
        headers["x-request-id"] = request_id
        log_request(
            request_id=request_id, method=request.method, path=request.url.path, status=exc.status_code
        )
        return JSONResponse({"message": message}, status_code=exc.status_code, headers=headers)

    return handle


def create_app(config: ServiceConfig, *, drain_at_sigterm: bool = False) -> Starlette:
    """The service's ASGI app. ``drain_at_sigterm``: put the drain (see ``drain``) in front
    of the server's SIGTERM handler at startup, as ``llmrerank serve`` does; an app embedded
    in another server leaves the process's signals alone."""
    state = ServiceState(config)
    configure_access_log()

    async def rerank_route(request: Request) -> Response:
        version = "2" if request.url.path.startswith("/v2/") else "1"
        state.metrics.in_flight.inc()
        try:
            return await rerank(request, state.require_pipelines(), state.metrics, api_version=version)
        finally:
            state.metrics.in_flight.dec()

    async def models(request: Request) -> Response:
        failed = state.pipelines.failed if state.pipelines is not None else {}
        listed = []
        for name in state.config.pipelines:
            entry: dict[str, Any] = {
                "name": name,
                "endpoints": ["rerank"],
                "default": name == state.config.default,
                "available": name not in failed,
            }
            if name in failed:
                entry["error"] = failed[name]
            listed.append(entry)
        return JSONResponse({"models": listed, "default": state.config.default})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if state.drain.draining:
            return JSONResponse({"ready": False, "reason": "shutting down"}, status_code=503)
        pipelines = state.pipelines
        if pipelines is None:
            return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
        readiness = state.readiness
        ready_workers = readiness.ready_workers()
        workers = {"expected": readiness.expected, "ready": ready_workers}
        if not readiness.all_ready():
            reason = f"{len(ready_workers)} of {readiness.expected} workers ready"
            return JSONResponse({"ready": False, "reason": reason, "workers": workers}, status_code=503)
        reachable = {}
        for label, (host, port) in pipelines.llm_endpoints().items():
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
                writer.close()
                reachable[label] = True
            except (OSError, asyncio.TimeoutError):
                reachable[label] = False
        ok = all(reachable.values())
        body = {
            "ready": ok,
            "pipelines": pipelines.available,
            # allow_partial: the pipelines that failed to start, and why
            "failed": pipelines.failed,
            "llm_reachable": reachable,
            "workers": workers,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        if state.pipelines is not None:
            state.metrics.local_queue_depth.set(state.pipelines.local_gate.queued)
            state.metrics.in_local.set(state.pipelines.local_gate.running)
            for gate in state.pipelines.gates.values():
                state.metrics.queue_depth.labels(gate.label).set(gate.queued)
                state.metrics.in_llm.labels(gate.label).set(gate.running)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        restore_sigterm = drain_on_sigterm(state.drain) if drain_at_sigterm else None
        state.readiness.mark()
        try:
            yield
        finally:
            state.readiness.unmark()
            if restore_sigterm is not None:
                restore_sigterm()
            if state.pipelines is not None:
                await asyncio.to_thread(state.pipelines.close)

    routes = [
        Route("/v1/rerank", _endpoint(state, rerank_route), methods=["POST"]),
        Route("/v2/rerank", _endpoint(state, rerank_route), methods=["POST"]),
        Route("/v1/models", _endpoint(state, models), methods=["GET"]),
        Route("/healthz", _endpoint(state, healthz, authenticated=False), methods=["GET"]),
        Route("/readyz", _endpoint(state, readyz, authenticated=False), methods=["GET"]),
        Route("/metrics", _endpoint(state, metrics, authenticated=False), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(_StartupFailureMessage, state=state)],
        exception_handlers={HTTPException: _route_error(routes)},
    )
    app.state.service = state
    return app


def app_from_environment() -> Starlette:
    path = os.environ.get(CONFIG_ENV)
    config = ServiceConfig.from_yaml(path) if path else ServiceConfig.offline_default()
    if os.environ.get(ALLOW_PARTIAL_ENV) == "1":
        config = dataclasses.replace(config, allow_partial=True)
    configure_from_environment()  # OpenTelemetry's exporter, when OTEL_TRACES_EXPORTER asks for one
    return create_app(config, drain_at_sigterm=True)
