"""Model providers. ``make_backend("openai:gpt-4o-mini")`` builds one from a model string:

* ``openai:MODEL`` (with ``base_url=`` for any OpenAI-compatible server)
* ``anthropic:MODEL``
* ``local:`` or ``local:PATH.gguf``: a llama.cpp server started and managed by llmrerank
* ``sim:dl19`` or ``sim:dl19@0.1``: a simulated judge answering from TREC qrels (tests, benchmarks)
"""

from __future__ import annotations

from collections.abc import Callable
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


def _local(model: str, *, base_url: str | None = None, **options: Any) -> Backend:
    """``local:`` starts a llama.cpp server; with ``base_url`` it attaches to a running one."""
    from .local import LocalBackend

    return LocalBackend(model, url=base_url, **options)


def _simulated(model: str, *, base_url: str | None = None, **options: Any) -> Backend:
    from ..testing.sim import SimulatedBackend

    if base_url is not None:
        raise UserError("sim: runs its own judge server; it takes no base_url")
    return SimulatedBackend(model, **options)


# provider prefix -> factory(model, base_url=..., **options); local and sim import lazily
_PROVIDERS: dict[str, Callable[..., Backend]] = {
    "openai": OpenAIBackend,
    "anthropic": AnthropicBackend,
    "local": _local,
    "sim": _simulated,
}


def make_backend(spec: str, *, base_url: str | None = None, **options: Any) -> Backend:
    """Build a backend from ``provider:model``."""
    provider, sep, model = spec.partition(":")
    if not sep:
        raise UserError(f"model {spec!r} must look like 'openai:MODEL', 'anthropic:MODEL' or 'local:'")
    factory = _PROVIDERS.get(provider)
    if factory is None:
        raise UserError(f"unknown provider {provider!r} in {spec!r}; use {', '.join(_PROVIDERS)}")
    if base_url is not None:
        options["base_url"] = base_url
    return factory(model, **options)
