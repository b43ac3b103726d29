"""Map an SDK's exception onto the llmrerank tree (both SDKs share one shape)."""

from __future__ import annotations

from typing import Any

from ..errors import (
    BackendError,
    BackendTimeoutError,
    RateLimitError,
    TerminalBackendError,
    TransientBackendError,
)

__all__ = ["translate_sdk_error"]


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name in ("retry-after-ms", "retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds / 1000 if name.endswith("-ms") else seconds
    return None


def translate_sdk_error(exc: Exception, sdk: Any, provider: str) -> BackendError:
    """``sdk`` is the ``openai`` or ``anthropic`` module; both expose the same exception names."""
    if isinstance(exc, sdk.APITimeoutError):
        return BackendTimeoutError(f"{provider}: request timed out")
    if isinstance(exc, sdk.APIConnectionError):
        return TransientBackendError(f"{provider}: connection failed: {exc}")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        message = f"{provider} HTTP {status}: {exc.message}"
        if status == 429:
            return RateLimitError(message, retry_after=_retry_after(exc.response))
        if status in (408, 409) or status >= 500:
            return TransientBackendError(message, status_code=status)
        return TerminalBackendError(message, status_code=status)
    return TerminalBackendError(f"{provider}: {type(exc).__name__}: {exc}")
