"""``llmrerank label`` (the teacher pass, or qrels converted) and ``llmrerank distill``."""

from __future__ import annotations

from typing import Any

import click

from ..errors import UserError
from ._app import DEFAULT_CACHE_DIR, open_cache
from ._strategy_flags import llm_stage_flags
from .rerank import spec_from_flags

__all__ = ["distill_command", "label_command"]

_LABEL_HELP = """Label queries with an LLM (or convert qrels) into a labels JSONL for `distill`.

INPUT is the JSONL `llmrerank rerank` reads ({"query", "candidates": [{"id", "text"}]},
with an optional "query_id"), or give --dataset. Pointwise grades are the labels; listwise,
pairwise and setwise orders become grades by position in equal bands. Calls go through the
response cache, so what the cascade or an eval already asked costs nothing; the output is
appended per query and a re-run skips pairs already labelled.

\b
Examples:
  # offline: the simulated judge (sigma 1) grades DL20's BM25 top-100
  llmrerank label --dataset dl20 -m sim:dl20@1.0 --out dl20.labels.jsonl
  # your rubric and queries, a hosted model; first see the call bound and cost
  llmrerank label queries.jsonl -m openai:gpt-4o-mini -r kb.yaml --out kb.labels.jsonl --dry-run
  # human judgements as labels
  llmrerank label --dataset dl20 --from-qrels --out dl20.qrels.jsonl
"""


