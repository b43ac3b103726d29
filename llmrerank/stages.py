"""Stage specs to narrowing stages: ``build_stage("dense:")``, ``build_stage("rerank-api:URL?model=m")``.

A stage spec is ``KIND:MODEL`` with options after ``?`` as in a URL
(``cross-encoder:?batch_size=16&device=cpu``; each value is read as YAML, so ``16`` is a
number). The registry is open, like the backends': ``register_stage("myco", factory)``
adds a kind, and installed packages add theirs through the ``llmrerank.stages``
entry-point group (the name is the kind, the object a factory). A factory is called as
``factory(model, cache=..., **options)`` (``model``, positional: the text after the colon,
maybe empty, e.g. a model name or a URL; ``cache``: the pipeline's ``DiskCache`` or None)
and returns a ``Reranker``.

Built in: ``dense``, ``cross-encoder`` (alias ``ce``) and ``rerank-api`` (a rerank server:
see ``llmrerank.rerankers.remote``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import yaml

from .errors import UserError
from .plugins import Registry
from .rerankers.protocol import Reranker

if TYPE_CHECKING:
    from .cache import DiskCache

__all__ = [
    "ENTRY_POINT_GROUP",
    "StageFactory",
    "build_stage",
    "parse_stage_spec",
    "register_stage",
    "stage_kinds",
]

StageFactory = Callable[..., Reranker]
ENTRY_POINT_GROUP = "llmrerank.stages"

_stages: Registry[StageFactory] = Registry("stage kind", ENTRY_POINT_GROUP, forbidden=":?&=")


def register_stage(kind: str, factory: StageFactory, *, replace: bool = False) -> None:
    """Make ``KIND:MODEL?options`` build a stage with ``factory``."""
    _stages.register(kind, factory, replace=replace)


def stage_kinds() -> list[str]:
    """Every kind ``build_stage`` knows: registered, then installed through entry points."""
    return _stages.names()


def parse_stage_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``(kind, model, options)`` of ``KIND:MODEL?key=value&...``; option values are YAML."""
    head, _, query = spec.partition("?")
    kind, sep, model = head.partition(":")
    if not sep:
        raise UserError(
            f"stage {spec!r} needs a colon: KIND:[MODEL], with a kind of {', '.join(stage_kinds())}"
        )
    options: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise UserError(f"stage {spec!r}: options must look like key=value&key=value ({exc})") from None
    for key, value in pairs:
        options[key] = yaml.safe_load(value) if value else ""
    return kind, model, options


def build_stage(spec: str, *, cache: DiskCache | None = None) -> Reranker:
    """A narrowing stage from its spec; the stage may use the pipeline's response ``cache``
    (the dense stage keeps passage embeddings there, a rerank server's scores go there)."""
    kind, model, options = parse_stage_spec(spec)
    factory = _stages.find(kind)
    if factory is None:
        raise UserError(f"unknown stage kind {kind!r} in {spec!r}; known: {', '.join(stage_kinds())}")
    try:
        return factory(model, cache=cache, **options)
    except TypeError as exc:
        raise UserError(f"stage {spec!r}: {exc}") from None


def _dense(model: str, /, *, cache: DiskCache | None = None, **options: Any) -> Reranker:
    from .rerankers.dense import DenseReranker

    return DenseReranker(model or None, cache=cache, **options)


def _cross_encoder(model: str, /, *, cache: DiskCache | None = None, **options: Any) -> Reranker:
    from .rerankers.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(model or None, **options)


def _rerank_api(url: str, /, *, cache: DiskCache | None = None, **options: Any) -> Reranker:
    from .rerankers.remote import remote_stage

    return remote_stage(url, cache=cache, **options)


register_stage("dense", _dense)
register_stage("cross-encoder", _cross_encoder)
register_stage("ce", _cross_encoder)
register_stage("rerank-api", _rerank_api)
