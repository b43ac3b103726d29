"""The one place an SDK's failures become llmrerank errors (both SDKs share one shape).

``sdk_errors(sdk, provider)`` wraps a call: HTTP errors map by status, timeouts and
connection failures are transient, and a 200 whose body is not the API's JSON (an HTML
page from a proxy, an empty or cut body: the SDK raises ``JSONDecodeError`` or returns a
bare string) is a ``MalformedReplyError``, retried like any transient fault.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import (
    BackendError,
    BackendTimeoutError,
    LLMRerankError,
    MalformedReplyError,
    RateLimitError,
    TerminalBackendError,
    TransientBackendError,
)

__all__ = ["check_reply", "retry_after_seconds", "sdk_errors", "translate_sdk_error"]


def retry_after_seconds(headers: Any) -> float | None:
    """The wait a server asked for: ``retry-after-ms``, or ``Retry-After`` as seconds or as
    an HTTP date. None when absent or unreadable."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def translate_sdk_error(exc: Exception, sdk: Any, provider: str) -> BackendError:
    """``sdk`` is the ``openai`` or ``anthropic`` module; both expose the same exception names."""
    if isinstance(exc, sdk.APITimeoutError):
        return BackendTimeoutError(f"{provider}: request timed out", provider=provider)
    if isinstance(exc, sdk.APIConnectionError):
        return TransientBackendError(f"{provider}: connection failed: {exc}", provider=provider)
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        message = f"{provider} HTTP {status}: {exc.message}"
        wait = retry_after_seconds(getattr(exc.response, "headers", None))
        if status == 429:
            return RateLimitError(message, provider=provider, retry_after=wait)
        if status in (408, 409) or status >= 500:
            return TransientBackendError(message, status_code=status, provider=provider, retry_after=wait)
        return TerminalBackendError(message, status_code=status, provider=provider)
    if isinstance(exc, sdk.APIResponseValidationError):
        return MalformedReplyError(f"{provider}: reply does not fit the API: {exc}", provider=provider)
    return TerminalBackendError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider)


def check_reply(reply: Any, expected: type, provider: str) -> None:
    """The SDKs return the raw body as a string when it is not JSON (``text/html``)."""
    if not isinstance(reply, expected):
        shown = reply[:80] if isinstance(reply, str) else type(reply).__name__
        raise MalformedReplyError(
            f"{provider}: reply is not the API's JSON but {shown!r}", provider=provider, status_code=200
        )


def _base_error(sdk: Any) -> type[Exception]:
    base: type[Exception] = getattr(sdk, "AnthropicError", None) or sdk.OpenAIError
    return base


@contextmanager
def sdk_errors(sdk: Any, provider: str) -> Iterator[None]:
    """Translate whatever an SDK call raises into the llmrerank tree."""
    try:
        yield
    except LLMRerankError:
        raise
    except json.JSONDecodeError as exc:
        raise MalformedReplyError(
            f"{provider}: reply body is not JSON ({exc.msg} at char {exc.pos})",
            provider=provider,
            status_code=200,
        ) from exc
    except (AttributeError, TypeError, KeyError) as exc:
        # JSON of the wrong shape: the SDKs build replies without validating them
        raise MalformedReplyError(
            f"{provider}: reply does not have the API's shape ({exc})", provider=provider, status_code=200
        ) from exc
    except _base_error(sdk) as exc:
        raise translate_sdk_error(exc, sdk, provider) from exc
    except RuntimeError as exc:
        # e.g. a client used from an event loop it does not belong to, or a closed loop
        raise TerminalBackendError(f"{provider}: {exc}", provider=provider) from exc
