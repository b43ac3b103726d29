"""The ASGI app: routes, startup (pipelines are built in the background; ``/readyz`` says
when they are loaded), auth and the access log around every route.

``create_app(config)`` for embedding; ``app_from_environment()`` is the factory uvicorn
workers call (the CLI passes the config path in ``LLMRERANK_SERVE_CONFIG``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..cache import DiskCache
from .access_log import configure_access_log, log_request
from .auth import BearerAuth
from .config import ServiceConfig
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .pipelines import Pipelines
from .rerank_route import ApiError, rerank

__all__ = ["CONFIG_ENV", "app_from_environment", "create_app"]

CONFIG_ENV = "LLMRERANK_SERVE_CONFIG"
logger = logging.getLogger("llmrerank")

Handler = Callable[[Request], Awaitable[Response]]


class ServiceState:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.auth = BearerAuth(config.auth.tokens())
        self.metrics = Metrics()
        self.pipelines: Pipelines | None = None
        self.startup_error: str | None = None
        self.ready = asyncio.Event()

    def require_pipelines(self) -> Pipelines:
        if self.pipelines is None:
            detail = f": {self.startup_error}" if self.startup_error else "; retry shortly"
            raise ApiError(503, f"the service is still loading its pipelines{detail}", retry_after_s=5)
        return self.pipelines

    async def start(self) -> None:
        try:
            cache = DiskCache(os.path.expanduser(self.config.cache_dir)) if self.config.cache_dir else None
            self.pipelines = await asyncio.to_thread(Pipelines, self.config, cache)
            await self._warm_up(self.pipelines)
        except Exception as exc:  # reported by /readyz and every request, never silently
            self.startup_error = f"{type(exc).__name__}: {exc}"
            logger.exception("llmrerank serve: pipelines failed to load")
            return
        self.ready.set()

    @staticmethod
    async def _warm_up(pipelines: Pipelines) -> None:
        """Load every local stage's model now, not on the first request."""
        for name in pipelines.names:
            built = await pipelines.get(name)
            for stage in getattr(built.reranker, "stages", []):
                if not stage.uses_llm:
                    await stage.reranker.arerank("warm up", ["a passage to load the model"])


def _endpoint(state: ServiceState, handler: Handler, *, authenticated: bool = True) -> Handler:
    async def wrapped(request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = request_id
        request.state.log = {}
        started = time.perf_counter()
        try:
            if authenticated and not state.auth.allows(request.headers.get("authorization")):
                state.metrics.rejected.labels("auth").inc()
                raise ApiError(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except Exception:
            logger.exception("request %s failed", request_id)
            response = JSONResponse({"message": "internal error", "request_id": request_id}, status_code=500)
        response.headers["x-request-id"] = request_id
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


def create_app(config: ServiceConfig) -> Starlette:
    state = ServiceState(config)
    configure_access_log()

    async def rerank_route(request: Request) -> Response:
        version = "2" if request.url.path.startswith("/v2/") else "1"
        return await rerank(request, state.require_pipelines(), state.metrics, api_version=version)

    async def models(request: Request) -> Response:
        names = state.config.pipelines
        return JSONResponse(
            {
                "models": [
                    {"name": n, "endpoints": ["rerank"], "default": n == state.config.default} for n in names
                ],
                "default": state.config.default,
            }
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not state.ready.is_set() or state.pipelines is None:
            body = {"ready": False, "reason": state.startup_error or "loading pipelines"}
            return JSONResponse(body, status_code=503)
        reachable = {}
        for label, (host, port) in state.pipelines.llm_endpoints().items():
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
                writer.close()
                reachable[label] = True
            except (OSError, asyncio.TimeoutError):
                reachable[label] = False
        ok = all(reachable.values())
        body = {"ready": ok, "pipelines": state.pipelines.names, "llm_reachable": reachable}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        if state.pipelines is not None:
            for gate in state.pipelines.gates.values():
                state.metrics.queue_depth.labels(gate.label).set(gate.queued)
                state.metrics.in_llm.labels(gate.label).set(gate.running)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.start())
        yield
        loading.cancel()
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
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = state
    return app


def app_from_environment() -> Starlette:
    path = os.environ.get(CONFIG_ENV)
    config = ServiceConfig.from_yaml(path) if path else ServiceConfig.offline_default()
    return create_app(config)
