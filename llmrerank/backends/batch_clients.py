"""Which provider batch API serves a backend: ``batch_client_for(backend)``.

Apart from the contract (``batch_base``) so the contract never imports its implementations."""

from __future__ import annotations

from ..errors import UserError
from .anthropic import AnthropicBackend
from .base import Backend
from .batch_anthropic import AnthropicBatchClient
from .batch_base import BatchClient
from .batch_openai import OpenAIBatchClient
from .openai import OpenAIBackend

__all__ = ["batch_client_for"]


def batch_client_for(backend: Backend) -> BatchClient:
    """The batch client for ``backend``'s wire format (OpenAI Files + Batches, Anthropic
    Message Batches)."""
    if isinstance(backend, OpenAIBackend):
        return OpenAIBatchClient(backend)
    if isinstance(backend, AnthropicBackend):
        return AnthropicBatchClient(backend)
    raise UserError(f"{backend!r} has no batch API; batch mode needs an openai:, anthropic: or sim: model")
