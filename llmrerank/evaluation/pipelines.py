"""From an experiment's pipeline description to a ``Reranker``."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Any

from ..base import Reranker
from ..cache import DiskCache
from ..errors import UserError
from ..types import CandidateLike, Ranking, as_candidates, ranking_from_order

__all__ = ["FirstStage", "PipelineSpec", "build_pipeline", "expand_pipelines"]


@dataclass(frozen=True)
class PipelineSpec:
    """One configuration: optional narrowing stages, then optionally an LLM stage."""

    name: str
    narrow_with: tuple[str, ...] = ()
    narrow_to: tuple[int, ...] = ()
    llm: str | None = None
    base_url: str | None = None
    strategy: str = "pointwise"
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    rubric: str | None = None
    max_concurrency: int = 8
    llm_timeout_s: float | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> PipelineSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown or "name" not in raw:
            raise UserError(f"pipeline {raw.get('name', '?')!r}: unknown keys {sorted(unknown)} or no name")
        values = dict(raw)
        for key in ("narrow_with", "narrow_to"):
            value = values.get(key, ())
            values[key] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "narrow_with": list(self.narrow_with),
            "narrow_to": list(self.narrow_to),
            "llm": self.llm,
            "strategy": self.strategy if self.llm else None,
            "strategy_options": dict(self.strategy_options),
            "prompt": self.prompt,
            "rubric": self.rubric,
        }


def _axis_label(axis: str, value: Any) -> str:
    if value is None:
        return "default"
    return PurePath(value).stem if axis == "rubric" else str(value)


def expand_pipelines(raw: Mapping[str, Any]) -> list[PipelineSpec]:
    """A pipeline whose ``llm``, ``prompt``, ``rubric`` or ``strategy`` is a list becomes one
    configuration per combination (prompt versions × models × rubrics)."""
    axes = ("llm", "prompt", "rubric", "strategy")
    options = {a: raw[a] if isinstance(raw.get(a), list) else [raw.get(a)] for a in axes}
    specs = []
    for combo in itertools.product(*(options[a] for a in axes)):
        chosen = dict(zip(axes, combo, strict=True))
        varied = [_axis_label(a, v) for a, v in chosen.items() if isinstance(raw.get(a), list)]
        name = raw["name"] + (f"[{','.join(varied)}]" if varied else "")
        fixed = {k: v for k, v in raw.items() if k not in axes}
        # a null in a list means the default (no rubric: the built-in one, no prompt: the newest)
        values = {**fixed, **{k: v for k, v in chosen.items() if v is not None}, "name": name}
        specs.append(PipelineSpec.from_config(values))
    return specs


class FirstStage:
    """Keeps the first-stage order: the baseline every other pipeline is compared with."""

    is_llm = False
    name = "first-stage"

    def rerank(self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None) -> Ranking:
        return ranking_from_order(query, as_candidates(candidates), stage=self.name).trimmed(top_k)

    async def arerank(
        self, query: str, candidates: Sequence[CandidateLike], *, top_k: int | None = None
    ) -> Ranking:
        return self.rerank(query, candidates, top_k=top_k)


def _llm(spec: PipelineSpec, cache: DiskCache | None) -> Reranker:
    from ..backends import make_backend
    from ..reranker import LLMReranker
    from ..rubrics import Rubric
    from ..strategies import make_strategy

    assert spec.llm is not None
    return LLMReranker(
        make_backend(spec.llm, base_url=spec.base_url),
        strategy=make_strategy(spec.strategy, **spec.strategy_options),
        prompt=spec.prompt,
        rubric=Rubric.load(spec.rubric) if spec.rubric else None,
        cache=cache,
        max_concurrency=spec.max_concurrency,
    )


def build_pipeline(spec: PipelineSpec, *, cache: DiskCache | None = None) -> Reranker:
    from ..cascade import Cascade, Stage, parse_stage_spec

    if len(spec.narrow_to) not in (0, len(spec.narrow_with)):
        raise UserError(f"pipeline {spec.name}: one narrow_to per narrow_with stage")
    keeps = spec.narrow_to or (None,) * len(spec.narrow_with)
    stages = []
    for stage_spec, keep in zip(spec.narrow_with, keeps, strict=True):
        options: dict[str, Any] = {"cache": cache} if stage_spec.startswith("dense") else {}
        stages.append(Stage(parse_stage_spec(stage_spec, **options), keep=keep))
    if spec.llm:
        stages.append(Stage(_llm(spec, cache), timeout_s=spec.llm_timeout_s))
    if not stages:
        return FirstStage()
    return Cascade(stages, name=spec.name)


def with_overrides(spec: PipelineSpec, **changes: Any) -> PipelineSpec:
    return replace(spec, **changes)
