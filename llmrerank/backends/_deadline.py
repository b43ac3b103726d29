"""A total deadline for each HTTP attempt, which the SDKs lack (their timeout is per read).

The SDK clients get an ``httpx2`` transport that starts a clock when a request is sent and
checks it, and the caller's cancel token, on every chunk of the reply: a server that drips
a 200 body one byte at a time fails at the deadline with a read timeout (which the SDK
reports as its timeout error) instead of succeeding minutes later.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

from .._concurrency import CancelToken, current_token

__all__ = ["async_http_client", "sync_http_client"]

_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


def _check(request: httpx2.Request, deadline: float, token: CancelToken | None) -> None:
    if token is not None and token.cancelled:
        raise httpx2.ReadTimeout(f"stopped: {token.reason}", request=request)
    if time.monotonic() > deadline:
        raise httpx2.ReadTimeout("no complete reply within the attempt's deadline", request=request)


class _SyncStream(httpx2.SyncByteStream):
    def __init__(
        self, inner: Any, request: httpx2.Request, deadline: float, token: CancelToken | None
    ) -> None:
        self._inner, self._request, self._deadline, self._token = inner, request, deadline, token

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            _check(self._request, self._deadline, self._token)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _AsyncStream(httpx2.AsyncByteStream):
    def __init__(
        self, inner: Any, request: httpx2.Request, deadline: float, token: CancelToken | None
    ) -> None:
        self._inner, self._request, self._deadline, self._token = inner, request, deadline, token

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            _check(self._request, self._deadline, self._token)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _SyncDeadlineTransport(httpx2.BaseTransport):
    def __init__(self, total_s: float) -> None:
        self._inner = httpx2.HTTPTransport(limits=_LIMITS)
        self._total_s = total_s

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        deadline, token = time.monotonic() + self._total_s, current_token()
        _check(request, deadline, token)
        response = self._inner.handle_request(request)
        stream = _SyncStream(response.stream, request, deadline, token)
        return httpx2.Response(
            response.status_code, headers=response.headers, stream=stream, extensions=response.extensions
        )

    def close(self) -> None:
        self._inner.close()


class _AsyncDeadlineTransport(httpx2.AsyncBaseTransport):
    def __init__(self, total_s: float) -> None:
        self._inner = httpx2.AsyncHTTPTransport(limits=_LIMITS)
        self._total_s = total_s

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        deadline, token = time.monotonic() + self._total_s, current_token()
        _check(request, deadline, token)
        response = await self._inner.handle_async_request(request)
        stream = _AsyncStream(response.stream, request, deadline, token)
        return httpx2.Response(
            response.status_code, headers=response.headers, stream=stream, extensions=response.extensions
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def sync_http_client(sdk: Any, total_s: float) -> Any:
    """``sdk``'s default sync HTTP client with a per-attempt total deadline."""
    return sdk.DefaultHttpxClient(transport=_SyncDeadlineTransport(total_s), timeout=total_s)


def async_http_client(sdk: Any, total_s: float) -> Any:
    return sdk.DefaultAsyncHttpxClient(transport=_AsyncDeadlineTransport(total_s), timeout=total_s)
