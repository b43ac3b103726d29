"""The agreement report: Markdown and self-contained HTML (``templates/agreement.html.jinja``),
with each grade run's confusion matrix drawn as a heat-map (matplotlib, embedded as PNG)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .agreement import TAU, Agreement, MovedQuery
from .compare import Comparison, Significance

__all__ = ["Texts", "write_agreement_report"]

EXCERPT = 220


class Texts:
    """Query and passage texts of a golden set, for the tables."""

    def __init__(self, queries: Mapping[str, str], passages: Mapping[tuple[str, str], str]) -> None:
        self.queries = queries
        self.passages = passages

    def query(self, qid: str) -> str:
        return self.queries.get(qid, qid)

    def excerpt(self, qid: str, docid: str) -> str:
        text = " ".join(self.passages.get((qid, docid), "").split())
        return text if len(text) <= EXCERPT else text[: EXCERPT - 1].rstrip() + "…"


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _heatmap(found: Agreement) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = len(found.grades)
    figure, axes = plt.subplots(figsize=(1.1 * size + 2.2, 1.0 * size + 1.6))
    totals = [max(1, sum(row)) for row in found.confusion]
    shares = [[count / total for count in row] for row, total in zip(found.confusion, totals, strict=True)]
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for r, row in enumerate(found.confusion):
        for c, count in enumerate(row):
            colour = "white" if shares[r][c] > 0.55 else "black"
            axes.text(
                c, r, f"{count}\n{shares[r][c]:.0%}", ha="center", va="center", fontsize=9, color=colour
            )
    ticks = list(range(size))
    axes.set_xticks(ticks, [str(g) for g in found.grades])
    axes.set_yticks(ticks, [str(g) for g in found.grades])
    axes.set_xlabel("LLM grade")
    axes.set_ylabel("label")
    axes.set_title("share of each label's passages", fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _run_context(found: Agreement, texts: Texts) -> dict[str, Any]:
    disagreements = [
        {
            "query": texts.query(d.qid),
            "qid": d.qid,
            "docid": d.docid,
            "excerpt": texts.excerpt(d.qid, d.docid),
            "label": str(d.label),
            "grade": "–" if d.grade is None else f"{d.grade:g}",
            "confidence": _number(d.confidence, 2),
            "rank": f"{d.llm_rank} of {d.judged}",
            "lower_above": str(d.lower_above),
        }
        for d in found.disagreements
    ]
    share = found.inverted / found.ordered_pairs if found.ordered_pairs else 0.0
    return {
        "run": found.run,
        "rubrics": ", ".join(found.rubrics) or "-",
        "kind": found.kind,
        "summary": (
            f"{found.pairs} judged passages with a label over {found.queries} queries "
            f"({found.unlabelled} judged passages have no label and are left out)"
        ),
        "kappa": _number(found.kappa),
        "alpha": _number(found.alpha),
        "exact": "–" if found.exact is None else f"{found.exact:.1%}",
        "tau": _number(found.tau_mean),
        "tau_queries": len(found.tau),
        "inverted": f"{found.inverted} of {found.ordered_pairs} ({share:.1%})",
        "ties": str(found.llm_ties),
        "grades": [str(g) for g in found.grades],
        "confusion": [[str(g), *map(str, row)] for g, row in zip(found.grades, found.confusion, strict=True)],
        "heatmap": base64.b64encode(_heatmap(found)).decode() if found.kind == "grades" else None,
        "disagreements": disagreements,
    }


def _comparison_rows(
    results: Sequence[dict[str, Any]],
    agreements: Sequence[Agreement],
    comparisons: Sequence[Comparison],
    metric: str,
) -> list[dict[str, str]]:
    rows = []
    for index, (result, found) in enumerate(zip(results, agreements, strict=True)):
        entry = comparisons[index - 1] if index else None
        metric_delta = entry.metric(metric) if entry else None
        tau_delta = entry.metric(TAU) if entry else None
        rows.append(
            {
                "run": found.run,
                "rubric": ", ".join(found.rubrics) or "-",
                "kappa": _number(found.kappa),
                "alpha": _number(found.alpha),
                "tau": _number(found.tau_mean) + (tau_delta.mark() if tau_delta else ""),
                "tau_delta": "" if tau_delta is None else f"{tau_delta.delta:+.3f}",
                "tau_p": "" if tau_delta is None else f"{tau_delta.p_adjusted:.4f}",
                "metric": f"{result['metrics'][metric]:.4f}" + (metric_delta.mark() if metric_delta else ""),
                "metric_delta": "" if metric_delta is None else f"{metric_delta.delta:+.4f}",
                "metric_p": "" if metric_delta is None else f"{metric_delta.p_adjusted:.4f}",
                "wlt": ""
                if metric_delta is None
                else f"{metric_delta.wins} / {metric_delta.losses} / {metric_delta.ties}",
            }
        )
    return rows


def _moved_context(run: str, moved: Sequence[MovedQuery], texts: Texts, limit: int) -> dict[str, Any]:
    def rank(value: int | None) -> str:
        return "–" if value is None else str(value)

    def grade(value: float | None) -> str:
        return "–" if value is None else f"{value:g}"

    def describe(qid: str, m: tuple[str, int, int | None, int | None, float | None, float | None]) -> str:
        docid, label, a, b, ga, gb = m
        graded = f", grade {grade(ga)} → {grade(gb)}" if ga is not None or gb is not None else ""
        return f"{docid} (label {label}): rank {rank(a)} → {rank(b)}{graded}"

    def rows(items: Sequence[MovedQuery]) -> list[dict[str, Any]]:
        return [
            {
                "qid": q.qid,
                "query": texts.query(q.qid),
                "delta": f"{q.delta:+.4f}",
                "moved": [describe(q.qid, m) for m in q.moved],
            }
            for q in items[:limit]
        ]

    return {
        "run": run,
        "wins": rows([q for q in moved if q.delta > 0]),
        "losses": rows([q for q in moved if q.delta < 0]),
        "n_wins": sum(q.delta > 0 for q in moved),
        "n_losses": sum(q.delta < 0 for q in moved),
    }


def _markdown(context: dict[str, Any]) -> str:
    lines = [f"# {context['title']}", ""]
    if context["notes"]:
        lines += [context["notes"], ""]
    lines += [context["legend"], ""]
    if context["comparison"]:
        lines += [
            f"## Side by side (baseline: `{context['baseline']}`)",
            "",
            f"`*`: {context['significance']}.",
            "",
            f"| run | rubric | kappa (quadratic) | alpha (ordinal) | mean tau | tau delta | p tau | "
            f"{context['metric']} | delta | p | wins / losses / ties |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in context["comparison"]:
            cells = ["run", "rubric", "kappa", "alpha", "tau", "tau_delta", "tau_p", "metric"]
            cells += ["metric_delta", "metric_p", "wlt"]
            lines.append("| " + " | ".join(row[c] for c in cells) + " |")
        lines.append("")
    for run in context["runs"]:
        lines += [f"## {run['run']}", "", f"Rubric: `{run['rubrics']}`. {run['summary']}.", ""]
        lines += ["| measure | value |", "|---|---|"]
        if run["kind"] == "grades":
            lines += [
                f"| weighted Cohen's kappa (quadratic) | {run['kappa']} |",
                f"| Krippendorff's alpha (ordinal) | {run['alpha']} |",
                f"| exact agreement | {run['exact']} |",
            ]
        lines += [
            f"| mean Kendall tau per query ({run['tau_queries']} queries) | {run['tau']} |",
            f"| differently labelled pairs the LLM inverted | {run['inverted']} |",
            f"| of them tied by the LLM (not inverted) | {run['ties']} |",
            "",
        ]
        if run["kind"] == "grades":
            lines += ["Confusion matrix (rows: label, columns: LLM grade):", ""]
            lines += ["| label \\ LLM | " + " | ".join(run["grades"]) + " |"]
            lines += ["|---" * (len(run["grades"]) + 1) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in run["confusion"]]
            lines += ["", "Largest disagreements:", ""]
            lines += ["| query | passage | label | LLM grade | confidence |", "|---|---|---|---|---|"]
            lines += [
                f"| {d['query']} ({d['qid']}) | {d['docid']}: {d['excerpt']} | {d['label']} | "
                f"{d['grade']} | {d['confidence']} |"
                for d in run["disagreements"]
            ]
        else:
            lines += ["Passages most pushed down (lower-labelled passages ranked above them):", ""]
            lines += ["| query | passage | label | LLM rank | lower above |", "|---|---|---|---|---|"]
            lines += [
                f"| {d['query']} ({d['qid']}) | {d['docid']}: {d['excerpt']} | {d['label']} | "
                f"{d['rank']} | {d['lower_above']} |"
                for d in run["disagreements"]
            ]
        lines.append("")
    for moved in context["moved"]:
        lines += [
            f"## Per query: {moved['run']} against the baseline ({context['metric']})",
            "",
            f"{moved['n_wins']} queries won, {moved['n_losses']} lost; the passages that moved most "
            f"within the top {context['depth']} of either run:",
            "",
            "| | query | delta | passages that moved |",
            "|---|---|---|---|",
        ]
        for kind in ("wins", "losses"):
            lines += [
                f"| {kind[:-1] if kind == 'wins' else 'loss'} | {q['query']} ({q['qid']}) | {q['delta']} | "
                + "; ".join(q["moved"])
                + " |"
                for q in moved[kind]
            ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_agreement_report(
    results: Sequence[dict[str, Any]],
    agreements: Sequence[Agreement],
    out_dir: str | Path,
    *,
    texts: Texts,
    comparisons: Sequence[Comparison] = (),
    moved: Sequence[Sequence[MovedQuery]] = (),
    metric: str = "ndcg@10",
    significance: Significance | None = None,
    title: str = "LLM agreement with the labels",
    notes: str = "",
    depth: int = 10,
    moved_limit: int = 5,
) -> tuple[Path, Path]:
    """``agreement.md`` and ``agreement.html`` in ``out_dir``."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context: dict[str, Any] = {
        "title": title,
        "notes": notes,
        "legend": (
            "Only passages that the LLM stage judged and that have a label are compared. Kappa uses "
            "quadratic weights over the sorted union of the label and LLM grades; alpha is ordinal; "
            "tau is Kendall's tau-b between the LLM's scores and the labels within each query "
            "(queries whose judged passages share one label have none). A pair is inverted when the "
            "LLM ranks a lower-labelled passage above a higher-labelled one; confidence is the LLM's "
            "probability of the grade it gave, where the backend returned logprobs."
        ),
        "baseline": agreements[0].run if agreements else "",
        "metric": metric,
        "depth": depth,
        "significance": (significance.describe(len(comparisons)) if significance else ""),
        "comparison": _comparison_rows(results, agreements, comparisons, metric) if comparisons else [],
        "runs": [_run_context(found, texts) for found in agreements],
        "moved": [
            _moved_context(found.run, queries, texts, moved_limit)
            for found, queries in zip(agreements[1:], moved, strict=False)
        ],
    }
    md_path = out / "agreement.md"
    md_path.write_text(_markdown(context), "utf-8")
    environment = Environment(
        loader=PackageLoader("llmrerank.evaluation", "templates"),
        autoescape=select_autoescape(["jinja", "html"], default=True),
        keep_trailing_newline=True,
    )
    html_path = out / "agreement.html"
    html_path.write_text(environment.get_template("agreement.html.jinja").render(**context), "utf-8")
    return md_path, html_path
