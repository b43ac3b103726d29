"""Versioned files on a search path (``ROOT/NAME/vN.EXT``), shared by prompts and rubrics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["find_versions"]


def find_versions(
    roots: Sequence[Path], name: str, version_file: re.Pattern[str]
) -> tuple[Path, dict[int, Path]] | None:
    """The first root holding ``name`` with at least one version file, and its files by
    version number (``version_file`` names the number ``version``); None when no root has it."""
    for root in roots:
        folder = root / name
        if not folder.is_dir():
            continue
        versions = {}
        for file in folder.iterdir():
            match = version_file.match(file.name)
            if match:
                versions[int(match["version"])] = file
        if versions:
            return root, versions
    return None
