"""Model providers. ``make_backend("openai:gpt-4o-mini")`` builds one from a model string:

* ``openai:MODEL`` (with ``base_url=`` for any OpenAI-compatible server)
* ``anthropic:MODEL``
* ``local:`` or ``local:PATH.gguf``: a llama.cpp server started and managed by llmrerank
* ``sim:dl19`` or ``sim:dl19@0.1``: a simulated judge answering from TREC qrels (tests, benchmarks)
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .anthropic import AnthropicBackend
from .base import Backend, BackendReply, BackendRequest, TokenLogprob
from .openai import OpenAIBackend

__all__ = [
    "AnthropicBackend",
    "Backend",
    "BackendReply",
    "BackendRequest",
    "OpenAIBackend",
    "TokenLogprob",
    "make_backend",
]


def make_backend(spec: str, *, base_url: str | None = None, **options: Any) -> Backend:
    """Build a backend from ``provider:model``."""
    provider, sep, model = spec.partition(":")
    if not sep:
        raise UserError(f"model {spec!r} must look like 'openai:MODEL', 'anthropic:MODEL' or 'local:'")
    if provider == "openai":
        return OpenAIBackend(model, base_url=base_url, **options)
    if provider == "anthropic":
        return AnthropicBackend(model, base_url=base_url, **options)
    if provider == "local":
        from .local import LocalBackend

        return LocalBackend(model, **options)
    if provider == "sim":
        from ..testing.sim import SimulatedBackend

        return SimulatedBackend(model, **options)
    raise UserError(f"unknown provider {provider!r} in {spec!r}; use openai, anthropic, local or sim")
