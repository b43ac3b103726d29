"""``llmrerank eval run | compare | sweep | report | agree | int8-check``.

Long because each subcommand's options, help and examples sit beside it: the group is one
screen of click declarations per verb, with the work done in the modules they call."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..errors import BudgetError, UserError
from .batch_state import BatchOptions
from .compare import (
    CORRECTIONS,
    TESTS,
    Significance,
    compare_many,
    format_comparison,
    load_result,
    parse_gate,
)
from .estimate import estimate
from .experiment import load_experiment
from .progress import Progress
from .ray_executor import RayOptions
from .report import write_report
from .runner import run_experiment
from .sweep import sweep_depths

__all__ = ["eval_group"]


@click.group("eval")
def eval_group() -> None:
    """Re-evaluate prompts × models × pipelines on golden sets."""


@eval_group.command("run", short_help="Run an experiment config: datasets × pipelines × repeats.")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Default evals/runs/<name>.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the most LLM calls each pipeline can make (a proven bound), estimated tokens "
    "and cost; call nothing.",
)
@click.option(
    "--max-cost",
    type=float,
    help="Stop cleanly before a query whose worst case (its call bound, priced) would pass this many USD.",
)
@click.option(
    "--progress-every",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds between progress lines on stderr when not on a terminal (a bar on a terminal).",
)
@click.option("--batch", is_flag=True, help="Send LLM calls through the provider's batch API.")
@click.option("--executor", type=click.Choice(["local", "ray"]), help="Where queries run (default local).")
@click.option("--address", help="With --executor ray: the cluster to join (e.g. auto); default a local Ray.")
def run_command(
    config: str,
    out_dir: str | None,
    dry_run: bool,
    max_cost: float | None,
    progress_every: float,
    batch: bool,
    executor: str | None,
    address: str | None,
) -> None:
    """Run an experiment config; writes one results JSON per dataset × pipeline × repeat."""
    experiment = load_experiment(config)
    if batch and experiment.batch is None:
        experiment = dataclasses.replace(experiment, batch=BatchOptions())
    if executor == "local":
        experiment = dataclasses.replace(experiment, executor=None)
    elif executor == "ray":
        experiment = dataclasses.replace(experiment, executor=RayOptions(address=address))
    if dry_run:
        total = 0.0
        for row in estimate(experiment):
            priced = "" if row.get("priced", True) else " (no price for this model)"
            click.echo(
                f"{row['dataset']:<12} {row['pipeline']:<40} calls ≤ {row['calls']:>7,}  "
                f"prompt tokens ~{row['prompt_tokens']:>10,}  ${row['cost_usd']:.4f}{priced}"
            )
            total += row["cost_usd"]
        click.echo(
            f"estimated total ${total:.4f} (calls are upper bounds; tokens are estimated from word counts; "
            "prices: llmrerank/prices.yaml or $LLMRERANK_PRICES)"
        )
        return
    out = Path(out_dir or Path("evals/runs") / experiment.name)
    try:
        total_runs = len(experiment.datasets) * len(experiment.pipelines) * experiment.repeats
        progress = Progress(total_runs, interval_s=progress_every)
        for result in run_experiment(experiment, out, max_cost_usd=max_cost, progress=progress):
            data = result.data
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in data["metrics"].items())
            click.echo(
                f"{data['dataset']:<10} {data['pipeline']['name']:<36} {metrics}  calls {data['calls']}"
                f"  cache hits {data['cache_hits']}  ${data['cost_usd']:.4f}"
                + (f"  batch rounds {data['batch']['rounds']}" if "batch" in data else "")
            )
    except BudgetError as exc:
        click.echo(f"stopped: {exc}", err=True)
        sys.exit(3)
    click.echo(f"results in {out}")


def _significance_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--alpha", type=float, default=0.05, show_default=True, help="A star: corrected p below this."
    )(command)
    command = click.option(
        "--correction",
        type=click.Choice(CORRECTIONS),
        default="holm",
        show_default=True,
        help="Multiple-comparison correction over the candidates, per metric (holm = Holm–Bonferroni).",
    )(command)
    return click.option(
        "--test",
        "test_name",
        type=click.Choice(TESTS),
        default="randomisation",
        show_default=True,
        help="Significance test against the baseline (tukey: Tukey's HSD over all runs).",
    )(command)


@eval_group.command("compare", short_help="Corrected significance against a baseline; a regression gate.")
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False))
@click.argument("candidates", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--metric", "metrics", multiple=True, help="Metrics to compare (default: all shared).")
@click.option("--fail-if-worse", "gates", multiple=True, help="METRIC:DELTA, e.g. ndcg@10:0.01.")
@click.option(
    "--significant-only",
    is_flag=True,
    help="A gate trips only when the drop is also significant after correction.",
)
@_significance_options
def compare_command(
    baseline: str,
    candidates: tuple[str, ...],
    metrics: tuple[str, ...],
    gates: tuple[str, ...],
    significant_only: bool,
    test_name: str,
    correction: str,
    alpha: float,
) -> None:
    """Metric deltas with corrected paired significance; exit 1 when a --fail-if-worse gate trips.

    Every CANDIDATE is tested against BASELINE; with several candidates the p-values are
    corrected for the family (Holm–Bonferroni by default) and the stars use the corrected ones.
    """
    significance = Significance(test_name, correction, alpha)
    base = load_result(baseline)
    rules = [parse_gate(g, significant_only=significant_only) for g in gates]
    failed = []
    for comparison in compare_many(base, [load_result(p) for p in candidates], metrics or None, significance):
        click.echo(format_comparison(comparison) + "\n")
        for rule in rules:
            if rule.failed(comparison):
                entry = comparison.metric(rule.metric)
                failed.append(
                    f"{comparison.candidate}: {rule.metric} {entry.delta:+.4f} < -{rule.tolerance} "
                    f"(corrected p {entry.p_adjusted:.4f})"
                )
    if failed:
        click.echo("REGRESSION: " + "; ".join(failed), err=True)
        sys.exit(1)


@eval_group.command("sweep")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--depths", default="10,25,50,100", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Default evals/runs/<name>-sweep.")
def sweep_command(config: str, depths: str, out_dir: str | None) -> None:
    """Quality and latency as the rerank depth varies."""
    experiment = load_experiment(config)
    out = Path(out_dir or Path("evals/runs") / f"{experiment.name}-sweep")
    rows = sweep_depths(experiment, [int(d) for d in depths.split(",")], out)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    for row in rows:
        ndcg = row["metrics"].get("ndcg@10", 0.0)
        click.echo(
            f"{row['pipeline']:<36} depth {row['depth']:>4}  ndcg@10 {ndcg:.4f}  "
            f"p50 {row['latency_p50_s']:.3f}s"
        )
    click.echo(f"sweep in {out / 'sweep.json'}")


@eval_group.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--sweep", "sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--title", default="llmrerank evaluation")
@click.option("--notes", default="")
@_significance_options
def report_command(
    results: tuple[str, ...],
    out_dir: str,
    sweep_file: str | None,
    title: str,
    notes: str,
    test_name: str,
    correction: str,
    alpha: float,
) -> None:
    """Markdown + HTML report; the first RESULTS file is the baseline."""
    loaded = [load_result(p) for p in results]
    sweep = json.loads(Path(sweep_file).read_text()) if sweep_file else []
    metrics = [m for m in ("ndcg@10", "mrr@10", "recall@20") if m in loaded[0]["metrics"]] or list(
        loaded[0]["metrics"]
    )
    md, page = write_report(
        loaded,
        out_dir,
        metrics=metrics,
        sweep=sweep,
        title=title,
        notes=notes,
        significance=Significance(test_name, correction, alpha),
    )
    click.echo(f"wrote {md} and {page}")


@eval_group.command("agree", short_help="How the LLM's grades and order agree with the labels.")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--qrels", type=click.Path(exists=True, dir_okay=False), help="TREC qrels (default: the set's)."
)
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A labels file (JSONL: query_id, passage_id, label) instead of qrels.",
)
@click.option("--dataset", help="The golden set for texts and labels (default: the one the results name).")
@click.option("--metric", help="Compared beside agreement (default: the results' first metric).")
@click.option("--top", default=10, show_default=True, help="Disagreements listed per run.")
@click.option("--title", default="LLM agreement with the labels")
@click.option("--notes", default="")
@_significance_options
def agree_command(
    results: tuple[str, ...],
    out_dir: str,
    qrels: str | None,
    labels_file: str | None,
    dataset: str | None,
    metric: str | None,
    top: int,
    title: str,
    notes: str,
    test_name: str,
    correction: str,
    alpha: float,
) -> None:
    """Agreement of each run's LLM stage with the golden set's labels: confusion matrix, weighted
    kappa, Krippendorff's alpha, per-query Kendall tau, inverted pairs, the largest disagreements.
    With several RESULTS the first is the baseline: agreement and METRIC side by side with
    corrected paired tests, and per query the passages that moved."""
    from .agreement import agreement, compare_agreements, moved_passages, read_labels_file
    from .agreement_report import Texts, write_agreement_report
    from .datasets import load_dataset, read_qrels

    loaded = [load_result(p) for p in results]
    metric = metric or next(iter(loaded[0]["metrics"]))
    if any(metric not in r["metrics"] for r in loaded):
        raise UserError(
            f"--metric {metric} is not in every results file; they have {sorted(loaded[0]['metrics'])}"
        )
    golden = load_dataset(dataset or loaded[0]["dataset"])
    if qrels and labels_file:
        raise UserError("give --qrels or --labels, not both")
    labels = read_qrels(qrels) if qrels else read_labels_file(labels_file) if labels_file else golden.qrels
    texts = Texts(
        {q.qid: q.query for q in golden.queries},
        {(q.qid, c.id): c.text for q in golden.queries for c in q.candidates},
    )
    found = [agreement(result, labels, top=top) for result in loaded]
    significance = Significance(test_name, correction, alpha)
    comparisons = compare_agreements(loaded, found, metric, significance) if len(loaded) > 1 else []
    moved = [moved_passages(loaded[0], result, labels, metric) for result in loaded[1:]]
    md, page = write_agreement_report(
        loaded,
        found,
        out_dir,
        texts=texts,
        comparisons=comparisons,
        moved=moved,
        metric=metric,
        significance=significance,
        title=title,
        notes=notes,
    )
    for item in found:
        kappa = "" if item.kappa is None else f"  kappa {item.kappa:.3f}  alpha {item.alpha or 0:.3f}"
        tau = "" if item.tau_mean is None else f"  tau {item.tau_mean:.3f}"
        click.echo(
            f"{item.run:<44} {item.kind:<6} pairs {item.pairs}{kappa}{tau}  "
            f"inverted {item.inverted}/{item.ordered_pairs}"
        )
    click.echo(f"wrote {md} and {page}")


@eval_group.command("int8-check", short_help="Is a local stage's int8 within 0.005 nDCG@10 of fp32 here?")
@click.argument("stage", default="dense:")
@click.option("--sets", default="dl19,dl20", show_default=True, help="Golden sets, comma-separated.")
@click.option("--limit", type=int, help="Queries per set (a limited check never lets int8 in).")
@click.option("--depth", type=int, help="Candidates per query (default: 100 dense, 50 cross-encoder).")
def int8_check_command(stage: str, sets: str, limit: int | None, depth: int | None) -> None:
    """Rerank DL19 and DL20 with STAGE's ONNX fp32 and int8 exports (e.g. 'dense:',
    'cross-encoder:'), print nDCG@10 of each and the speed-up, and keep the result with the
    int8 export, where quantize=auto reads it: int8 is used on this CPU only when it
    is within 0.005 nDCG@10 of fp32 on both sets and faster."""
    from .int8_check import check_int8

    record = check_int8(stage, sets=[s for s in sets.split(",") if s], limit=limit, depth=depth)
    click.echo(json.dumps(record, indent=2))
