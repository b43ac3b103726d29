"""Provider batch APIs behind one small contract: submit many requests, poll, read results.

A ``BatchClient`` wraps a wire-format backend (``OpenAIBackend``, ``AnthropicBackend``)
and reuses its request arguments and reply parsing, so a batched reply is the same
``BackendReply`` an online call gives. Per-request outcomes are a ``BackendReply`` or a
``BatchFailure`` (expired, errored, missing); the caller decides whether to ask again.
``batch_clients.batch_client_for(backend)`` picks the client (kept apart: a contract does
not import its implementations).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .base import Backend, BackendReply, BackendRequest

__all__ = ["BatchClient", "BatchFailure", "BatchItem", "BatchStatus"]


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
