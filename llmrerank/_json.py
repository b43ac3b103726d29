"""Parsing one JSON document that a caller sent (a CLI input line, a service request body)."""

from __future__ import annotations

import json
from typing import Any

from .errors import UserError

__all__ = ["parse_json"]


def parse_json(data: str | bytes, what: str) -> Any:
    """``data`` decoded as JSON; a ``UserError`` naming ``what`` (``"input line 3"``,
    ``"the body"``) when it is not UTF-8, not JSON, or nested deeper than Python's
    recursion limit lets the decoder go (a ``RecursionError`` is never a server fault)."""
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not JSON: {exc.msg}") from None
    except RecursionError:
        raise UserError(f"{what} is nested too deeply") from None
