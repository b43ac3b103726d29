"""Run experiments: datasets × pipelines × repeats, through the response cache.

Each run (dataset × pipeline × repeat) appends its finished queries to a ``Checkpoint`` as
they finish, so an interrupted run resumes where it stopped and a re-run costs nothing
(every answer is cached). The executors the experiment asks for (provider batches, Ray)
answer the unfinished queries first; whatever is left is answered here, online, under the
``--max-cost`` cap. The runner calls the executors; they never call it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..cache import DiskCache
from ..driver import call_log
from ..pipeline import PipelineSpec
from ..pricing import PriceTable
from ..rerankers.protocol import Reranker
from .batch import run_in_batches
from .datasets import EvalQuery, GoldenSet, load_dataset
from .estimate import CostCap
from .experiment import Experiment
from .progress import Progress
from .ray_executor import run_unfinished_on_ray
from .records import Checkpoint, PaidJournal, query_record
from .summary import summarise

__all__ = ["RunResult", "run_experiment"]


@dataclass
class RunResult:
    """One dataset × pipeline × repeat; serialises to the versioned results JSON."""

    data: dict[str, Any] = field(default_factory=dict)

    @property
    def path_name(self) -> str:
        return f"{self.data['dataset']}__{_slug(self.data['pipeline']['name'])}__r{self.data['repeat']}.json"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def _answer(query: EvalQuery, reranker: Reranker, journal: PaidJournal, prices: PriceTable) -> dict[str, Any]:
    started = time.perf_counter()
    with call_log(journal.writer(query.qid)):
        ranking = reranker.rerank(query.query, query.candidates)
    # calls a killed earlier process paid for come back as cache hits
    ranking = replace(ranking, calls=journal.paid.settle(query.qid, ranking.calls))
    return query_record(query.qid, ranking, time.perf_counter() - started, prices)


def _run(
    experiment: Experiment,
    golden: GoldenSet,
    spec: PipelineSpec,
    reranker: Reranker,
    result: RunResult,
    out: Path,
    budget: CostCap,
    tracker: Progress | None,
) -> None:
    with Checkpoint(out / (result.path_name.removesuffix(".json") + Checkpoint.SUFFIX)) as checkpoint:
        journal = PaidJournal(checkpoint.beside(".paid.jsonl"), checkpoint.done)
        batch_summary = None
        if experiment.batch is not None:
            batch_summary = run_in_batches(reranker, golden, checkpoint, budget.prices, experiment.batch)
        if experiment.executor is not None:
            run_unfinished_on_ray(spec, golden, checkpoint, experiment.cache_dir, experiment.executor)
        if tracker is not None:
            tracker.start_run(f"{golden.name} {spec.name}", len(golden.queries))
        worst_case = budget.worst_case(spec)
        for query in golden.queries:
            record = checkpoint.done.get(query.qid)
            if record is None:
                budget.admit(worst_case(query), checkpoint.path)
                record = _answer(query, reranker, journal, budget.prices)
                checkpoint.append(record)
            budget.spent += record["cost_usd"]
            if tracker is not None:
                tracker.query_done(record["calls"], record["cost_usd"])
        if tracker is not None:
            tracker.finish_run()
        result.data.update(summarise(experiment, golden, checkpoint.done, budget.prices))
        if batch_summary is not None:
            result.data["batch"] = batch_summary
        (out / result.path_name).write_text(json.dumps(result.data, indent=1) + "\n")
        checkpoint.finish()
        journal.finish()


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
    budget = CostCap(max_cost_usd, PriceTable())
    total_runs = len(experiment.datasets) * len(experiment.pipelines) * experiment.repeats
    tracker = (
        Progress(total_runs) if progress is True else progress if isinstance(progress, Progress) else None
    )
    for dataset_spec in experiment.datasets:
        golden = load_dataset(dataset_spec.name, limit=dataset_spec.limit, depth=dataset_spec.depth)
        for spec in experiment.pipelines:
            reranker = build(spec)
            for repeat in range(experiment.repeats):
                result = RunResult({"dataset": golden.name, "pipeline": spec.to_dict(), "repeat": repeat})
                _run(experiment, golden, spec, reranker, result, out, budget, tracker)
                yield result
