"""Model providers behind one ``Backend`` contract. ``make_backend("openai:gpt-4o-mini")``:

* ``openai:MODEL`` (with ``base_url=`` for any OpenAI-compatible server)
* ``anthropic:MODEL``
* ``local:`` or ``local:PATH.gguf``: a llama.cpp server started and managed by llmrerank
* ``sim:dl19``, ``sim:dl19@1.0`` or ``sim:dl19@1.0,bias=0.2``: the simulated judge of ``llmrerank.testing``
* anything added with ``register_backend`` or the ``llmrerank.backends`` entry points

The wire format is one class per API (``OpenAIBackend``, ``AnthropicBackend``); where it
goes, with which key, is an ``Endpoint``.
"""

from __future__ import annotations

from typing import Any

from ._errors import retry_after_seconds
from .anthropic import AnthropicBackend
from .base import Backend, BackendReply, BackendRequest
from .endpoint import Endpoint
from .openai import OpenAIBackend
from .registry import BackendFactory, backend_prefixes, make_backend, register_backend

__all__ = [
    "AnthropicBackend",
    "Backend",
    "BackendFactory",
    "BackendReply",
    "BackendRequest",
    "Endpoint",
    "OpenAIBackend",
    "backend_prefixes",
    "make_backend",
    "register_backend",
    "retry_after_seconds",
]


def _local(model: str, **options: Any) -> Backend:
    from .local import local_backend  # imports the llama.cpp process manager only when used

    return local_backend(model, **options)


register_backend("openai", OpenAIBackend)
register_backend("anthropic", AnthropicBackend)
register_backend("local", _local)
