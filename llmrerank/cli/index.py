"""``llmrerank index``: encode a corpus's passages into the embedding cache ahead of queries,
so that the dense stage later encodes only each query."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import IO, Any

import click

from ..errors import UserError
from ..pipeline import build_stage
from ..rerankers.dense import DenseReranker
from ._app import DEFAULT_CACHE_DIR, open_cache

__all__ = ["index"]


def _passages(stream: IO[str]) -> Iterator[str]:
    """Texts from JSONL lines: ``{"text": ...}`` passages, JSON strings, or rerank requests
    (``{"query": ..., "candidates": [...]}``, every candidate's text)."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"input line {number} is not JSON: {exc.msg}") from None
        if isinstance(record, str):
            yield record
        elif isinstance(record, dict) and isinstance(record.get("candidates"), list):
            for candidate in record["candidates"]:
                yield candidate if isinstance(candidate, str) else _text(candidate, number)
        elif isinstance(record, dict):
            yield _text(record, number)
        else:
            raise UserError(f"input line {number}: expected a passage, a string or a rerank request")


def _text(record: Any, number: int) -> str:
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"input line {number}: a passage needs a non-empty 'text'")
    return text


def _chunks(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@click.command()
@click.argument("corpus", type=click.File("r"), default="-")
@click.option(
    "--stage",
    "stage_spec",
    default="dense:",
    show_default=True,
    help="The dense stage spec the queries will use (model and options decide the cache key), "
    "e.g. 'dense:?backend=onnx'.",
)
@click.option("--cache-dir", type=click.Path(file_okay=False), help=f"Default {DEFAULT_CACHE_DIR}.")
@click.option("--chunk", default=1024, show_default=True, help="Passages encoded per step.")
def index(corpus: IO[str], stage_spec: str, cache_dir: str | None, chunk: int) -> None:
    """Fill the embedding cache for CORPUS (JSONL; '-' for stdin).

    Each line is a passage ({"id": ..., "text": ...}), a JSON string, or a rerank request
    whose candidates are indexed. Passages already cached are skipped.

    \b
    Example:
      llmrerank index corpus.jsonl --stage 'dense:?backend=onnx'
      llmrerank rerank --narrow-with 'dense:?backend=onnx' ... < requests.jsonl
    """
    cache = open_cache(cache_dir, False, "read_write")
    stage = build_stage(stage_spec, cache=cache)
    if not isinstance(stage, DenseReranker):
        raise UserError(f"--stage {stage_spec!r}: only a dense stage has an embedding cache")
    load_s = stage.load()
    started = time.perf_counter()
    total = 0
    for texts in _chunks(_passages(corpus), max(1, chunk)):
        stage.embed_passages(list(dict.fromkeys(texts)))
        total += len(texts)
    summary = {
        "passages": total,
        "encoded": stage.cache_misses,
        "already_cached": stage.cache_hits,
        "backend": stage.backend_in_use,
        "load_s": round(load_s, 2),
        "encode_s": round(time.perf_counter() - started, 2),
    }
    click.echo(json.dumps(summary))
