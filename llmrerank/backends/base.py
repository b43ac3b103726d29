"""The backend contract: one provider-neutral request in, one reply out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ..types import TokenLogprob, Usage

__all__ = ["Backend", "BackendReply", "BackendRequest"]


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
class BackendReply:
    text: str
    usage: Usage
    model: str
    logprobs: tuple[TokenLogprob, ...] | None = None


class Backend(ABC):
    """A model behind one wire format. Implementations raise only ``llmrerank.errors``
    (transient failures as ``TransientBackendError``) and never retry themselves: the
    driver's one retry policy owns that. A backend may be shared by threads and event loops.
    """

    #: short provider id, part of every cache key and call record ("openai", "anthropic", ...)
    provider: str
    model: str
    supports_logprobs: bool = False
    #: the model's context window in tokens (prompt + reply) when known, else None; rerankers
    #: fit every prompt to it instead of sending requests the model would refuse
    context_tokens: int | None = None

    @abstractmethod
    def complete(self, request: BackendRequest) -> BackendReply: ...

    @abstractmethod
    async def acomplete(self, request: BackendRequest) -> BackendReply: ...

    def identity(self) -> dict[str, Any]:
        """What, besides the request, determines a reply: part of the cache key, never secrets."""
        return {"provider": self.provider, "model": self.model}

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Held by the driver around a plan's async calls; backends with connection pools
        keep them open inside and close them when the last user of the loop leaves."""
        yield

    def close(self) -> None:  # noqa: B027 - nothing to release unless a backend holds connections
        """Release connections."""

    async def aclose(self) -> None:  # noqa: B027
        """Release the running event loop's connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
