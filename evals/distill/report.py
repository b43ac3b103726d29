"""The report of one distillation split (issue 24), from the eval results and training records.

    python evals/distill/report.py dl20-dl19     (or scifact; run_loop.sh calls it)

Writes ``evals/reports/distill-SPLIT/report.md`` (and ``cascade/``, ``curve/``: ``llmrerank eval
report`` over the runs): the narrowing stage before and after, the cascade at the same LLM budget,
the learning curve over label counts, training times, and the LLM calls ``skip_margin`` routing
saves. Stage-alone figures of a stage that ran inside a cascade come from the cascade's trace
(its scores over every candidate, scored once), with the harness's own metrics; the routing
count replays the router's rule (``llmrerank.rerankers.routing``) on the same trace: a query whose
stage leads its top-1 over its top-2 by at least the margin keeps the stage's order, no LLM call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrerank.evaluation import evaluate, load_dataset

ROOT = Path(__file__).resolve().parents[2]
LLMRERANK = [sys.executable, "-c", "import sys; from llmrerank.cli import main; sys.exit(main())"]
DL19_BASE = "evals/reports/cascade-dl19/results/dl19__"

SPLITS: dict[str, dict[str, Any]] = {
    "dl20-dl19": {
        "title": "DL20 labels → DL19",
        "train": "TREC DL 2020: 54 queries × BM25 top-100, labelled by sim:dl20@1.0 (pointwise, 0–3)",
        "dataset": "dl19",
        "depth": 50,
        "sizes": [10, 25, 54],
        "limit": None,
        "train_set": "dl20",
        "no_ce": "not trained: the shipped cross-encoder's own training set was DL20 with its gold labels, "
        "the very pairs the teacher labels, so it has nothing new to learn from them and its "
        "validation on DL20 queries is contaminated (two runs, lr 3e-5 × 1 epoch and lr 1e-4 × 2 "
        "epochs, both fell below the base on validation: 0.4366 → 0.4314 and → 0.3916)",
        # (row, stage-alone results or trace, cascade results): BM25, shipped CE, dense
        "baselines": [
            ("BM25 (no reranking)", f"{DL19_BASE}bm25__r0.json", f"{DL19_BASE}bm25__r0.json"),
            (
                "shipped cross-encoder (minilm-l6-ce)",
                f"{DL19_BASE}cross-encoder__r0.json",
                f"{DL19_BASE}cross-encoder-20-listwise__r0.json",
            ),
            (
                "dense (all-MiniLM-L6-v2)",
                f"{DL19_BASE}dense__r0.json",
                f"{DL19_BASE}dense-20-listwise__r0.json",
            ),
        ],
        # the base dense stage at the students' max_length, stage alone (no cascade of its own)
        "alone": [
            ("dense (all-MiniLM-L6-v2) cut at 128 tokens, as the student", "results/dl19__dense-128__r0.json")
        ],
    },
    "scifact": {
        "title": "SciFact train labels → SciFact test",
        "train": "SciFact train: the first 50 claims × BM25 top-30, labelled by sim:scifact@1.0 "
        "(pointwise, 0–3; relevant read as 3)",
        "dataset": "scifact",
        "depth": 30,
        "sizes": [25, 50],
        "limit": 100,
        "train_set": "scifact-train",
        "no_ce": "not trained: the shipped cross-encoder's own training set included the SciFact "
        "train claims the teacher labels (see the DL20 split)",
        "baselines": [
            ("BM25 (no reranking)", "results/scifact__bm25__r0.json", "results/scifact__bm25__r0.json"),
            (
                "shipped cross-encoder (minilm-l6-ce)",
                "trace-cross-encoder-20-listwise.jsonl",
                "results/scifact__cross-encoder-20-listwise__r0.json",
            ),
            (
                "dense (all-MiniLM-L6-v2)",
                "trace-dense-20-listwise.jsonl",
                "results/scifact__dense-20-listwise__r0.json",
            ),
        ],
    },
}


@dataclass
class StageFromTrace:
    """One stage's scores per query (from a cascade trace), its metrics and top-1/top-2 margins."""

    metrics: dict[str, float]
    per_query_ndcg: dict[str, float]
    margins: dict[str, float]


