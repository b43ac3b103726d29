"""The service's named pipelines, each built once by ``PipelineSpec.build`` with its LLM
stage behind the shared gate of its backend and its local stages behind the worker's CPU
gate. Requests that pick a registered ``prompt`` or
a configured ``rubric`` get a variant built the same way (once, then reused).

``Pipelines.start()`` builds every pipeline and loads its local models. A pipeline that
cannot be built (a managed LLM that does not start, a missing rubric file, an unknown
stage, strategy or provider) raises ``StartupError``, so the service does not start;
with ``allow_partial`` it is set aside instead (``failed``) and requests naming it get
``PipelineUnavailableError``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..backends.local import stop_shared_servers
from ..cache import DiskCache
from ..errors import LLMRerankError, UserError
from ..pipeline import PipelineSpec, build_stage
from ..rerankers.protocol import Reranker
from ..rubrics import load_rubric
from .config import Limits, ServiceConfig
from .limits import BackendGate, GatedLLM, GatedLocal

__all__ = ["BuiltPipeline", "PipelineUnavailableError", "Pipelines", "StartupError"]

logger = logging.getLogger("llmrerank.serve")


class StartupError(LLMRerankError):
    """The service cannot start: ``failures`` maps each pipeline (or ``rubric 'name'``)
    that could not be built to why."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        parts = [f"{what} could not be built: {why}" for what, why in self.failures.items()]
        super().__init__("; ".join(parts))


class PipelineUnavailableError(UserError):
    """A request named a pipeline that failed to start (``allow_partial``): it will not
    clear without fixing the config and restarting, so it is no reason to retry."""


def _describe(exc: BaseException) -> str:
    """One line (or the error's own lines) saying what went wrong, with the error's type."""
    return f"{type(exc).__name__}: {exc}"


# a request names a prompt of the library (family/name[@N|@latest]), never a path
_PROMPT_REF = re.compile(r"[A-Za-z0-9_-]+/[A-Za-z0-9_-]+(@([0-9]+|latest))?")


@dataclass(frozen=True)
class BuiltPipeline:
    name: str
    spec: PipelineSpec
    reranker: Reranker
    gate: BackendGate | None
    prompt_ref: str | None
    prompt_sha256: str | None
    rubric_ref: str | None = None
    rubric_sha256: str | None = None
    #: the worker's CPU gate, when the pipeline has local stages
    local_gate: BackendGate | None = None


def _backend_of(llm: Reranker) -> Any:
    return getattr(llm, "backend", None)


def _backend_label(llm: Reranker) -> str:
    backend = _backend_of(llm)
    if backend is None:
        return llm.name
    identity = backend.identity()
    return ":".join(str(identity.get(k, "")) for k in ("provider", "model")) + (
        f"@{identity['base_url']}" if "base_url" in identity else ""
    )


