"""Bearer-token auth. Tokens are compared in constant time and never logged."""

from __future__ import annotations

import hmac

__all__ = ["BearerAuth"]


class BearerAuth:
    def __init__(self, tokens: frozenset[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)

    def allows(self, authorization: str | None) -> bool:
        if not self._tokens:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode()
        # check every token so the time taken does not say which one came close
        matches = [hmac.compare_digest(given, known) for known in self._tokens]
        return any(matches)
