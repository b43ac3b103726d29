"""Provider batch APIs behind one small contract: submit many requests, poll, read results.

A ``BatchClient`` wraps a wire-format backend (``OpenAIBackend``, ``AnthropicBackend``)
and reuses its request arguments and reply parsing, so a batched reply is the same
``BackendReply`` an online call gives. ``batch_client_for(backend)`` picks the client.
Per-request outcomes are a ``BackendReply`` or a ``BatchFailure`` (expired, errored,
missing); the caller decides whether to ask again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import UserError
from .base import Backend, BackendReply, BackendRequest

__all__ = ["BatchClient", "BatchFailure", "BatchItem", "BatchStatus", "batch_client_for"]


@dataclass(frozen=True, slots=True)
class BatchItem:
    custom_id: str
    request: BackendRequest


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """Why one request of a batch has no reply: ``expired``, ``errored``, ``canceled``, ``missing``."""

    kind: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class BatchStatus:
    batch_id: str
    state: str
    done: bool
    counts: Mapping[str, int]


class BatchClient(ABC):
    backend: Backend

    @property
    def provider(self) -> str:
        return self.backend.provider

    @abstractmethod
    def submit(self, items: Sequence[BatchItem]) -> str:
        """Create a batch of ``items``; returns its id."""

    @abstractmethod
    def status(self, batch_id: str) -> BatchStatus: ...

    @abstractmethod
    def results(self, batch_id: str) -> dict[str, BackendReply | BatchFailure]:
        """The outcome of every request of a finished batch, by ``custom_id``."""


def batch_client_for(backend: Backend) -> BatchClient:
    """The batch client for ``backend``'s wire format (OpenAI Files + Batches, Anthropic
    Message Batches)."""
    from .anthropic import AnthropicBackend
    from .openai import OpenAIBackend

    if isinstance(backend, OpenAIBackend):
        from .batch_openai import OpenAIBatchClient

        return OpenAIBatchClient(backend)
    if isinstance(backend, AnthropicBackend):
        from .batch_anthropic import AnthropicBatchClient

        return AnthropicBatchClient(backend)
    raise UserError(f"{backend!r} has no batch API; batch mode needs an openai:, anthropic: or sim: model")
