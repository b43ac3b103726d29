"""The one place a reranking pipeline is assembled: narrowing stages, then the LLM.

A ``PipelineSpec`` is plain data — loadable from a dict or YAML, written by CLI flags, an
eval config or a service config — and ``spec.build(cache=...)`` turns it into a
``Reranker``. ``hybrid()``, the CLI, the demo, the eval harness and the service all build
through it, so one spec gives one ranking wherever it runs.

The rule for counts: each narrowing stage passes its ``keep`` best on to the next
(``narrow_to``: one value per narrowing stage, or one for all; when not given, 20, except
that a last stage with no LLM after it keeps ``top_k``). The LLM stage is asked for
``top_k`` (or a call's own ``top_k`` when fewer), so adaptive strategies such as heapsort
stop once they know the head, and the result is trimmed to it (None: the full ranking).
What a stage cut stays below the survivors in its earlier order, so an untrimmed result
always holds every candidate.

Stage specs (``llmrerank.stages``): ``KIND:[MODEL]`` with options after ``?`` as in a URL,
``cross-encoder:?batch_size=16&device=cpu``; the kinds are ``dense``, ``cross-encoder``
(empty MODEL: the offline default), ``rerank-api`` (a rerank server) and whatever
``register_stage`` or the ``llmrerank.stages`` entry points add.
MODEL may be a folder ``llmrerank distill`` wrote; ``stage_training`` reads what it was
trained on, and ``to_dict`` lists that under ``trained_on`` so results and reports name it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ._yaml import read_yaml_mapping
from .errors import UserError
from .rerankers.protocol import FirstStage, Reranker
from .rerankers.training_record import training_summary
from .stages import build_stage, parse_stage_spec
from .types import as_count, as_seconds

if TYPE_CHECKING:
    from .cache import DiskCache
    from .pricing import PriceTable
    from .retry import RetryPolicy
    from .rubrics import Rubric

__all__ = [
    "DEFAULT_NARROW_TO",
    "FirstStage",
    "PipelineSpec",
    "build_stage",
    "hybrid",
    "stage_training",
]

DEFAULT_NARROW_TO = 20

StageLike = str | Reranker


def stage_training(spec: StageLike) -> dict[str, Any] | None:
    """What a stage whose model is a folder ``llmrerank distill`` wrote was trained on
    (``training_summary``), with the stage named; None for any other stage."""
    model = parse_stage_spec(spec)[1] if isinstance(spec, str) else getattr(spec, "model_name", None)
    summary = training_summary(model) if isinstance(model, str) and model else None
    if summary is None:
        return None
    return {"stage": spec if isinstance(spec, str) else getattr(spec, "name", "stage"), **summary}


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@dataclass(frozen=True)
class PipelineSpec:
    """Optional narrowing stages, then optionally an LLM stage.

    ``narrow_with``: stage specs (``"dense:"``) or built rerankers. ``llm``: a model string
    (``"openai:gpt-4o-mini"``, see ``make_backend``) or a built reranker. ``strategy``,
    ``strategy_options``, ``prompt`` and ``rubric`` (a ref such as ``support-kb@2``, a YAML
    path or a ``Rubric``) configure a model-string LLM. ``llm_timeout_s`` is the LLM stage's
    time budget: past it, or when the LLM's backend, parsing or a budget fails, the earlier
    order is kept and the ranking says ``degraded`` (unless ``fallback`` is false); a
    caller's mistake always raises. ``call_timeout_s`` bounds each LLM call, ``retry`` its
    retries.
    """

    name: str = "pipeline"
    narrow_with: tuple[StageLike, ...] = ()
    narrow_to: tuple[int, ...] = ()
    llm: StageLike | None = None
    base_url: str | None = None
    strategy: str = "pointwise"
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    rubric: str | Rubric | None = None
    max_concurrency: int = 8
    llm_timeout_s: float | None = None
    call_timeout_s: float | None = None
    retry: RetryPolicy | None = None
    top_k: int | None = None
    fallback: bool = True
    skip_margin: float | None = None
    bypass_llm: bool | None = None
    trace: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        """Counts and time bounds are checked here, so a bad value fails where it is set (a
        config file, a flag, ``hybrid()``), never later as a degraded ranking."""
        where = f"pipeline {self.name!r}"
        if self.top_k is not None:
            as_count(self.top_k, f"{where}: top_k")
        as_count(self.max_concurrency, f"{where}: max_concurrency")
        if not isinstance(self.narrow_to, tuple):
            raise UserError(f"{where}: narrow_to must be a tuple of counts, got {self.narrow_to!r:.40}")
        for keep in self.narrow_to:
            as_count(keep, f"{where}: narrow_to")
        for key in ("llm_timeout_s", "call_timeout_s"):
            value = getattr(self, key)
            if value is not None:
                as_seconds(value, f"{where}: {key}")
        self.keeps()

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PipelineSpec:
        """From a config mapping (YAML/JSON): the field names above; lists for tuples."""
        known = {f.name for f in fields(cls)} - {"retry"}
        unknown = set(raw) - known
        if unknown:
            raise UserError(
                f"pipeline {raw.get('name', '?')!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        values = dict(raw)
        for key in ("narrow_with", "narrow_to"):
            values[key] = _as_tuple(values.get(key))
        if not isinstance(values.get("strategy_options") or {}, Mapping):
            raise UserError(f"pipeline {raw.get('name', '?')!r}: strategy_options must be a mapping")
        values["strategy_options"] = dict(values.get("strategy_options") or {})
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> PipelineSpec:
        return cls.from_dict(
            read_yaml_mapping(path, "pipeline", "a pipeline is a mapping of the PipelineSpec fields")
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as data (built rerankers appear by name), for results and traces."""

        def label(value: StageLike | None) -> str | None:
            return value if value is None or isinstance(value, str) else value.name

        data: dict[str, Any] = {
            "name": self.name,
            "narrow_with": [label(s) for s in self.narrow_with],
            "narrow_to": list(self.keeps()),
            "llm": label(self.llm),
            "strategy": self.strategy if isinstance(self.llm, str) else None,
            "strategy_options": dict(self.strategy_options),
            "prompt": self.prompt,
            "rubric": self.rubric
            if self.rubric is None or isinstance(self.rubric, (str, PurePath))
            else self.rubric.ref,
            "top_k": self.top_k,
        }
        trained = [t for t in (stage_training(s) for s in self.narrow_with) if t is not None]
        if trained:  # a distilled stage names its training labels
            data["trained_on"] = trained
        return data

    def with_changes(self, **changes: Any) -> PipelineSpec:
        return replace(self, **changes)

    # -- the counts rule ----------------------------------------------------------------
    def keeps(self) -> tuple[int | None, ...]:
        """How many each narrowing stage passes on (see the module docstring)."""
        n = len(self.narrow_with)
        if not self.narrow_to:
            last = DEFAULT_NARROW_TO if self.llm is not None else self.top_k
            keeps: tuple[int | None, ...] = (DEFAULT_NARROW_TO,) * (n - 1) + (last,) if n else ()
        elif len(self.narrow_to) == 1:
            keeps = self.narrow_to * n
        elif len(self.narrow_to) == n:
            keeps = self.narrow_to
        else:
            raise UserError(
                f"pipeline {self.name!r}: {n} narrowing stages but {len(self.narrow_to)} narrow_to "
                "values; give one per stage or one for all"
            )
        return keeps

    # -- building -----------------------------------------------------------------------
    def build_llm(self, *, cache: DiskCache | None = None) -> Reranker:
        """The LLM stage alone."""
        if self.llm is None:
            raise UserError(f"pipeline {self.name!r} has no llm")
        if not isinstance(self.llm, str):
            return self.llm
        from .backends import make_backend
        from .rerankers.llm import LLMReranker
        from .rubrics import load_rubric
        from .strategies import make_strategy

        options: dict[str, Any] = {}
        if self.call_timeout_s is not None:
            options["timeout_s"] = self.call_timeout_s
        return LLMReranker(
            make_backend(self.llm, base_url=self.base_url, **options),
            strategy=make_strategy(self.strategy, **self.strategy_options),
            prompt=self.prompt,
            rubric=load_rubric(self.rubric) if isinstance(self.rubric, (str, PurePath)) else self.rubric,
            cache=cache,
            max_concurrency=self.max_concurrency,
            retry=self.retry,
        )

    def build(self, *, cache: DiskCache | None = None, prices: PriceTable | None = None) -> Reranker:
        """Assemble the pipeline. With no stage at all it keeps the first-stage order."""
        from .rerankers.cascade import Cascade, Stage

        stages = [
            Stage(build_stage(s, cache=cache) if isinstance(s, str) else s, keep=keep)
            for s, keep in zip(self.narrow_with, self.keeps(), strict=True)
        ]
        if self.llm is not None:
            stages.append(
                Stage(
                    self.build_llm(cache=cache),
                    keep=self.top_k,
                    timeout_s=self.llm_timeout_s,
                    fallback=self.fallback,
                )
            )
        if not stages:
            return FirstStage()
        return Cascade(
            stages,
            trace=self.trace,
            bypass_llm=self.bypass_llm,
            skip_margin=self.skip_margin,
            prices=prices,
            top_k=self.top_k,
            name=self.name,
        )


