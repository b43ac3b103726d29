"""Model strings to backends: ``make_backend("openai:gpt-4o-mini")``.

The registry is open: ``register_backend("myco", factory)`` adds a prefix, and installed
packages add theirs through the ``llmrerank.backends`` entry-point group (the name is the
prefix, the object a factory). A factory is called as
``factory(model, base_url=..., **options)`` and returns a ``Backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import UserError
from ..plugins import Registry
from .base import Backend

__all__ = ["ENTRY_POINT_GROUP", "BackendFactory", "backend_prefixes", "make_backend", "register_backend"]

BackendFactory = Callable[..., Backend]
ENTRY_POINT_GROUP = "llmrerank.backends"

_backends: Registry[BackendFactory] = Registry("backend prefix", ENTRY_POINT_GROUP)


def register_backend(prefix: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make ``prefix:MODEL`` build a backend with ``factory``."""
    _backends.register(prefix, factory, replace=replace)


def backend_prefixes() -> list[str]:
    """Every prefix ``make_backend`` knows: registered, then installed through entry points."""
    return _backends.names()


def make_backend(spec: str, *, base_url: str | None = None, **options: Any) -> Backend:
    """Build a backend from ``prefix:model`` (``openai:``, ``anthropic:``, ``local:``, ``sim:``, ...)."""
    prefix, sep, model = spec.partition(":")
    if not sep:
        raise UserError(
            f"model {spec!r} must look like PREFIX:MODEL with a prefix of {', '.join(backend_prefixes())} "
            "(e.g. openai:gpt-4o-mini, local: for the bundled model, or sim:dl19 for the simulated "
            "judge, which works offline)"
        )
    factory = _backends.find(prefix)
    if factory is None:
        raise UserError(
            f"unknown backend prefix {prefix!r} in {spec!r}; known: {', '.join(backend_prefixes())}"
        )
    if base_url is not None:
        options["base_url"] = base_url
    return factory(model, **options)
