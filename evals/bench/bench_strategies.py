"""Strategy efficiency: 100 BM25 candidates of TREC DL 2019 → top-10, per strategy.

The columns of the Setwise paper's efficiency table (Zhuang et al., SIGIR 2024) in two
units: *prompts* (every request sent; a both-orders pairwise comparison is 2) and
*inferences* (the paper's unit: a comparison counts once whichever way it is asked); plus
prompt and completion tokens, sequential rounds and wall time per query, and nDCG@10 with
the fair simulated judge (one latent model: label + σ·N(0,1) per pair) at σ = 0, σ = 1 and
σ = 1 with a position bias of 0.2.

* Timing: a local wire-format server that answers every request after a fixed delay
  (default 100 ms, a fast hosted model), the real OpenAI SDK, one query; sequential
  (``max_concurrency=1``) and concurrent (``max_concurrency=16``).
* Quality: the same strategies on the first ``--queries`` DL19 queries (all 43 by
  default), delay 0; calls, rounds and tokens per query are averaged over them at σ = 1.
* Tokens are the test server's count (whitespace words of the rendered prompt, the
  same for every strategy), not a model tokenizer: read them as relative sizes.

    python evals/bench/bench_strategies.py [--queries 43] [--delay 0.1] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from llmrerank import LLMReranker
from llmrerank.evaluation.datasets import EvalQuery, GoldenSet, load_dataset
from llmrerank.evaluation.metrics import evaluate
from llmrerank.strategies import Listwise, Pairwise, Pointwise, Setwise, Strategy
from llmrerank.testing import simulated_backend

DEPTH = 100
TOP_K = 10


@dataclass(frozen=True)
class Method:
    name: str
    strategy: Strategy
    # all-pairs on 100 candidates is 9,900 calls a query: timed, but too slow to score
    # on many queries through HTTP here; --all-pairs-quality turns its quality run on
    quality: bool = True
    sequential: bool = True
    # a pairwise comparison is asked in both orders: 2 prompts, 1 inference in the paper's unit
    prompts_per_inference: int = 1


JUDGES = {"sigma0": "dl19", "sigma1": "dl19@1.0", "sigma1_bias": "dl19@1.0,bias=0.2"}


def methods() -> list[Method]:
    return [
        Method("pointwise (grade each)", Pointwise()),
        Method("listwise (window 20, step 10)", Listwise(window=20, step=10)),
        Method("listwise partition (window 20)", Listwise(window=20, method="partition")),
        Method(
            "listwise partition (window 20, final window 20)",
            Listwise(window=20, method="partition", final_window=20),
        ),
        Method("listwise single pass (window=None)", Listwise(window=None)),
        Method("listwise first-token (window 20, step 10)", Listwise(window=20, step=10, first_token=True)),
        Method("listwise partition first-token", Listwise(window=20, method="partition", first_token=True)),
        Method("listwise ×3 shuffles (rrf)", Listwise(window=20, step=10, shuffles=3)),
        Method(
            "pairwise all-pairs",
            Pairwise(method="allpairs", max_allpairs=DEPTH),
            quality=False,
            sequential=False,
            prompts_per_inference=2,
        ),
        Method("pairwise heapsort", Pairwise(method="heapsort", top_k=TOP_K), prompts_per_inference=2),
        # 1,890 prompts a query: timed, scored only with --all-pairs-quality (minutes per judge)
        Method(
            "pairwise sliding (k=10)",
            Pairwise(method="sliding", top_k=TOP_K),
            quality=False,
            prompts_per_inference=2,
        ),
        Method("setwise heapsort (c=4)", Setwise(set_size=4, top_k=TOP_K)),
        Method("setwise heapsort (c=3)", Setwise(set_size=3, top_k=TOP_K)),
    ]


def timed(strategy: Strategy, query: EvalQuery, *, delay_s: float, concurrency: int) -> dict[str, float]:
    backend = simulated_backend("dl19", delay_s=delay_s)
    reranker = LLMReranker(backend, strategy=strategy, max_concurrency=concurrency)
    started = time.perf_counter()
    ranking = reranker.rerank(query.query, query.candidates[:DEPTH], top_k=TOP_K)
    wall = time.perf_counter() - started
    return {
        "calls": len(ranking.calls),
        "rounds": ranking.rounds,
        "prompt_tokens": ranking.usage.prompt_tokens,
        "completion_tokens": ranking.usage.completion_tokens,
        "wall_s": wall,
    }


def quality(strategy: Strategy, golden: GoldenSet, judge: str) -> dict[str, float]:
    """nDCG@10 over the queries, and per-query calls, rounds and tokens (mean; rounds max)."""
    reranker = LLMReranker(simulated_backend(judge), strategy=strategy, max_concurrency=16)
    run, calls, rounds, prompt, completion = {}, [], [], [], []
    for query in golden.queries:
        ranking = reranker.rerank(query.query, query.candidates[:DEPTH], top_k=TOP_K)
        run[query.qid] = {item.id: item.score for item in ranking}
        calls.append(len(ranking.calls))
        rounds.append(ranking.rounds)
        prompt.append(ranking.usage.prompt_tokens)
        completion.append(ranking.usage.completion_tokens)
    means, _ = evaluate(golden.qrels, run, ["ndcg@10"], rel_threshold=golden.rel_threshold)
    n = len(golden.queries)
    return {
        "ndcg10": round(means["ndcg@10"], 4),
        "mean_calls": round(sum(calls) / n, 1),
        "max_calls": max(calls),
        "mean_rounds": round(sum(rounds) / n, 2),
        "max_rounds": max(rounds),
        "mean_prompt_tokens": round(sum(prompt) / n),
        "mean_completion_tokens": round(sum(completion) / n),
    }


def ideal_ndcg(golden: GoldenSet) -> tuple[float, float]:
    """nDCG@10 of the BM25 order and of the best order reachable from the 100 candidates."""
    bm25, ideal = {}, {}
    for query in golden.queries:
        labels = golden.qrels.get(query.qid, {})
        n = len(query.candidates[:DEPTH])
        bm25[query.qid] = {c.id: float(n - i) for i, c in enumerate(query.candidates[:DEPTH])}
        ideal[query.qid] = {
            c.id: labels.get(c.id, 0) * n + (n - i) for i, c in enumerate(query.candidates[:DEPTH])
        }
    first, _ = evaluate(golden.qrels, bm25, ["ndcg@10"], rel_threshold=golden.rel_threshold)
    best, _ = evaluate(golden.qrels, ideal, ["ndcg@10"], rel_threshold=golden.rel_threshold)
    return first["ndcg@10"], best["ndcg@10"]


def _cell(value: object, fmt: str = "{}") -> str:
    return "not run" if value is None else fmt.format(value)


def markdown(result: dict[str, object]) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    lines = [
        "One query (timing):\n",
        "| method | prompts | inferences (paper's unit) | prompt tok | completion tok | rounds "
        "| wall seq (s) | wall ×16 (s) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        seq = f"{row['wall_sequential_s']:.1f}" if row["wall_sequential_s"] is not None else "—"
        lines.append(
            f"| {row['method']} | {row['calls']} | {row['inferences']} | {row['prompt_tokens']:,} "
            f"| {row['completion_tokens']:,} | {row['rounds']} | {seq} | {row['wall_concurrent_s']:.1f} |"
        )
    lines += [
        f"\nAll {result['quality_queries']} queries (quality; per-query cost at σ = 1):\n",
        "| method | nDCG@10 σ=0 | nDCG@10 σ=1 | nDCG@10 σ=1, bias 0.2 | prompts mean (max) "
        "| rounds mean (max) | prompt tok mean | completion tok mean |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        cost = row["cost_sigma1"]
        if cost is None:
            lines.append(f"| {row['method']} | not run | not run | not run | | | | |")
            continue
        q0, q1, qb = (_cell(row[f"ndcg10_{key}"], "{:.4f}") for key in JUDGES)
        lines.append(
            f"| {row['method']} | {q0} | {q1} | {qb} | {cost['mean_calls']} ({cost['max_calls']}) "
            f"| {cost['mean_rounds']} ({cost['max_rounds']}) | {cost['mean_prompt_tokens']:,} "
            f"| {cost['mean_completion_tokens']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=43, help="DL19 queries for the quality columns")
    parser.add_argument("--delay", type=float, default=0.1, help="server delay per call, seconds")
    parser.add_argument("--all-pairs-quality", action="store_true", help="also score all-pairs and sliding")
    parser.add_argument("--only", help="run only the methods whose name contains this text")
    parser.add_argument("--out", default="evals/bench/results/strategies.json")
    args = parser.parse_args()

    golden = load_dataset("dl19", limit=args.queries)
    timing_query = golden.queries[0]
    bm25, ideal = ideal_ndcg(golden)
    rows = []
    for method in methods():
        if args.only and args.only not in method.name:
            continue
        print(f"{method.name} ...", flush=True)
        concurrent = timed(method.strategy, timing_query, delay_s=args.delay, concurrency=16)
        sequential = (
            timed(method.strategy, timing_query, delay_s=args.delay, concurrency=1)
            if method.sequential
            else None
        )
        scored = method.quality or args.all_pairs_quality
        measured = (
            {key: quality(method.strategy, golden, judge) for key, judge in JUDGES.items()} if scored else {}
        )
        row = {
            "method": method.name,
            "estimated_calls": method.strategy.estimate_calls(DEPTH, TOP_K),
            **{k: int(concurrent[k]) for k in ("calls", "rounds", "prompt_tokens", "completion_tokens")},
            "inferences": int(concurrent["calls"]) // method.prompts_per_inference,
            "wall_sequential_s": None if sequential is None else round(sequential["wall_s"], 2),
            "wall_concurrent_s": round(concurrent["wall_s"], 2),
            **{f"ndcg10_{key}": measured[key]["ndcg10"] if scored else None for key in JUDGES},
            "cost_sigma1": measured.get("sigma1"),
            "cost_sigma1_bias": measured.get("sigma1_bias"),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    result: dict[str, object] = {
        "what": f"DL19 BM25 top-{DEPTH} → top-{TOP_K}; timing on query {timing_query.qid}, "
        f"quality on {len(golden.queries)} queries",
        "server_delay_s": args.delay,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "bm25_ndcg10": round(bm25, 4),
        "ideal_ndcg10_from_top100": round(ideal, 4),
        "quality_queries": len(golden.queries),
        "judges": JUDGES,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"DL19, {len(golden.queries)} queries: BM25 nDCG@10 {bm25:.4f}; best reachable from the "
        f"top-{DEPTH}: {ideal:.4f}; server delay {args.delay * 1000:.0f} ms/call. Prompts: requests "
        "sent; inferences: the Setwise paper's unit (a both-orders pairwise comparison is one).\n\n"
        + markdown(result)
    )
    print(markdown(result))


if __name__ == "__main__":
    main()
