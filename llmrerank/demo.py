"""``llmrerank demo``: the hybrid cascade on a real golden set, with a before/after table.

BM25 top-100 → a local stage narrows to 20 → an LLM orders those 20. The LLM is OpenAI or
Anthropic when their key is set, else a local llama.cpp server with a small model.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import settings
from .cache import DiskCache
from .errors import LLMRerankError
from .evaluation.datasets import GoldenSet, load_dataset
from .evaluation.metrics import evaluate
from .pipeline import PipelineSpec, build_stage
from .rerankers.protocol import Reranker
from .types import Ranking

__all__ = ["DemoRow", "choose_model", "run_demo"]

LOCAL_NOTE = (
    "The local model is Qwen2.5-Coder-0.5B (0.5 B parameters, CPU). It proves the whole "
    "pipeline runs offline — constrained JSON always parses, the cache makes re-runs free — "
    "but it is far too small to judge relevance well: expect the LLM row to be no better, "
    "often worse, than its input. Set OPENAI_API_KEY or ANTHROPIC_API_KEY (or pass --model) "
    "for an LLM that lifts quality."
)


def choose_model(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("OPENAI_API_KEY"):
        return "openai:gpt-4o-mini"
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic:claude-haiku-4-5"
    return "local:"


@dataclass
class DemoRow:
    name: str
    run: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    degraded: int = 0
    repairs: int = 0


def _score_rows(golden: GoldenSet, rows: Sequence[DemoRow]) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        means, _ = evaluate(golden.qrels, row.run, ["ndcg@10", "mrr@10"], rel_threshold=golden.rel_threshold)
        table.append(
            {
                "stage": row.name,
                "ndcg@10": means["ndcg@10"],
                "mrr@10": means["mrr@10"],
                "seconds_per_query": statistics.mean(row.seconds) if row.seconds else 0.0,
                "calls": row.calls,
                "tokens": row.prompt_tokens + row.completion_tokens,
                "degraded": row.degraded,
                "repairs": row.repairs,
            }
        )
    return table


def _print_table(echo: Callable[[str], None], table: Sequence[dict[str, Any]]) -> None:
    echo("")
    echo(f"{'stage':<48}{'nDCG@10':>9}{'MRR@10':>9}{'s/query':>9}{'calls':>7}{'tokens':>9}{'degraded':>10}")
    for row in table:
        echo(
            f"{row['stage']:<48}{row['ndcg@10']:>9.4f}{row['mrr@10']:>9.4f}{row['seconds_per_query']:>9.2f}"
            f"{row['calls']:>7}{row['tokens']:>9}{row['degraded']:>10}"
        )


def _run(ranking: Ranking) -> dict[str, float]:
    return {item.id: item.score for item in ranking}


# backend "auto": ONNX Runtime fp32 on a CPU when llmrerank[onnx] is installed (the same
# nDCG@10 as torch, and starts without importing torch; see evals/bench/README.md), torch on a GPU
LOCAL_STAGES = ("dense:", "cross-encoder:")


def _local_row(stage: Reranker, golden: GoldenSet) -> DemoRow:
    row = DemoRow(f"{stage.name} over all candidates")
    for query in golden.queries:
        started = time.perf_counter()
        row.run[query.qid] = _run(stage.rerank(query.query, query.candidates))
        row.seconds.append(time.perf_counter() - started)
    return row


def run_demo(
    *,
    dataset: str = "dl19",
    queries: int = 10,
    model: str | None = None,
    base_url: str | None = None,
    strategy: str = "listwise",
    narrow_with: str = "auto",
    narrow_to: int = 20,
    rubric: str | None = None,
    cache_dir: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``narrow_with="auto"`` scores every local stage on the golden set first and narrows
    with the one that ranks it best: measured, not assumed."""
    golden = load_dataset(dataset, limit=queries)
    chosen = choose_model(model)
    cache = DiskCache(settings.cache_dir(cache_dir))
    depth = len(golden.queries[0].candidates)
    echo(f"dataset {golden.name}: {len(golden.queries)} queries × {depth} first-stage candidates")
    specs = LOCAL_STAGES if narrow_with == "auto" else (narrow_with,)
    local: dict[str, tuple[Reranker, DemoRow]] = {}
    for spec in specs:
        stage = build_stage(spec, cache=cache)
        load = getattr(stage, "load", None)
        if load is not None:  # timed apart, so the first query's latency is the stage's own
            seconds = load()
            echo(f"loaded {stage.name} ({getattr(stage, 'backend_in_use', '?')}) in {seconds:.1f}s")
        local[spec] = (stage, _local_row(stage, golden))
    local_scores = dict(zip(local, _score_rows(golden, [row for _, row in local.values()]), strict=True))
    best = max(local, key=lambda spec: local_scores[spec]["ndcg@10"])
    narrower = local[best][0]
    if narrow_with == "auto":
        measured = ", ".join(f"{local[s][0].name} {local_scores[s]['ndcg@10']:.4f}" for s in local)
        echo(f"local stages, nDCG@10 over all candidates: {measured}; narrowing with {narrower.name}")
    first = DemoRow("BM25 (first stage)")
    for query in golden.queries:
        first.run[query.qid] = {
            c.id: float(len(query.candidates) - i) for i, c in enumerate(query.candidates)
        }
    local_rows = [first, *(row for _, row in local.values())]
    echo(f"LLM {chosen} ({strategy}); narrowing with {narrower.name} to {narrow_to}")
    try:
        cascade = PipelineSpec(
            name="demo",
            narrow_with=(narrower,),  # already loaded and measured above
            narrow_to=(narrow_to,),
            llm=chosen,
            base_url=base_url,
            strategy=strategy,
            rubric=rubric,
            max_concurrency=4,
            llm_timeout_s=300,
        ).build(cache=cache)
    except LLMRerankError:
        # what was measured is still worth printing; the error itself says why the LLM is missing
        _print_table(echo, _score_rows(golden, local_rows))
        echo("")
        echo(f"no cascade row: the LLM {chosen} could not start (the error below says why)")
        raise
    cascade_row = DemoRow(f"cascade: {narrower.name} → {narrow_to} → LLM")
    for number, query in enumerate(golden.queries, start=1):
        started = time.perf_counter()
        ranking = cascade.rerank(query.query, query.candidates)
        cascade_row.seconds.append(time.perf_counter() - started)
        cascade_row.run[query.qid] = _run(ranking)
        local_stage, llm_stage = ranking.stages
        cascade_row.calls += sum(1 for call in ranking.calls if not call.cached)
        cascade_row.prompt_tokens += ranking.usage.prompt_tokens
        cascade_row.completion_tokens += ranking.usage.completion_tokens
        cascade_row.degraded += ranking.degraded
        cascade_row.repairs += sum(ranking.repairs.values())
        echo(
            f"  [{number}/{len(golden.queries)}] {query.qid}: local {local_stage.latency_s:.1f}s, "
            f"LLM {llm_stage.latency_s:.1f}s, {llm_stage.calls} calls"
            + (f", degraded: {ranking.degraded_reason}" if ranking.degraded else "")
        )
    table = _score_rows(golden, [*local_rows, cascade_row])
    _print_table(echo, table)
    echo("")
    echo(
        "s/query of the cascade includes its local stage; repairs of LLM output: " + str(cascade_row.repairs)
    )
    if chosen.startswith("local:"):
        echo(LOCAL_NOTE)
    return table
