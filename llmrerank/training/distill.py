"""Distil a labels file into a local stage: ``distill(labels, "cross-encoder:", out)``.

The labels' queries are split at the query level (a seeded shuffle; no query has passages
on both sides) into training and validation; the student trains with sentence-transformers'
trainers (``students.py``) and stops early on validation nDCG@10. Before anything trains,
the labels are checked against the evaluation sets the caller names: a query shared by id
or by normalised text is refused, so a distilled stage is never graded on what it learnt.

The output folder is a normal sentence-transformers model (``cross-encoder:DIR`` and
``dense:DIR`` load it wherever a stage spec goes) plus ``MODEL_CARD.md`` for people and
``llmrerank-training.json`` for tools (results and eval reports name a stage's training
labels from it: ``pipeline.stage_training``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._quiet import quiet_loading
from ..errors import UserError
from ..rerankers.training_record import TRAINING_RECORD
from .labels import LabelledQuery, file_sha256, group_by_query, normalise_query, read_labels
from .rows import TrainSettings
from .students import train_student

__all__ = ["TRAINING_RECORD", "check_leakage", "distill", "read_excluded_queries", "split_queries"]

STAGE_KINDS = {"cross-encoder": "cross-encoder", "ce": "cross-encoder", "dense": "dense"}


def split_queries(
    queries: Sequence[LabelledQuery], fraction: float, seed: int
) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """(train, validation): a seeded shuffle of whole queries; ``fraction`` of them (at
    least one when ``fraction > 0``, never all) validate."""
    if not 0 <= fraction < 1:
        raise UserError(f"validation fraction must be in [0, 1), got {fraction}")
    order = list(range(len(queries)))
    random.Random(seed).shuffle(order)
    n_val = round(len(queries) * fraction)
    if fraction > 0:
        n_val = min(max(1, n_val), len(queries) - 1)
    validation = {order[i] for i in range(n_val)}
    return (
        [q for i, q in enumerate(queries) if i not in validation],
        [q for i, q in enumerate(queries) if i in validation],
    )


def read_excluded_queries(path: str | os.PathLike[str]) -> list[tuple[str | None, str | None]]:
    """(id, text) pairs of queries never to train on: a JSONL file (``query_id``/``qid``
    and/or ``query`` per line) or plain text (each line a query's text or id)."""
    pairs: list[tuple[str | None, str | None]] = []
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read excluded queries {path}: {exc}") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            qid = record.get("query_id", record.get("qid"))
            text = record.get("query")
            pairs.append((None if qid is None else str(qid), text if isinstance(text, str) else None))
        else:
            pairs.append((line.strip(), line))
    return pairs


def check_leakage(
    queries: Sequence[LabelledQuery],
    *,
    eval_sets: Iterable[str] = (),
    excluded: Iterable[tuple[str | None, str | None]] = (),
) -> list[str]:
    """Raise ``UserError`` when a labelled query is in an evaluation set (by id or by
    normalised text); returns the names of the sets checked."""
    from ..evaluation.datasets import load_dataset

    forbidden: list[tuple[str, set[str], set[str]]] = []
    checked = []
    for name in eval_sets:
        golden = load_dataset(name)
        ids = {q.qid for q in golden.queries} | set(golden.qrels)
        texts = {normalise_query(q.query) for q in golden.queries}
        forbidden.append((golden.name, ids, texts))
        checked.append(golden.name)
    excluded = list(excluded)
    if excluded:
        forbidden.append(
            (
                "the excluded queries",
                {qid for qid, _ in excluded if qid},
                {normalise_query(text) for _, text in excluded if text},
            )
        )
    for name, ids, texts in forbidden:
        clashes = [q for q in queries if q.query_id in ids or normalise_query(q.query) in texts]
        if clashes:
            shown = ", ".join(f"{q.query_id} ({q.query[:40]!r})" for q in clashes[:5])
            raise UserError(
                f"{len(clashes)} labelled queries are in {name}, which the student would then be "
                f"graded on: {shown}{' …' if len(clashes) > 5 else ''}. Label other queries, or "
                "remove these from the labels file"
            )
    return checked


def _parse_stage(stage: str) -> tuple[str, str]:
    kind, sep, base = stage.partition(":")
    if not sep or kind not in STAGE_KINDS:
        raise UserError(f"stage {stage!r}: use cross-encoder:[BASE] or dense:[BASE]")
    if "?" in base:
        raise UserError(f"stage {stage!r}: distill takes no ?options; give a base model (path or name)")
    kind = STAGE_KINDS[kind]
    if not base:
        if kind == "cross-encoder":
            from ..rerankers.cross_encoder import default_cross_encoder

            base = default_cross_encoder()
        else:
            from ..rerankers.dense import default_dense_model

            base = default_dense_model()
    return kind, base


def _provenances(records: Iterable[Any]) -> list[dict[str, Any]]:
    unique: dict[str, dict[str, Any]] = {}
    for record in records:
        provenance = dict(record.provenance)
        unique.setdefault(json.dumps(provenance, sort_keys=True), provenance)
    return list(unique.values())


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("llmrerank", "sentence-transformers", "transformers", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _card(record: dict[str, Any]) -> str:
    labels, counts, settings, validation = (
        record["labels"],
        record["counts"],
        record["settings"],
        record["validation"],
    )
    lines = [
        f"# {record['stage']} distilled by llmrerank",
        "",
        f"A sentence-transformers {record['stage']} fine-tuned by `llmrerank distill` on graded "
        f"labels. Load it as a stage: `{record['stage']}:{record['output']}`.",
        "",
        "## Base model",
        "",
        f"`{record['base_model']}`",
        "",
        "## Labels",
        "",
        f"- file: `{labels['path']}` (sha256 `{labels['sha256']}`)",
    ]
    for provenance in labels["provenance"]:
        if provenance.get("source") == "llm":
            prompt_sha, rubric_sha = (str(provenance.get(k))[:12] for k in ("prompt_sha256", "rubric_sha256"))
            lines.append(
                f"- teacher: `{provenance.get('model')}`, {provenance.get('strategy')} with prompt "
                f"`{provenance.get('prompt')}` (sha256 `{prompt_sha}…`), "
                f"rubric `{provenance.get('rubric')}` (sha256 `{rubric_sha}…`), "
                f"labels by {provenance.get('mapping')}"
            )
        else:
            lines.append(
                f"- source: {provenance.get('source', 'unknown')} {provenance.get('dataset', '')}".rstrip()
            )
    lines += [
        "- evaluation sets checked for overlap (none found): "
        + (", ".join(record["eval_sets"]) or "none given")
        + (f"; {record['excluded_queries']} excluded queries" if record["excluded_queries"] else ""),
        "",
        "## Counts",
        "",
        f"- queries: {counts['queries']} ({counts['train_queries']} train, "
        f"{counts['validation_queries']} validation, split by query)",
        f"- pairs: {counts['pairs']} ({counts['train_pairs']} train, "
        f"{counts['validation_pairs']} validation)",
        f"- training rows: {counts['train_rows']}; steps: {counts['steps']}",
        "",
        "## Training",
        "",
        *(f"- {key}: {value}" for key, value in settings.items()),
        "",
        "## Validation (graded nDCG@10 on the held-out queries)",
        "",
    ]
    if validation["before"] is None:
        lines.append("- no validation split (validation fraction 0)")
    else:
        lines += [
            f"- base model: {validation['before']:.4f}",
            f"- best: {validation['best']:.4f} at step {validation['best_step']}"
            if validation["best"] is not None
            else "- best: not evaluated",
        ]
    lines += [
        "",
        f"Trained in {record['seconds']:.1f} s on {record['device']} ({record['created']}); "
        f"versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items())}.",
        "",
    ]
    return "\n".join(lines)


def distill(
    labels: str | os.PathLike[str],
    stage: str,
    out: str | os.PathLike[str],
    *,
    settings: TrainSettings | None = None,
    validation_fraction: float = 0.2,
    eval_sets: Sequence[str] = (),
    exclude_queries: str | os.PathLike[str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the stage ``stage`` (``cross-encoder:[BASE]`` or ``dense:[BASE]``; empty BASE:
    the offline default) on the labels file ``labels`` into the folder ``out``; returns the
    training record also written to ``out/llmrerank-training.json``.

    ``eval_sets`` (dataset names or folders, e.g. ``["dl19"]``) and ``exclude_queries`` (a
    file, see ``read_excluded_queries``) are checked first: any overlap is a ``UserError``.
    """
    settings = settings or TrainSettings()
    kind, base_model = _parse_stage(stage)
    settings.loss_for(kind)  # a wrong loss is refused before anything loads
    records = read_labels(labels)
    queries = group_by_query(records)
    excluded = read_excluded_queries(exclude_queries) if exclude_queries else []
    checked = check_leakage(queries, eval_sets=eval_sets, excluded=excluded)
    train, validation = split_queries(queries, validation_fraction, settings.seed)
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{target} exists and is not empty; give a new folder")
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix=".distill-", dir=target.parent)
    try:
        with quiet_loading():  # progress lines of our own, no loading and writing bars
            model, run = train_student(kind, base_model, train, validation, settings, work_dir, echo=echo)
            model.save_pretrained(str(target))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {
        "schema": "llmrerank.training/1",
        "stage": kind,
        "base_model": base_model,
        "output": str(target),
        "labels": {
            "path": str(labels),
            "sha256": file_sha256(labels),
            "provenance": _provenances(records),
        },
        "eval_sets": checked,
        "excluded_queries": len(excluded),
        "counts": {
            "queries": len(queries),
            "train_queries": len(train),
            "validation_queries": len(validation),
            "pairs": len(records),
            "train_pairs": sum(len(q.passages) for q in train),
            "validation_pairs": sum(len(q.passages) for q in validation),
            "train_rows": run.train_rows,
            "steps": run.steps,
        },
        "settings": {**asdict(settings.resolved(kind)), "validation_fraction": validation_fraction},
        "validation": {
            "metric": "ndcg@10",
            "before": run.validation_before,
            "best": run.validation_best,
            "best_step": run.best_step,
            "history": run.history,
        },
        # the weights' identity: a folder trained again in place gets a new record, so the
        # dense stage's embedding cache (keyed by the record's hash) never serves stale vectors
        "weights_sha256": {
            f.name: file_sha256(f)
            for f in sorted(target.glob("*.safetensors")) + sorted(target.glob("*.bin"))
        },
        "seconds": round(seconds, 1),
        "device": "cpu",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "versions": _versions(),
    }
    (target / TRAINING_RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", "utf-8")
    (target / "MODEL_CARD.md").write_text(_card(record), "utf-8")
    return record