def stage_from_trace(trace: Path, dataset: str, depth: int, limit: int | None) -> StageFromTrace:
    golden = load_dataset(dataset, depth=depth, limit=limit)
    qid_of = {q.query: q.qid for q in golden.queries}
    runs: dict[str, dict[str, float]] = {}
    margins: dict[str, float] = {}
    for line in trace.read_text("utf-8").splitlines():
        record = json.loads(line)
        qid = qid_of[record["query"]]
        stages = record["stage_scores"]
        # the narrowing stage: the first after the input (the first stage's scores) to score every
        # candidate; routing reads its probability when it has one
        scored = [s for s in stages if s != "input" and not s.endswith(":prob")]
        stage = max(scored, key=lambda s: len(stages[s]))
        runs[qid] = stages[stage]
        ranked = sorted(stages.get(f"{stage}:prob", stages[stage]).values(), reverse=True)
        margins[qid] = ranked[0] - ranked[1] if len(ranked) >= 2 else float("-inf")
    means, per_query = evaluate(
        golden.qrels, runs, ["ndcg@10", "mrr@10", "recall@20"], rel_threshold=golden.rel_threshold
    )
    return StageFromTrace(means, per_query["ndcg@10"], margins)


def llm_calls(result: dict[str, Any]) -> int:
    """The LLM calls a run asked, paid or answered by the response cache: the LLM budget."""
    return int(result["calls"]) + int(result.get("cache_hits") or 0)


def routing_rows(stage: StageFromTrace, cascade: dict[str, Any]) -> list[dict[str, Any]]:
    """Per skip_margin (each query's margin is a threshold): queries skipped, calls, nDCG@10."""
    with_llm = cascade["per_query"]["ndcg@10"]
    calls_per_query = llm_calls(cascade) / max(1, cascade["queries"])
    margins = stage.margins
    rows = []
    for threshold in sorted({*margins.values(), float("inf")}, reverse=True):
        skipped = {q for q in margins if margins[q] >= threshold}
        ndcg = sum(stage.per_query_ndcg[q] if q in skipped else with_llm[q] for q in margins) / len(margins)
        rows.append(
            {
                "skip_margin": threshold if skipped else None,
                "skipped": len(skipped),
                "calls": round((len(margins) - len(skipped)) * calls_per_query),
                "ndcg@10": round(ndcg, 4),
            }
        )
    return rows


def teacher_against_gold(labels: Path, train_set: str) -> list[str]:
    """Markdown rows: how many labelled pairs of each gold grade the teacher gave each label."""
    qrels = load_dataset(train_set).qrels
    counts: dict[tuple[int, int], int] = {}
    for line in labels.read_text("utf-8").splitlines():
        row = json.loads(line)
        gold = int(qrels.get(row["query_id"], {}).get(row["passage_id"], 0))
        key = (gold, round(row["label"]))
        counts[key] = counts.get(key, 0) + 1
    scale = range(4)
    rows = ["| gold grade | " + " | ".join(f"teacher {t}" for t in scale) + " | pairs |"]
    rows.append("|---" * (len(scale) + 2) + "|")
    for gold in sorted({g for g, _ in counts}):
        cells = [counts.get((gold, t), 0) for t in scale]
        rows.append(f"| {gold} | " + " | ".join(f"{c:,}" for c in cells) + f" | {sum(cells):,} |")
    return rows


def base_name(path: str) -> str:
    """A base model's folder name (the packaged all-MiniLM-L6-v2 sits in a folder named model)."""
    folder = Path(path)
    return folder.parent.name if folder.name == "model" else folder.name


