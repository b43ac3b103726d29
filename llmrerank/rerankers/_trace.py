"""The cascade's JSONL trace: one line per request, appended safely from many threads."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..types import Ranking

__all__ = ["TraceWriter"]


class TraceWriter:
    """Appends what each request did (stage scores, final ids, prompts, rubrics, models, tokens)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, ranking: Ranking) -> None:
        stage_scores: dict[str, dict[str, float]] = {}
        for item in ranking.items:
            for stage, value in item.stage_scores.items():
                stage_scores.setdefault(stage, {})[item.id] = value
        record: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(),
            "query": ranking.query,
            "candidate_ids": sorted(item.id for item in ranking.items),
            "stage_scores": stage_scores,
            "final_ids": ranking.ids(),
            "stages": ranking.to_dict()["stages"],
            "prompts": sorted({f"{c.prompt_ref} {c.prompt_sha256}" for c in ranking.calls}),
            "rubrics": sorted({f"{c.rubric_ref} {c.rubric_sha256}" for c in ranking.calls if c.rubric_ref}),
            "models": sorted({f"{c.backend}:{c.model}" for c in ranking.calls}),
            "prompt_tokens": ranking.usage.prompt_tokens,
            "completion_tokens": ranking.usage.completion_tokens,
            "degraded_reason": ranking.degraded_reason,
        }
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
