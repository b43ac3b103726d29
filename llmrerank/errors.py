"""The exception tree. Every error llmrerank raises is an ``LLMRerankError``::

LLMRerankError
├── UserError                 bad input or configuration; fix the call, do not retry
│   ├── CandidateError        empty/duplicate ids, empty or non-string text
│   ├── PromptError           unknown prompt ref, missing variable, changed released version
│   ├── RubricError           malformed rubric file or scale
│   └── BudgetError           a plan would exceed a configured call or cost bound
├── BackendError              the model provider failed
│   ├── TransientBackendError retried by the driver: timeouts, 429, 5xx, connection
│   │   ├── RateLimitError    429 (carries ``retry_after`` seconds when the server sent it)
│   │   ├── BackendTimeoutError  no complete answer within the per-attempt deadline
│   │   └── MalformedReplyError  a reply whose body is not the API's JSON (HTML, empty, cut)
│   └── TerminalBackendError  400/401/403/404 and friends: raised at once
├── ParseError                the model's output stayed invalid after every re-ask
├── CacheError                the response cache is unusable (full disk, corrupt store)
├── StageTimeoutError         a cascade stage ran over its time budget
├── CallCancelledError        a call stopped because its stage's budget ran out or a sibling failed
└── LocalServerError          the managed llama.cpp server failed to start or died
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import CallRecord

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "BudgetError",
    "CacheError",
    "CallCancelledError",
    "CandidateError",
    "LLMRerankError",
    "LocalServerError",
    "MalformedReplyError",
    "ParseError",
    "PromptError",
    "RateLimitError",
    "RubricError",
    "StageTimeoutError",
    "TerminalBackendError",
    "TransientBackendError",
    "UserError",
]


class LLMRerankError(Exception):
    """Base class of every error raised by llmrerank.

    ``calls``: the LLM calls the failed work had already finished (paid or cached), set by
    the driver and the cascade, so a result that degrades on this error, or a caller that
    catches it, still books what was paid for. Empty when no call had finished.
    """

    calls: tuple[CallRecord, ...] = ()


class UserError(LLMRerankError):
    """The caller's input or configuration is wrong."""


class CandidateError(UserError):
    """Candidates are unusable: empty text, duplicate ids, wrong types."""


class PromptError(UserError):
    """A prompt cannot be resolved or rendered."""


class RubricError(UserError):
    """A rubric is malformed."""


class BudgetError(UserError):
    """A plan would exceed a configured bound (calls, cost)."""


class BackendError(LLMRerankError):
    """The model provider failed. ``provider`` and ``status_code`` (None without an HTTP
    answer) say where; ``attempts`` is how many requests the driver made before giving up
    (0 when the error did not come through the driver)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider = provider
        self.attempts = attempts

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (after {self.attempts} attempts)" if self.attempts > 1 else text


class TransientBackendError(BackendError):
    """A failure worth retrying (timeouts, connection errors, 429, 5xx, unreadable replies).
    ``retry_after``: the wait in seconds the server asked for (Retry-After), when it did."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider: str | None = None,
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, provider=provider, attempts=attempts)
        self.retry_after = retry_after


class RateLimitError(TransientBackendError):
    """HTTP 429 (``retry_after`` as sent), or a server asking for a longer wait than the
    retry policy allows."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        provider: str | None = None,
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, provider=provider, attempts=attempts, retry_after=retry_after
        )


class BackendTimeoutError(TransientBackendError):
    """The provider did not finish answering within the per-attempt deadline."""


class MalformedReplyError(TransientBackendError):
    """A reply arrived but is not the API's JSON: an HTML page from a proxy, an empty or
    truncated body. Usually a transient fault in between, so it is retried."""


class TerminalBackendError(BackendError):
    """A failure that retrying cannot fix (bad request, auth, unknown model)."""


class ParseError(LLMRerankError):
    """Model output stayed invalid after the bounded re-asks. ``raw`` is the last reply."""

    def __init__(self, message: str, *, raw: str, attempts: int) -> None:
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts


class CacheError(LLMRerankError):
    """The response cache cannot be read or written."""


class StageTimeoutError(LLMRerankError):
    """A cascade stage ran over its time budget."""


class CallCancelledError(LLMRerankError):
    """A call was stopped before it finished: its stage's budget ran out, or a sibling call
    of the same plan failed first (that sibling's error is the one raised)."""


class LocalServerError(LLMRerankError):
    """The managed local LLM server could not start, or died."""
