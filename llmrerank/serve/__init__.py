"""``llmrerank serve``: named pipelines behind Cohere's rerank API (``/v1/rerank``, ``/v2/rerank``).

Every pipeline is built by ``PipelineSpec.build``; the service adds what a shared process
needs around it: one admission gate per LLM backend (concurrency limit + bounded queue,
``429`` when full), a per-request deadline after which the LLM stage degrades, size
limits, bearer-token auth, Prometheus metrics and a JSON access log. Needs the ``serve``
extra (``pip install "llmrerank[serve]"``).
"""

from __future__ import annotations

from .config import AuthConfig, Limits, ServiceConfig

__all__ = ["AuthConfig", "Limits", "ServiceConfig"]
