"""``local:[PATH.gguf]``: a llama.cpp server that llmrerank starts, shares and stops.

The server speaks the OpenAI wire format, so this is the OpenAI backend pointed at it,
with JSON-schema constrained decoding (grades, permutations and choices always parse).
Set ``LLMRERANK_LOCAL_URL`` to use a server that is already running instead.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .openai import OpenAIBackend

__all__ = ["LocalBackend", "shared_server"]

_servers: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


def shared_server(model_path: Path, *, parallel: int = 4, ctx_per_slot: int = 4096) -> Any:
    """One running server per (model, parallel slots) in this process, started on first use."""
    from ..local import LocalLLMServer

    key = (str(model_path), parallel)
    with _lock:
        server = _servers.get(key)
        if server is None or not server.running:
            server = LocalLLMServer(model_path, parallel=parallel, ctx_per_slot=ctx_per_slot)
            server.start()
            _servers[key] = server
        return server


class LocalBackend(OpenAIBackend):
    provider = "local"

    def __init__(
        self,
        model: str = "",
        *,
        parallel: int = 4,
        ctx_per_slot: int = 4096,
        timeout_s: float = 120.0,
        url: str | None = None,
    ) -> None:
        from ..local import LocalLLMServer, resolve_local_model

        url = url or os.environ.get("LLMRERANK_LOCAL_URL")
        if url:
            server = LocalLLMServer.attach(url)
            name = model or "attached"
            self.model_file = name
        else:
            path = resolve_local_model(model)
            server = shared_server(path, parallel=parallel, ctx_per_slot=ctx_per_slot)
            name = path.stem
            self.model_file = f"{path.name}:{path.stat().st_size}"
        self.server = server
        super().__init__(name, base_url=server.openai_base_url, timeout_s=timeout_s)
        self.provider = "local"

    def identity(self) -> dict[str, Any]:
        # The port changes every run; the model file is what determines the reply.
        return {
            "provider": "local",
            "model_file": self.model_file,
            "structured_output": self.structured_output,
        }
