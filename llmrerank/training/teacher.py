"""The teacher pass: a pipeline's LLM stage labels queries with candidates.

Pointwise strategies grade each passage on the rubric's scale, and that grade (or, with
log-probabilities, the expected grade) is the label: ``mapping = "grade"``.

Listwise, setwise and pairwise strategies only order the candidates; an order has no
absolute scale, so the label is the passage's position cut into equal bands, one per grade
of the rubric (``mapping = "position-bands"``): of ``n`` candidates, the first ``n / G``
get the highest grade, the next ``n / G`` the one below, and so on (``G`` grades). Equal
bands keep everything the order says at the scale's resolution and invent no threshold the
teacher never stated; the students' losses compare passages within a query (LambdaLoss) or
pairs by label (CoSENT), so what they learn from is the order, which the bands preserve.
Each line also keeps the raw ``rank`` and ``of``, so another mapping can be applied later.

Every request goes through the response cache: labelling queries the cascade (or an eval)
already asked costs nothing. Output is appended one query at a time; a pair already in the
output is never written again, so a re-run after an interruption finishes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import UserError
from ..pipeline import PipelineSpec
from ..rubrics import Rubric
from ..types import Candidate, as_candidates, as_query
from .labels import LabelRecord, append_labels, iter_labels, repair_tail, rubric_sha256

__all__ = [
    "LabelQuery",
    "LabelRun",
    "label_queries",
    "position_grade",
    "progress_printer",
    "queries_from_golden",
    "read_queries",
    "teacher_provenance",
]

logger = logging.getLogger("llmrerank.training")


@dataclass(frozen=True)
class LabelQuery:
    """A query to label: id, text and its candidates."""

    query_id: str
    query: str
    candidates: tuple[Candidate, ...]


def _query_id(record: dict[str, Any], query: str) -> str:
    for key in ("query_id", "qid"):
        if record.get(key) not in (None, ""):
            return str(record[key])
    return "q-" + hashlib.sha256(query.encode("utf-8")).hexdigest()[:12]


def read_queries(path: str | os.PathLike[str]) -> list[LabelQuery]:
    """The JSONL ``llmrerank rerank`` reads (``{"query", "candidates": [{"id", "text"}]}``),
    with an optional ``query_id``/``qid`` (else an id from the query's text); candidates may
    use ``docid`` for ``id`` as the eval datasets' files do. Bad lines name the line."""
    queries = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{where}: not JSON ({exc})") from None
        if not isinstance(record, dict) or "query" not in record or "candidates" not in record:
            raise UserError(f"{where}: needs 'query' and 'candidates'")
        try:
            query = as_query(record["query"])
            raw_candidates = record["candidates"]
            if isinstance(raw_candidates, list):
                raw_candidates = [
                    {
                        **{k: v for k, v in c.items() if k not in ("docid", "rank", "bm25_score")},
                        "id": c["docid"],
                    }
                    if isinstance(c, dict) and "docid" in c and "id" not in c
                    else c
                    for c in raw_candidates
                ]
            candidates = tuple(as_candidates(raw_candidates))
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        queries.append(LabelQuery(_query_id(record, query), query, candidates))
    if not queries:
        raise UserError(f"{path} holds no queries")
    seen: set[str] = set()
    for query in queries:
        if query.query_id in seen:
            raise UserError(f"{path}: query id {query.query_id} appears twice")
        seen.add(query.query_id)
    return queries


def queries_from_golden(golden: Any) -> list[LabelQuery]:
    """An eval dataset's queries and first-stage candidates (a ``GoldenSet``), to label."""
    return [LabelQuery(q.qid, q.query, tuple(q.candidates)) for q in golden.queries]


def position_grade(position: int, n: int, grades: list[int]) -> int:
    """The grade of the passage at 0-based ``position`` of ``n`` under equal bands (see the
    module docstring): position 0 gets the highest grade, the last the lowest."""
    if not 0 <= position < n:
        raise ValueError(f"position {position} outside 0..{n - 1}")
    band = math.floor(position * len(grades) / n)
    return grades[len(grades) - 1 - band]


def teacher_provenance(spec: PipelineSpec, reranker: Any) -> dict[str, Any]:
    """Who labels: the model string, strategy, prompt ref + sha256, rubric name + sha256."""
    rubric: Rubric = reranker.rubric
    strategy = reranker.strategy.name
    return {
        "source": "llm",
        "model": spec.llm if isinstance(spec.llm, str) else getattr(spec.llm, "name", "llm"),
        "strategy": strategy,
        "strategy_options": dict(spec.strategy_options),
        "prompt": reranker.prompt.ref,
        "prompt_sha256": reranker.prompt.sha256,
        "rubric": rubric.name,
        "rubric_sha256": rubric_sha256(rubric),
        "mapping": "grade" if strategy == "pointwise" else "position-bands",
        "scale": [rubric.min_grade, rubric.max_grade],
    }


@dataclass
class LabelRun:
    """What a labelling pass did."""

    queries: int = 0
    skipped_queries: int = 0
    pairs: int = 0
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def _existing(path: Path, provenance: dict[str, Any]) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    if repair_tail(path):
        logger.warning("%s ended in a partial line (an interrupted run); it was cut", path)
    pairs = set()
    for record in iter_labels(path):
        if dict(record.provenance) != provenance:
            raise UserError(
                f"{path} already holds labels from another teacher "
                f"({record.provenance.get('model')}, {record.provenance.get('prompt')}, "
                f"rubric {record.provenance.get('rubric')}); write to a new file"
            )
        pairs.add((record.query_id, record.passage_id))
    return pairs


def _records(
    query: LabelQuery, ranking: Any, provenance: dict[str, Any], grades: list[int], stage: str
) -> Iterator[LabelRecord]:
    n = len(ranking.items)
    for position, item in enumerate(ranking.items):
        score = item.stage_scores.get(stage)
        if provenance["mapping"] == "grade":
            if score is None:
                raise UserError(f"query {query.query_id}: the teacher gave no grade for {item.id}")
            label = float(score)
        else:
            label = float(position_grade(position, n, grades))
        yield LabelRecord(
            query_id=query.query_id,
            query=query.query,
            passage_id=item.id,
            passage=item.text,
            label=label,
            provenance=provenance,
            score=None if score is None else float(score),
            rank=position + 1,
            of=n,
        )


def label_queries(
    spec: PipelineSpec,
    queries: Iterable[LabelQuery],
    out: str | os.PathLike[str],
    *,
    cache: Any = None,
    on_query: Callable[[int, LabelQuery, LabelRun], None] | None = None,
) -> LabelRun:
    """Label ``queries`` with ``spec``'s LLM stage into the labels file ``out`` (appended;
    pairs already there are skipped). The whole candidate list of each query is labelled.
    ``cache`` is a ``DiskCache`` (None: no cache). ``on_query`` is called after each query.
    """
    reranker = spec.build_llm(cache=cache)
    if not hasattr(reranker, "prompt") or not hasattr(reranker, "rubric"):
        raise UserError("label needs an LLM stage built from a model string (llm: PROVIDER:MODEL)")
    provenance = teacher_provenance(spec, reranker)
    grades = list(reranker.rubric.grades)
    path = Path(out)
    done = _existing(path, provenance)
    run = LabelRun()
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for number, query in enumerate(queries, start=1):
            wanted = [c for c in query.candidates if (query.query_id, c.id) not in done]
            if not wanted:
                run.skipped_queries += 1
            else:
                # the whole list is asked (an order is only meaningful over all of it); the
                # cache answers what an earlier, interrupted run already asked
                ranking = reranker.rerank(query.query, list(query.candidates))
                records = [
                    r
                    for r in _records(query, ranking, provenance, grades, reranker.name)
                    if (r.query_id, r.passage_id) not in done
                ]
                append_labels(handle, records)
                run.queries += 1
                run.pairs += len(records)
                run.calls += len(ranking.calls)
                run.cached_calls += sum(1 for c in ranking.calls if c.cached)
                run.prompt_tokens += ranking.usage.prompt_tokens
                run.completion_tokens += ranking.usage.completion_tokens
            run.seconds = time.perf_counter() - started
            if on_query is not None:
                on_query(number, query, run)
    return run


def progress_printer(
    total: int, stream: IO[str] | None = None
) -> Callable[[int, LabelQuery, LabelRun], None]:
    """An ``on_query`` callback writing one line per query to ``stream`` (stderr)."""

    def report(number: int, query: LabelQuery, run: LabelRun) -> None:
        target = stream or sys.stderr
        target.write(
            f"[label] {number}/{total} queries ({query.query_id}); {run.pairs:,} pairs written, "
            f"{run.calls:,} calls ({run.cached_calls:,} cached); {run.seconds:.1f}s\n"
        )
        target.flush()

    return report
