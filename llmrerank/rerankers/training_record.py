"""What a local model folder says about its training: ``llmrerank-training.json``.

``llmrerank distill`` writes the record beside the weights; stages are built from the folder
as from any other, and results and reports name the labels a distilled stage learnt from
through ``training_summary``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["TRAINING_RECORD", "training_fingerprint", "training_summary"]

TRAINING_RECORD = "llmrerank-training.json"


def training_fingerprint(model: str) -> str | None:
    """sha256 of a model folder's training record (None without one). Every ``distill`` run
    writes a new record, so a folder trained again in place gets a new fingerprint: the dense
    stage's embedding cache keys include it, and never serve the old weights' vectors."""
    path = Path(model).expanduser() / TRAINING_RECORD
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return None


def training_summary(model: str) -> dict[str, Any] | None:
    """For a model folder with a training record: its base model, labels file and sha256,
    teachers, counts, best validation nDCG@10 and the eval sets checked for overlap; None
    for a hub name or a folder without one."""
    path = Path(model).expanduser() / TRAINING_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
        labels = record["labels"]
        return {
            "base_model": record["base_model"],
            "labels": labels["path"],
            "labels_sha256": labels["sha256"],
            "teachers": [
                p.get("model") or p.get("dataset") or p.get("source", "?") for p in labels["provenance"]
            ],
            "queries": record["counts"]["queries"],
            "pairs": record["counts"]["pairs"],
            "validation_ndcg@10": record["validation"]["best"],
            "eval_sets_checked": record["eval_sets"],
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a readable training record: {exc}") from None