def hybrid(
    llm: StageLike,
    *,
    strategy: str = "pointwise",
    narrow_with: StageLike | Sequence[StageLike] = "dense:",
    narrow_to: int | Sequence[int] = DEFAULT_NARROW_TO,
    top_k: int | None = 5,
    llm_timeout_s: float | None = None,
    trace: str | os.PathLike[str] | None = None,
    bypass_llm: bool | None = None,
    skip_margin: float | None = None,
    cache: DiskCache | None = None,
) -> Reranker:
    """The common case in one line: local stage(s) narrow, the LLM orders the survivors.

    ``hybrid(llm, narrow_with=["dense:", "cross-encoder:"], narrow_to=[50, 20])`` is
    dense 100 → 50, cross-encoder 50 → 20, LLM 20 → ``top_k``. ``llm`` is a built reranker
    or a model string (``"openai:gpt-4o-mini"``, run with ``strategy``). Sugar over
    ``PipelineSpec``.
    """
    return PipelineSpec(
        name="hybrid",
        strategy=strategy,
        narrow_with=_as_tuple(narrow_with) if not isinstance(narrow_with, Reranker) else (narrow_with,),
        narrow_to=_as_tuple(narrow_to),
        llm=llm,
        top_k=top_k,
        llm_timeout_s=llm_timeout_s,
        trace=trace,
        bypass_llm=bypass_llm,
        skip_margin=skip_margin,
    ).build(cache=cache)