def not_run_note(split: str, lines: list[str]) -> list[str]:
    """The closing note when some run is missing: what, and the command that makes it."""
    if not any("not run" in line for line in lines):
        return []
    return [
        "",
        "## Not run",
        "",
        "The rows marked *not run* have no trained model or eval result yet: the 2-core machine "
        "these runs were made on was shared with other jobs and the session ended first. "
        f"`STEPS='label distill eval report' evals/distill/run_loop.sh {split}` makes them.",
    ]


def main(split: str) -> None:
    spec = SPLITS[split]
    ds, depth, sizes = spec["dataset"], spec["depth"], spec["sizes"]
    full = sizes[-1]
    report_dir = ROOT / "evals" / "reports" / f"distill-{split}"
    models = ROOT / ".cache" / "distill" / split

    def resolve(name: str) -> Path:
        if name.startswith("evals/"):
            return ROOT / name
        return report_dir / "traces" / name if name.startswith("trace-") else report_dir / name

    def load(name: str) -> dict[str, Any]:
        return json.loads(resolve(name).read_text("utf-8"))  # type: ignore[no-any-return]

    def stage_metrics(name: str) -> dict[str, float] | None:
        if not resolve(name).exists():
            return None
        if name.startswith("trace-"):
            return stage_from_trace(resolve(name), ds, depth, spec["limit"]).metrics
        return load(name)["metrics"]  # type: ignore[no-any-return]

    results = f"results/{ds}__"
    cascades = [
        f"ce/{ds}__distilled-ce-20-listwise__r0.json",
        f"{results}distilled-dense-20-listwise__r0.json",
    ]
    traces = ["trace-distilled-ce-20-listwise.jsonl", "trace-distilled-dense-20-listwise.jsonl"]
    curve = [f"curve/{ds}__distilled-dense-{n}q__r0.json" for n in sizes[:-1]]
    ran = [str(resolve(c)) for c in [c for _, _, c in spec["baselines"]] + cascades if resolve(c).exists()]
    if len(ran) >= 2:
        title = f"{spec['title']}: BM25 top-{depth} → stage → 20 → LLM"
        subprocess.run(
            [*LLMRERANK, "eval", "report", *ran, "--out", str(report_dir / "cascade"), "--title", title],
            check=True,
        )
    records = {
        name: json.loads((models / name / "llmrerank-training.json").read_text("utf-8"))
        for name in [f"ce-{full}q"] + [f"dense-{n}q" for n in sizes]
        if (models / name / "llmrerank-training.json").exists()
    }

    # the distilled stage routing is replayed on: the cross-encoder when one was trained, else dense
    def from_trace(i: int) -> StageFromTrace | None:
        path = resolve(traces[i])
        return stage_from_trace(path, ds, depth, spec["limit"]) if path.exists() else None

    routed = next((i for i in (0, 1) if resolve(traces[i]).exists() and resolve(cascades[i]).exists()), None)
    distilled = None if routed is None else from_trace(routed)
    distilled_dense = from_trace(1)
    curve_ran = [c for c in curve if resolve(c).exists()]
    if curve_ran:
        title = f"{spec['title']}: learning curve, stage alone"
        runs = [str(resolve(spec["baselines"][0][1])), *(str(resolve(c)) for c in curve_ran)]
        subprocess.run(
            [*LLMRERANK, "eval", "report", *runs, "--out", str(report_dir / "curve"), "--title", title],
            check=True,
        )
    missing = "not run (see the note at the end)"
    limited = f" (the first {spec['limit']} {ds} queries)" if spec["limit"] else ""
    lines = [f"# Issue 24, the loop measured: {spec['title']}", ""]
    lines += [
        f"Teacher: {spec['train']}. The judge is the fair simulated judge (each pair read as its "
        "qrels grade + N(0, 1), fixed per pair): a stand-in for a real LLM, not one. The students "
        f"are evaluated on {ds} queries{limited} they never saw (`distill --eval-set {ds}` refuses "
        f"overlapping labels). Made by `evals/distill/run_loop.sh {split}`; the harness's own reports are in "
        "`cascade/` and `curve/`.",
        "",
        f"## The narrowing stage alone (BM25 top-{depth} reranked)",
        "",
        "| stage | nDCG@10 | recall@20 |",
        "|---|---|---|",
    ]
    for name, alone, _ in spec["baselines"]:
        m = stage_metrics(alone)
        lines.append(
            f"| {name} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} |" if m else f"| {name} | {missing} | |"
        )
    for name, alone in spec.get("alone", []):
        m = stage_metrics(alone)
        lines.append(
            f"| {name} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} |" if m else f"| {name} | {missing} | |"
        )
    for name, trace in zip(
        [f"distilled cross-encoder ({full} queries)", f"distilled dense ({full} queries)"],
        traces,
        strict=True,
    ):
        m = stage_metrics(trace)
        absent = spec["no_ce"] if "cross-encoder" in name else missing
        lines.append(
            f"| **{name}** | **{m['ndcg@10']:.4f}** | **{m['recall@20']:.4f}** |"
            if m
            else f"| {name} | {absent} | |"
        )
    lines += [
        "",
        "Distilled rows (and, for SciFact, the shipped stages): the stage's scores over all "
        f"{depth} candidates from the cascade trace, scored with the harness's metrics.",
        "",
        f"## The cascade at the same LLM budget (BM25 top-{depth} → stage → 20 → LLM, listwise)",
        "",
        "| narrowing stage | nDCG@10 | recall@20 | LLM calls (paid or cached) |",
        "|---|---|---|---|",
    ]
    cascade_rows = [(n.split(" (")[0], c) for n, _, c in spec["baselines"]]
    cascade_rows[0] = ("none: BM25 order, no LLM", cascade_rows[0][1])
    cascade_rows += [("distilled cross-encoder", cascades[0]), ("distilled dense", cascades[1])]
    for name, path in cascade_rows:
        if not resolve(path).exists():
            absent = "not trained (above)" if name == "distilled cross-encoder" else missing
            lines.append(f"| {name} | {absent} | | |")
            continue
        r = load(path)
        lines.append(
            f"| {name} | {r['metrics']['ndcg@10']:.4f} | {r['metrics']['recall@20']:.4f} | {llm_calls(r)} |"
        )
    lines += [
        "",
        "## Learning curve: the distilled dense stage against the number of labelled queries",
        "",
        f"| labelled queries | pairs | train / validation queries | validation nDCG@10 before → best "
        f"(teacher labels) | {ds} nDCG@10 | {ds} recall@20 | training s |",
        "|---|---|---|---|---|---|---|",
    ]
    curve_metrics = [stage_metrics(c) for c in curve] + [distilled_dense.metrics if distilled_dense else None]
    for n, m in zip(sizes, curve_metrics, strict=True):
        if m is None or f"dense-{n}q" not in records:
            lines.append(f"| {n} | {missing} | | | | | |")
            continue
        rec = records[f"dense-{n}q"]
        counts, val = rec["counts"], rec["validation"]
        lines.append(
            f"| {n} | {counts['pairs']} | {counts['train_queries']} / {counts['validation_queries']} | "
            f"{val['before']:.4f} → {val['best']:.4f} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} | "
            f"{rec['seconds']:.0f} |"
        )
    lines += [
        "",
        "## Training (`llmrerank distill`, this 2-core CPU, shared with other jobs while it ran)",
        "",
        "| student | base | loss | epochs | lr | batch | max_length | steps (best) | val. nDCG@10 | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in [f"dense-{n}q" for n in sizes] + ([f"ce-{full}q"] if f"ce-{full}q" in records else []):
        if key not in records:
            lines.append(f"| {key} | {missing} | | | | | | | | |")
            continue
        rec, s = records[key], records[key]["settings"]
        kind, n = key.rsplit("-", 1)
        name = f"{'dense' if kind == 'dense' else 'cross-encoder'}, {n[:-1]} queries"
        lines.append(
            f"| {name} | `{base_name(rec['base_model'])}` | {s['loss']} | {s['epochs']} | "
            f"{s['learning_rate']} | {s['batch_size']} | {s['max_length']} | "
            f"{rec['counts']['steps']} ({rec['validation']['best_step']}) | "
            f"{rec['validation']['before']:.4f} → {rec['validation']['best']:.4f} | {rec['seconds']:.0f} |"
        )
    for rec in records.values():
        labels = rec["labels"]
        lines.append(
            f"\nLabels of `{rec['output']}`: `{labels['path']}` (sha256 `{labels['sha256'][:16]}…`)."
        )
    all_labels = models / f"labels-{full}q.jsonl"
    if all_labels.exists():
        lines += [
            "",
            f"## The teacher's labels against the gold qrels ({full} queries, `{all_labels.name}`)",
            "",
            "Pairs by their gold grade (unjudged: 0) and the label the teacher gave them (the "
            "judge reads SciFact's relevant, gold 1, as 3): a non-relevant pair graded 1 or more "
            "is noise a student learns from.",
            "",
            *teacher_against_gold(all_labels, spec["train_set"]),
        ]
    if distilled is None or routed is None:
        lines += ["", "## skip_margin routing with the distilled stage", "", missing]
        lines += not_run_note(split, lines)
        (report_dir / "report.md").write_text("\n".join(lines) + "\n", "utf-8")
        print(report_dir / "report.md")
        return
    cascade = load(cascades[routed])
    rows = routing_rows(distilled, cascade)
    stage_name = ("distilled cross-encoder", "distilled dense stage")[routed]
    score_kind = ("sigmoid scores", "cosine similarities")[routed]
    no_routing = cascade["metrics"]["ndcg@10"]
    shipped = load(spec["baselines"][1][2])["metrics"]["ndcg@10"]
    lines += [
        "",
        f"## skip_margin routing with the {stage_name}",
        "",
        f"A query whose {stage_name} leads its top-1 over its top-2 ({score_kind}) by at least "
        "`skip_margin` keeps the stage's order and makes no LLM call: the router's rule, replayed on "
        "the cascade trace (`routing.json` has every threshold).",
        "",
        "| keep nDCG@10 at least | skip_margin | LLM calls | saved | nDCG@10 |",
        "|---|---|---|---|---|",
    ]
    total = rows[0]["calls"]  # the first threshold, infinity, skips nothing
    for goal, floor in [
        (f"the distilled cascade without routing ({no_routing:.4f})", no_routing - 1e-9),
        (f"that minus 0.01 ({no_routing - 0.01:.4f})", no_routing - 0.01),
        (f"the shipped cross-encoder's cascade ({shipped:.4f})", shipped - 1e-9),
    ]:
        ok = [r for r in rows if r["ndcg@10"] >= floor]
        if not ok:
            lines.append(f"| {goal} | – | – | – | not reached |")
            continue
        best = max(ok, key=lambda r: (r["skipped"], r["ndcg@10"]))
        margin = "none" if best["skip_margin"] is None else f"{best['skip_margin']:.4f}"
        lines.append(
            f"| {goal} | {margin} | {best['calls']} | {total - best['calls']} | {best['ndcg@10']:.4f} |"
        )
    lines += not_run_note(split, lines)
    (report_dir / "report.md").write_text("\n".join(lines) + "\n", "utf-8")
    (report_dir / "routing.json").write_text(json.dumps(rows, indent=1) + "\n", "utf-8")
    print(report_dir / "report.md")


if __name__ == "__main__":
    main(sys.argv[1])
