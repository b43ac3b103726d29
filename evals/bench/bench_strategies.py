"""Strategy efficiency: 100 BM25 candidates of TREC DL 2019 → top-10, per strategy.

Laid out like the efficiency table of the Setwise paper (Zhuang et al., SIGIR 2024): LLM
calls, prompt and completion tokens, sequential rounds and wall time per query, plus
nDCG@10 with the simulated judge at 0%, 10% and 30% noise.

* Timing: a local wire-format server that answers every request after a fixed delay
  (default 100 ms, a fast hosted model), the real OpenAI SDK, one query; sequential
  (``max_concurrency=1``) and concurrent (``max_concurrency=16``).
* Quality: the same strategies on the first ``--queries`` DL19 queries, delay 0.
* Tokens are the test server's count (whitespace words of the rendered prompt, the
  same for every strategy), not a model tokenizer: read them as relative sizes.

    python evals/bench/bench_strategies.py [--queries 10] [--delay 0.1] [--out ...]
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


def methods() -> list[Method]:
    return [
        Method("pointwise (grade each)", Pointwise()),
        Method("listwise (window 20, step 10)", Listwise(window=20, step=10)),
        Method("listwise ×3 shuffles (rrf)", Listwise(window=20, step=10, shuffles=3)),
        Method(
            "pairwise all-pairs",
            Pairwise(method="allpairs", max_allpairs=DEPTH),
            quality=False,
            sequential=False,
        ),
        Method("pairwise heapsort", Pairwise(method="heapsort", top_k=TOP_K)),
        Method("pairwise sliding (k=10)", Pairwise(method="sliding", top_k=TOP_K)),
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


def quality(strategy: Strategy, golden: GoldenSet, noise: float) -> float:
    reranker = LLMReranker(simulated_backend(f"dl19@{noise}"), strategy=strategy, max_concurrency=16)
    run = {}
    for query in golden.queries:
        ranking = reranker.rerank(query.query, query.candidates[:DEPTH])
        run[query.qid] = {item.id: item.score for item in ranking}
    means, _ = evaluate(golden.qrels, run, ["ndcg@10"], rel_threshold=golden.rel_threshold)
    return means["ndcg@10"]


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


def markdown(result: dict[str, object]) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    lines = [
        "| method | calls | prompt tok | completion tok | rounds | wall seq (s) | wall ×16 (s) "
        "| nDCG@10 0% | nDCG@10 10% | nDCG@10 30% |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        seq = f"{row['wall_sequential_s']:.1f}" if row["wall_sequential_s"] is not None else "—"
        q0, q1, q3 = (
            f"{row[key]:.4f}" if row[key] is not None else "not run"
            for key in ("ndcg10_noise0", "ndcg10_noise10", "ndcg10_noise30")
        )
        lines.append(
            f"| {row['method']} | {row['calls']} | {row['prompt_tokens']:,} | {row['completion_tokens']:,} "
            f"| {row['rounds']} | {seq} | {row['wall_concurrent_s']:.1f} | {q0} | {q1} | {q3} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=10, help="DL19 queries for the quality columns")
    parser.add_argument("--delay", type=float, default=0.1, help="server delay per call, seconds")
    parser.add_argument("--all-pairs-quality", action="store_true")
    parser.add_argument("--out", default="evals/bench/results/strategies.json")
    args = parser.parse_args()

    golden = load_dataset("dl19", limit=args.queries)
    timing_query = golden.queries[0]
    bm25, ideal = ideal_ndcg(golden)
    rows = []
    for method in methods():
        print(f"{method.name} ...", flush=True)
        concurrent = timed(method.strategy, timing_query, delay_s=args.delay, concurrency=16)
        sequential = (
            timed(method.strategy, timing_query, delay_s=args.delay, concurrency=1)
            if method.sequential
            else None
        )
        scored = method.quality or args.all_pairs_quality
        row = {
            "method": method.name,
            "estimated_calls": method.strategy.estimate_calls(DEPTH, TOP_K),
            **{k: int(concurrent[k]) for k in ("calls", "rounds", "prompt_tokens", "completion_tokens")},
            "wall_sequential_s": None if sequential is None else round(sequential["wall_s"], 2),
            "wall_concurrent_s": round(concurrent["wall_s"], 2),
            "ndcg10_noise0": round(quality(method.strategy, golden, 0.0), 4) if scored else None,
            "ndcg10_noise10": round(quality(method.strategy, golden, 0.1), 4) if scored else None,
            "ndcg10_noise30": round(quality(method.strategy, golden, 0.3), 4) if scored else None,
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
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"BM25 nDCG@10 {bm25:.4f}; best reachable from the top-{DEPTH}: {ideal:.4f}; "
        f"server delay {args.delay * 1000:.0f} ms/call.\n\n" + markdown(result)
    )
    print(markdown(result))


if __name__ == "__main__":
    main()
