"""Reading a YAML config file that must hold a mapping: a pipeline, an experiment, a service."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

__all__ = ["read_yaml_mapping"]


def read_yaml_mapping(path: str | os.PathLike[str], what: str, expected: str) -> Mapping[str, Any]:
    """The mapping in ``path``; a ``UserError`` naming ``what`` the file is when it cannot be
    read or parsed, and saying ``expected`` when it holds something else."""
    try:
        raw = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise UserError(f"{path}: {expected}")
    return raw
