"""``llmrerank rerank``: JSONL in, JSONL rankings out, through one ``PipelineSpec``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import IO, Any

import click

from .._json import parse_json
from ..errors import LLMRerankError, UserError
from ..pipeline import PipelineSpec
from ..rerankers.protocol import Reranker
from ..retry import RetryPolicy
from ..types import as_query
from ._app import DEFAULT_CACHE_DIR, open_cache
from ._strategy_flags import STRATEGY_FLAGS, llm_stage_flags

__all__ = ["InputLineError", "rerank", "rerank_lines", "spec_from_flags"]

DEFAULT_CALL_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 3


class InputLineError(LLMRerankError):
    """Input line ``line`` failed with ``cause``; the CLI exits 2 when the cause is the
    caller's (a ``UserError``), 1 otherwise."""

    def __init__(self, line: int, cause: LLMRerankError) -> None:
        text = str(cause)
        prefix = f"input line {line}"
        super().__init__(text if text.startswith(prefix) else f"{prefix}: {text}")
        self.line = line
        self.cause = cause


def _parse_line(number: int, raw: bytes) -> dict[str, Any] | None:
    """One input line as a request; None for a blank line. Errors name the line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"input line {number} is not valid UTF-8 (byte {exc.start})") from None
    if not line.strip():
        return None
    record = parse_json(line, f"input line {number}")
    if not isinstance(record, dict) or "query" not in record or "candidates" not in record:
        raise UserError(f"input line {number} needs 'query' and 'candidates'")
    return record


def _error_record(number: int, exc: LLMRerankError) -> str:
    return json.dumps({"line": number, "error": str(exc), "type": type(exc).__name__}, ensure_ascii=False)


def _echo_line(text: str) -> None:
    # one line at a time: a later failure never loses what was already ranked
    click.echo(text)
    sys.stdout.flush()


def rerank_lines(reranker: Reranker, stream: IO[bytes], *, on_error: str = "fail") -> int:
    """Rank each JSONL line of ``stream`` and write it out as it is done; returns failed lines.

    The input is read as bytes and decoded line by line, so a bad line is an error about
    that line alone. ``on_error="skip"`` writes ``{"line", "error", "type"}`` for a failed
    line and goes on; ``"fail"`` raises ``InputLineError`` naming the line after the earlier
    lines were written.
    """
    failed = 0
    for number, raw in enumerate(stream, start=1):
        try:
            record = _parse_line(number, raw)
            if record is None:
                continue
            ranking = reranker.rerank(as_query(record["query"]), record["candidates"])
        except LLMRerankError as exc:
            if on_error == "fail":
                raise InputLineError(number, exc) from exc
            failed += 1
            _echo_line(_error_record(number, exc))
            continue
        _echo_line(json.dumps(ranking.to_dict(), ensure_ascii=False))
    return failed


def spec_from_flags(
    *,
    pipeline: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    strategy: str = "pointwise",
    prompt: str | None = None,
    rubric: str | None = None,
    max_concurrency: int = 8,
    narrow_with: tuple[str, ...] = (),
    narrow_to: tuple[int, ...] = (),
    top_k: int | None = None,
    llm_timeout_s: float | None = None,
    bypass_llm: bool | None = None,
    trace: str | None = None,
    strategy_options: Mapping[str, Any] | None = None,
    call_timeout_s: float | None = None,
    attempts: int | None = None,
) -> PipelineSpec:
    """The CLI's flags as a ``PipelineSpec`` (over ``--pipeline FILE`` when given);
    ``strategy_options`` are merged over the spec's and must belong to its strategy."""
    spec = PipelineSpec.from_yaml(pipeline) if pipeline else PipelineSpec(name="cli")
    changes: dict[str, Any] = {
        "llm": model,
        "base_url": base_url,
        "prompt": prompt,
        "rubric": rubric,
        "llm_timeout_s": llm_timeout_s,
        "bypass_llm": bypass_llm,
        "trace": trace,
        "top_k": top_k,
    }
    spec = spec.with_changes(**{k: v for k, v in changes.items() if v is not None})
    if narrow_with:
        spec = spec.with_changes(narrow_with=narrow_with, narrow_to=narrow_to)
    elif narrow_to:
        spec = spec.with_changes(narrow_to=narrow_to)
    if model or not pipeline:
        spec = spec.with_changes(strategy=strategy, max_concurrency=max_concurrency)
    local = isinstance(spec.llm, str) and spec.llm.startswith("local:")
    if call_timeout_s is not None or (spec.call_timeout_s is None and not local):
        # a local model on a CPU keeps its own, longer default
        spec = spec.with_changes(call_timeout_s=call_timeout_s or DEFAULT_CALL_TIMEOUT_S)
    if attempts is not None or spec.retry is None:
        spec = spec.with_changes(retry=RetryPolicy(max_attempts=attempts or DEFAULT_ATTEMPTS))
    if spec.llm is None and not spec.narrow_with:
        raise UserError("give --model, --narrow-with, --pipeline, or a combination")
    given = {k: v for k, v in (strategy_options or {}).items() if v is not None and v is not False}
    options: dict[str, Any] = {}
    for parameter, value in given.items():
        owner, key = STRATEGY_FLAGS[parameter]
        if owner != spec.strategy:
            flag = "--" + parameter.replace("_", "-")
            raise UserError(f"{flag} is a {owner} option; the strategy is {spec.strategy}")
        options[key] = value
    if options:
        spec = spec.with_changes(strategy_options={**spec.strategy_options, **options})
    return spec


