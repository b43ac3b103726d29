"""Boundary markers that quote user text in prompts without changing it.

Prompt versions from v2 on wrap the query and every passage in
``<query-B>…</query-B>`` / ``<passage-B id="…">…</passage-B>``, where ``B`` is chosen per
request so that it occurs in none of the quoted texts. Text therefore reaches the model
exactly as written (``vector<int>`` stays ``vector<int>``), and no text can close its
quote or open another one: to do so it would have to contain ``B``, which by construction
it does not. ``B`` is derived from the texts themselves (not drawn at random) so an
identical request renders identically and is served from the response cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from itertools import count
from typing import Any

__all__ = ["choose_boundary", "quoted_strings"]

BOUNDARY_CHARS = 12


def quoted_strings(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (nested mappings, lists and tuples)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from quoted_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from quoted_strings(item)


def choose_boundary(texts: Iterable[str]) -> str:
    """A lowercase hex token found in none of ``texts`` (compared case-insensitively)."""
    folded = [text.lower() for text in texts]
    material = "\x00".join(folded).encode("utf-8", "surrogatepass")
    for attempt in count():
        token = hashlib.sha256(attempt.to_bytes(8, "big") + material).hexdigest()[:BOUNDARY_CHARS]
        if not any(token in text for text in folded):
            return token
    raise AssertionError("unreachable")  # pragma: no cover