@click.command("label", help=_LABEL_HELP, short_help="Label queries with an LLM into a labels JSONL.")
@click.argument("input_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", help="Label an eval dataset's queries instead: dl19, dl20, scifact or a folder.")
@click.option("--limit", type=int, help="With --dataset: the first N queries.")
@click.option("--depth", type=int, help="With --dataset: the first N candidates of each query.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Labels JSONL (appended).")
@click.option("--pipeline", type=click.Path(exists=True, dir_okay=False), help="Its LLM stage labels.")
@llm_stage_flags
@click.option("--max-concurrency", type=int, default=8, show_default=True)
@click.option("--qrels", type=click.Path(exists=True, dir_okay=False), help="Convert INPUT with these qrels.")
@click.option("--from-qrels", is_flag=True, help="With --dataset: its own judgements are the labels.")
@click.option(
    "--dry-run", is_flag=True, help="Print the most LLM calls (a proven bound) and the cost; call nothing."
)
@click.option("--cache-dir", type=click.Path(file_okay=False), help=f"Default {DEFAULT_CACHE_DIR}.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option(
    "--cache-mode",
    default="read_write",
    show_default=True,
    type=click.Choice(["read_write", "read_only", "refresh", "off"]),
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def label_command(
    input_file: str | None,
    dataset: str | None,
    limit: int | None,
    depth: int | None,
    out: str,
    pipeline: str | None,
    model: str | None,
    base_url: str | None,
    strategy: str,
    prompt: str | None,
    rubric: str | None,
    max_concurrency: int,
    qrels: str | None,
    from_qrels: bool,
    dry_run: bool,
    cache_dir: str | None,
    no_cache: bool,
    cache_mode: str,
    quiet: bool,
    **strategy_options: Any,
) -> None:
    from ..training import (
        label_queries,
        labels_from_golden,
        progress_printer,
        queries_from_golden,
        read_queries,
    )
    from ..training.labels import write_labels

    if (input_file is None) == (dataset is None):
        raise UserError("give INPUT or --dataset (one of them)")
    if qrels or from_qrels:
        from ..evaluation.datasets import load_candidates_jsonl, load_dataset

        if qrels and input_file is None:
            raise UserError("--qrels converts INPUT; with --dataset use --from-qrels")
        if from_qrels and dataset is None:
            raise UserError("--from-qrels takes the judgements of --dataset; for INPUT give --qrels FILE")
        golden = (
            load_dataset(dataset, limit=limit, depth=depth)
            if dataset
            else load_candidates_jsonl(str(input_file), str(qrels))
        )
        written = write_labels(out, labels_from_golden(golden))
        click.echo(f"wrote {written:,} labels from the qrels of {golden.name} to {out}")
        return
    if dataset is not None:
        from ..evaluation.datasets import load_dataset

        queries = queries_from_golden(load_dataset(dataset, limit=limit, depth=depth))
    else:
        queries = read_queries(str(input_file))
    spec = spec_from_flags(
        pipeline=pipeline,
        model=model,
        base_url=base_url,
        strategy=strategy,
        prompt=prompt,
        rubric=rubric,
        max_concurrency=max_concurrency,
        strategy_options=strategy_options,
    )
    if spec.llm is None:
        raise UserError("label needs an LLM: --model or a --pipeline with an llm")
    # the LLM stage alone labels every candidate: no narrowing, no cut
    spec = spec.with_changes(narrow_with=(), narrow_to=(), top_k=None)
    if dry_run:
        _print_bound(spec, queries)
        return
    cache = open_cache(cache_dir, no_cache, cache_mode)
    run = label_queries(
        spec, queries, out, cache=cache, on_query=None if quiet else progress_printer(len(queries))
    )
    click.echo(
        f"labelled {run.queries} queries ({run.skipped_queries} already done): {run.pairs:,} pairs to {out}; "
        f"{run.calls:,} LLM calls, {run.cached_calls:,} from the cache; {run.seconds:.1f}s"
    )


def _print_bound(spec: Any, queries: Any) -> None:
    from ..evaluation.datasets import EvalQuery
    from ..evaluation.estimate import query_bound
    from ..pricing import PriceTable

    bound = query_bound(spec)
    if bound is None:
        raise UserError("this pipeline makes no LLM call")
    calls = tokens = 0
    for query in queries:
        query_calls, query_tokens = bound(EvalQuery(query.query_id, query.query, query.candidates))
        calls += query_calls
        tokens += query_tokens
    prices = PriceTable()
    provider, _, model_name = str(spec.llm).partition(":")
    cost = prices.cost(model_name, tokens, calls * 30)
    priced = provider in ("sim", "local") or prices.known(model_name)
    pairs = sum(len(q.candidates) for q in queries)
    click.echo(
        f"label {len(queries)} queries, {pairs:,} pairs, {spec.strategy}: calls ≤ {calls:,}  "
        f"prompt tokens ~{tokens:,}  ${cost:.4f}{'' if priced else ' (no price for this model)'}"
    )
    click.echo(
        "calls are upper bounds (cached calls cost nothing); tokens are estimated from word counts; "
        "prices: llmrerank/prices.yaml or $LLMRERANK_PRICES"
    )


_DISTILL_HELP = """Fine-tune a local stage on a labels JSONL into a sentence-transformers folder.

STAGE is cross-encoder:[BASE] or dense:[BASE] (empty BASE: the offline default). The
labels' queries split into training and validation; training stops early when validation
nDCG@10 stops improving and keeps the best step. OUT gets the model, MODEL_CARD.md and
llmrerank-training.json; use it as cross-encoder:OUT (or dense:OUT) anywhere.

\b
Examples:
  llmrerank distill dl20.labels.jsonl --stage cross-encoder: --out models/dl20-ce --eval-set dl19
  llmrerank distill kb.labels.jsonl --stage dense: --out models/kb-dense --epochs 2
"""


@click.command("distill", help=_DISTILL_HELP, short_help="Train a local stage on a labels JSONL.")
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--stage", default="cross-encoder:", show_default=True, help="cross-encoder:[BASE] or dense:[BASE]."
)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="A new folder.")
@click.option(
    "--loss",
    type=click.Choice(["lambda", "listnet", "bce", "cosent", "mnrl"]),
    help="cross-encoder: lambda (default), listnet, bce; dense: cosent (default), mnrl.",
)
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--batch-size", type=int, help="Lists per step (listwise losses) [4], else pairs [32].")
@click.option("--learning-rate", "--lr", type=float, help="[cross-encoder 3e-5, dense 1e-5]")
@click.option("--max-length", type=int, default=256, show_default=True, help="Tokens per input.")
@click.option("--list-size", type=int, default=25, show_default=True, help="Passages per list (listwise).")
@click.option(
    "--relevant-grade",
    type=float,
    help="mnrl: the least label a positive has [half the top grade, rounded up: 2 on 0-3].",
)
@click.option("--validation-fraction", type=float, default=0.2, show_default=True, help="Of the queries.")
@click.option("--eval-steps", type=int, help="Validate every N steps [about 4 times an epoch].")
@click.option(
    "--patience", type=int, default=3, show_default=True, help="Validations without gain before stopping."
)
@click.option("--max-steps", type=int, help="Stop after N steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--eval-set",
    "eval_sets",
    multiple=True,
    help="An evaluation set (dl19, dl20, scifact or a folder) the labels must not overlap (repeatable).",
)
@click.option(
    "--exclude-queries",
    type=click.Path(exists=True, dir_okay=False),
    help="Queries the labels must not hold: JSONL (query_id/query) or one text or id a line.",
)
def distill_command(
    labels: str,
    stage: str,
    out: str,
    loss: str | None,
    epochs: float,
    batch_size: int | None,
    learning_rate: float | None,
    max_length: int,
    list_size: int,
    relevant_grade: float | None,
    validation_fraction: float,
    eval_steps: int | None,
    patience: int,
    max_steps: int | None,
    seed: int,
    eval_sets: tuple[str, ...],
    exclude_queries: str | None,
) -> None:
    from ..training import TrainSettings, distill

    if (batch_size is not None and batch_size < 1) or list_size < 2 or epochs <= 0:
        raise UserError("--batch-size must be >= 1, --list-size >= 2 and --epochs > 0")
    settings = TrainSettings(
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        list_size=list_size,
        relevant_grade=relevant_grade,
        eval_steps=eval_steps,
        patience=patience,
        max_steps=max_steps,
        seed=seed,
    )
    record = distill(
        labels,
        stage,
        out,
        settings=settings,
        validation_fraction=validation_fraction,
        eval_sets=eval_sets,
        exclude_queries=exclude_queries,
        echo=lambda line: click.echo(line, err=True),
    )
    validation = record["validation"]
    gain = (
        f"validation nDCG@10 {validation['before']:.4f} (base) → {validation['best']:.4f} (best, step "
        f"{validation['best_step']})"
        if validation["before"] is not None and validation["best"] is not None
        else "no validation split"
    )
    click.echo(
        f"distilled {record['stage']} into {record['output']} in {record['seconds']:.1f}s: "
        f"{record['counts']['queries']} queries, {record['counts']['steps']} steps; {gain}. "
        f"Use it as {record['stage']}:{record['output']}"
    )
