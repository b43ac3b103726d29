"""Pipelines of an experiment: ``PipelineSpec`` from a config entry, with list axes expanded."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from ..pipeline import PipelineSpec

__all__ = ["expand_pipelines"]

AXES = ("llm", "prompt", "rubric", "strategy")


def _axis_label(axis: str, value: Any) -> str:
    if value is None:
        return "default"
    if axis != "rubric":
        return str(value)
    path = PurePath(value)
    versioned = re.fullmatch(r"v(\d+)\.ya?ml", path.name)  # a library file: name@N
    return f"{path.parent.name}@{versioned[1]}" if versioned else path.stem


def expand_pipelines(raw: Mapping[str, Any]) -> list[PipelineSpec]:
    """A pipeline whose ``llm``, ``prompt``, ``rubric`` or ``strategy`` is a list becomes one
    configuration per combination (prompt versions × models × rubrics)."""
    options = {a: raw[a] if isinstance(raw.get(a), list) else [raw.get(a)] for a in AXES}
    specs = []
    for combo in itertools.product(*(options[a] for a in AXES)):
        chosen = dict(zip(AXES, combo, strict=True))
        varied = [_axis_label(a, v) for a, v in chosen.items() if isinstance(raw.get(a), list)]
        name = raw["name"] + (f"[{','.join(varied)}]" if varied else "")
        fixed = {k: v for k, v in raw.items() if k not in AXES}
        # a null in a list means the default (no rubric: the built-in one, no prompt: the newest)
        values = {**fixed, **{k: v for k, v in chosen.items() if v is not None}, "name": name}
        specs.append(PipelineSpec.from_dict(values))
    return specs
