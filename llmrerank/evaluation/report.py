"""Markdown and self-contained HTML reports; the HTML is rendered from
``templates/report.html.jinja`` with the charts embedded as PNG.

The first result is the baseline. Every other run is tested against it and the p-values are
corrected for the family of runs (Holm–Bonferroni unless ``significance`` says otherwise); the
report names the test and the correction next to the stars.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compare import DEFAULT_SIGNIFICANCE, Comparison, Significance, compare_many, label
from .plots import report_plots

__all__ = ["write_report"]

_NUMBERS = ["calls", "cached", "tokens", "cost $", "p50 s", "p95 s", "degraded"]


def _rows(
    results: Sequence[dict[str, Any]], comparisons: Sequence[Comparison], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    marks: list[dict[str, str]] = [{}] + [{m.metric: m.mark() for m in c.metrics} for c in comparisons]
    return [
        {
            "name": label(result),
            "metrics": [f"{result['metrics'][m]:.4f}{mark.get(m, '')}" for m in metrics],
            "numbers": [
                f"{result['calls']:,}",
                f"{result['cache_hits']:,}",
                f"{result['prompt_tokens'] + result['completion_tokens']:,}",
                f"{result['cost_usd']:.4f}",
                f"{result['latency_p50_s']:.3f}",
                f"{result['latency_p95_s']:.3f}",
                str(result["degraded_queries"]),
            ],
            "prompt": ", ".join(f"{p['ref']} {p['sha256'][:8]}" for p in result["prompts"]) or "-",
        }
        for result, mark in zip(results, marks, strict=True)
    ]


def _trained(results: Sequence[dict[str, Any]]) -> list[str]:
    """One line per distilled stage: which labels (file, sha256, teachers) it learnt from."""
    lines = []
    for result in results:
        for stage in result["pipeline"].get("trained_on", []):
            validation = stage.get("validation_ndcg@10")
            lines.append(
                f"{label(result)}: {stage['stage']} (base {stage['base_model']}) trained on "
                f"{stage['labels']} (sha256 {stage['labels_sha256'][:12]}, {stage['queries']} queries, "
                f"{stage['pairs']} pairs; teacher {', '.join(map(str, stage['teachers']))}"
                + (f"; validation nDCG@10 {validation:.4f}" if validation is not None else "")
                + (
                    f"; checked against {', '.join(stage['eval_sets_checked'])}"
                    if stage["eval_sets_checked"]
                    else ""
                )
                + ")"
            )
    return lines


def _deltas(comparisons: Sequence[Comparison], metric: str) -> list[dict[str, Any]]:
    out = []
    for comparison in comparisons:
        entry = comparison.metric(metric)
        out.append(
            {
                "name": comparison.candidate,
                "delta": f"{entry.delta:+.4f}{entry.mark()}",
                "star": entry.significant,
                "p": f"{entry.p_value:.4f}",
                "p_adjusted": f"{entry.p_adjusted:.4f}",
                "wlt": f"{entry.wins} / {entry.losses} / {entry.ties}",
            }
        )
    return out


def _sweep_table(
    sweep: Sequence[dict[str, Any]], metrics: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    # a sweep config may score fewer metrics than the runs it is reported with
    swept = [m for m in metrics if all(m in row["metrics"] for row in sweep)]
    header = ["pipeline", "depth", *swept, "p50 s", "calls"]
    rows = [
        [
            row["pipeline"],
            str(row["depth"]),
            *(f"{row['metrics'][m]:.4f}" for m in swept),
            f"{row['latency_p50_s']:.3f}",
            str(row["calls"]),
        ]
        for row in sweep
    ]
    return header, rows


def _markdown(context: dict[str, Any]) -> str:
    lines = [f"# {context['title']}", ""]
    if context["notes"]:
        lines += [context["notes"], ""]
    star = f"`*`: {context['significance']}. " if context["family"] else ""
    lines += [
        f"Baseline: `{context['baseline']}`. {star}Cached calls were answered by the response "
        "cache: they cost no tokens and almost no time.",
        "",
        "| " + " | ".join(context["header"]) + " |",
        "|" + "---|" * len(context["header"]),
    ]
    lines += [
        "| " + " | ".join([r["name"], *r["metrics"], *r["numbers"], r["prompt"]]) + " |"
        for r in context["rows"]
    ]
    if context["trained"]:
        lines += ["", "Distilled stages:", ""] + [f"- {line}" for line in context["trained"]]
    if context["deltas"]:
        lines += [
            "",
            f"## Against the baseline, per query ({context['main_metric']})",
            "",
            f"| run | delta | p ({context['test']}) | p corrected ({context['correction']}) | "
            "wins / losses / ties |",
            "|---|---|---|---|---|",
        ]
        lines += [
            "| " + " | ".join(d[k] for k in ("name", "delta", "p", "p_adjusted", "wlt")) + " |"
            for d in context["deltas"]
        ]
    if context["sweep_rows"]:
        header = context["sweep_header"]
        lines += ["", "## Depth sweep", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in context["sweep_rows"]]
    if context["charts"]:
        lines += ["", "Charts: " + ", ".join(c["title"] for c in context["charts"]) + " (in report.html)."]
    return "\n".join(lines) + "\n"


def _html(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(
        loader=PackageLoader("llmrerank.evaluation", "templates"),
        autoescape=select_autoescape(["jinja", "html"], default=True),
        keep_trailing_newline=True,
    )
    return environment.get_template("report.html.jinja").render(**context)


def write_report(
    results: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = ("ndcg@10", "mrr@10", "recall@20"),
    sweep: Sequence[dict[str, Any]] = (),
    title: str = "llmrerank evaluation",
    notes: str = "",
    significance: Significance = DEFAULT_SIGNIFICANCE,
) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` in ``out_dir``; the first result is the baseline."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparisons = compare_many(results[0], results[1:], metrics, significance)
    sweep_header, sweep_rows = _sweep_table(sweep, metrics) if sweep else ([], [])
    correction = "Tukey's HSD" if significance.test == "tukey" else significance.correction
    context = {
        "title": title,
        "notes": notes,
        "baseline": label(results[0]),
        "family": len(comparisons),
        "significance": significance.describe(len(comparisons)),
        "test": significance.test,
        "correction": correction,
        "header": ["run", *metrics, *_NUMBERS, "prompt"],
        "rows": _rows(results, comparisons, metrics),
        "trained": _trained(results),
        "main_metric": metrics[0],
        "deltas": _deltas(comparisons, metrics[0]),
        "sweep_header": sweep_header,
        "sweep_rows": sweep_rows,
        "charts": [
            {"title": t, "caption": c, "png": base64.b64encode(png).decode()}
            for t, c, png in report_plots(results, sweep, metrics[0])
        ],
    }
    md_path = out / "report.md"
    md_path.write_text(_markdown(context), "utf-8")
    html_path = out / "report.html"
    html_path.write_text(_html(context), "utf-8")
    return md_path, html_path
