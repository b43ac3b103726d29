"""The driver's cache entries: a validated reply's text, model and logprobs as JSON.

A hit is parsed again with the request's output format, so a stale or corrupt entry is a
miss (logged), never a wrong answer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .backends.base import BackendReply
from .cache import BestEffortCache
from .outputs import Parsed
from .strategies.plan import LLMRequest

__all__ = ["read_entry", "write_entry"]

logger = logging.getLogger("llmrerank")


def read_entry(
    store: BestEffortCache, key: str, request: LLMRequest
) -> tuple[Parsed[Any], dict[str, Any]] | None:
    raw = store.get(key)
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        return request.output.parse(entry["text"]), entry
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("cache entry %s is unreadable or no longer valid (%s); asking again", key[:12], exc)
        return None


def write_entry(store: BestEffortCache, key: str, reply: BackendReply) -> None:
    entry: dict[str, Any] = {"text": reply.text, "model": reply.model}
    if reply.logprobs is not None:
        entry["logprobs"] = [[t.token, t.logprob, dict(t.top)] for t in reply.logprobs]
    store.set(key, json.dumps(entry, ensure_ascii=False))
