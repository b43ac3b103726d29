"""The service config: named pipelines (each a ``PipelineSpec`` mapping), the default
name, limits, auth, the shared cache directory and the rubrics a request may pick.

.. code-block:: yaml

    default: kb-cascade
    cache_dir: ~/.cache/llmrerank       # shared by every worker (diskcache is multi-process safe)
    pipelines:
      kb-cascade: {narrow_with: ["dense:"], narrow_to: 20, llm: "local:", strategy: listwise}
      dense-only: {narrow_with: ["dense:"]}
    rubrics: {support: rubrics/support.yaml}
    limits: {deadline_s: 20, llm_concurrency: 4, llm_queue: 32, local_queue: 8, max_documents: 1000}
    auth: {tokens_env: LLMRERANK_SERVE_TOKENS, tokens_file: /run/secrets/rerank-tokens}
    allow_partial: false    # true: serve the pipelines that built when another one cannot
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .._yaml import read_yaml_mapping
from ..errors import UserError
from ..pipeline import PipelineSpec
from .drain import DRAIN_QUIET_S
from .limits import default_local_concurrency

__all__ = ["DEFAULT_PIPELINE", "AuthConfig", "Limits", "ServiceConfig"]

#: the offline cascade ``make demo`` uses: dense narrows to 20, the local llama.cpp model orders them
DEFAULT_PIPELINE: dict[str, Any] = {
    "narrow_with": ["dense:"],
    "narrow_to": 20,
    "llm": "local:",
    "strategy": "listwise",
}


def _dataclass_from(cls: Any, raw: Any, section: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise UserError(f"service config: {section} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise UserError(f"service config: unknown {section} keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**raw)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"service config: {key} must be true or false")
    return value


@dataclass(frozen=True)
class Limits:
    """``deadline_s``: each request's time budget; when it passes, the LLM stage stops and the
    previous stage's order is returned with ``degraded: true``. ``llm_concurrency``: requests
    in an LLM stage at once per LLM backend (per worker); ``llm_queue``: how many more may
    wait for a slot before the service answers ``429``. ``local_concurrency``: local (CPU)
    stage runs at once per worker (default: the cores this process may use);
    ``local_queue``: how many more requests may wait for the CPU before ``429`` (default:
    twice the cores). ``drain_s``: after SIGTERM, how long at most the service keeps
    accepting and serving (``/readyz`` says ``503``), so that requests the kernel already
    accepted are answered rather than reset; it stops sooner once no request has arrived
    for ``drain_quiet_s`` (``drain_s: 0``: close the listener at once; behind a load
    balancer that takes a few seconds to stop sending, set both to those seconds).
    Size limits apply to every request;
    ``max_body_bytes`` is checked before the body is read (``413``); its default (16 MiB)
    holds ``max_total_chars`` of text even at 6 bytes a character (``\\uXXXX`` escapes)."""

    deadline_s: float = 30.0
    llm_concurrency: int = 4
    llm_queue: int = 64
    local_concurrency: int = field(default_factory=default_local_concurrency)
    local_queue: int = field(default_factory=lambda: 2 * default_local_concurrency())
    max_documents: int = 1000
    max_document_chars: int = 20_000
    max_total_chars: int = 2_000_000
    max_query_chars: int = 4_000
    max_body_bytes: int = 16 * 1024 * 1024
    drain_s: float = 3.0
    drain_quiet_s: float = DRAIN_QUIET_S

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            positive = not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0
            if not positive and not (
                f.name in ("llm_queue", "local_queue", "drain_s", "drain_quiet_s") and value == 0
            ):
                raise UserError(f"service config: limits.{f.name} must be a positive number")


@dataclass(frozen=True)
class AuthConfig:
    """Bearer tokens, one per line in ``tokens_file`` and/or comma-separated in the
    environment variable ``tokens_env``. No token configured: no auth."""

    tokens_env: str | None = "LLMRERANK_SERVE_TOKENS"
    tokens_file: str | None = None

    def tokens(self) -> frozenset[str]:
        found: set[str] = set()
        if self.tokens_env:
            found.update(t.strip() for t in os.environ.get(self.tokens_env, "").split(","))
        if self.tokens_file:
            try:
                found.update(
                    line.strip() for line in Path(self.tokens_file).expanduser().read_text().splitlines()
                )
            except OSError as exc:
                raise UserError(f"service config: cannot read auth.tokens_file: {exc}") from exc
        return frozenset(t for t in found if t)


@dataclass(frozen=True)
class ServiceConfig:
    pipelines: Mapping[str, PipelineSpec]
    default: str
    limits: Limits = field(default_factory=Limits)
    auth: AuthConfig = field(default_factory=AuthConfig)
    cache_dir: str | None = None
    rubrics: Mapping[str, str] = field(default_factory=dict)
    #: serve the pipelines that built when others cannot (default: refuse to start)
    allow_partial: bool = False

    def __post_init__(self) -> None:
        if not self.pipelines:
            raise UserError("service config: no pipelines")
        if "default" in self.pipelines:
            raise UserError('service config: "default" is reserved: it always names the default pipeline')
        if self.default not in self.pipelines:
            raise UserError(
                f"service config: default {self.default!r} is not one of {sorted(self.pipelines)}"
            )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ServiceConfig:
        known = {"pipelines", "default", "limits", "auth", "cache_dir", "rubrics", "allow_partial"}
        unknown = set(raw) - known
        if unknown:
            raise UserError(f"service config: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        pipelines_raw = raw.get("pipelines")
        if not isinstance(pipelines_raw, Mapping) or not pipelines_raw:
            raise UserError("service config: pipelines must map names to pipeline specs")
        pipelines = {}
        for name, spec in pipelines_raw.items():
            if not isinstance(spec, Mapping):
                raise UserError(f"service config: pipeline {name!r} must be a mapping of PipelineSpec fields")
            pipelines[str(name)] = PipelineSpec.from_dict({**spec, "name": str(name)})
        rubrics = raw.get("rubrics") or {}
        if not isinstance(rubrics, Mapping):
            raise UserError("service config: rubrics must map names to rubric YAML paths")
        return cls(
            pipelines=pipelines,
            default=str(raw.get("default") or next(iter(pipelines))),
            limits=_dataclass_from(Limits, raw.get("limits"), "limits"),
            auth=_dataclass_from(AuthConfig, raw.get("auth"), "auth"),
            cache_dir=raw.get("cache_dir"),
            rubrics={str(k): str(v) for k, v in rubrics.items()},
            allow_partial=_flag(raw.get("allow_partial", False), "allow_partial"),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ServiceConfig:
        expected = "the service config is a mapping (pipelines, default, limits, auth)"
        return cls.from_dict(read_yaml_mapping(path, "service config", expected))

    @classmethod
    def offline_default(cls) -> ServiceConfig:
        """No config: the offline cascade, named ``dense-local``. A 0.5B model on CPU takes
        15-60 s for one listwise window of 20, so its deadline is generous."""
        return cls.from_dict(
            {
                "pipelines": {"dense-local": DEFAULT_PIPELINE},
                "default": "dense-local",
                "limits": {"deadline_s": 180},
            }
        )
