"""Run experiments: datasets × pipelines × repeats, through the response cache.

Per-query results are appended to a checkpoint as they finish, so an interrupted run
resumes where it stopped and a re-run costs nothing (every answer is cached).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._yaml import read_yaml_mapping
from ..cache import DiskCache
from ..driver import call_log
from ..errors import BudgetError, UserError
from ..pricing import PriceTable
from ..rerankers.protocol import Reranker
from .batch import run_batch_mode
from .datasets import GoldenSet, load_dataset
from .estimate import estimate, query_bound
from .metrics import DEFAULT_METRICS, evaluate
from .pipelines import PipelineSpec, expand_pipelines
from .progress import Progress
from .ray_executor import run_ray_mode
from .records import PaidJournal, query_record

__all__ = ["Experiment", "RunResult", "estimate", "load_experiment", "run_experiment"]

SCHEMA = "llmrerank.eval/1"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    limit: int | None = None
    depth: int | None = None


@dataclass(frozen=True)
class Experiment:
    name: str
    datasets: tuple[DatasetSpec, ...]
    pipelines: tuple[PipelineSpec, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    repeats: int = 1
    cache_dir: str | None = None
    source: str = ""
    # provider batch mode: true or a mapping of evaluation.batch.BatchOptions fields
    batch: Any = None
    # "local" (None), "ray", or a mapping of evaluation.ray_executor.RayOptions fields
    executor: Any = None


def load_experiment(path: str | Path) -> Experiment:
    file = Path(path)
    needs = "an experiment needs 'datasets' and 'pipelines'"
    raw = read_yaml_mapping(file, "experiment", needs)
    if "pipelines" not in raw or "datasets" not in raw:
        raise UserError(f"{file}: {needs}")
    datasets = tuple(
        DatasetSpec(d) if isinstance(d, str) else DatasetSpec(d["name"], d.get("limit"), d.get("depth"))
        for d in raw["datasets"]
    )
    pipelines = tuple(spec for p in raw["pipelines"] for spec in expand_pipelines(p))
    return Experiment(
        name=raw.get("name", file.stem),
        datasets=datasets,
        pipelines=pipelines,
        metrics=tuple(raw.get("metrics", DEFAULT_METRICS)),
        repeats=int(raw.get("repeats", 1)),
        cache_dir=raw.get("cache_dir"),
        source=str(file),
        batch=raw.get("batch"),
        executor=raw.get("executor"),
    )


@dataclass
class RunResult:
    """One dataset × pipeline × repeat; serialises to the versioned results JSON."""

    data: dict[str, Any] = field(default_factory=dict)

    @property
    def path_name(self) -> str:
        return f"{self.data['dataset']}__{_slug(self.data['pipeline']['name'])}__r{self.data['repeat']}.json"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def _git_commit() -> str | None:
    """The commit of the repository the experiment runs in (the current directory), if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


