"""The report's charts, as PNG bytes (matplotlib, Agg). A chart with nothing to show is left out.

* quality vs LLM calls: a symmetric-log x axis (zero-call runs sit at 0, 10 and 10,000 calls
  both stay readable), one colour, marker and number per run; the numbers are named in a
  legend beside the chart, since full labels at the points would collide;
* per-query deltas: every run against the baseline, one strip per run (each dot a query),
  with its mean and wins/losses;
* depth sweep: quality against rerank depth, ticks at the depths swept.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from typing import Any

from .compare import label

__all__ = ["report_plots"]

_MARKERS = "os^Dv<>pPX*h"


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _quality_vs_calls(plt: Any, results: Sequence[dict[str, Any]], metric: str) -> bytes | None:
    if not any(r["calls"] for r in results):
        return None  # every run at x = 0: nothing to compare
    figure, axes = plt.subplots(figsize=(8, 4.5))
    colours = plt.get_cmap("tab20").colors
    for number, result in enumerate(results):
        axes.scatter(
            result["calls"],
            result["metrics"][metric],
            s=60,
            color=colours[number % len(colours)],
            marker=_MARKERS[number % len(_MARKERS)],
            label=f"{number + 1}  {label(result)} ({result['calls']:,} calls)",
            edgecolors="black",
            linewidths=0.5,
        )
        axes.annotate(
            str(number + 1),
            (result["calls"], result["metrics"][metric]),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
        )
    axes.set_xscale("symlog", linthresh=1)
    axes.set_xlim(left=-0.3)
    axes.set_xlabel("LLM calls over the whole run (symmetric log scale; dollars in the table)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} against LLM calls")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    data = _png(figure)
    plt.close(figure)
    return data


def _deltas(plt: Any, results: Sequence[dict[str, Any]], metric: str) -> bytes | None:
    base, runs = results[0], results[1:]
    if not runs:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.55 * len(runs) + 1.4))
    jitter = random.Random(0)
    names = []
    for row, result in enumerate(runs):
        qids = sorted(set(base["per_query"][metric]) & set(result["per_query"][metric]))
        deltas = [result["per_query"][metric][q] - base["per_query"][metric][q] for q in qids]
        y = [row + jitter.uniform(-0.22, 0.22) for _ in deltas]
        colours = ["#2a7" if d > 1e-9 else "#c33" if d < -1e-9 else "#888" for d in deltas]
        axes.scatter(deltas, y, s=12, c=colours, alpha=0.75, linewidths=0)
        mean = sum(deltas) / max(1, len(deltas))
        axes.plot([mean, mean], [row - 0.32, row + 0.32], color="black", linewidth=2)
        wins = sum(d > 1e-9 for d in deltas)
        losses = sum(d < -1e-9 for d in deltas)
        names.append(f"{label(result)}  (+{wins} / −{losses})")
    axes.axvline(0, color="#444", linewidth=0.8)
    axes.set_yticks(range(len(runs)), names, fontsize=8)
    axes.set_ylim(len(runs) - 0.5, -0.5)
    axes.set_xlabel(f"per-query {metric} minus {label(base)}  (dot: a query; bar: the mean)")
    axes.grid(axis="x", alpha=0.3)
    data = _png(figure)
    plt.close(figure)
    return data


def _sweep(plt: Any, sweep: Sequence[dict[str, Any]], metric: str) -> bytes | None:
    rows_with_metric = [r for r in sweep if metric in r["metrics"]]
    if not rows_with_metric:
        return None
    figure, axes = plt.subplots(figsize=(8, 4))
    for name in sorted({row["pipeline"] for row in rows_with_metric}):
        rows = sorted((r for r in rows_with_metric if r["pipeline"] == name), key=lambda r: r["depth"])
        axes.plot([r["depth"] for r in rows], [r["metrics"][metric] for r in rows], marker="o", label=name)
    depths = sorted({r["depth"] for r in rows_with_metric})
    axes.set_xticks(depths, [str(d) for d in depths])
    axes.set_xlabel("rerank depth (candidates)")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    data = _png(figure)
    plt.close(figure)
    return data


def report_plots(
    results: Sequence[dict[str, Any]], sweep: Sequence[dict[str, Any]], metric: str
) -> list[tuple[str, str, bytes]]:
    """``(title, caption, png)`` for each chart that has something to show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = [
        (
            "Quality against LLM calls",
            "Runs that make no LLM call sit at 0. The x axis is logarithmic above 1 call.",
            _quality_vs_calls(plt, results, metric),
        ),
        (
            "Per-query deltas against the baseline",
            "Each dot is one query: green where the run beats the baseline, red where it loses, "
            "grey where they tie.",
            _deltas(plt, results, metric),
        ),
        (
            "Quality against rerank depth",
            "Quality as the number of candidates reranked grows.",
            _sweep(plt, sweep, metric),
        ),
    ]
    return [(title, caption, png) for title, caption, png in charts if png is not None]