class Pipelines:
    def __init__(self, config: ServiceConfig, cache: DiskCache | None) -> None:
        self.config = config
        self.cache = cache
        self.gates: dict[str, BackendGate] = {}
        #: one for every local stage of every pipeline: they share this worker's cores
        self.local_gate = BackendGate(
            "local",
            concurrency=config.limits.local_concurrency,
            queue=config.limits.local_queue,
            what="the local (CPU) stages' queue",
        )
        #: pipelines set aside at start (``allow_partial``): name -> why
        self.failed: dict[str, str] = {}
        self._built: dict[tuple[str, str | None, str | None], BuiltPipeline] = {}
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Check the configured rubrics, build every pipeline and load its local models
        (blocking: call it off the event loop). Raises ``StartupError`` naming the first
        pipeline that fails, or with ``allow_partial`` when none could be built."""
        for name, path in self.config.rubrics.items():
            try:
                load_rubric(path)
            except Exception as exc:
                raise StartupError({f"rubric {name!r}": _describe(exc)}) from exc
        for name in self.config.pipelines:
            try:
                self._warm_up(self._build(name, None, None))
            except Exception as exc:
                if not self.config.allow_partial:
                    raise StartupError({f"pipeline {name!r}": _describe(exc)}) from exc
                self.failed[name] = _describe(exc)
                logger.error("pipeline %r could not be built; serving the others: %s", name, exc)
        if self.failed and not self.available:
            raise StartupError({f"pipeline {name!r}": why for name, why in self.failed.items()})

    @staticmethod
    def _warm_up(built: BuiltPipeline) -> None:
        """Load every local stage's model now, not on the first request."""
        for stage in getattr(built.reranker, "stages", []):
            if not stage.uses_llm:
                stage.reranker.rerank("warm up", ["a passage to load the model"])

    @property
    def names(self) -> list[str]:
        """Every configured pipeline, served or not."""
        return list(self.config.pipelines)

    @property
    def available(self) -> list[str]:
        """The pipelines this service answers with (all of them unless some failed to start)."""
        return [name for name in self.config.pipelines if name not in self.failed]

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def resolve(self, model: str) -> str:
        if model == "default":
            return self.config.default
        if model not in self.config.pipelines:
            raise UserError(f"unknown model {model!r}; this service has: default, {', '.join(self.names)}")
        return model

    def check_available(self, name: str) -> None:
        if name in self.failed:
            raise PipelineUnavailableError(
                f"pipeline {name!r} is unavailable: it failed to start ({self.failed[name]}); "
                f"this service answers with: {', '.join(self.available)}"
            )

    def _gate_for(self, llm: Reranker) -> BackendGate:
        label = _backend_label(llm)
        if label not in self.gates:
            self.gates[label] = BackendGate(
                label, concurrency=self.limits.llm_concurrency, queue=self.limits.llm_queue
            )
        return self.gates[label]

    def _build(self, name: str, prompt: str | None, rubric: str | None) -> BuiltPipeline:
        spec = self.config.pipelines[name]
        changes: dict[str, Any] = {"fallback": True}  # an LLM failure degrades, never fails a request
        if prompt is not None:
            changes["prompt"] = prompt
        if rubric is not None:
            changes["rubric"] = self.config.rubrics[rubric]
        spec = spec.with_changes(**changes)
        gate = None
        prompt_ref = prompt_sha = rubric_ref = rubric_sha = None
        if spec.llm is not None:
            llm = spec.build_llm(cache=self.cache)
            gate = self._gate_for(llm)
            loaded = getattr(llm, "prompt", None)
            prompt_ref, prompt_sha = getattr(loaded, "ref", None), getattr(loaded, "sha256", None)
            spec = spec.with_changes(llm=GatedLLM(llm, gate))
            used = getattr(llm, "rubric", None)
            rubric_ref, rubric_sha = getattr(used, "ref", None), getattr(used, "sha256", None)
        local_gate = None
        if spec.narrow_with:
            local_gate = self.local_gate
            last = len(spec.narrow_with) - 1
            spec = spec.with_changes(
                narrow_with=tuple(
                    GatedLocal(
                        build_stage(stage, cache=self.cache) if isinstance(stage, str) else stage,
                        local_gate,
                        last=index == last,
                    )
                    for index, stage in enumerate(spec.narrow_with)
                )
            )
        built = BuiltPipeline(
            name,
            spec,
            spec.build(cache=self.cache),
            gate,
            prompt_ref,
            prompt_sha,
            rubric_ref,
            rubric_sha,
            local_gate,
        )
        self._built[(name, prompt, rubric)] = built
        return built

    async def get(self, name: str, *, prompt: str | None = None, rubric: str | None = None) -> BuiltPipeline:
        self.check_available(name)
        if prompt is not None and not _PROMPT_REF.fullmatch(prompt):
            raise UserError(f"prompt {prompt!r} is not a prompt ref (family/name@N)")
        if rubric is not None and rubric not in self.config.rubrics:
            raise UserError(f"unknown rubric {rubric!r}; configured: {sorted(self.config.rubrics) or 'none'}")
        if (prompt is not None or rubric is not None) and self.config.pipelines[name].llm is None:
            raise UserError(f"pipeline {name!r} has no LLM stage: prompt and rubric do not apply")
        key = (name, prompt, rubric)
        if key in self._built:
            return self._built[key]
        async with self._lock:
            if key not in self._built:
                # building loads prompts and may start a model: off the event loop
                await asyncio.to_thread(self._build, name, prompt, rubric)
            return self._built[key]

    def close(self) -> None:
        """Close the LLM clients and stop the servers this process started (llama.cpp):
        uvicorn ends a SIGTERM by re-raising it, so ``atexit`` would never run. Servers
        started for a pipeline whose build failed later on are stopped too."""
        for built in self._built.values():
            llm = built.spec.llm
            backend = _backend_of(llm.inner) if isinstance(llm, GatedLLM) else None
            if backend is None:
                continue
            backend.close()
            owner = getattr(getattr(backend, "endpoint", None), "owner", None)
            stop = getattr(owner, "stop", None)
            if callable(stop):
                stop()
        stop_shared_servers()

    def llm_endpoints(self) -> Mapping[str, tuple[str, int]]:
        """host and port of every LLM backend's URL, for the readiness probe."""
        found: dict[str, tuple[str, int]] = {}
        for built in self._built.values():
            if built.name in self.failed:
                continue
            llm = built.spec.llm
            backend = _backend_of(llm.inner) if isinstance(llm, GatedLLM) else None
            url = getattr(getattr(backend, "endpoint", None), "base_url", None)
            if url:
                parts = urlsplit(url)
                if parts.hostname:
                    port = parts.port or (443 if parts.scheme == "https" else 80)
                    found[_backend_label(llm.inner)] = (parts.hostname, port)  # type: ignore[union-attr]
        return found
