"""``local:[PATH.gguf]``: a llama.cpp server that llmrerank starts, shares and stops.

The server speaks the OpenAI wire format, so the backend is ``OpenAIBackend`` over the
server's ``Endpoint``, with JSON-schema constrained decoding (grades, permutations and
choices always parse). ``base_url=`` (or ``LLMRERANK_LOCAL_URL``) attaches to a server
that is already running instead of starting one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .base import Backend
from .endpoint import Endpoint
from .llama_server import DEFAULT_CTX_PER_SLOT, LocalLLMServer, resolve_local_model
from .openai import OpenAIBackend

__all__ = ["local_backend", "local_endpoint", "shared_server", "stop_shared_servers"]

_servers: dict[tuple[str, int, int], LocalLLMServer] = {}
_lock = threading.Lock()


def shared_server(
    model_path: Path, *, parallel: int = 4, ctx_per_slot: int = DEFAULT_CTX_PER_SLOT
) -> LocalLLMServer:
    """One running server per (model, slots, context) in this process, started on first use."""
    key = (str(model_path), parallel, ctx_per_slot)
    with _lock:
        server = _servers.get(key)
        if server is None or not server.running:
            server = LocalLLMServer(model_path, parallel=parallel, ctx_per_slot=ctx_per_slot)
            server.start()
            _servers[key] = server
        return server


def stop_shared_servers() -> None:
    """Stop every server ``shared_server`` started in this process (they also stop at
    interpreter exit; a process ended by a signal, as uvicorn ends one, never gets there)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.stop()


def local_endpoint(
    model: str = "", *, url: str | None = None, parallel: int = 4, ctx_per_slot: int = DEFAULT_CTX_PER_SLOT
) -> tuple[str, Endpoint]:
    """The model name and endpoint of a managed (started here) or attached llama.cpp server."""
    url = url or os.environ.get("LLMRERANK_LOCAL_URL")
    if url:
        server = LocalLLMServer.attach(url)
        name = model or "attached"
        # an attached server's URL is stable and names what answers
        identity: dict[str, Any] = {"base_url": server.url, "model_file": name}
    else:
        path = resolve_local_model(model)
        server = shared_server(path, parallel=parallel, ctx_per_slot=ctx_per_slot)
        name = path.stem
        # the port changes every run; the model file is what determines the reply
        identity = {"model_file": f"{path.name}:{path.stat().st_size}"}
    endpoint = Endpoint(provider="local", base_url=server.openai_base_url, identity=identity, owner=server)
    return name, endpoint


def _server_context(endpoint: Endpoint) -> int | None:
    owner = endpoint.owner
    return owner.context_tokens if isinstance(owner, LocalLLMServer) else None


def local_backend(
    model: str = "",
    *,
    base_url: str | None = None,
    parallel: int = 4,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
    timeout_s: float = 120.0,
    **options: Any,
) -> Backend:
    """The ``local:`` factory."""
    name, endpoint = local_endpoint(model, url=base_url, parallel=parallel, ctx_per_slot=ctx_per_slot)
    backend = OpenAIBackend(name, endpoint=endpoint, timeout_s=timeout_s, **options)
    # the server's per-slot context is what one request may use: prompts are fitted to it
    backend.context_tokens = _server_context(endpoint)
    return backend