_EXAMPLES = """Rerank JSONL lines {"query", "candidates": [{"id", "text"}]} into JSONL rankings.

\b
Examples:
  # offline, with the simulated judge on TREC DL19 passages
  llmrerank rerank -m sim:dl19 -s setwise --set-size 3 -i requests.jsonl
  # a hosted model, listwise windows of 10 sliding by 5
  llmrerank rerank -m openai:gpt-4o-mini -s listwise --window 10 --step 5 < requests.jsonl
  # the hybrid cascade: dense narrows to 20, the LLM orders the top 10
  llmrerank rerank --narrow-with dense: --narrow-to 20 -m local: -k 10 -i requests.jsonl
  # a pipeline file, with one field overridden
  llmrerank rerank --pipeline pipeline.yaml --pairwise-method sliding -i requests.jsonl
"""


@click.command(help=_EXAMPLES, short_help="Rerank JSONL {query, candidates} lines into JSONL rankings.")
@click.option(
    "--pipeline",
    type=click.Path(exists=True, dir_okay=False),
    help="A pipeline spec (YAML); the flags below override its fields.",
)
@llm_stage_flags
@click.option("--top-k", "-k", type=click.IntRange(min=1), help="Keep only the first K of each ranking.")
@click.option("--input", "-i", "input_file", type=click.File("rb"), default="-", help="JSONL input.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help=f"Default {DEFAULT_CACHE_DIR}.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option(
    "--cache-mode",
    default="read_write",
    show_default=True,
    type=click.Choice(["read_write", "read_only", "refresh", "off"]),
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="LLM calls in flight at once.",
)
@click.option(
    "--narrow-with",
    "narrow_with",
    multiple=True,
    help=(
        "Narrowing stage before the LLM: dense:[MODEL], cross-encoder:[MODEL] or "
        "rerank-api:URL?model=NAME (a rerank server); repeatable."
    ),
)
@click.option(
    "--cross-encoder",
    "cross_encoders",
    multiple=True,
    help="Shorthand for --narrow-with cross-encoder:PATH_OR_NAME (runs after --narrow-with stages).",
)
@click.option(
    "--narrow-to", type=click.IntRange(min=1), multiple=True, help="Candidates each narrowing stage keeps."
)
@click.option(
    "--llm-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before the LLM stage falls back.",
)
@click.option("--bypass-llm", is_flag=True, default=None, help="Skip the LLM stage.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Append a JSONL trace per request.")
@click.option(
    "--call-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help=f"Seconds each LLM call may take before it is retried [default: {DEFAULT_CALL_TIMEOUT_S:.0f}; "
    "local: 120].",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    help=f"Tries per LLM call in all, 1 = no retry [default: {DEFAULT_ATTEMPTS}].",
)
@click.option(
    "--on-error",
    default="fail",
    show_default=True,
    type=click.Choice(["fail", "skip"]),
    help="fail: stop at a failed line (earlier lines are written); skip: write "
    '{"line", "error", "type"} for it and go on.',
)
def rerank(
    pipeline: str | None,
    model: str | None,
    base_url: str | None,
    strategy: str,
    prompt: str | None,
    rubric: str | None,
    top_k: int | None,
    input_file: IO[bytes],
    cache_dir: str | None,
    no_cache: bool,
    cache_mode: str,
    max_concurrency: int,
    narrow_with: tuple[str, ...],
    cross_encoders: tuple[str, ...],
    narrow_to: tuple[int, ...],
    llm_timeout: float | None,
    bypass_llm: bool | None,
    trace: str | None,
    call_timeout: float | None,
    max_attempts: int | None,
    on_error: str,
    **strategy_options: Any,
) -> None:
    spec = spec_from_flags(
        pipeline=pipeline,
        model=model,
        base_url=base_url,
        strategy=strategy,
        prompt=prompt,
        rubric=rubric,
        max_concurrency=max_concurrency,
        narrow_with=narrow_with + tuple(f"cross-encoder:{name}" for name in cross_encoders),
        narrow_to=narrow_to,
        top_k=top_k,
        llm_timeout_s=llm_timeout,
        bypass_llm=bypass_llm,
        trace=trace,
        strategy_options=strategy_options,
        call_timeout_s=call_timeout,
        attempts=max_attempts,
    )
    reranker = spec.build(cache=open_cache(cache_dir, no_cache, cache_mode))
    failed = rerank_lines(reranker, input_file, on_error=on_error)
    if failed:
        click.echo(f"warning: {failed} input line(s) failed; their error records are in the output", err=True)
