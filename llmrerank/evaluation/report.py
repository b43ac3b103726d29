"""Markdown and self-contained HTML reports (matplotlib plots embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compare import compare_results, label

__all__ = ["write_report"]


def _table(results: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[list[str]]:
    baseline = results[0]
    rows = []
    for result in results:
        marks = {}
        if result is not baseline:
            comparison = compare_results(baseline, result, metrics)
            marks = {m.metric: m.mark() for m in comparison.metrics}
        rows.append(
            [
                label(result),
                *[f"{result['metrics'][m]:.4f}{marks.get(m, '')}" for m in metrics],
                str(result["calls"]),
                str(result["cache_hits"]),
                f"{result['prompt_tokens'] + result['completion_tokens']:,}",
                f"{result['cost_usd']:.4f}",
                f"{result['latency_p50_s']:.3f}",
                f"{result['latency_p95_s']:.3f}",
                str(result["degraded_queries"]),
                ", ".join(f"{p['ref']} {p['sha256'][:8]}" for p in result["prompts"]) or "-",
            ]
        )
    return rows


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(results: Sequence[dict[str, Any]], sweep: Sequence[dict[str, Any]], metric: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    figure, axes = plt.subplots(figsize=(6, 4))
    for result in results:
        axes.scatter(result["calls"], result["metrics"][metric])
        axes.annotate(result["pipeline"]["name"], (result["calls"], result["metrics"][metric]), fontsize=7)
    axes.set_xlabel("LLM calls (cost proxy; dollars in the table)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} vs LLM calls")
    plots["quality vs cost"] = _png(figure)
    plt.close(figure)
    if len(results) > 1:
        base, last = results[0], results[-1]
        qids = sorted(set(base["per_query"][metric]) & set(last["per_query"][metric]))
        deltas = [last["per_query"][metric][q] - base["per_query"][metric][q] for q in qids]
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.hist(deltas, bins=20)
        axes.set_xlabel(f"per-query {metric}: {label(last)} minus {label(base)}")
        axes.set_ylabel("queries")
        plots["per-query deltas"] = _png(figure)
        plt.close(figure)
    if sweep:
        figure, axes = plt.subplots(figsize=(6, 4))
        for name in sorted({row["pipeline"] for row in sweep}):
            rows = sorted((r for r in sweep if r["pipeline"] == name), key=lambda r: r["depth"])
            axes.plot(
                [r["depth"] for r in rows],
                [r["metrics"][metric] for r in rows],
                marker="o",
                label=name,
            )
        axes.set_xlabel("rerank depth (candidates)")
        axes.set_ylabel(metric)
        axes.legend(fontsize=7)
        plots["depth sweep"] = _png(figure)
        plt.close(figure)
    return plots


def write_report(
    results: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = ("ndcg@10", "mrr@10", "recall@20"),
    sweep: Sequence[dict[str, Any]] = (),
    title: str = "llmrerank evaluation",
    notes: str = "",
) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` in ``out_dir``; the first result is the baseline."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = ["run", *metrics, "calls", "cached", "tokens", "cost $", "p50 s", "p95 s", "degraded", "prompt"]
    rows = _table(results, metrics)
    markdown = [
        f"# {title}",
        "",
        notes,
        "",
        f"Baseline: `{label(results[0])}`. `*`: p < 0.05 against it "
        "(paired randomisation test over queries). Cached calls were answered by the response "
        "cache: they cost no tokens and almost no time.",
        "",
    ]
    markdown += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    markdown += ["| " + " | ".join(row) + " |" for row in rows]
    if len(results) > 1:
        main = metrics[0]
        markdown += [
            "",
            f"## Against the baseline, per query ({main})",
            "",
            "| run | delta | p (randomisation) | p (t-test) | wins / losses / ties |",
            "|---|---|---|---|---|",
        ]
        for result in results[1:]:
            delta = compare_results(results[0], result, [main]).metric(main)
            markdown.append(
                f"| {label(result)} | {delta.delta:+.4f} | {delta.p_randomisation:.4f} | "
                f"{delta.p_ttest:.4f} | {delta.wins} / {delta.losses} / {delta.ties} |"
            )
    if sweep:
        # a sweep config may score fewer metrics than the runs it is reported with
        swept = [m for m in metrics if all(m in row["metrics"] for row in sweep)]
        markdown += [
            "",
            "## Depth sweep",
            "",
            "| pipeline | depth | " + " | ".join(swept) + " | p50 s | calls |",
            "|---|---|" + "---|" * (len(swept) + 2),
        ]
        for row in sweep:
            values = " | ".join(f"{row['metrics'][m]:.4f}" for m in swept)
            latency = f"{row['latency_p50_s']:.3f}"
            markdown.append(f"| {row['pipeline']} | {row['depth']} | {values} | {latency} | {row['calls']} |")
    md_path = out / "report.md"
    md_path.write_text("\n".join(markdown) + "\n", "utf-8")
    plots = _plots(results, sweep, metrics[0])
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    images = "".join(
        f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
        for name, data in plots.items()
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}</style>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p><table><tr>{cells}</tr>{body}</table>{images}"
    )
    html_path = out / "report.html"
    html_path.write_text(page, "utf-8")
    return md_path, html_path