def _read_checkpoint(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text("utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            done[record["qid"]] = record
    return done


def run_experiment(
    experiment: Experiment,
    out_dir: str | Path,
    *,
    factory: Callable[[PipelineSpec], Reranker] | None = None,
    max_cost_usd: float | None = None,
    progress: bool | Progress = True,
) -> Iterator[RunResult]:
    """Yield one finished ``RunResult`` per dataset × pipeline × repeat (written to ``out_dir``).

    ``progress``: True shows a bar on a terminal and periodic lines elsewhere (``Progress``);
    pass a ``Progress`` to choose the interval or stream, False for silence."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = DiskCache(experiment.cache_dir) if experiment.cache_dir else None
    build = factory or (lambda spec: spec.build(cache=cache))
    prices = PriceTable()
    spent = 0.0
    total_runs = len(experiment.datasets) * len(experiment.pipelines) * experiment.repeats
    tracker = (
        Progress(total_runs) if progress is True else progress if isinstance(progress, Progress) else None
    )
    for dataset_spec in experiment.datasets:
        golden = load_dataset(dataset_spec.name, limit=dataset_spec.limit, depth=dataset_spec.depth)
        for spec in experiment.pipelines:
            reranker = build(spec)
            bound = query_bound(spec) if max_cost_usd is not None else None
            model = str(spec.llm).partition(":")[2]
            for repeat in range(experiment.repeats):
                result = RunResult({"dataset": golden.name, "pipeline": spec.to_dict(), "repeat": repeat})
                checkpoint = out / (result.path_name.removesuffix(".json") + ".partial.jsonl")
                done = _read_checkpoint(checkpoint)
                journal = PaidJournal(
                    checkpoint.with_name(checkpoint.name.replace(".partial.jsonl", ".paid.jsonl")), done
                )
                batch_summary = run_batch_mode(experiment.batch, reranker, golden, done, checkpoint, prices)
                run_ray_mode(experiment.executor, spec, golden, done, checkpoint, experiment.cache_dir)
                if tracker is not None:
                    tracker.start_run(f"{golden.name} {spec.name}", len(golden.queries))
                with checkpoint.open("a", encoding="utf-8") as sink:
                    for query in golden.queries:
                        if query.qid in done:
                            spent += done[query.qid]["cost_usd"]
                        else:
                            worst = 0.0
                            if bound is not None:
                                calls, tokens = bound(query)
                                worst = prices.cost(model, tokens, calls * 30)
                            if max_cost_usd is not None and spent + worst > max_cost_usd:
                                raise BudgetError(
                                    f"stopped at ${spent:.4f}: the next query could cost up to ${worst:.4f} "
                                    f"and the --max-cost cap is ${max_cost_usd}; finished queries are "
                                    f"saved in {checkpoint}, re-run to resume"
                                )
                            started = time.perf_counter()
                            with call_log(journal.writer(query.qid)):
                                ranking = reranker.rerank(query.query, query.candidates)
                            # calls a killed earlier process paid for come back as cache hits
                            ranking = replace(ranking, calls=journal.paid.settle(query.qid, ranking.calls))
                            record = query_record(query.qid, ranking, time.perf_counter() - started, prices)
                            sink.write(json.dumps(record) + "\n")
                            sink.flush()
                            done[query.qid] = record
                            spent += record["cost_usd"]
                        if tracker is not None:
                            record = done[query.qid]
                            tracker.query_done(record["calls"], record["cost_usd"])
                if tracker is not None:
                    tracker.finish_run()
                result.data.update(_summarise(experiment, golden, done, prices))
                if batch_summary is not None:
                    result.data["batch"] = batch_summary
                (out / result.path_name).write_text(json.dumps(result.data, indent=1) + "\n")
                checkpoint.unlink()
                journal.finish()
                yield result


def _summarise(
    experiment: Experiment,
    golden: GoldenSet,
    done: Mapping[str, Mapping[str, Any]],
    prices: PriceTable,
) -> dict[str, Any]:
    records = [done[q.qid] for q in golden.queries]
    run = {r["qid"]: r["run"] for r in records}
    means, per_query = evaluate(golden.qrels, run, experiment.metrics, rel_threshold=golden.rel_threshold)
    latencies = [r["latency_s"] for r in records]
    repairs: dict[str, int] = {}
    for record in records:
        for key, count in record["repairs"].items():
            repairs[key] = repairs.get(key, 0) + count
    prompts = sorted({tuple(p) for r in records for p in r["prompts"]})
    rubrics = sorted({tuple(p) for r in records for p in r.get("rubrics", ())})
    return {
        "schema": SCHEMA,
        "experiment": experiment.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "queries": len(records),
        "rel_threshold": golden.rel_threshold,
        "metrics": means,
        "per_query": {m: per_query[m] for m in experiment.metrics},
        "calls": sum(r["calls"] for r in records),
        "cache_hits": sum(r["cached_calls"] for r in records),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "completion_tokens": sum(r["completion_tokens"] for r in records),
        "cost_usd": round(sum(r["cost_usd"] for r in records), 6),
        "price_table_date": prices.date,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "reasks": sum(r["reasks"] for r in records),
        "repairs": repairs,
        "degraded_queries": sum(1 for r in records if r["degraded"]),
        "prompts": [{"ref": ref, "sha256": sha} for ref, sha in prompts],
        "rubrics": [{"ref": ref, "sha256": sha} for ref, sha in rubrics],
        # the final order and each stage's own scores per query, for agreement and moved passages
        "run": run,
        "stage_scores": {r["qid"]: r["stage_scores"] for r in records if r.get("stage_scores")},
        "models": sorted({m for r in records for m in r["models"]}),
    }
