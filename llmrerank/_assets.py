"""Where the offline datasets and models live: ``LLMRERANK_ASSETS``, else ``shared/assets``
beside the repository checkout."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    return Path(os.environ.get("LLMRERANK_ASSETS", REPO_ROOT.parent / "shared" / "assets"))


def asset(relative: str) -> Path:
    path = assets_dir() / relative
    if not path.exists():
        raise UserError(
            f"{path} is missing; set LLMRERANK_ASSETS to the folder holding datasets/ and models/"
        )
    return path


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
