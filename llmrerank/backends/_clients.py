"""SDK client plumbing shared by the wire-format backends: one sync client, one async
client per event loop, SDK retries off (the driver's retry policy owns them), and a total
deadline of ``timeout_s`` on every attempt (``_deadline``), not only on each read."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ..errors import BackendTimeoutError
from ..types import as_seconds
from ._deadline import async_http_client, sync_http_client
from .base import Backend
from .endpoint import Endpoint

__all__ = ["SDKBackend", "SDKClients"]

T = TypeVar("T")


class SDKClients:
    """Holds an SDK's clients for one backend. Safe to share across threads, and across
    event loops: an async client belongs to the loop that made it, so each running loop
    gets its own, closed when that loop's last user leaves (``release``)."""

    def __init__(
        self,
        sdk: Any,
        sync_class: Callable[..., Any],
        async_class: Callable[..., Any],
        total_s: float,
        **args: Any,
    ) -> None:
        self._sdk = sdk
        self._total_s = total_s
        self._args = {**args, "max_retries": 0, "timeout": total_s}
        self._async_class = async_class
        self._lock = threading.Lock()
        self._sync: Any = None
        self._sync_class = sync_class
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._users: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()

    @property
    def sync(self) -> Any:
        with self._lock:
            if self._sync is None:
                http_client = sync_http_client(self._sdk, self._total_s)
                self._sync = self._sync_class(**self._args, http_client=http_client)
                weakref.finalize(self, self._sync.close)
            return self._sync

    def for_running_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.get(loop)
            if client is None:
                http_client = async_http_client(self._sdk, self._total_s)
                client = self._async[loop] = self._async_class(**self._args, http_client=http_client)
            return client

    def enter(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._users[loop] = self._users.get(loop, 0) + 1

    async def release(self) -> None:
        """The last user of this loop's client closes it, so no socket outlives its loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            remaining = self._users.get(loop, 1) - 1
            self._users[loop] = remaining
            client = self._async.pop(loop, None) if remaining <= 0 else None
        if client is not None:
            await client.close()

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.pop(loop, None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()


class SDKBackend(Backend):
    """A ``Backend`` whose wire format is an official SDK, over an ``Endpoint``. ``sdk`` is
    that SDK's module (``openai``, ``anthropic``): its error and reply types, for the backend
    and for the batch clients that reuse its wire format."""

    endpoint: Endpoint
    clients: SDKClients
    sdk: Any

    def __init__(
        self,
        endpoint: Endpoint,
        sdk: Any,
        sync_class: Callable[..., Any],
        async_class: Callable[..., Any],
        timeout_s: float,
    ) -> None:
        """``timeout_s`` bounds each attempt as a whole: connecting, waiting and reading."""
        self.sdk = sdk
        self.endpoint = endpoint
        self.provider = endpoint.provider
        self.timeout_s = as_seconds(timeout_s, "timeout_s")
        self.clients = SDKClients(
            sdk, sync_class, async_class, timeout_s, api_key=endpoint.api_key, base_url=endpoint.base_url
        )

    async def within_deadline(self, call: Awaitable[T]) -> T:
        """``await call`` within ``timeout_s``, else ``BackendTimeoutError``: the async path's
        exact bound on one attempt (the transport's bound is per chunk)."""
        try:
            return await asyncio.wait_for(call, self.timeout_s)
        except asyncio.TimeoutError:
            raise BackendTimeoutError(
                f"{self.provider}: request timed out after {self.timeout_s}s", provider=self.provider
            ) from None

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url

    def identity(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, **self.endpoint.identity}

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        self.clients.enter()
        try:
            yield
        finally:
            await self.clients.release()

    async def aclose(self) -> None:
        await self.clients.aclose()

    def close(self) -> None:
        self.clients.close()
