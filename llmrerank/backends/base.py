"""The backend contract: one request in, one reply out; the only place SDKs are imported."""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ..types import Usage

__all__ = ["Backend", "BackendReply", "BackendRequest", "TokenLogprob"]


@dataclass(frozen=True, slots=True)
class BackendRequest:
    """A provider-neutral chat request. ``schema`` is a strict JSON schema named ``schema_name``."""

    messages: Sequence[Mapping[str, str]]
    schema_name: str | None = None
    schema: Mapping[str, Any] | None = None
    temperature: float = 0.0
    max_tokens: int = 512
    logprobs: bool = False


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendReply:
    text: str
    usage: Usage
    model: str
    logprobs: tuple[TokenLogprob, ...] | None = None


class Backend(ABC):
    """A model provider. Subclasses map SDK errors onto ``llmrerank.errors`` and turn
    SDK-internal retries off: the driver's one retry policy owns transient failures."""

    #: short provider id, part of every cache key ("openai", "anthropic", ...)
    provider: str
    model: str
    supports_logprobs: bool = False

    _async_client: Any = None
    _async_users: int = 0

    @abstractmethod
    def complete(self, request: BackendRequest) -> BackendReply: ...

    @abstractmethod
    async def acomplete(self, request: BackendRequest) -> BackendReply: ...

    _client: Any = None
    _client_args: Mapping[str, Any] = {}
    _async_client_class: Any = None

    def _open_clients(self, sync_class: Any, async_class: Any, **client_args: Any) -> None:
        """The SDK's sync client now, its async client per event loop later; SDK retries are
        off (the driver's retry policy owns them) and the sync client's sockets close even
        when a caller forgets ``close()``."""
        self._client_args = {**client_args, "max_retries": 0}
        self._async_client_class = async_class
        self._client = sync_class(**self._client_args)
        weakref.finalize(self, self._client.close)

    def _new_async_client(self) -> Any:
        """An SDK async client; made lazily because it belongs to one event loop."""
        if self._async_client_class is None:
            raise NotImplementedError(f"{type(self).__name__} has no async client")
        return self._async_client_class(**self._client_args)

    def async_client(self) -> Any:
        if self._async_client is None:
            self._async_client = self._new_async_client()
        return self._async_client

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Hold the async connection pool open; the last user to leave closes it, so no
        socket outlives the event loop that opened it."""
        self._async_users += 1
        try:
            yield
        finally:
            self._async_users -= 1
            if self._async_users == 0:
                await self.aclose()

    async def aclose(self) -> None:
        client, self._async_client = self._async_client, None
        if client is not None:
            await client.close()

    def identity(self) -> dict[str, Any]:
        """What, besides the request, determines a reply: part of the cache key, never secrets."""
        return {"provider": self.provider, "model": self.model}

    def close(self) -> None:
        """Release connections."""
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
