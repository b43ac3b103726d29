"""``llmrerank eval int8-check``: is a local stage's int8 export good enough on this CPU?

The stage's model reranks every query of DL19 and DL20 (BM25's top 100 for a dense stage,
top 50 for a cross-encoder) with its ONNX fp32 export and with its int8 export, query by
query in turn (so the two share whatever load the host has); nDCG@10 of each by ranx, and
the speed-up as fp32's total time over int8's. The result is kept with the int8 export
(``int8-check.json``), and ``quantize="auto"`` reads it there: int8 is used only where this
check, on this CPU (``host.host_cpu``), found it within 0.005 nDCG@10 of fp32 on both sets
and faster.
A check limited to some queries (``limit``) is recorded but never lets int8 in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..pipeline import build_stage
from ..rerankers import onnx_backend
from ..rerankers.cross_encoder import CrossEncoderReranker
from ..rerankers.dense import DenseReranker
from ..stages import parse_stage_spec
from .datasets import load_dataset
from .metrics import evaluate

__all__ = ["CHECK_SETS", "check_int8"]

# the sets quantize="auto" asks a check to cover, as the stages read them
CHECK_SETS = DenseReranker.int8_check_sets
DEPTHS = {DenseReranker: 100, CrossEncoderReranker: 50}


def _variant(spec: str, quantize: str) -> DenseReranker | CrossEncoderReranker:
    kind, model, options = parse_stage_spec(spec)
    options.update(backend="onnx", quantize=quantize, device="cpu")
    query = "&".join(f"{key}={value}" for key, value in options.items())
    stage = build_stage(f"{kind}:{model}?{query}")
    if not isinstance(stage, DenseReranker | CrossEncoderReranker):
        raise UserError(f"int8-check needs a dense or cross-encoder stage, not {spec!r}")
    return stage


def check_int8(
    spec: str = "dense:",
    *,
    sets: Sequence[str] = CHECK_SETS,
    limit: int | None = None,
    depth: int | None = None,
) -> dict[str, Any]:
    """Measure fp32 against int8 for the stage ``spec`` (e.g. ``dense:``,
    ``cross-encoder:?onnx_cache_dir=...``) and record the result with its int8 export;
    returns the record, with ``path`` (where it was kept) and ``refusal`` (why
    ``quantize="auto"`` would still not use int8 here, or None)."""
    fp32, int8 = _variant(spec, "none"), _variant(spec, "int8")
    fp32.load(), int8.load()  # exported and opened before the clock starts
    depth = depth or DEPTHS[type(fp32)]
    seconds = {"fp32": 0.0, "int8": 0.0}
    record_sets: dict[str, Any] = {}
    for name in sets:
        full = load_dataset(name)
        golden = full.limited(limit)
        runs: dict[str, dict[str, dict[str, float]]] = {"fp32": {}, "int8": {}}
        for query in golden.queries:
            candidates = list(query.candidates[:depth])
            for label, stage in (("fp32", fp32), ("int8", int8)):
                started = time.perf_counter()
                ranking = stage.rerank(query.query, candidates)
                seconds[label] += time.perf_counter() - started
                runs[label][query.qid] = {item.id: float(len(ranking) - i) for i, item in enumerate(ranking)}
        scores = {
            label: evaluate(golden.qrels, run, ["ndcg@10"], rel_threshold=golden.rel_threshold)[0]["ndcg@10"]
            for label, run in runs.items()
        }
        record_sets[name] = {
            "fp32": round(scores["fp32"], 4),
            "int8": round(scores["int8"], 4),
            "delta": round(scores["int8"] - scores["fp32"], 4),
            "queries": len(golden.queries),
            "complete": len(golden.queries) == len(full.queries),
        }
    import onnxruntime

    record: dict[str, Any] = {
        "command": f"llmrerank eval int8-check {spec!r}",
        "model": fp32.model_name,
        "depth": depth,
        "sets": record_sets,
        "fp32_s": round(seconds["fp32"], 3),
        "int8_s": round(seconds["int8"], 3),
        "speedup": round(seconds["fp32"] / max(seconds["int8"], 1e-9), 3),
        "onnxruntime": onnxruntime.__version__,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path: Path = int8.record_int8_check(record)
    # as kept with the export: with the recipe and this CPU's identity added
    written = onnx_backend.read_record(path)
    if written is None:
        raise UserError(f"cannot read back the int8 check just written to {path}")
    return {**written, "path": str(path), "refusal": int8.int8_refusal()}
