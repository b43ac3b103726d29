"""Model strings to backends: ``make_backend("openai:gpt-4o-mini")``.

The registry is open: ``register_backend("myco", factory)`` adds a prefix, and installed
packages add theirs through the ``llmrerank.backends`` entry-point group (the name is the
prefix, the object a factory). A factory is called as
``factory(model, base_url=..., **options)`` and returns a ``Backend``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import UserError
from .base import Backend

__all__ = ["ENTRY_POINT_GROUP", "BackendFactory", "backend_prefixes", "make_backend", "register_backend"]

BackendFactory = Callable[..., Backend]
ENTRY_POINT_GROUP = "llmrerank.backends"

_registry: dict[str, BackendFactory] = {}
_lock = threading.Lock()


def register_backend(prefix: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make ``prefix:MODEL`` build a backend with ``factory``."""
    if not prefix or ":" in prefix:
        raise UserError(f"a backend prefix is a non-empty name without ':', got {prefix!r}")
    with _lock:
        if prefix in _registry and _registry[prefix] is not factory and not replace:
            raise UserError(f"backend prefix {prefix!r} is already registered")
        _registry[prefix] = factory


def _from_entry_points(prefix: str) -> BackendFactory | None:
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=prefix):
        factory: BackendFactory = entry.load()
        register_backend(prefix, factory, replace=True)
        return factory
    return None


def backend_prefixes() -> list[str]:
    """Every prefix ``make_backend`` knows: registered, then installed through entry points."""
    names = set(_registry) | {e.name for e in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def make_backend(spec: str, *, base_url: str | None = None, **options: Any) -> Backend:
    """Build a backend from ``prefix:model`` (``openai:``, ``anthropic:``, ``local:``, ``sim:``, ...)."""
    prefix, sep, model = spec.partition(":")
    if not sep:
        raise UserError(
            f"model {spec!r} must look like PREFIX:MODEL with a prefix of {', '.join(backend_prefixes())} "
            "(e.g. openai:gpt-4o-mini, local: for the bundled model, or sim:dl19 for the simulated "
            "judge, which works offline)"
        )
    factory = _registry.get(prefix) or _from_entry_points(prefix)
    if factory is None:
        raise UserError(
            f"unknown backend prefix {prefix!r} in {spec!r}; known: {', '.join(backend_prefixes())}"
        )
    if base_url is not None:
        options["base_url"] = base_url
    return factory(model, **options)
