"""An experiment: datasets × pipelines × repeats, the metrics to report, and where its
queries run.

``load_experiment`` reads the YAML config. Its ``batch`` and ``executor`` entries are parsed
there into typed options (``BatchOptions``, ``RayOptions``; None for online, in this
process), so a misspelt option fails when the config loads, not halfway through a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .._yaml import read_yaml_mapping
from ..errors import UserError
from ..pipeline import PipelineSpec
from .batch_state import BatchOptions
from .metrics import DEFAULT_METRICS
from .pipelines import expand_pipelines
from .ray_executor import RayOptions

__all__ = ["DatasetSpec", "Experiment", "batch_options", "executor_options", "load_experiment"]

Options = TypeVar("Options", BatchOptions, RayOptions)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    limit: int | None = None
    depth: int | None = None


@dataclass(frozen=True)
class Experiment:
    """``batch``: answer LLM calls through the provider's batch API (None: online);
    ``executor``: rerank on a Ray cluster (None: here, in this process)."""

    name: str
    datasets: tuple[DatasetSpec, ...]
    pipelines: tuple[PipelineSpec, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    repeats: int = 1
    cache_dir: str | None = None
    source: str = ""
    batch: BatchOptions | None = None
    executor: RayOptions | None = None


def _from_mapping(kind: type[Options], key: str, value: Mapping[str, Any]) -> Options:
    known = {f.name for f in fields(kind)}
    unknown = set(value) - known
    if unknown:
        raise UserError(f"{key}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return kind(**value)


def batch_options(value: Any) -> BatchOptions | None:
    """``batch: true``, ``false`` (or absent), or a mapping of ``BatchOptions`` fields."""
    if value is None or value is False:
        return None
    if value is True:
        return BatchOptions()
    if not isinstance(value, Mapping):
        raise UserError(f"batch: expects true/false or a mapping of {[f.name for f in fields(BatchOptions)]}")
    return _from_mapping(BatchOptions, "batch", value)


def executor_options(value: Any) -> RayOptions | None:
    """``executor: local`` (or absent), ``ray``, or a mapping of ``RayOptions`` fields (Ray)."""
    if value is None or value == "local":
        return None
    if value == "ray":
        return RayOptions()
    if not isinstance(value, Mapping):
        raise UserError(f"executor: 'local', 'ray' or a mapping of RayOptions fields, not {value!r}")
    return _from_mapping(RayOptions, "executor", value)


def load_experiment(path: str | Path) -> Experiment:
    file = Path(path)
    needs = "an experiment needs 'datasets' and 'pipelines'"
    raw = read_yaml_mapping(file, "experiment", needs)
    if "pipelines" not in raw or "datasets" not in raw:
        raise UserError(f"{file}: {needs}")
    datasets = tuple(
        DatasetSpec(d) if isinstance(d, str) else DatasetSpec(d["name"], d.get("limit"), d.get("depth"))
        for d in raw["datasets"]
    )
    pipelines = tuple(spec for p in raw["pipelines"] for spec in expand_pipelines(p))
    return Experiment(
        name=raw.get("name", file.stem),
        datasets=datasets,
        pipelines=pipelines,
        metrics=tuple(raw.get("metrics", DEFAULT_METRICS)),
        repeats=int(raw.get("repeats", 1)),
        cache_dir=raw.get("cache_dir"),
        source=str(file),
        batch=batch_options(raw.get("batch")),
        executor=executor_options(raw.get("executor")),
    )
