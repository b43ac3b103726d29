"""Settings read from the environment: where offline assets and project datasets live.

Nothing here knows the repository's layout: ``LLMRERANK_ASSETS`` names the folder holding
``datasets/`` and ``models/`` (the Makefile and the tests point it at the project's assets),
and ``LLMRERANK_DATASETS`` adds folders of golden sets to ``./evals/datasets``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

__all__ = [
    "ASSETS_ENV",
    "BEIR_SETS",
    "CACHE_DIR_ENV",
    "DATASETS_ENV",
    "DEFAULT_CACHE_DIR",
    "TREC_FILES",
    "asset",
    "assets_dir",
    "cache_dir",
    "dataset_dirs",
]

ASSETS_ENV = "LLMRERANK_ASSETS"
DATASETS_ENV = "LLMRERANK_DATASETS"
CACHE_DIR_ENV = "LLMRERANK_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/llmrerank"

# the offline TREC DL sets, relative to the assets folder
TREC_FILES = {
    "dl19": (
        "datasets/trec-dl-2019-passage/candidates.bm25_top100.jsonl",
        "datasets/trec-dl-2019-passage/qrels.dl19-passage.txt",
    ),
    "dl20": (
        "datasets/trec-dl-2020-passage/candidates.bm25_top100.jsonl",
        "datasets/trec-dl-2020-passage/qrels.dl20-passage.txt",
    ),
}

# the offline BEIR sets: name -> (folder relative to the assets folder, qrels split)
BEIR_SETS = {
    "scifact": ("datasets/beir-scifact", "test"),
    "scifact-train": ("datasets/beir-scifact", "train"),
}


def assets_dir() -> Path | None:
    """The assets folder from ``LLMRERANK_ASSETS``, or None when it is not set."""
    configured = os.environ.get(ASSETS_ENV)
    return Path(configured).expanduser() if configured else None


def asset(relative: str) -> Path:
    folder = assets_dir()
    if folder is None:
        raise UserError(
            f"set {ASSETS_ENV} to the folder holding datasets/ and models/ (needed for {relative})"
        )
    path = folder / relative
    if not path.exists():
        raise UserError(f"{path} is missing; set {ASSETS_ENV} to the folder holding datasets/ and models/")
    return path


def dataset_dirs() -> list[Path]:
    """Folders searched for named golden sets: ``LLMRERANK_DATASETS`` (``os.pathsep``-separated),
    then ``evals/datasets`` under the current directory."""
    configured = os.environ.get(DATASETS_ENV, "")
    folders = [Path(p).expanduser() for p in configured.split(os.pathsep) if p]
    return [*folders, Path("evals") / "datasets"]


def cache_dir(explicit: str | None = None) -> str:
    """The response cache folder: ``explicit``, else ``LLMRERANK_CACHE_DIR``, else the default."""
    return explicit or os.environ.get(CACHE_DIR_ENV, DEFAULT_CACHE_DIR)
